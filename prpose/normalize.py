"""Pose normalisation (Pr-VIPE, REFERENCE.md "Keypoints and normalisation").

* ``normalize_2d``: keypoints of a model input profile (input13 by default, any profile holding the four
  torso joints by name); subtract the hip midpoint, then scale so that the largest of the six
  distances among {left shoulder, right shoulder, left hip, right hip} becomes 0.5.
* ``normalize_3d``: h36m17 poses; subtract the pelvis, divide by |pelvis - spine| + |spine - thorax|.

Both are written in ``jax.numpy``, are jit/vmap/grad compatible and accept NumPy input. Both return
``(normalized, valid)``: rows whose scale is ~0 (degenerate torso), whose needed joints are missing or
non-finite, are flagged ``valid=False`` and returned as zeros, so the output never holds NaN or inf and neither
do the gradients (every sqrt/division goes through a safe denominator selected with ``jnp.where``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prpose.errors import PrposeError
from prpose.keypoints import H36M17, KeypointProfile, get_profile

# The torso joints that define the 2D offset and scale, looked up by name in the input profile. Order matters
# below: shoulders first, then hips.
TORSO_JOINTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
# The six unordered pairs among the four torso joints (index into TORSO_JOINTS).
_TORSO_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))

_PELVIS = H36M17.index("pelvis")
_SPINE = H36M17.index("spine")
_THORAX = H36M17.index("thorax")

# A torso (2D: largest torso distance; 3D: pelvis-spine-thorax length) shorter than this, in the input's
# units, is degenerate. Inputs are pixels, metres or already-normalised units, for which real torsos are
# orders of magnitude larger; all-zero/collapsed rows (e.g. padding, failed detections) fall below it.
EPS = 1e-6
# A 2D coordinate beyond this magnitude is unusable, like a non-finite one: squared torso distances of
# float32 coordinates overflow near 1e19, which used to turn such a row into an all-zero "valid" pose.
MAX_COORDINATE = 1e15


def _as_float(x, name: str, fn: str):
    """jnp float array from NumPy/JAX/list input; integers become float32 (floats keep their dtype)."""
    try:
        x = jnp.asarray(x)
    except TypeError as e:
        raise PrposeError(f"{fn}: argument {name!r} is not an array ({type(x).__name__}): {e}") from None
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _check_shape(x, joints: int, dims: int, name: str, fn: str, profile: str):
    if x.ndim < 2 or x.shape[-2:] != (joints, dims):
        raise PrposeError(
            f"{fn}: argument {name!r} has shape {tuple(x.shape)}, expected (..., {joints}, {dims}) "
            f"({profile} profile)"
        )


def _safe_sqrt(sq):
    """sqrt with a finite gradient at 0 (sqrt'(0) is inf, which times 0 would give NaN)."""
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def torso_indices(profile: str | KeypointProfile = "input13") -> tuple[int, int, int, int]:
    """Indices of :data:`TORSO_JOINTS` in ``profile``; PrposeError naming the ones it lacks."""
    prof = get_profile(profile)
    missing = [j for j in TORSO_JOINTS if j not in prof.joints]
    if missing:
        raise PrposeError(f"profile {prof.name!r} cannot be normalised: it lacks the torso joint(s) "
                          f"{', '.join(missing)}")
    return tuple(prof.index(j) for j in TORSO_JOINTS)


def normalize_2d(keypoints, visible=None, profile: str | KeypointProfile = "input13"):
    """Normalise 2D keypoints of a model input profile (Pr-VIPE input normalisation).

    Subtract the hip midpoint; multiply by 0.5 / (largest of the six pairwise distances among left/right
    shoulder and left/right hip), so that this largest torso distance becomes 0.5.

    With ``visible`` (and for non-finite coordinates, which count as invisible), only visible keypoints
    enter the offset and the scale:
      * offset: the midpoint of the hips when both are visible, the visible hip when only one is (a hip
        is the nearest stand-in for the other: the hip distance is the torso's smallest span), and the
        mean of the visible shoulders when neither hip is visible (upper-body-only views);
      * scale: the largest distance among the pairs of *visible* torso joints;
      * a row is valid when at least two torso joints are visible and that distance exceeds ``EPS``;
      * invisible keypoints are output as 0 (the model's convention for dropped keypoints).
    The partial-visibility offset/scale are approximations; a model trained with keypoint dropout
    (prpose.augment) sees the same approximations at training time.

    Args:
      keypoints: (..., J, 2) keypoints of ``profile``, any units (pixels, metres, ...). NumPy or JAX.
      visible: optional (..., J) bool (nonzero = visible); broadcast against ``keypoints``' batch shape.
      profile: the keypoints' profile (name or KeypointProfile, static under jit); the torso joints
        (:data:`TORSO_JOINTS`) are found by name. Default "input13" (J = 13).
    Returns:
      normalized: (..., J, 2) float; zeros where ``valid`` is False and at invisible keypoints.
      valid: (...) bool.
    Raises:
      PrposeError: wrong shapes, or a profile without the torso joints.
    """
    fn = "normalize_2d"
    prof = get_profile(profile)
    torso_idx = list(torso_indices(prof))
    num_joints = prof.num_joints
    kp = _as_float(keypoints, "keypoints", fn)
    _check_shape(kp, num_joints, 2, "keypoints", fn, prof.name)
    finite = jnp.all(jnp.abs(kp) <= MAX_COORDINATE, axis=-1)  # (..., J); False for NaN/inf and overflow
    if visible is None:
        vis = finite
    else:
        vis = jnp.asarray(visible)
        if vis.ndim < 1 or vis.shape[-1] != num_joints:
            raise PrposeError(
                f"{fn}: argument 'visible' has shape {tuple(vis.shape)}, expected (..., {num_joints}) matching "
                f"keypoints of shape {tuple(kp.shape)}"
            )
        try:
            vis = jnp.broadcast_to(vis.astype(bool), jnp.broadcast_shapes(vis.shape, kp.shape[:-1]))
        except ValueError:
            raise PrposeError(
                f"{fn}: argument 'visible' has shape {tuple(vis.shape)}, which does not broadcast to the "
                f"keypoints' batch shape {tuple(kp.shape[:-1])}"
            ) from None
        vis = vis & finite
    # Zero out unusable coordinates first so that NaN/inf never reach arithmetic (or its gradient).
    kp = jnp.where(vis[..., None], kp, 0.0)  # also broadcasts kp up to visible's batch shape

    torso = kp[..., torso_idx, :]  # (..., 4, 2)
    tvis = vis[..., torso_idx]  # (..., 4)
    w = tvis.astype(kp.dtype)

    # Offset: mean of visible hips, else mean of visible shoulders.
    hip_w, sh_w = w[..., 2:], w[..., :2]
    hip_n = hip_w.sum(-1, keepdims=True)
    sh_n = sh_w.sum(-1, keepdims=True)
    hip_mean = (torso[..., 2:, :] * hip_w[..., None]).sum(-2) / jnp.maximum(hip_n, 1.0)
    sh_mean = (torso[..., :2, :] * sh_w[..., None]).sum(-2) / jnp.maximum(sh_n, 1.0)
    offset = jnp.where(hip_n > 0, hip_mean, sh_mean)  # (..., 2)

    # Scale: the largest squared distance over the visible torso pairs (sqrt once, safely).
    i, j = np.array(_TORSO_PAIRS).T
    diff = torso[..., i, :] - torso[..., j, :]  # (..., 6, 2)
    sq = jnp.sum(diff * diff, axis=-1)
    pair_ok = tvis[..., i] & tvis[..., j]
    max_sq = jnp.max(jnp.where(pair_ok, sq, 0.0), axis=-1)  # (...)
    size = _safe_sqrt(max_sq)
    valid = size > EPS
    scale = jnp.where(valid, 0.5 / jnp.where(valid, size, 1.0), 0.0)

    out = (kp - offset[..., None, :]) * scale[..., None, None]
    out = jnp.where(vis[..., None] & valid[..., None, None], out, 0.0)
    return out, valid


def normalize_3d(poses):
    """Normalise h36m17 3D poses (Pr-VIPE label normalisation).

    Subtract the pelvis; divide by |pelvis - spine| + |spine - thorax| (that length becomes 1).

    Args:
      poses: (..., 17, 3) h36m17 joints, any units. NumPy or JAX.
    Returns:
      normalized: (..., 17, 3) float; zeros where ``valid`` is False.
      valid: (...) bool: every joint finite and the pelvis-spine-thorax length above ``EPS``.
    Raises:
      PrposeError: wrong shape.
    """
    fn = "normalize_3d"
    p = _as_float(poses, "poses", fn)
    _check_shape(p, H36M17.num_joints, 3, "poses", fn, "h36m17")
    finite = jnp.all(jnp.isfinite(p), axis=(-2, -1))
    p = jnp.where(finite[..., None, None], p, 0.0)
    pelvis, spine, thorax = p[..., _PELVIS, :], p[..., _SPINE, :], p[..., _THORAX, :]
    d1, d2 = spine - pelvis, thorax - spine
    size = _safe_sqrt(jnp.sum(d1 * d1, -1)) + _safe_sqrt(jnp.sum(d2 * d2, -1))
    valid = finite & (size > EPS)
    inv = jnp.where(valid, 1.0 / jnp.where(valid, size, 1.0), 0.0)
    out = (p - pelvis[..., None, :]) * inv[..., None, None]
    return out, valid


# Jitted once per input shape, for host-side callers (views, evaluation): eager jnp dispatches dozens of small
# ops (~5 s for a few hundred views on a busy 2-core machine, against < 1 s to compile once).
jit_normalize_2d = jax.jit(normalize_2d, static_argnames=("profile",))
jit_normalize_3d = jax.jit(normalize_3d)
