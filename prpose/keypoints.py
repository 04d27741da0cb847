"""Named keypoint profiles and conversion between them by joint name.

A profile is an ordered list of joint names plus the skeleton's edges and its left/right pairs.
Arrays of keypoints are laid out as ``(..., J, D)`` with ``J`` the profile's joint count and ``D`` 2 or 3.

Profiles (the table :data:`PROFILES`):
  * ``input13``: the paper's model input (REFERENCE.md): nose, shoulders, elbows, wrists, hips, knees, ankles.
  * ``input14``: ``input13`` plus ``head`` (the top of the head): the union of what detectors with a nose
    (COCO, BODY_25, MediaPipe) and with a head top (Stacked Hourglass / MPII) give, so that one model serves
    both; the joints a detector lacks are fed to the model as missing (zero + visibility mask).
  * ``coco17``: what most 2D detectors emit (COCO keypoint order).
  * ``body25``: OpenPose BODY_25 (``pose_keypoints_2d`` order).
  * ``mediapipe33``: MediaPipe Pose's 33 landmarks (BlazePose order).
  * ``h36m17``: the 17 Human3.6M joints used as 3D labels (indices 0,1,2,3,6,7,8,12,13,14,15,17,18,19,25,26,27
    of the raw 32). Its ``head`` is the top of the head.
  * ``h36m32``: the raw Human3.6M layout.
  * ``mpii16``: MPII's 16 joints in MPII's order (the Stacked Hourglass detections shipped with
    3d-pose-baseline); "head" is the top of the head; no nose and no spine (see the table's comment).

Joint names are the contract: every conversion goes by name, so a joint means the same body point in every
profile (``left_*`` is the subject's left; ``head`` is the top of the head, not its centre). Adding a detector
is one :class:`KeypointProfile` in the table (or :func:`register_profile` at run time): readers, inference,
normalisation and plotting then handle it by name.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from prpose.errors import PrposeError


@dataclasses.dataclass(frozen=True)
class KeypointProfile:
    """An ordered set of named joints with skeleton edges and left/right pairs."""

    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if len(set(self.joints)) != len(self.joints):
            raise ValueError(f"profile {self.name!r} has duplicate joint names")
        for a, b in self.edges:
            if a not in self.joints or b not in self.joints:
                raise ValueError(f"profile {self.name!r}: edge ({a}, {b}) names an unknown joint")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        """Index of ``joint`` in this profile; KeyError naming the profile if absent."""
        try:
            return self.joints.index(joint)
        except ValueError:
            raise KeyError(f"profile {self.name!r} has no joint {joint!r}") from None

    @property
    def edge_indices(self) -> tuple[tuple[int, int], ...]:
        return tuple((self.index(a), self.index(b)) for a, b in self.edges)

    @property
    def left_right_pairs(self) -> tuple[tuple[int, int], ...]:
        """(left index, right index) for every joint named ``left_*`` with a ``right_*`` twin."""
        pairs = []
        for i, name in enumerate(self.joints):
            if name.startswith("left_"):
                twin = "right_" + name[len("left_"):]
                if twin in self.joints:
                    pairs.append((i, self.joints.index(twin)))
        return tuple(pairs)

    @property
    def flip_permutation(self) -> np.ndarray:
        """Permutation that swaps every left joint with its right twin, shape (J,)."""
        perm = np.arange(self.num_joints)
        for left, right in self.left_right_pairs:
            perm[left], perm[right] = right, left
        return perm


def _limbs(*chains: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((a, b) for chain in chains for a, b in zip(chain[:-1], chain[1:]))


INPUT13 = KeypointProfile(
    name="input13",
    joints=(
        "nose",
        "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow",
        "left_wrist", "right_wrist",
        "left_hip", "right_hip",
        "left_knee", "right_knee",
        "left_ankle", "right_ankle",
    ),
    edges=_limbs(
        ("left_wrist", "left_elbow", "left_shoulder", "right_shoulder", "right_elbow", "right_wrist"),
        ("left_ankle", "left_knee", "left_hip", "right_hip", "right_knee", "right_ankle"),
        ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"),
        ("nose", "left_shoulder"),
        ("nose", "right_shoulder"),
    ),
)

INPUT14 = KeypointProfile(
    name="input14",
    joints=INPUT13.joints + ("head",),
    edges=INPUT13.edges + (("nose", "head"),),
)

COCO17 = KeypointProfile(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow",
        "left_wrist", "right_wrist",
        "left_hip", "right_hip",
        "left_knee", "right_knee",
        "left_ankle", "right_ankle",
    ),
    edges=_limbs(
        ("left_ear", "left_eye", "nose", "right_eye", "right_ear"),
        ("left_wrist", "left_elbow", "left_shoulder", "right_shoulder", "right_elbow", "right_wrist"),
        ("left_ankle", "left_knee", "left_hip", "right_hip", "right_knee", "right_ankle"),
        ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"),
    ),
)

BODY25 = KeypointProfile(
    name="body25",
    joints=(
        "nose", "neck",
        "right_shoulder", "right_elbow", "right_wrist",
        "left_shoulder", "left_elbow", "left_wrist",
        "mid_hip",
        "right_hip", "right_knee", "right_ankle",
        "left_hip", "left_knee", "left_ankle",
        "right_eye", "left_eye", "right_ear", "left_ear",
        "left_big_toe", "left_small_toe", "left_heel",
        "right_big_toe", "right_small_toe", "right_heel",
    ),
    edges=_limbs(
        ("left_ear", "left_eye", "nose", "right_eye", "right_ear"),
        ("nose", "neck", "mid_hip"),
        ("neck", "left_shoulder", "left_elbow", "left_wrist"),
        ("neck", "right_shoulder", "right_elbow", "right_wrist"),
        ("mid_hip", "left_hip", "left_knee", "left_ankle", "left_heel"),
        ("mid_hip", "right_hip", "right_knee", "right_ankle", "right_heel"),
        ("left_ankle", "left_big_toe", "left_small_toe"),
        ("right_ankle", "right_big_toe", "right_small_toe"),
    ),
)

# MediaPipe Pose (BlazePose) landmarks; "left" is the subject's left, as in COCO.
MEDIAPIPE33 = KeypointProfile(
    name="mediapipe33",
    joints=(
        "nose",
        "left_eye_inner", "left_eye", "left_eye_outer",
        "right_eye_inner", "right_eye", "right_eye_outer",
        "left_ear", "right_ear", "left_mouth", "right_mouth",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
        "left_heel", "right_heel", "left_foot_index", "right_foot_index",
    ),
    edges=_limbs(
        ("left_ear", "left_eye_outer", "left_eye", "left_eye_inner", "nose",
         "right_eye_inner", "right_eye", "right_eye_outer", "right_ear"),
        ("left_mouth", "right_mouth"),
        ("left_wrist", "left_elbow", "left_shoulder", "right_shoulder", "right_elbow", "right_wrist"),
        ("left_wrist", "left_pinky", "left_index", "left_wrist", "left_thumb"),
        ("right_wrist", "right_pinky", "right_index", "right_wrist", "right_thumb"),
        ("left_shoulder", "left_hip", "right_hip", "right_shoulder"),
        ("left_hip", "left_knee", "left_ankle", "left_heel", "left_foot_index", "left_ankle"),
        ("right_hip", "right_knee", "right_ankle", "right_heel", "right_foot_index", "right_ankle"),
    ),
)

H36M17 = KeypointProfile(
    name="h36m17",
    joints=(
        "pelvis",
        "right_hip", "right_knee", "right_ankle",
        "left_hip", "left_knee", "left_ankle",
        "spine", "thorax", "nose", "head",
        "left_shoulder", "left_elbow", "left_wrist",
        "right_shoulder", "right_elbow", "right_wrist",
    ),
    edges=_limbs(
        ("pelvis", "spine", "thorax", "nose", "head"),
        ("pelvis", "right_hip", "right_knee", "right_ankle"),
        ("pelvis", "left_hip", "left_knee", "left_ankle"),
        ("thorax", "left_shoulder", "left_elbow", "left_wrist"),
        ("thorax", "right_shoulder", "right_elbow", "right_wrist"),
    ),
)

# Raw Human3.6M joint order (32 joints). Names of joints that duplicate another's position
# (the raw data repeats some) carry a suffix so that every name is unique.
H36M32 = KeypointProfile(
    name="h36m32",
    joints=(
        "pelvis", "right_hip", "right_knee", "right_ankle", "right_foot", "right_toe",
        "left_hip", "left_knee", "left_ankle", "left_foot", "left_toe",
        "pelvis_dup", "spine", "thorax", "nose", "head",
        "thorax_dup", "left_shoulder", "left_elbow", "left_wrist", "left_wrist_dup",
        "left_thumb", "left_hand_tip", "left_hand_dup",
        "thorax_dup2", "right_shoulder", "right_elbow", "right_wrist", "right_wrist_dup",
        "right_thumb", "right_hand_tip", "right_hand_dup",
    ),
    edges=_limbs(
        ("pelvis", "spine", "thorax", "nose", "head"),
        ("pelvis", "right_hip", "right_knee", "right_ankle", "right_foot", "right_toe"),
        ("pelvis", "left_hip", "left_knee", "left_ankle", "left_foot", "left_toe"),
        ("thorax", "left_shoulder", "left_elbow", "left_wrist"),
        ("thorax", "right_shoulder", "right_elbow", "right_wrist"),
    ),
)

# Stacked Hourglass as shipped with 3d-pose-baseline: MPII's 16 joints in MPII's order, which 3d-pose-baseline
# labels RFoot, RKnee, RHip, LHip, LKnee, LFoot, Hip, Spine, Thorax, Head, RWrist, RElbow, RShoulder, LShoulder,
# LElbow, LWrist. Measured on real S9/S11 against the projected h36m17 joints (bench/check_h36m.py, median px):
# slot 7 ("Spine") is MPII's thorax, 9.5 px from h36m17's thorax but 46 px from its spine (it sits 15% of the
# way from the thorax down to the spine); slot 8 ("Thorax") is MPII's upper neck (7.7 px from the thorax, a
# little above it); slot 9 ("Head") is the top of the head, 23 px above h36m17's "head" and the nearest joint
# to it. So by name: thorax <- slot 7, head <- slot 9; upper_neck has no h36m17 twin, and h36m17's spine and
# nose are absent. Limbs ("Foot" = ankle): 6-17 px.
MPII16 = KeypointProfile(
    name="mpii16",
    joints=(
        "right_ankle", "right_knee", "right_hip",
        "left_hip", "left_knee", "left_ankle",
        "pelvis", "thorax", "upper_neck", "head",
        "right_wrist", "right_elbow", "right_shoulder",
        "left_shoulder", "left_elbow", "left_wrist",
    ),
    edges=_limbs(
        ("pelvis", "thorax", "upper_neck", "head"),
        ("pelvis", "right_hip", "right_knee", "right_ankle"),
        ("pelvis", "left_hip", "left_knee", "left_ankle"),
        ("thorax", "left_shoulder", "left_elbow", "left_wrist"),
        ("thorax", "right_shoulder", "right_elbow", "right_wrist"),
    ),
)

# The 17 of the raw 32 kept as 3D labels (REFERENCE.md).
H36M32_TO_H36M17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# The table. Detector profiles and model input profiles live side by side; a model input profile must hold the
# four torso joints that define the 2D normalisation (prpose.normalize.TORSO_JOINTS).
PROFILES: dict[str, KeypointProfile] = {
    p.name: p for p in (INPUT13, INPUT14, COCO17, BODY25, MEDIAPIPE33, H36M17, H36M32, MPII16)
}


def _side(side: str, *parts: str) -> tuple[str, ...]:
    return tuple(f"{side}_{p}" for p in parts)


# Named body parts by joint name (profile-independent): the one occlusion vocabulary. Training's structured
# occlusion patterns (prpose.augment: "arm" = one of left_arm, left_forearm, right_arm, right_forearm, ...) and the
# evaluation's occluded queries (prpose.eval.occlusion, `prpose eval --patterns`) hide these joint sets.
BODY_PARTS: dict[str, tuple[str, ...]] = {
    "left_arm": _side("left", "shoulder", "elbow", "wrist"),
    "left_forearm": _side("left", "elbow", "wrist"),
    "right_arm": _side("right", "shoulder", "elbow", "wrist"),
    "right_forearm": _side("right", "elbow", "wrist"),
    "left_leg": _side("left", "hip", "knee", "ankle"),
    "left_lower_leg": _side("left", "knee", "ankle"),
    "right_leg": _side("right", "hip", "knee", "ankle"),
    "right_lower_leg": _side("right", "knee", "ankle"),
    "left_side": _side("left", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"),
    "right_side": _side("right", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"),
    "lower_body": ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    "lower_legs": ("left_knee", "right_knee", "left_ankle", "right_ankle"),
    "forearms": ("left_elbow", "right_elbow", "left_wrist", "right_wrist"),
}


def body_part_mask(part: str, profile: str | KeypointProfile) -> np.ndarray:
    """(J,) bool over ``profile``'s joints: True at the joints of :data:`BODY_PARTS` ``[part]`` that the profile
    has (a part joint it lacks is skipped: nothing there to hide)."""
    if part not in BODY_PARTS:
        raise PrposeError(f"body part {part!r} unknown; known: {', '.join(BODY_PARTS)}")
    prof = get_profile(profile)
    mask = np.zeros(prof.num_joints, bool)
    mask[[prof.index(j) for j in BODY_PARTS[part] if j in prof.joints]] = True
    return mask


def register_profile(profile: KeypointProfile, *, replace: bool = False) -> KeypointProfile:
    """Add a profile to :data:`PROFILES` at run time (a detector of your own); returns it.

    Raises PrposeError when the name is taken (unless ``replace``) or ``profile`` is not a KeypointProfile.
    """
    if not isinstance(profile, KeypointProfile):
        raise PrposeError(f"register_profile: expected a KeypointProfile, got {type(profile).__name__}")
    if profile.name in PROFILES and not replace and PROFILES[profile.name] != profile:
        raise PrposeError(f"register_profile: a different profile named {profile.name!r} is already registered")
    PROFILES[profile.name] = profile
    return profile


def get_profile(profile: str | KeypointProfile) -> KeypointProfile:
    """Look a profile up by name (a profile passes through unchanged)."""
    if isinstance(profile, KeypointProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise PrposeError(
            f"unknown keypoint profile {profile!r}; known profiles: {', '.join(sorted(PROFILES))}"
        ) from None


def conversion_indices(source: str | KeypointProfile, target: str | KeypointProfile) -> np.ndarray:
    """Indices into ``source`` joints that produce ``target`` joints, shape (J_target,).

    Raises ValueError naming every target joint that ``source`` lacks.
    """
    src, dst = get_profile(source), get_profile(target)
    missing = [j for j in dst.joints if j not in src.joints]
    if missing:
        raise PrposeError(
            f"cannot convert keypoints from {src.name!r} to {dst.name!r}: "
            f"{src.name!r} lacks joint(s) {', '.join(missing)}"
        )
    return np.array([src.joints.index(j) for j in dst.joints], dtype=np.int64)


def missing_joints(source: str | KeypointProfile, target: str | KeypointProfile) -> tuple[str, ...]:
    """Joints of ``target`` that ``source`` lacks, in ``target`` order (empty when ``source`` covers it)."""
    src, dst = get_profile(source), get_profile(target)
    return tuple(j for j in dst.joints if j not in src.joints)


def convert(keypoints, source: str | KeypointProfile, target: str | KeypointProfile, axis: int = -2):
    """Reorder/select joints from ``source`` profile to ``target`` profile by joint name.

    Args:
      keypoints: array (..., J_source, D) (or joints on ``axis``); NumPy or JAX.
      source, target: profile names or profiles.
      axis: the joint axis (default -2, i.e. (..., J, D)); use -1 for per-joint arrays like (..., J).
    Returns:
      array (..., J_target, D) of the same kind.
    """
    src = get_profile(source)
    if keypoints.shape[axis] != src.num_joints:
        raise PrposeError(
            f"keypoints have {keypoints.shape[axis]} joints on axis {axis} (shape {tuple(keypoints.shape)}), "
            f"but profile {src.name!r} has {src.num_joints}"
        )
    idx = conversion_indices(src, target)
    if isinstance(keypoints, np.ndarray):
        return np.take(keypoints, idx, axis=axis)
    return keypoints.take(idx, axis=axis)


def convert_partial(keypoints, source: str | KeypointProfile, target: str | KeypointProfile, axis: int = -2):
    """Like ``convert``, but target joints that ``source`` lacks are filled with zeros and reported absent.

    Args:
      keypoints: NumPy array (..., J_source, D) (or joints on ``axis``).
      source, target: profile names or profiles.
    Returns:
      (array (..., J_target, D) float, present (J_target,) bool: False where the source has no such joint).
    """
    src, dst = get_profile(source), get_profile(target)
    x = np.asarray(keypoints)
    if x.shape[axis] != src.num_joints:
        raise PrposeError(
            f"keypoints have {x.shape[axis]} joints on axis {axis} (shape {tuple(x.shape)}), "
            f"but profile {src.name!r} has {src.num_joints}"
        )
    present = np.array([j in src.joints for j in dst.joints])
    idx = np.array([src.joints.index(j) if j in src.joints else 0 for j in dst.joints], dtype=np.int64)
    out = np.take(x, idx, axis=axis).astype(np.result_type(x.dtype, np.float32))
    shape = [1] * out.ndim
    shape[axis] = dst.num_joints
    return np.where(present.reshape(shape), out, 0), present
