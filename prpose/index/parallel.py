"""Threads for the index's search: blocks of queries run on a pool of threads, one core each.

The search's work per block of queries (FAISS candidates, gathering samples, the NumPy re-rank kernel, top-k) runs
almost entirely outside the GIL (FAISS, BLAS and NumPy's element-wise loops release it), so threads over query
blocks use several cores without copying the index into other processes. Every block's answer depends only on
its own queries, so the results are the same for any number of threads (tests/test_index.py checks 1 vs 2).

FAISS would start its own OpenMP team inside every search call; here each thread runs FAISS on one thread
(`omp_set_num_threads` is per calling thread in OpenMP, so the setting is restored afterwards and stays local).
"""

from __future__ import annotations

import concurrent.futures
import numbers
import os
import threading
from typing import Callable

from prpose.errors import PrposeError

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads, where: str) -> int:
    """threads: None (every available core) or a positive integer -> the number of threads to use."""
    if threads is None:
        return available_cores()
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise PrposeError(f"{where}: threads={threads!r}, expected a positive integer or None (every core)")
    return int(threads)


def _executor(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """A process-wide pool with at least `workers` threads (kept: starting threads per search costs ~0.1 ms)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="prpose-search")
            _pool_size = workers
        return _pool


def _one_faiss_thread(work: Callable[[], None]) -> None:
    """Run `work` with FAISS limited to one OpenMP thread in the calling thread, then restore its setting."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency; the kernels alone need no OpenMP setting
        work()
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        work()
    finally:
        faiss.omp_set_num_threads(before)


def run_blocks(work: Callable[[int], None], count: int, threads: int) -> None:
    """Call work(i) for every block i in range(count) on up to `threads` threads (the caller is one of them).

    Blocks are handed out in order as threads become free. Each call must write only its own block's outputs.
    The first exception raised by any block is re-raised here once every thread has stopped.
    """
    workers = max(1, min(threads, count))
    blocks = iter(range(count))  # next() on a range iterator is atomic under the GIL
    failed = threading.Event()

    def drain():
        for i in blocks:
            if failed.is_set():
                return
            try:
                work(i)
            except BaseException:
                failed.set()
                raise

    def task():
        _one_faiss_thread(drain)

    futures = [_executor(workers - 1).submit(task) for _ in range(workers - 1)] if workers > 1 else []
    error = None
    try:
        task()
    except BaseException as err:  # noqa: BLE001 - re-raised below once the other threads have stopped
        error = err
    for future in futures:
        try:
            future.result()
        except BaseException as err:  # noqa: BLE001
            error = error or err
    if error is not None:
        raise error
