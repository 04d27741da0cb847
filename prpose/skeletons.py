"""Skeleton presets: from BVH joints to the 17 Human3.6M joints (``prpose.keypoints.H36M17``), metres, Z-up.

A preset maps every h36m17 joint to an affine combination of BVH points (joints, or End Sites named
``"<joint>.end"``): ``{"LeftUpLeg": 1.0}`` or ``{"Head": 2.0, "Neck1": -1.0}`` (weights sum to 1, so the result
does not depend on where the origin is; a negative weight extrapolates along a bone). A joint may list several
candidate definitions: the first one whose points exist, and whose End Sites are not degenerate (zero offset,
as in the TMoCo copies of the CMU files and in the Bandai files), is used.

How each h36m17 joint is placed (the same rules in every preset, so that poses from different sources agree):
  * ``left_hip``/``right_hip``: the thigh heads (H36M's hips sit lateral to the pelvis);
  * ``pelvis``: the midpoint of the two hips (H36M's pelvis lies between its hip joints; the BVH root is
    usually higher and further back, e.g. CMU ``Hips`` is ~0.1 m above the thigh heads);
  * knees, ankles, elbows, wrists: the joints of those names;
  * ``left_shoulder``/``right_shoulder``: the upper-arm heads (not the clavicle/collar joints);
  * ``thorax``: the base of the neck (where the neck chain starts, at about shoulder height);
  * ``spine``: halfway between pelvis and thorax (BVH spine joints are spaced differently in every flavour);
  * ``head``: the top of the head: the head's End Site when it has a length, otherwise the head joint
    extrapolated along the neck (factors below, chosen so the top lands ~0.17-0.2 m above the skull base);
  * ``nose``: halfway between the head joint (skull base) and the head top; the Daz flavour, which has eye
    joints, uses the midpoint of the eyes (a face point that follows head rotation).

World conversion: Y-up files are turned Z-up with the proper rotation ``(x, y, z) -> (x, -z, y)`` (det +1, never
a mirror, so a joint named Left* stays on the subject's left). Units: ``units_to_metres`` per preset; a preset
with ``units_to_metres=None`` (the scale-free AnimatedDrawings clips) is scaled so that its estimated stature
(``estimate_stature``) is ``DEFAULT_STATURE`` metres.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np

from prpose.bvh import BvhMotion, forward_kinematics
from prpose.errors import PrposeError
from prpose.keypoints import H36M17

__all__ = [
    "SkeletonPreset", "PRESETS", "DEFAULT_STATURE", "detect_preset", "get_preset", "load_mapping",
    "mapping_matrix", "to_h36m17", "y_up_to_z_up", "estimate_stature",
]

DEFAULT_STATURE = 1.7  # metres: the height given to a scale-free skeleton
_DEGENERATE_END_SITE = 1e-9
# Foot below the ankle, as a fraction of the ankle-to-head-top chain (~8 cm for 1.6 m; measured on the metric
# shared files: this estimate is within 2% of head top minus ankle height plus ankle height above the floor).
_ANKLE_HEIGHT_FRACTION = 0.05

Definition = Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class SkeletonPreset:
    """How to turn one BVH skeleton flavour into h36m17.

    Attributes:
      name: preset name (e.g. ``"cmu31_motionbuilder"``).
      description: where these skeletons come from.
      mapping: h36m17 joint -> tuple of candidate definitions ``{bvh point: weight}`` (first usable one wins).
      units_to_metres: factor from file units to metres; None = scale-free, scale to ``DEFAULT_STATURE``.
      up_axis: ``"y"`` or ``"z"`` (the file's vertical axis).
      signature: BVH joint names whose presence identifies the flavour (auto-detection).
    """

    name: str
    description: str
    mapping: Mapping[str, tuple[Definition, ...]]
    units_to_metres: float | None
    up_axis: str
    signature: tuple[str, ...]

    def __post_init__(self):
        missing = [j for j in H36M17.joints if j not in self.mapping]
        extra = [j for j in self.mapping if j not in H36M17.joints]
        if missing or extra:
            raise PrposeError(
                f"skeleton preset {self.name!r}: mapping must cover exactly the h36m17 joints; "
                f"missing {missing or 'none'}, unknown {extra or 'none'}")
        if self.up_axis not in ("y", "z"):
            raise PrposeError(f"skeleton preset {self.name!r}: up_axis must be 'y' or 'z', got {self.up_axis!r}")
        if self.units_to_metres is not None and not self.units_to_metres > 0:
            raise PrposeError(
                f"skeleton preset {self.name!r}: units_to_metres must be positive, got {self.units_to_metres!r}")
        for joint, candidates in self.mapping.items():
            if not candidates:
                raise PrposeError(f"skeleton preset {self.name!r}: no definition for {joint!r}")
            for definition in candidates:
                total = sum(definition.values())
                if not definition or abs(total - 1.0) > 1e-6:
                    raise PrposeError(
                        f"skeleton preset {self.name!r}: weights for {joint!r} ({dict(definition)}) sum to "
                        f"{total:g}; expected 1 (an affine combination of BVH points)")


def _one(point: str) -> tuple[Definition, ...]:
    return ({point: 1.0},)


def _mid(a: str, b: str) -> Definition:
    return {a: 0.5, b: 0.5}


def _extrapolate(joint: str, parent: str, factor: float) -> Definition:
    """``joint + factor * (joint - parent)``: continue the parent->joint bone by ``factor`` times its length."""
    return {joint: 1.0 + factor, parent: -factor}


def _standard_mapping(*, l_hip, r_hip, l_knee, r_knee, l_ankle, r_ankle, thorax, head_top, nose,
                      l_shoulder, r_shoulder, l_elbow, r_elbow, l_wrist, r_wrist):
    """The shared recipe: pelvis = mid-hips, spine = mid pelvis-thorax (as weights of BVH points)."""
    pelvis = _mid(l_hip, r_hip)
    spine = {l_hip: 0.25, r_hip: 0.25, thorax: 0.5}
    return {
        "pelvis": (pelvis,),
        "right_hip": _one(r_hip), "right_knee": _one(r_knee), "right_ankle": _one(r_ankle),
        "left_hip": _one(l_hip), "left_knee": _one(l_knee), "left_ankle": _one(l_ankle),
        "spine": (spine,),
        "thorax": _one(thorax),
        "nose": nose,
        "head": head_top,
        "left_shoulder": _one(l_shoulder), "left_elbow": _one(l_elbow), "left_wrist": _one(l_wrist),
        "right_shoulder": _one(r_shoulder), "right_elbow": _one(r_elbow), "right_wrist": _one(r_wrist),
    }


# CMU units -> metres (CMU's ASF "length 0.45" convention: 1 unit = 1/0.45 inch = 0.056444 m).
_CMU_UNITS = 0.056444

# CMU 31-joint, MotionBuilder names (cgspeed conversion). ``Neck1`` starts the upper neck at shoulder height;
# ``Head`` starts the head bone at the skull base; the head top is its End Site (offset ~1.7 units), except in
# copies whose End Sites were zeroed, where the head bone is taken as long as the upper neck (they are within
# 5% of each other in the files that keep both).
CMU31_MOTIONBUILDER = SkeletonPreset(
    name="cmu31_motionbuilder",
    description="CMU mocap, 31 joints, MotionBuilder-friendly names (Hips, LHipJoint, LeftUpLeg, ...)",
    mapping=_standard_mapping(
        l_hip="LeftUpLeg", r_hip="RightUpLeg", l_knee="LeftLeg", r_knee="RightLeg",
        l_ankle="LeftFoot", r_ankle="RightFoot", thorax="Neck1",
        head_top=({"Head.end": 1.0}, _extrapolate("Head", "Neck1", 1.0)),
        nose=(_mid("Head", "Head.end"), _extrapolate("Head", "Neck1", 0.5)),
        l_shoulder="LeftArm", r_shoulder="RightArm", l_elbow="LeftForeArm", r_elbow="RightForeArm",
        l_wrist="LeftHand", r_wrist="RightHand",
    ),
    units_to_metres=_CMU_UNITS,
    up_axis="y",
    signature=("Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "Neck1", "Head", "LeftArm",
               "LeftForeArm", "LeftHand", "RightUpLeg", "RightArm"),
)

# CMU 31-joint, 3dsMax names: LeftHip/LeftKnee/LeftAnkle; LeftCollar then LeftShoulder (= upper-arm head),
# LeftElbow, LeftWrist; lowerneck -> Neck (upper neck, at shoulder height) -> Head (skull base) -> End Site.
CMU31_3DSMAX = SkeletonPreset(
    name="cmu31_3dsmax",
    description="CMU mocap, 31 joints, 3dsMax-friendly names (Hips, LHipJoint, LeftHip, LeftKnee, ...)",
    mapping=_standard_mapping(
        l_hip="LeftHip", r_hip="RightHip", l_knee="LeftKnee", r_knee="RightKnee",
        l_ankle="LeftAnkle", r_ankle="RightAnkle", thorax="Neck",
        head_top=({"Head.end": 1.0}, _extrapolate("Head", "Neck", 1.0)),
        nose=(_mid("Head", "Head.end"), _extrapolate("Head", "Neck", 0.5)),
        l_shoulder="LeftShoulder", r_shoulder="RightShoulder", l_elbow="LeftElbow", r_elbow="RightElbow",
        l_wrist="LeftWrist", r_wrist="RightWrist",
    ),
    units_to_metres=_CMU_UNITS,
    up_axis="y",
    signature=("Hips", "LHipJoint", "LeftHip", "LeftKnee", "LeftAnkle", "lowerneck", "Neck", "Head",
               "LeftCollar", "LeftShoulder", "LeftElbow", "LeftWrist", "RightHip", "RightShoulder"),
)

# CMU "Daz-friendly" 43 joints, centimetres. lThigh = thigh head (lButtock is a pelvis-side helper);
# lShldr = upper-arm head (lCollar is the clavicle); lShin = knee; lFoot = ankle. The ``neck`` joint is the
# base of the neck at shoulder height; ``head`` the skull base, 7 cm above it; there is no head End Site
# (the head's children are the eyes), so the top is the head joint continued along the neck by 2.75 neck
# lengths (~19 cm; puts the top ~11 cm above the eyes), and the "nose" is the midpoint of the eyes.
CMU43_DAZ = SkeletonPreset(
    name="cmu43_daz",
    description="CMU mocap, 43 joints, Daz-friendly names (hip, abdomen, chest, neck, head, lCollar, lShldr, ...)",
    mapping=_standard_mapping(
        l_hip="lThigh", r_hip="rThigh", l_knee="lShin", r_knee="rShin", l_ankle="lFoot", r_ankle="rFoot",
        thorax="neck",
        head_top=(_extrapolate("head", "neck", 2.75),),
        nose=(_mid("leftEye", "rightEye"), _extrapolate("head", "neck", 1.4)),
        l_shoulder="lShldr", r_shoulder="rShldr", l_elbow="lForeArm", r_elbow="rForeArm",
        l_wrist="lHand", r_wrist="rHand",
    ),
    units_to_metres=0.01,
    up_axis="y",
    signature=("hip", "abdomen", "chest", "neck", "head", "lCollar", "lShldr", "lForeArm", "lHand",
               "lThigh", "lShin", "lFoot", "rThigh", "rShldr"),
)

# Bandai Namco Research Motion Dataset 1, 22 joints, centimetres, 6 channels per joint. UpperLeg_L = thigh
# head; UpperArm_L = upper-arm head (Shoulder_L is the clavicle); Neck = base of the neck; Head = skull base
# 6.5 cm above it; the head End Site has zero length, so the top is the head continued by 3 neck lengths
# (~19 cm).
BANDAI22 = SkeletonPreset(
    name="bandai22",
    description="Bandai Namco Research Motion Dataset, 22 joints (Hips, Spine, Chest, Neck, Head, "
                "Shoulder_L, UpperArm_L, ...)",
    mapping=_standard_mapping(
        l_hip="UpperLeg_L", r_hip="UpperLeg_R", l_knee="LowerLeg_L", r_knee="LowerLeg_R",
        l_ankle="Foot_L", r_ankle="Foot_R", thorax="Neck",
        head_top=({"Head.end": 1.0}, _extrapolate("Head", "Neck", 3.0)),
        nose=(_mid("Head", "Head.end"), _extrapolate("Head", "Neck", 1.5)),
        l_shoulder="UpperArm_L", r_shoulder="UpperArm_R", l_elbow="LowerArm_L", r_elbow="LowerArm_R",
        l_wrist="Hand_L", r_wrist="Hand_R",
    ),
    units_to_metres=0.01,
    up_axis="y",
    signature=("Hips", "Spine", "Chest", "Neck", "Head", "Shoulder_L", "UpperArm_L", "LowerArm_L", "Hand_L",
               "UpperLeg_L", "LowerLeg_L", "Foot_L", "UpperLeg_R", "UpperArm_R"),
)

# Meta AnimatedDrawings examples ("fair1"), 27 joints, Z-up, scale-free. LeftUpLeg = thigh head, LeftLeg =
# knee, LeftFoot = ankle; LeftArm = upper-arm head (LeftShoulder is the clavicle); Neck = base of the neck;
# Head = skull base; the head End Site (3.7 units) is the top.
ANIMATED_DRAWINGS27 = SkeletonPreset(
    name="animated_drawings27",
    description="Meta AnimatedDrawings examples, 27 joints (Hips, Spine..Spine3, Neck, Head, LeftArm, ...), Z-up",
    mapping=_standard_mapping(
        l_hip="LeftUpLeg", r_hip="RightUpLeg", l_knee="LeftLeg", r_knee="RightLeg",
        l_ankle="LeftFoot", r_ankle="RightFoot", thorax="Neck",
        head_top=({"Head.end": 1.0}, _extrapolate("Head", "Neck", 1.2)),
        nose=(_mid("Head", "Head.end"), _extrapolate("Head", "Neck", 0.6)),
        l_shoulder="LeftArm", r_shoulder="RightArm", l_elbow="LeftForeArm", r_elbow="RightForeArm",
        l_wrist="LeftHand", r_wrist="RightHand",
    ),
    units_to_metres=None,
    up_axis="z",
    signature=("Hips", "Spine", "Spine1", "Spine2", "Spine3", "Neck", "Head", "LeftArm", "LeftForeArm",
               "LeftHand", "LeftUpLeg", "LeftLeg", "LeftFoot", "RightArm"),
)

PRESETS: dict[str, SkeletonPreset] = {
    p.name: p for p in (CMU31_MOTIONBUILDER, CMU31_3DSMAX, CMU43_DAZ, BANDAI22, ANIMATED_DRAWINGS27)
}


def get_preset(name: str) -> SkeletonPreset:
    """A preset by name; PrposeError listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PrposeError(f"unknown skeleton preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def detect_preset(motion: BvhMotion) -> SkeletonPreset:
    """The preset whose signature joints all appear in ``motion`` (the most specific one if several do).

    Raises PrposeError naming the file, its joints, and for the closest preset the joints that are missing
    (pass a ``--mapping`` JSON for skeletons we do not know).
    """
    names = set(motion.joint_names)
    matches = [p for p in PRESETS.values() if all(j in names for j in p.signature)]
    if matches:
        # The signature with the most joints is the most specific (a 3dsMax CMU file also has "Hips", "Neck").
        return max(matches, key=lambda p: len(p.signature))
    closest = min(PRESETS.values(), key=lambda p: sum(j not in names for j in p.signature))
    missing = [j for j in closest.signature if j not in names]
    shown = ", ".join(motion.joint_names[:12]) + (" ..." if motion.num_joints > 12 else "")
    raise PrposeError(
        f"{motion.path}: unknown skeleton ({motion.num_joints} joints: {shown}); closest preset "
        f"{closest.name!r} lacks {', '.join(missing)}. Write a mapping JSON "
        f'({{"pelvis": "<bvh joint>", "head": {{"<bvh joint>": 2.0, "<bvh joint>": -1.0}}, ...}}) and pass '
        f"--mapping FILE")


def load_mapping(path: str | os.PathLike) -> SkeletonPreset:
    """A user preset from JSON.

    Format: ``{"<h36m17 joint>": "<bvh point>" or {"<bvh point>": weight, ...}, ...,
    "units_to_metres": 0.01 (or null for scale-free: scaled to DEFAULT_STATURE), "up_axis": "y" or "z"}``.
    All 17 h36m17 joints are required; BVH points are joint names or ``"<joint>.end"`` End Sites; weights of a
    joint must sum to 1. Defaults: units_to_metres 1.0 (the file is in metres), up_axis "y".
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise PrposeError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise PrposeError(f"{path}: expected a JSON object mapping h36m17 joints to BVH joints")
    data = dict(data)
    units = data.pop("units_to_metres", 1.0)
    up_axis = data.pop("up_axis", "y")
    if units is not None and not (isinstance(units, (int, float)) and units > 0):
        raise PrposeError(f"{path}: units_to_metres must be a positive number or null, got {units!r}")
    if up_axis not in ("y", "z", "Y", "Z"):
        raise PrposeError(f"{path}: up_axis must be 'y' or 'z', got {up_axis!r}")
    unknown = [k for k in data if k not in H36M17.joints]
    missing = [j for j in H36M17.joints if j not in data]
    if unknown or missing:
        raise PrposeError(
            f"{path}: mapping must give every h36m17 joint; missing: {', '.join(missing) or 'none'}; "
            f"unknown keys: {', '.join(unknown) or 'none'} (allowed extra keys: units_to_metres, up_axis)")
    mapping = {}
    for joint, value in data.items():
        if isinstance(value, str):
            mapping[joint] = _one(value)
        elif isinstance(value, dict) and all(isinstance(k, str) and isinstance(w, (int, float))
                                             for k, w in value.items()):
            mapping[joint] = ({k: float(w) for k, w in value.items()},)
        else:
            raise PrposeError(
                f"{path}: {joint!r} must map to a BVH joint name or to {{joint: weight}}, got {value!r}")
    try:
        return SkeletonPreset(name=f"mapping:{os.path.basename(path)}", description=f"user mapping {path}",
                              mapping=mapping, units_to_metres=None if units is None else float(units),
                              up_axis=up_axis.lower(), signature=())
    except PrposeError as e:
        raise PrposeError(f"{path}: {e}") from None


def mapping_matrix(motion: BvhMotion, preset: SkeletonPreset) -> np.ndarray:
    """Weights W (17, P) such that ``W @ points`` gives h36m17 from ``forward_kinematics(motion, end_sites=True)``.

    Raises PrposeError naming the file and every h36m17 joint whose BVH points are missing.
    """
    names = motion.point_names
    index = {n: i for i, n in enumerate(names)}
    end_lengths = np.linalg.norm(motion.end_site_offsets, axis=-1) if len(motion.end_site_offsets) else []
    usable = {n: True for n in motion.joint_names}
    for n, length in zip(motion.end_site_names, end_lengths):
        usable[n] = bool(length > _DEGENERATE_END_SITE)

    weights = np.zeros((H36M17.num_joints, len(names)))
    problems = []
    for row, joint in enumerate(H36M17.joints):
        for definition in preset.mapping[joint]:
            if all(usable.get(p, False) for p in definition):
                for p, w in definition.items():
                    weights[row, index[p]] += w
                break
        else:
            wanted = sorted({p for d in preset.mapping[joint] for p in d if not usable.get(p, False)})
            problems.append(f"{joint} (needs {' or '.join(wanted)})")
    if problems:
        raise PrposeError(
            f"{motion.path}: skeleton preset {preset.name!r} cannot place h36m17 joint(s): {'; '.join(problems)} "
            f"(missing BVH joints, or End Sites of zero length)")
    return weights


def y_up_to_z_up(points: np.ndarray) -> np.ndarray:
    """Proper rotation (det +1) from a Y-up frame to Z-up: (x, y, z) -> (x, -z, y). Shape (..., 3)."""
    points = np.asarray(points)
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)


def estimate_stature(poses: np.ndarray) -> float:
    """A pose-independent stature estimate from h36m17 bone lengths (median over frames), in input units.

    Sum of the chain ankle-knee-hip (mean of both legs), the hip's height offset is ignored (H36M hips are
    lateral to the pelvis), pelvis-spine-thorax-head top, plus ``_ANKLE_HEIGHT_FRACTION`` of that for the
    foot below the ankle.

    Args:
      poses: (T, 17, 3) h36m17.
    Returns:
      float stature.
    """
    p = np.asarray(poses, dtype=np.float64)
    j = {n: p[:, i] for i, n in enumerate(H36M17.joints)}

    def length(a, b):
        return np.linalg.norm(j[a] - j[b], axis=-1)

    legs = 0.5 * (length("left_hip", "left_knee") + length("left_knee", "left_ankle")
                  + length("right_hip", "right_knee") + length("right_knee", "right_ankle"))
    trunk = length("pelvis", "thorax") + length("thorax", "head")
    return float(np.median(legs + trunk) * (1.0 + _ANKLE_HEIGHT_FRACTION))



def to_h36m17(motion: BvhMotion, preset: SkeletonPreset | None = None, *,
              stature: float = DEFAULT_STATURE) -> tuple[np.ndarray, SkeletonPreset, float]:
    """World h36m17 poses in metres, Z-up.

    Args:
      motion: parsed BVH.
      preset: the skeleton preset (None: ``detect_preset(motion)``).
      stature: target stature in metres for scale-free presets (``units_to_metres is None``).
    Returns:
      (poses (T, 17, 3) float64 metres Z-up, the preset used, the scale applied to file units).
    """
    if preset is None:
        preset = detect_preset(motion)
    weights = mapping_matrix(motion, preset)
    points = forward_kinematics(motion, end_sites=True)
    poses = np.einsum("jp,tpd->tjd", weights, points)
    if preset.up_axis == "y":
        poses = y_up_to_z_up(poses)
    if preset.units_to_metres is None:
        current = estimate_stature(poses) if len(poses) else 0.0
        if not current > 0:
            raise PrposeError(f"{motion.path}: cannot estimate the skeleton's size to scale it (stature {current})")
        scale = stature / current
    else:
        scale = preset.units_to_metres
    return poses * scale, preset, float(scale)
