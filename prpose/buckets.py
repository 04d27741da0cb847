"""Shape buckets: pad the leading axis to a power of two so that jitted kernels compile few distinct shapes.

Every new input shape of a ``jax.jit`` function is a new XLA compile (seconds on a CPU). Callers that see
arbitrary row counts (the last chunk of an embedding call, a camera pair's queries, a sequence of any length)
pad to :func:`bucket_size` rows, run the kernel and keep the first ``n`` rows of the result. Only row-wise
kernels may be padded this way: a padded row must not change the others' results.
"""

from __future__ import annotations

import numpy as np


def bucket_size(n: int, minimum: int = 1) -> int:
    """The padded row count for ``n`` rows: the smallest power of two >= n, and at least ``minimum``."""
    return max(int(minimum), 1 << max(0, int(n) - 1).bit_length())


def pad_rows(x: np.ndarray, minimum: int = 64) -> np.ndarray:
    """``x`` (n, ...) padded along axis 0 to ``bucket_size(n, minimum)`` rows by repeating row 0 (a real row,
    so padded rows never hold degenerate values such as an all-zero pose); returned unchanged when already that
    size or empty. Slice the kernel's result back with ``[:n]``."""
    x = np.asarray(x)
    n = x.shape[0]
    size = bucket_size(n, minimum)
    if size == n or n == 0:
        return x
    return np.concatenate([x, np.repeat(x[:1], size - n, axis=0)])
