"""Progress output for every long loop in prpose: a tqdm bar on a terminal, plain lines in a log file.

A tqdm bar redraws itself with carriage returns many times a second; written to a file or a pipe (a batch
job's log) that is thousands of frames on one "line". So ``progress(...)`` returns a tqdm bar only when the
stream is a terminal; otherwise a :class:`PlainProgress` that prints one line every ``interval`` seconds
(environment variable ``PRPOSE_PROGRESS_INTERVAL``, default 30) and a last one at the end, once a task has
run that long (a task that ends sooner prints nothing):
``train: 1200/5000 (24%), 41.3 s, 29.1 step/s, ETA 2.2 min, loss=0.412``.
Both support the part of tqdm's interface prpose uses: iteration, ``with``, ``update``, ``set_postfix``,
``close``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable

INTERVAL_ENV = "PRPOSE_PROGRESS_INTERVAL"


def _default_interval() -> float:
    try:
        return float(os.environ.get(INTERVAL_ENV, 30.0))
    except ValueError:
        return 30.0


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, enabled: bool = True, file=None, interval: float | None = None, **tqdm_kwargs):
    """A progress reporter over ``iterable`` (or updated by hand up to ``total``) on ``file`` (default stderr).

    ``enabled=False`` reports nothing (the iterable is still iterated). ``interval``: seconds between plain
    lines (default: ``PRPOSE_PROGRESS_INTERVAL`` or 30). Extra keyword arguments go to tqdm.
    """
    file = sys.stderr if file is None else file
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    isatty = getattr(file, "isatty", None)
    if enabled and isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file, **tqdm_kwargs)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file,
                         interval=interval, enabled=enabled)


class PlainProgress:
    """Periodic one-line progress reports (for output that is not a terminal)."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, file=None,
                 interval=None, enabled=True):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._start_n = initial
        self.file = sys.stderr if file is None else file
        self.interval = _default_interval() if interval is None else interval
        self.enabled = enabled
        self.postfix = ""
        self._start = self._last = time.perf_counter()
        self._closed = False
        self._printed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self):
        return self.total

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def close(self) -> None:
        """The last line, if the task ran long enough to report progress at all."""
        if not self._closed:
            self._closed = True
            now = time.perf_counter()
            if self._printed or now - self._start >= self.interval:
                self._print(now)

    def line(self, now: float) -> str:
        elapsed = now - self._start
        done = self.n - self._start_n
        parts = [f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"]
        parts.append(f"{elapsed:.1f} s")
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def _print(self, now: float) -> None:
        if self.enabled:
            self._printed = True
            print(self.line(now), file=self.file, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
