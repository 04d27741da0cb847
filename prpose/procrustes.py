"""Procrustes alignment and NP-MPJPE (REFERENCE.md: two poses match when NP-MPJPE < kappa = 0.1).

Alignment of ``source`` onto ``target`` finds a proper rotation R (no reflection), a uniform scale s >= 0 and
a translation t minimising sum_j |s R x_j + t - y_j|^2 (Umeyama / Horn). With centred points X, Y and the
cross-covariance M = X^T Y (3x3, rows as points) = U S V^T:
    R = U D V^T (acting on row vectors: aligned = s X R + mean(Y)),  D = diag(1, 1, sign det(U V^T)),
    s = trace(S D) / |X|^2.
NP-MPJPE is the mean per-joint Euclidean distance after that alignment.

All functions are jax.numpy and jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prpose.errors import PrposeError

# |X|^2 (summed squared distance to the centroid) below this is a degenerate source: scale 0 is used, so the
# aligned pose collapses onto the target's centroid (finite error, never NaN).
_EPS = 1e-12


def _check(x, name: str, fn: str):
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[-1] != 3:
        raise PrposeError(f"{fn}: argument {name!r} has shape {tuple(x.shape)}, expected (..., J, 3)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _weights(mask, shape, dtype, fn: str):
    """(..., J) float weights (1 = use the joint) from an optional bool mask."""
    if mask is None:
        return jnp.ones(shape[:-1], dtype)
    mask = jnp.asarray(mask)
    if mask.ndim < 1 or mask.shape[-1] != shape[-2]:
        raise PrposeError(
            f"{fn}: argument 'mask' has shape {tuple(mask.shape)}, expected (..., {shape[-2]}) for poses of "
            f"shape {tuple(shape)}"
        )
    return jnp.broadcast_to(mask.astype(bool), shape[:-1]).astype(dtype)


def _svd_rotation_scale(m):
    """m (..., 3, 3) cross-covariance -> rotation (..., 3, 3) acting on rows, and trace(S D) (...)."""
    u, s, vt = jnp.linalg.svd(m)
    d = jnp.sign(jnp.linalg.det(u @ vt))
    d = jnp.where(d == 0, 1.0, d)  # exactly-singular edge case: any sign is optimal
    u = u.at[..., :, 2].multiply(d[..., None])
    rot = u @ vt
    trace = s[..., 0] + s[..., 1] + d * s[..., 2]
    return rot, trace


def _align_parts(source, target, w):
    """Centroids, rotation, scale of the weighted alignment. source/target (..., J, 3), w (..., J)."""
    wsum = jnp.maximum(w.sum(-1), 1e-30)[..., None]  # (..., 1)
    mu_s = (source * w[..., None]).sum(-2) / wsum
    mu_t = (target * w[..., None]).sum(-2) / wsum
    xs = (source - mu_s[..., None, :]) * w[..., None]
    yt = target - mu_t[..., None, :]
    m = jnp.einsum("...ji,...jk->...ik", xs, yt)
    rot, trace = _svd_rotation_scale(m)
    norm_x = jnp.sum(xs * xs, axis=(-2, -1))
    ok = norm_x > _EPS
    scale = jnp.where(ok, trace / jnp.where(ok, norm_x, 1.0), 0.0)
    return mu_s, mu_t, rot, scale


def procrustes_align(source, target, mask=None):
    """Align ``source`` onto ``target`` with a rotation (no reflection), uniform scale and translation.

    Args:
      source: (..., J, 3) poses to move.
      target: (..., J, 3) reference poses (broadcast against source).
      mask: optional (..., J) bool; only joints with mask True enter the fit. Every joint is transformed.
    Returns:
      (..., J, 3) aligned source.
    """
    fn = "procrustes_align"
    source, target = _check(source, "source", fn), _check(target, "target", fn)
    shape = jnp.broadcast_shapes(source.shape, target.shape)
    source, target = jnp.broadcast_to(source, shape), jnp.broadcast_to(target, shape)
    w = _weights(mask, shape, source.dtype, fn)
    mu_s, mu_t, rot, scale = _align_parts(source, target, w)
    return scale[..., None, None] * ((source - mu_s[..., None, :]) @ rot) + mu_t[..., None, :]


def np_mpjpe(pred, target, mask=None):
    """Normalised-Procrustes MPJPE: align ``pred`` onto ``target``, mean per-joint Euclidean distance.

    Args:
      pred, target: (..., J, 3) (broadcast).
      mask: optional (..., J) bool; masked-out joints neither enter the fit nor the mean.
    Returns:
      (...) mean distance over the used joints (0 where no joint is used).
    """
    fn = "np_mpjpe"
    pred, target = _check(pred, "pred", fn), _check(target, "target", fn)
    shape = jnp.broadcast_shapes(pred.shape, target.shape)
    pred, target = jnp.broadcast_to(pred, shape), jnp.broadcast_to(target, shape)
    w = _weights(mask, shape, pred.dtype, fn)
    aligned = procrustes_align(pred, target, None if mask is None else w > 0)
    d = aligned - target
    sq = jnp.sum(d * d, -1)
    dist = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return (dist * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)


@jax.jit
def pairwise_np_mpjpe(a, b):
    """All-pairs NP-MPJPE: ``out[i, j] = np_mpjpe(a[i], b[j])`` (a[i] aligned onto b[j]).

    Args:
      a: (N, J, 3).  b: (M, J, 3).
    Returns:
      (N, M).
    """
    fn = "pairwise_np_mpjpe"
    a, b = _check(a, "a", fn), _check(b, "b", fn)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1] != b.shape[1]:
        raise PrposeError(f"{fn}: expected a (N, J, 3) and b (M, J, 3), got {tuple(a.shape)} and {tuple(b.shape)}")
    return np_mpjpe(a[:, None], b[None, :])
