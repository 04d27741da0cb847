"""Training-time augmentation: random camera views of the 3D pose and keypoint occlusion.

Everything here is pure JAX, jittable and vmappable, with the random key as an argument; the configuration
(:class:`AugmentConfig`, frozen and hashable) is a static argument under ``jax.jit``.

Camera augmentation (REFERENCE.md, "Training data and mining"; Sun et al. ECCV 2020, Sec. 3.4): the
normalised 3D pose is rotated by a random azimuth ~ U(-180°, 180°), elevation ~ U(-30°, 30°) and roll ~
U(-30°, 30°), placed at depth 2.0 in front of a pinhole camera, perspective-divided, and normalised in 2D
again. Each view of each example is independently the dataset's 2D keypoints or such a projection
(probability 0.5). The rotation is a proper one from :func:`prpose.camera.view_rotation` (det +1), so the
projection never mirrors the pose: the authors' first release did (issue #636: left became right), and
``tests/test_augment.py::test_projection_keeps_left_on_the_left`` pins that down.

Near-plane guard: the 3D normalisation makes pelvis->spine->thorax length 1, so an arm stretched toward the
camera can reach ~2.3 units from the pelvis, i.e. in front of (or behind) a camera 2.0 away, where the
perspective divide explodes. Rather than dropping such views, the camera backs away along its own optical
axis until every joint is at least ``min_joint_depth`` in front of it: still a genuine perspective view of
the same pose, from slightly farther. For ordinary poses (every joint within 2 - 0.1 units of the pelvis
along the optical axis) nothing changes.

Keypoint occlusion (Liu et al. IJCV 2022): random dropout (an example is chosen with ``dropout_p_apply``,
then each keypoint is hidden with ``dropout_p_drop``) and structured occlusion of our own design (the
authors never released theirs): with ``structured_probability`` an example gets one pattern, uniformly
among ``structured_patterns``:

  * ``"arm"``: one arm chain, shoulder-elbow-wrist or elbow-wrist, either side (body parts ``left_arm``,
    ``left_forearm``, ``right_arm``, ``right_forearm`` of ``prpose.keypoints.BODY_PARTS``, the occlusion
    vocabulary shared with the evaluation);
  * ``"leg"``: one leg chain, hip-knee-ankle or knee-ankle, either side (``left_leg``, ``left_lower_leg``, ...);
  * ``"side"``: a whole side (shoulder, elbow, wrist, hip, knee, ankle: ``left_side``, ``right_side``);
  * ``"lower_body"``: both hips, knees and ankles (``lower_body``);
  * ``"box"``: an axis-aligned rectangle in the image hiding every keypoint inside it (centre uniform in
    the pose's 2D bounding box, each side ``box_size_range`` times the bounding box's extent on that axis).

Every function works on keypoints of a model input profile (``profile``, a static argument, default
"input13"; ``ModelConfig.input_profile``): the projection picks the profile's joints from h36m17 by name and
the structured patterns name joints, so a profile without some pattern joint simply has fewer to hide.

Profile dropout (``profile_dropout``): an example loses one of the joints that only some detectors give (the
nose, which Stacked Hourglass lacks, or the head top, which COCO-style detectors lack; uniformly among those the
input profile has), so that one model (e.g. ``input14``) serves both kinds of detector.

Hidden keypoints are zeroed and the pose is re-normalised from its visible keypoints only
(``prpose.normalize.normalize_2d(keypoints, visible)``). Decision on over-occlusion: patterns are drawn
freely (the box or the lower body may hide hips or shoulders); when the masked normalisation is then
impossible (``normalize_2d`` reports the row invalid), :func:`occlude_keypoints` *reverts that example to
its un-occluded keypoints* (all visible) and reports it in ``reverted``. The batch keeps its size (mining
needs a fixed B), nothing is silently dropped, and the training step can count ``reverted`` in its logs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from prpose import keypoints as kp
from prpose.camera import project_normalized_pose, view_rotation
from prpose.errors import PrposeError
from prpose.normalize import normalize_2d

STRUCTURED_PATTERN_NAMES = ("arm", "leg", "side", "lower_body", "box")
# Joints that only some detectors give: COCO, BODY_25 and MediaPipe have a nose and no head top; Stacked
# Hourglass / MPII a head top and no nose. Profile dropout hides one of them (those the input profile has), so that
# one model (e.g. input14) serves both kinds of detector.
PROFILE_DROPOUT_JOINTS = ("nose", "head")


# Every variant of every structured pattern, as the body part (prpose.keypoints.BODY_PARTS, joints by name) it
# hides. A pattern's variants are equally likely. "box" has no fixed joints: it is computed from the keypoints'
# positions.
STRUCTURED_VARIANTS: dict[str, tuple[str | None, ...]] = {
    "arm": ("left_arm", "left_forearm", "right_arm", "right_forearm"),
    "leg": ("left_leg", "left_lower_leg", "right_leg", "right_lower_leg"),
    "side": ("left_side", "right_side"),
    "lower_body": ("lower_body",),
    "box": (None,),
}


def _check_range(name: str, value, lo_limit: float | None = None, hi_limit: float | None = None) -> tuple:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise PrposeError(f"AugmentConfig.{name}: expected a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise PrposeError(f"AugmentConfig.{name}: expected finite low <= high, got ({lo}, {hi})")
    if (lo_limit is not None and lo < lo_limit) or (hi_limit is not None and hi > hi_limit):
        raise PrposeError(f"AugmentConfig.{name}: ({lo}, {hi}) must lie within [{lo_limit}, {hi_limit}]")
    return (lo, hi)


def _check_probability(name: str, value) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise PrposeError(f"AugmentConfig.{name}: expected a probability in [0, 1], got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise PrposeError(f"AugmentConfig.{name}: expected a probability in [0, 1], got {p}")
    return p


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Camera augmentation and keypoint occlusion settings (angles in degrees).

    Defaults follow the papers: the ECCV camera augmentation, occlusion off (the IJCV dropout rates were not
    published with the code; turn them on with ``dropout_p_apply`` / ``structured_probability``).
    Lists (from JSON) are accepted for the range fields and converted to tuples, so the config stays
    hashable and can be a static argument of ``jax.jit``.
    """

    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    elevation_range: tuple[float, float] = (-30.0, 30.0)
    roll_range: tuple[float, float] = (-30.0, 30.0)
    depth: float = 2.0  # camera distance to the pelvis, in normalised 3D units (torso length 1)
    depth_max: float = 0.0  # > depth: the distance is drawn uniformly in [depth, depth_max] per view
    min_joint_depth: float = 0.1  # near-plane guard: the camera backs away until every joint is this far
    projection_probability: float = 0.5  # per view: projection of the 3D pose instead of the real 2D
    dropout_p_apply: float = 0.0  # random dropout: probability that an example is chosen
    dropout_p_drop: float = 0.3  # ... then probability that each of its keypoints is hidden
    structured_probability: float = 0.0  # probability that an example gets one structured pattern
    structured_patterns: tuple[str, ...] = STRUCTURED_PATTERN_NAMES
    box_size_range: tuple[float, float] = (0.2, 0.5)  # box side / pose bounding-box extent, per axis
    emit_visibility: bool = False  # whether the training step feeds the visibility mask to the model
    detector_noise_probability: float = 0.0  # per view: simulated detector errors (prpose.detector_noise)
    detector_noise_scale: float = 1.0  # multiplies the fitted error spreads (1 = as measured)
    detector_noise_model: str = ""  # a noise-model JSON; "" = the packaged Stacked Hourglass fit
    detection_probability: float = 0.0  # per view: the dataset's real detections (format v2) where it has them
    profile_dropout: float = 0.0  # per view: hide one joint that some detectors lack (nose or head top)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("azimuth_range", _check_range("azimuth_range", self.azimuth_range, -360.0, 360.0))
        set_("elevation_range", _check_range("elevation_range", self.elevation_range, -90.0, 90.0))
        set_("roll_range", _check_range("roll_range", self.roll_range, -180.0, 180.0))
        set_("box_size_range", _check_range("box_size_range", self.box_size_range, 0.0, None))
        if self.box_size_range[1] <= 0.0:
            raise PrposeError(f"AugmentConfig.box_size_range: expected a positive size, got {self.box_size_range}")
        for name in ("projection_probability", "dropout_p_apply", "dropout_p_drop", "structured_probability",
                     "detector_noise_probability", "detection_probability", "profile_dropout"):
            set_(name, _check_probability(name, getattr(self, name)))
        if not (isinstance(self.depth, (int, float)) and math.isfinite(self.depth) and self.depth > 0):
            raise PrposeError(f"AugmentConfig.depth: expected a positive camera distance, got {self.depth!r}")
        if not (isinstance(self.min_joint_depth, (int, float)) and 0 < self.min_joint_depth <= self.depth):
            raise PrposeError(
                f"AugmentConfig.min_joint_depth: expected a value in (0, depth={self.depth}], "
                f"got {self.min_joint_depth!r}"
            )
        if not (isinstance(self.depth_max, (int, float)) and (self.depth_max == 0 or self.depth_max >= self.depth)):
            raise PrposeError(f"AugmentConfig.depth_max: expected 0 (fixed depth) or a distance >= depth="
                              f"{self.depth}, got {self.depth_max!r}")
        if not (isinstance(self.detector_noise_scale, (int, float)) and 0 <= self.detector_noise_scale < 100):
            raise PrposeError(f"AugmentConfig.detector_noise_scale: expected a number in [0, 100), "
                              f"got {self.detector_noise_scale!r}")
        patterns = self.structured_patterns
        if isinstance(patterns, str):
            patterns = (patterns,)
        patterns = tuple(patterns)
        unknown = [p for p in patterns if p not in STRUCTURED_VARIANTS]
        if unknown or not patterns or len(set(patterns)) != len(patterns):
            raise PrposeError(
                f"AugmentConfig.structured_patterns: got {patterns!r}; expected a non-empty list without "
                f"repeats of {', '.join(STRUCTURED_PATTERN_NAMES)}"
            )
        set_("structured_patterns", patterns)
        set_("depth", float(self.depth))
        set_("min_joint_depth", float(self.min_joint_depth))
        set_("depth_max", float(self.depth_max))
        set_("detector_noise_scale", float(self.detector_noise_scale))
        set_("emit_visibility", bool(self.emit_visibility))

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PrposeError(f"AugmentConfig: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------------
# Input checks (static shapes: they run at trace time, so jit users get the same clear errors).


def _check_shape(name: str, array, trailing: tuple[int, ...], batch: int | None = None):
    shape = tuple(np.shape(array))
    if len(shape) != len(trailing) + 1 or shape[1:] != trailing:
        expected = "(B, " + ", ".join(str(t) for t in trailing) + ")"
        raise PrposeError(f"augment: {name} has shape {shape}, expected {expected}")
    if batch is not None and shape[0] != batch:
        raise PrposeError(f"augment: {name} has batch size {shape[0]}, expected {batch} (as the other inputs)")


def _num_joints(profile) -> int:
    return kp.get_profile(profile).num_joints


def _check_config(config) -> AugmentConfig:
    if not isinstance(config, AugmentConfig):
        raise PrposeError(f"augment: config must be an AugmentConfig, got {type(config).__name__}")
    return config


_H36M17 = kp.get_profile("h36m17")


# ----------------------------------------------------------------------------------------------------
# Camera augmentation.


def _angles_from_uniform(u, config: AugmentConfig):
    """Map uniforms in [0, 1) (B, 3) to (azimuth, elevation, roll) radians within the configured ranges."""
    ranges = (config.azimuth_range, config.elevation_range, config.roll_range)
    return tuple(np.deg2rad(lo) + u[:, i] * np.deg2rad(hi - lo) for i, (lo, hi) in enumerate(ranges))


def depth_from_uniform(u, config: AugmentConfig):
    """Camera distances (B,) from uniforms u (B,) in [0, 1): ``depth``, or uniform in [depth, depth_max]."""
    if config.depth_max > config.depth:
        return config.depth + u * (config.depth_max - config.depth)
    return jnp.full(jnp.shape(u), config.depth, jnp.float32)


def sample_view_angles(key, batch: int, config: AugmentConfig):
    """Random camera angles, each uniform in its configured range.

    Returns:
      (azimuth (B,), elevation (B,), roll (B,)) in RADIANS, float32.
    """
    config = _check_config(config)
    # One draw for all random numbers of a call: each jax.random call adds a threefry block to the
    # compiled program, and compile time (not run time) dominates for these small functions.
    return _angles_from_uniform(jax.random.uniform(key, (batch, 3), jnp.float32), config)


def random_view_rotations(key, batch: int, config: AugmentConfig):
    """World->camera rotations of random virtual cameras looking at the origin, (B, 3, 3).

    Uses :func:`prpose.camera.view_rotation` on :func:`sample_view_angles` (same key, same angles).
    """
    return view_rotation(*sample_view_angles(key, batch, config))


def project_views(poses3d, rotations, config: AugmentConfig, profile: str = "input13", depth=None):
    """Project normalised 3D poses through given virtual cameras and normalise in 2D.

    Args:
      poses3d: (B, 17, 3) h36m17 poses, normalised (pelvis at the origin, torso length 1).
      rotations: (B, 3, 3) world->camera rotations (proper: det +1).
      config: uses ``depth`` and ``min_joint_depth``.
      profile: the output keypoint profile (h36m17 must hold its joints).
      depth: optional (B,) camera distances (default: ``config.depth`` for all).
    Returns:
      keypoints: (B, J, 2) in ``profile``, normalised with ``normalize_2d``.
      valid: (B,) bool, False where the 2D normalisation failed (rows are zeros there).
    """
    config = _check_config(config)
    _check_shape("poses3d", poses3d, (17, 3))
    _check_shape("rotations", rotations, (3, 3), batch=np.shape(poses3d)[0])
    pick = kp.conversion_indices(_H36M17, profile)
    poses = jnp.asarray(poses3d, jnp.float32)[:, pick, :]  # by joint name: (B, J, 3)
    rotations = jnp.asarray(rotations, jnp.float32)
    # Row 2 of a world->camera rotation is the optical axis in world coordinates: a joint's depth in front
    # of the camera is its projection on that axis plus the camera distance.
    axis = rotations[:, 2, :]  # (B, 3)
    depth = jnp.full(poses.shape[:1], config.depth, jnp.float32) if depth is None else jnp.asarray(depth, jnp.float32)
    nearest = jnp.min(jnp.einsum("bjd,bd->bj", poses, axis), axis=-1) + depth  # (B,)
    backoff = jnp.maximum(config.min_joint_depth - nearest, 0.0)
    # Moving the pose along the optical axis is the same as moving the camera back: a genuine view.
    poses = poses + backoff[:, None, None] * axis[:, None, :]
    image = project_normalized_pose(poses, rotations, depth[:, None])
    return normalize_2d(image, profile=profile)


def project_random_views(poses3d_h36m17, key, config: AugmentConfig, profile: str = "input13"):
    """Camera augmentation of every example: a random view of each 3D pose, normalised in 2D.

    Args:
      poses3d_h36m17: (B, 17, 3) normalised h36m17 poses.
      key: a jax PRNG key.
      config: angle ranges, depth, near-plane guard.
      profile: the output keypoint profile.
    Returns:
      (B, J, 2) keypoints of ``profile``, normalised. A row whose projection cannot be normalised (degenerate
      3D pose) is zeros; use :func:`camera_augment` to fall back to the real keypoints there.
    """
    _check_shape("poses3d_h36m17", poses3d_h36m17, (17, 3))
    config = _check_config(config)
    u = jax.random.uniform(key, (np.shape(poses3d_h36m17)[0], 4), jnp.float32)  # 3 angles, then the depth
    rotations = view_rotation(*_angles_from_uniform(u[:, :3], config))
    keypoints, _ = project_views(poses3d_h36m17, rotations, config, profile, depth_from_uniform(u[:, 3], config))
    return keypoints


def camera_augment(real_2d, poses3d, key, config: AugmentConfig, profile: str = "input13", with_choice: bool = False):
    """Per example, the real 2D keypoints or (with ``projection_probability``) a random view of the 3D pose.

    Call it once per view (anchor, positive) with different keys: each gets its own choice and camera.
    Where the projection cannot be normalised the real keypoints are kept.

    Args:
      real_2d: (B, J, 2) the dataset's keypoints in ``profile``, normalised.
      poses3d: (B, 17, 3) normalised h36m17 poses of the same examples.
      key: a jax PRNG key.
      profile: the keypoint profile of ``real_2d`` and of the output.
      with_choice: also return which examples were replaced by a projection.
    Returns:
      (B, J, 2) normalised keypoints of ``profile`` (and, with ``with_choice``, projected (B,) bool).
    """
    config = _check_config(config)
    _check_shape("real_2d", real_2d, (_num_joints(profile), 2))
    _check_shape("poses3d", poses3d, (17, 3), batch=np.shape(real_2d)[0])
    batch = np.shape(real_2d)[0]
    real_2d = jnp.asarray(real_2d, jnp.float32)
    u = jax.random.uniform(key, (batch, 5), jnp.float32)  # 3 angles, the real/projected choice, the depth
    rotations = view_rotation(*_angles_from_uniform(u[:, :3], config))
    projected, valid = project_views(poses3d, rotations, config, profile, depth_from_uniform(u[:, 4], config))
    use = (u[:, 3] < config.projection_probability) & valid
    out = jnp.where(use[:, None, None], projected, real_2d)
    return (out, use) if with_choice else out


# ----------------------------------------------------------------------------------------------------
# Detector errors.


@functools.lru_cache(maxsize=8)
def _noise_arrays(path: str, scale: float, profile: str):
    from prpose import detector_noise as dn

    return dn.noise_arrays(dn.load_noise_model(path or None).scaled(scale), profile)


def detector_noise(keypoints, key, config: AugmentConfig, profile: str = "input13", exclude=None):
    """Per example, with ``detector_noise_probability``: the keypoints as a detector would report them.

    The error model is :mod:`prpose.detector_noise` (fitted to Stacked Hourglass on Human3.6M's training
    subjects; ``detector_noise_model`` names another JSON), its spreads multiplied by ``detector_noise_scale``;
    the same model corrupts the robustness benchmark's queries (``corrupt_np``). Errors scale with each view's
    own torso; the corrupted views are normalised again.

    Args:
      keypoints: (B, J, 2) normalised keypoints of ``profile`` (e.g. from :func:`camera_augment`).
      key: a jax PRNG key.
      exclude: optional (B,) bool, views never corrupted (real detections already carry a detector's errors).
    Returns:
      (B, J, 2): corrupted views normalised (``normalize_2d``); views not chosen, excluded, or whose corrupted torso
      cannot be normalised, are the input unchanged.
    """
    from prpose import detector_noise as dn

    config = _check_config(config)
    num_joints = kp.get_profile(profile).num_joints
    _check_shape("keypoints", keypoints, (num_joints, 2))
    keypoints = jnp.asarray(keypoints, jnp.float32)
    arrays = _noise_arrays(config.detector_noise_model, config.detector_noise_scale, profile)
    k_pick, k_noise = jax.random.split(key)
    noisy = dn.corrupt_jax(keypoints, k_noise, arrays)
    pick = jax.random.uniform(k_pick, keypoints.shape[:1]) < config.detector_noise_probability
    if exclude is not None:
        pick = pick & ~jnp.asarray(exclude, bool)
    normalized, valid = normalize_2d(noisy, profile=profile)
    return jnp.where((pick & valid)[:, None, None], normalized, keypoints)


# ----------------------------------------------------------------------------------------------------
# Keypoint occlusion.


def random_keypoint_dropout(key, batch: int, num_joints: int = 13, p_apply: float = 0.0, p_drop: float = 0.3):
    """IJCV keypoint dropout: choose each example with ``p_apply``, then hide each keypoint with ``p_drop``.

    Returns:
      visible: (B, J) bool. The expected hidden fraction is ``p_apply * p_drop``.
    """
    for name, p in (("p_apply", p_apply), ("p_drop", p_drop)):
        if isinstance(p, (int, float)) and not 0.0 <= p <= 1.0:
            raise PrposeError(f"random_keypoint_dropout: {name} must be a probability in [0, 1], got {p}")
    return _random_dropout_from_uniform(jax.random.uniform(key, (batch, 1 + num_joints)), p_apply, p_drop)


def _random_dropout_from_uniform(u, p_apply, p_drop):
    """u: (B, 1 + J) uniforms -> visible (B, J)."""
    return ~((u[:, :1] < p_apply) & (u[:, 1:] < p_drop))


def box_occlusion(keypoints, lower, upper):
    """Keypoints hidden by an axis-aligned box: (B, J) bool, True inside the closed box ``[lower, upper]``.

    Args:
      keypoints: (B, J, 2); lower, upper: (B, 2) box corners in the same frame.
    """
    keypoints, lower, upper = jnp.asarray(keypoints), jnp.asarray(lower), jnp.asarray(upper)
    inside = (keypoints >= lower[:, None, :]) & (keypoints <= upper[:, None, :])
    return jnp.all(inside, axis=-1)


def _variant_table(patterns: tuple[str, ...], profile: str = "input13"):
    """(V, J) bool table of hidden joints for every variant, plus each pattern's first row and row count.

    Joints are found by name; a pattern joint that ``profile`` lacks is skipped (nothing there to hide)."""
    prof = kp.get_profile(profile)
    rows, starts, counts = [], [], []
    for name in patterns:
        starts.append(len(rows))
        counts.append(len(STRUCTURED_VARIANTS[name]))
        for part in STRUCTURED_VARIANTS[name]:
            rows.append(np.zeros(prof.num_joints, bool) if part is None else kp.body_part_mask(part, prof))
    return np.stack(rows), np.array(starts, np.int32), np.array(counts, np.int32)


def structured_keypoint_dropout(key, keypoints, config: AugmentConfig, visible=None, profile: str = "input13"):
    """Structured occlusion: with ``structured_probability`` an example gets one pattern (module docstring).

    Args:
      key: a jax PRNG key.
      keypoints: (B, J, 2) keypoints of ``profile`` (any 2D frame; only the box pattern looks at positions).
      config: ``structured_probability``, ``structured_patterns``, ``box_size_range``.
      visible: optional (B, J) bool; the box is placed within the bounding box of these keypoints.
      profile: the keypoints' profile (patterns name joints).
    Returns:
      visible: (B, J) bool, False for the keypoints the pattern hides (and where ``visible`` was False).
    """
    config = _check_config(config)
    num_joints = _num_joints(profile)
    _check_shape("keypoints", keypoints, (num_joints, 2))
    batch = np.shape(keypoints)[0]
    if visible is not None:
        _check_shape("visible", visible, (num_joints,), batch=batch)
    u = jax.random.uniform(key, (batch, _STRUCTURED_UNIFORMS))
    return _structured_from_uniform(u, jnp.asarray(keypoints, jnp.float32), config, visible, profile)


_STRUCTURED_UNIFORMS = 7  # apply, pattern, variant, box centre (2), box size (2)


def _structured_from_uniform(u, keypoints, config: AugmentConfig, visible, profile: str):
    batch, num_joints = keypoints.shape[:2]
    prior = jnp.ones((batch, num_joints), bool) if visible is None else jnp.asarray(visible, bool)
    table, starts, counts = _variant_table(config.structured_patterns, profile)
    num_patterns = len(config.structured_patterns)
    apply = u[:, 0] < config.structured_probability
    pattern = jnp.minimum((u[:, 1] * num_patterns).astype(jnp.int32), num_patterns - 1)
    count = jnp.asarray(counts)[pattern]
    variant = jnp.minimum((u[:, 2] * count).astype(jnp.int32), count - 1)
    hidden = jnp.asarray(table)[jnp.asarray(starts)[pattern] + variant]  # (B, J)

    if "box" in config.structured_patterns:
        # Box within the bounding box of the (previously) visible keypoints; an example with none visible
        # gets an empty box (nothing more to hide).
        big = jnp.float32(1e9)
        lo = jnp.min(jnp.where(prior[..., None], keypoints, big), axis=1)  # (B, 2)
        hi = jnp.max(jnp.where(prior[..., None], keypoints, -big), axis=1)
        any_visible = jnp.any(prior, axis=1)
        lo, hi = jnp.where(any_visible[:, None], lo, 0.0), jnp.where(any_visible[:, None], hi, 0.0)
        extent = hi - lo
        centre = lo + u[:, 3:5] * extent
        size_lo, size_hi = config.box_size_range
        half = 0.5 * extent * (size_lo + u[:, 5:7] * (size_hi - size_lo))
        in_box = box_occlusion(keypoints, centre - half, centre + half) & any_visible[:, None]
        is_box = pattern == config.structured_patterns.index("box")
        hidden = jnp.where(is_box[:, None], in_box, hidden)

    return prior & ~(apply[:, None] & hidden)


def apply_visibility(keypoints, visible, profile: str = "input13"):
    """Re-normalise from the visible keypoints only and zero the hidden ones.

    Args:
      keypoints: (B, J, 2) keypoints of ``profile`` (normalised or not: normalisation is redone).
      visible: (B, J) bool.
      profile: the keypoints' profile.
    Returns:
      keypoints: (B, J, 2) normalised from visible keypoints; hidden ones (and invalid rows) are 0.
      valid: (B,) bool, False where the visible keypoints cannot be normalised (see ``normalize_2d``).
    """
    num_joints = _num_joints(profile)
    _check_shape("keypoints", keypoints, (num_joints, 2))
    _check_shape("visible", visible, (num_joints,), batch=np.shape(keypoints)[0])
    visible = jnp.asarray(visible, bool)
    normalized, valid = normalize_2d(jnp.asarray(keypoints, jnp.float32), visible, profile)
    # normalize_2d documents the zeroing; doing it here too keeps the model input exact whatever it does.
    normalized = jnp.where(visible[..., None] & valid[:, None, None], normalized, 0.0)
    return normalized, valid


def visibility_to_h36m17(visible, profile: str = "input13"):
    """Map visibility (B, J) of ``profile`` to h36m17 joints (B, 17) for visible-joints-only NP-MPJPE in mining.

    Shared joints map by name; pelvis is visible when both hips are, thorax when both shoulders are, spine
    when pelvis and thorax are (it lies between them); a head (or nose) the profile lacks follows the nose
    (or head) it has, and is hidden when it has neither.
    """
    prof = kp.get_profile(profile)
    visible = jnp.asarray(visible, bool)
    out = {name: visible[..., prof.index(name)] for name in prof.joints if name in _H36M17.joints}
    out["pelvis"] = out["left_hip"] & out["right_hip"]
    out["thorax"] = out["left_shoulder"] & out["right_shoulder"]
    out["spine"] = out["pelvis"] & out["thorax"]
    hidden = jnp.zeros(visible.shape[:-1], bool)
    out.setdefault("head", out.get("nose", hidden))
    out.setdefault("nose", out["head"])
    return jnp.stack([out.get(name, hidden) for name in _H36M17.joints], axis=-1)


class Occlusion(NamedTuple):
    """Result of :func:`occlude_keypoints` (a pytree: fine as a jit output)."""

    keypoints: jax.Array  # (B, J, 2) normalised from visible keypoints, hidden ones zero
    visible: jax.Array  # (B, J) bool
    visible3d: jax.Array  # (B, 17) bool, h36m17 joints (visibility_to_h36m17)
    # (B,) bool: examples whose occlusion made normalisation impossible (fewer than two visible torso joints),
    # left whole; also True where the input row itself was degenerate (e.g. all zeros).
    reverted: jax.Array


def occlude_keypoints(keypoints, key, config: AugmentConfig, profile: str = "input13", visible=None) -> Occlusion:
    """Random + structured occlusion of a batch, re-normalised; over-occluded examples are left whole.

    Args:
      keypoints: (B, J, 2) normalised keypoints of ``profile`` (e.g. from :func:`camera_augment`).
      key: a jax PRNG key.
      config: dropout and structured-occlusion settings.
      profile: the keypoints' profile.
      visible: optional (B, J) bool, joints already missing before the occlusion (real detections); default all.
    Returns:
      :class:`Occlusion`. Rows in ``reverted`` carry the input keypoints unchanged and the prior visibility.
    """
    config = _check_config(config)
    num_joints = _num_joints(profile)
    _check_shape("keypoints", keypoints, (num_joints, 2))
    batch = np.shape(keypoints)[0]
    keypoints = jnp.asarray(keypoints, jnp.float32)
    prior = jnp.ones((batch, num_joints), bool) if visible is None else jnp.asarray(visible, bool)
    _check_shape("visible", prior, (num_joints,), batch=batch)
    face = [i for i, name in enumerate(kp.get_profile(profile).joints) if name in PROFILE_DROPOUT_JOINTS]
    extra = 2 if config.profile_dropout > 0 and face else 0
    n = 1 + num_joints + _STRUCTURED_UNIFORMS
    u = jax.random.uniform(key, (batch, n + extra))  # one draw (see sample_view_angles)
    visible = prior & _random_dropout_from_uniform(u[:, :1 + num_joints], config.dropout_p_apply, config.dropout_p_drop)
    visible = _structured_from_uniform(u[:, 1 + num_joints:n], keypoints, config, visible, profile)
    if extra:  # profile dropout: one of the detector-specific joints, uniformly among those the profile has
        which = jnp.asarray(face)[jnp.minimum((u[:, n + 1] * len(face)).astype(jnp.int32), len(face) - 1)]
        hide = (u[:, n] < config.profile_dropout)[:, None] & (jnp.arange(num_joints) == which[:, None])
        visible = visible & ~hide
    occluded, valid = apply_visibility(keypoints, visible, profile)
    visible = jnp.where(valid[:, None], visible, prior)
    occluded = jnp.where(valid[:, None, None], occluded, keypoints)
    return Occlusion(occluded, visible, visibility_to_h36m17(visible, profile), ~valid)
