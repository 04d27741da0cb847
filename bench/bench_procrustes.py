"""Benchmark pairwise NP-MPJPE at training-batch size: B x B pairs of 17 joints, per rotation solver.

    .venv/bin/python bench/bench_procrustes.py [--batch 256] [--rounds 5] [--check]

Methods are timed interleaved (A, B, C, A, B, C, ...) because the machine is noisy; the median per method
is reported. --check also prints the max |error| of each method against a float64 NumPy SVD reference on a
batch of random, near-matching, planar and collinear pose pairs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from prpose import procrustes


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 NumPy Umeyama NP-MPJPE, pair by pair."""
    out = np.empty((len(a), len(b)))
    for i, x in enumerate(a):
        x = x - x.mean(0)
        for j, y in enumerate(b):
            y = y - y.mean(0)
            u, s, vt = np.linalg.svd(x.T @ y)
            d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
            scale = np.trace(np.diag(s) @ d) / np.sum(x * x)
            out[i, j] = np.linalg.norm(scale * x @ (u @ d @ vt) - y, axis=-1).mean()
    return out


def check_batch(rng) -> tuple[np.ndarray, np.ndarray]:
    base = rng.normal(size=(8, 17, 3)) * 0.4
    q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    q *= np.sign(np.linalg.det(q))
    a = np.concatenate([base, base + rng.normal(size=base.shape) * 0.01, rng.normal(size=(8, 17, 3)) * 0.4,
                        base[:4] * [1, 1, 0], rng.normal(size=(2, 17, 1)) * [1.0, 0.5, 0.2]])
    b = np.concatenate([base @ q.T * 1.5 + 0.2, rng.normal(size=(22, 17, 3)) * 0.4])
    return a.astype(np.float32), b.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    a = rng.normal(size=(args.batch, 17, 3)).astype(np.float32) * 0.4
    b = rng.normal(size=(args.batch, 17, 3)).astype(np.float32) * 0.4
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; pairwise_np_mpjpe({args.batch}x{args.batch} "
          f"= {args.batch**2} pairs, J=17)")
    compile_s = {}
    for method in procrustes.METHODS:
        t = time.perf_counter()
        jax.block_until_ready(procrustes.pairwise_np_mpjpe(a, b, method=method))
        compile_s[method] = time.perf_counter() - t
    times = {m: [] for m in procrustes.METHODS}
    for _ in range(args.rounds):
        for method in procrustes.METHODS:
            t = time.perf_counter()
            jax.block_until_ready(procrustes.pairwise_np_mpjpe(a, b, method=method))
            times[method].append(time.perf_counter() - t)
    for method in procrustes.METHODS:
        ms = [1000 * t for t in times[method]]
        print(f"  {method:7s} median {statistics.median(ms):8.1f} ms/call  (min {min(ms):.1f}, max {max(ms):.1f}; "
              f"first call incl. compile {compile_s[method]:.2f} s)")
    if args.check:
        ca, cb = check_batch(np.random.default_rng(1))
        ref = reference(ca.astype(np.float64), cb.astype(np.float64))
        for method in procrustes.METHODS:
            err = np.abs(np.asarray(procrustes.pairwise_np_mpjpe(ca, cb, method=method), np.float64) - ref).max()
            print(f"  {method:7s} max |error| vs float64 NumPy SVD: {err:.2e}")


if __name__ == "__main__":
    main()
