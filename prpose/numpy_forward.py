"""The eval-mode embedder in plain NumPy, for a few poses without importing or compiling JAX.

A one-off query (``prpose query`` on a handful of detections) would otherwise spend seconds importing JAX and
compiling the model for a forward pass that itself takes microseconds. From an exported model's arrays
(``prpose.export``), this module computes what ``prpose.inference`` computes:

* :func:`normalize_2d`: the NumPy twin of ``prpose.normalize.normalize_2d`` (same offset / scale / validity rules);
* :func:`forward`: input features (by ``mask_mode``), input Dense, residual blocks of Dense -> norm (batch norm
  with running statistics, or layer norm) -> ReLU, and the Gaussian heads (stddev = ELU + 1 + epsilon);
* :func:`normal`: the samples' noise. Row ``r`` of an ``embed`` call draws
  ``jax.random.normal(jax.random.fold_in(key, r), (K, D))``; this reproduces it from the raw key: Threefry-2x32
  (20 rounds), JAX's fold-in and partitionable random bits, its float32 uniform in [nextafter(-1, 0), 1), and
  XLA's float32 erfinv polynomial (Giles). The uint32 stage is bit-exact; erfinv agrees to float32 rounding.

Tests compare each part with the JAX path (``tests/test_numpy_forward.py``, tolerance 1e-5).
"""

from __future__ import annotations

import numpy as np

from prpose.keypoints import get_profile

SUPPORTED_NORMS = ("batch", "layer", "none")
BATCH_NORM_EPSILON = 1e-5   # flax.nnx.BatchNorm default
LAYER_NORM_EPSILON = 1e-6   # flax.nnx.LayerNorm default
STDDEV_EPSILON = 1e-6       # prpose.model.STDDEV_EPSILON (kept equal by a test)
_NORMALIZE_EPS = 1e-6       # prpose.normalize.EPS
MAX_COORDINATE = 1e15       # prpose.normalize.MAX_COORDINATE (kept equal by a test)

#: prpose.normalize.TORSO_JOINTS (a test keeps them equal; importing normalize would import JAX).
TORSO_JOINTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
_PAIRS = np.array(((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))).T


# --- normalisation ---------------------------------------------------------------------------------------------

def normalize_2d(keypoints: np.ndarray, visible: np.ndarray | None = None,
                 profile: str = "input13") -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of ``prpose.normalize.normalize_2d``: (N, J, 2) keypoints of ``profile`` [+ (N, J) bool] ->
    (normalized (N, J, 2) float32, valid (N,) bool); the torso joints are found by name in ``profile``."""
    prof = get_profile(profile)
    torso_idx = [prof.index(j) for j in TORSO_JOINTS]
    kp = np.asarray(keypoints, np.float32)
    finite = (np.abs(kp) <= MAX_COORDINATE).all(axis=-1)  # NaN, inf and overflowing magnitudes: unusable
    vis = finite if visible is None else (np.asarray(visible, bool) & finite)
    kp = np.where(vis[..., None], kp, np.float32(0))
    torso = kp[:, torso_idx]
    tvis = vis[:, torso_idx]
    w = tvis.astype(np.float32)
    hip_n = w[:, 2:].sum(-1, keepdims=True)
    sh_n = w[:, :2].sum(-1, keepdims=True)
    hip_mean = (torso[:, 2:] * w[:, 2:, None]).sum(-2) / np.maximum(hip_n, 1.0)
    sh_mean = (torso[:, :2] * w[:, :2, None]).sum(-2) / np.maximum(sh_n, 1.0)
    offset = np.where(hip_n > 0, hip_mean, sh_mean)
    diff = torso[:, _PAIRS[0]] - torso[:, _PAIRS[1]]
    sq = (diff * diff).sum(-1)
    ok = tvis[:, _PAIRS[0]] & tvis[:, _PAIRS[1]]
    size = np.sqrt(np.where(ok, sq, 0.0).max(axis=-1))
    valid = size > _NORMALIZE_EPS
    scale = np.where(valid, 0.5 / np.where(valid, size, 1.0), 0.0).astype(np.float32)
    out = (kp - offset[:, None, :]) * scale[:, None, None]
    out = np.where(vis[..., None] & valid[:, None, None], out, np.float32(0))
    return out.astype(np.float32), valid


# --- the network -----------------------------------------------------------------------------------------------

def _dense(arrays: dict, prefix: str, x: np.ndarray) -> np.ndarray:
    return x @ arrays[f"params/{prefix}/kernel"] + arrays[f"params/{prefix}/bias"]


def _norm(arrays: dict, prefix: str, norm: str, x: np.ndarray) -> np.ndarray:
    if norm == "batch":
        mul = arrays[f"params/{prefix}/scale"] / np.sqrt(arrays[f"batch_stats/{prefix}/var"] + np.float32(BATCH_NORM_EPSILON))
        return (x - arrays[f"batch_stats/{prefix}/mean"]) * mul + arrays[f"params/{prefix}/bias"]
    if norm == "layer":
        mean = x.mean(-1, keepdims=True)
        var = np.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)
        return (x - mean) / np.sqrt(var + np.float32(LAYER_NORM_EPSILON)) * arrays[f"params/{prefix}/scale"] \
            + arrays[f"params/{prefix}/bias"]
    return x


def forward(arrays: dict, model_config, x: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode ``prpose.model.Embedder``: normalised (N, J, 2) keypoints, (N, J) visibility ->
    (mean (N, D), stddev (N, D)) float32. ``arrays`` maps ``params/...`` / ``batch_stats/...`` names (as in an
    exported model's weights.npz) to arrays; ``model_config.norm`` must be one of SUPPORTED_NORMS."""
    if model_config.norm not in SUPPORTED_NORMS:
        raise ValueError(f"numpy forward: norm {model_config.norm!r} not supported (use the JAX path)")
    x = np.asarray(x, np.float32)
    vis = np.asarray(visible).astype(np.float32)
    if model_config.mask_mode in ("zero", "both"):
        x = x * vis[..., None]
    if model_config.mask_mode in ("channel", "both"):
        x = np.concatenate([x, vis[..., None]], axis=-1)
    h = _dense(arrays, "encoder/input_layer", x.reshape(x.shape[0], -1))
    for block in range(model_config.num_blocks):
        y = h
        for unit in ("unit1", "unit2"):
            prefix = f"encoder/blocks/{block}/{unit}"
            y = np.maximum(_norm(arrays, f"{prefix}/norm", model_config.norm, _dense(arrays, f"{prefix}/dense", y)), 0)
        h = h + y
    mean = _dense(arrays, "heads/mean", h)
    s = _dense(arrays, "heads/stddev", h)
    stddev = np.where(s > 0, s + 1.0, np.exp(np.minimum(s, 0.0))) + np.float32(STDDEV_EPSILON)
    return mean.astype(np.float32), stddev.astype(np.float32)


# --- jax.random.normal, reproduced -----------------------------------------------------------------------------

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotl(x: np.ndarray, d: int) -> np.ndarray:
    return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k1, k2, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 (20 rounds) of counter pairs (x1, x2) under key (k1, k2); uint32 arrays, broadcasting."""
    k1, k2 = np.asarray(k1, np.uint32), np.asarray(k2, np.uint32)
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    with np.errstate(over="ignore"):
        x1 = np.asarray(x1, np.uint32) + ks[0]
        x2 = np.asarray(x2, np.uint32) + ks[1]
        for i in range(5):
            for r in _ROTATIONS[i % 2]:
                x1 = x1 + x2
                x2 = _rotl(x2, r) ^ x1
            x1 = x1 + ks[(i + 1) % 3]
            x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def fold_in(key: np.ndarray, data: np.ndarray) -> np.ndarray:
    """``jax.random.fold_in`` for raw threefry keys: key (2,) uint32, data (N,) integers -> keys (N, 2)."""
    data = np.asarray(data).astype(np.uint32)
    a, b = threefry2x32(key[0], key[1], np.zeros_like(data), data)
    return np.stack([a, b], axis=-1)


def _erfinv32(x: np.ndarray) -> np.ndarray:
    """XLA's float32 erfinv (Giles' single-precision polynomial)."""
    small = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
             -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
    large = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
             -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)
    x = x.astype(np.float32)
    w = -np.log1p(-x * x)
    lt = w < np.float32(5.0)
    w = np.where(lt, w - np.float32(2.5), np.sqrt(w) - np.float32(3.0)).astype(np.float32)
    p = np.where(lt, np.float32(small[0]), np.float32(large[0]))
    for cs, cl in zip(small[1:], large[1:]):
        p = np.where(lt, np.float32(cs), np.float32(cl)) + p * w
    return np.where(np.abs(x) == 1, x * np.float32(np.finfo(np.float32).max), p * x).astype(np.float32)


def normal(keys: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``jax.random.normal(key, shape, float32)`` for each raw key in ``keys`` (N, 2) -> (N, *shape)."""
    size = int(np.prod(shape))
    counts = np.arange(size, dtype=np.uint32)
    b1, b2 = threefry2x32(keys[:, :1], keys[:, 1:], np.zeros_like(counts)[None], counts[None])
    bits = b1 ^ b2
    floats = ((bits >> np.uint32(9)) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1.0)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = np.maximum(lo, floats * (np.float32(1.0) - lo) + lo)
    return (np.float32(np.sqrt(2)) * _erfinv32(u)).reshape(len(keys), *shape)
