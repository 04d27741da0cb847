"""Procedurally generated human motion (SYNTHETIC data: no capture, no people; for tests, demos, smoke runs).

A kinematic h36m17 skeleton with adult bone lengths (metres, scaled per sequence by ~0.9-1.1 and with small
per-bone proportion changes) is driven by joint angles that respect simple anatomical limits:
knees and elbows bend one way only, hips and shoulders move within ranges, the spine bends and twists a
little, the head nods and turns. Each sequence is one of three motion kinds:

- ``walk``: a cyclic gait (hip flexion, knee bend in swing, opposite arm swing, small torso counter-twist)
  while walking a circle around the capture-volume centre, heading along the path;
- ``keyframes``: random poses drawn within the joint limits every 0.5-1.5 s, eased in between (reaching,
  squatting, kicking, arms overhead...);
- ``oscillate``: a random base pose plus sums of low-frequency sinusoids per joint angle (dance/exercise-like).

World coordinates are metres, Z-up; the lowest foot (or knee, when kneeling) rests on the floor z = 0.
Frames are meant to be 30 Hz. Everything is deterministic given the seed; sequence ``i`` depends only on
``(seed, i)``, so asking for more sequences never changes the first ones.

Body frame used throughout: x forward, y to the person's LEFT, z up (right-handed). Limb angles are defined
for the left side; the right side is the mirror image (conjugation by diag(1, -1, 1)), which keeps bend
directions anatomically consistent on both sides.
"""

from __future__ import annotations

import numpy as np

from prpose.errors import PrposeError
from prpose.keypoints import H36M17

FPS = 30.0
_MAX_ATTEMPTS = 20
MOTION_KINDS = ("walk", "keyframes", "oscillate")

# Adult bone lengths in metres (close to the Human3.6M subjects' averages).
BONES = {
    "hip_offset": 0.13,  # pelvis -> hip, lateral
    "thigh": 0.45,
    "shin": 0.44,
    "lower_spine": 0.23,  # pelvis -> spine
    "upper_spine": 0.25,  # spine -> thorax
    "neck": 0.11,  # thorax -> nose/neck
    "head": 0.11,  # nose/neck -> head top
    "shoulder_offset": 0.15,  # thorax -> shoulder, lateral
    "upper_arm": 0.28,
    "forearm": 0.25,
}
ANKLE_HEIGHT = 0.08  # ankle joint above the floor when the foot is flat
KNEE_CLEARANCE = 0.05  # knee joint above the floor when kneeling

# Joint-angle limits in degrees: name -> (low, high, neutral). Arms use swing-twist: ``arm_az`` is the
# swing direction in the chest's horizontal plane (0 forward, 90 straight out to the side, negative across
# the front), ``arm_elev`` the swing away from hanging down (negative swings backward), ``arm_twist`` the
# rotation about the upper arm (negative = internal). Legs use flexion/abduction/twist.
LIMITS = {
    "pelvis_pitch": (-5.0, 25.0, 0.0),  # forward lean of the pelvis
    "pelvis_roll": (-8.0, 8.0, 0.0),
    "spine_bend": (-15.0, 40.0, 0.0),
    "spine_side": (-15.0, 15.0, 0.0),
    "spine_twist": (-25.0, 25.0, 0.0),
    "chest_bend": (-10.0, 25.0, 0.0),
    "chest_side": (-10.0, 10.0, 0.0),
    "chest_twist": (-20.0, 20.0, 0.0),
    "neck_nod": (-30.0, 40.0, 0.0),
    "neck_tilt": (-20.0, 20.0, 0.0),
    "neck_turn": (-50.0, 50.0, 0.0),
    "hip_flex": (-20.0, 110.0, 0.0),
    "hip_abd": (-10.0, 45.0, 3.0),
    "hip_twist": (-30.0, 30.0, 0.0),
    "knee": (0.0, 140.0, 3.0),
    "arm_az": (-30.0, 100.0, 80.0),
    "arm_elev": (-40.0, 170.0, 8.0),
    "arm_twist": (-45.0, 60.0, 0.0),
    "elbow": (0.0, 145.0, 10.0),
}
SIDED = ("hip_flex", "hip_abd", "hip_twist", "knee", "arm_az", "arm_elev", "arm_twist", "elbow")
ANGLE_NAMES = tuple(k for k in LIMITS if k not in SIDED) + tuple(
    f"{side}_{k}" for side in ("left", "right") for k in SIDED
)
_MIRROR = np.diag([1.0, -1.0, 1.0])
_J = {name: i for i, name in enumerate(H36M17.joints)}


def _limits(name: str) -> tuple[float, float, float]:
    return LIMITS[name.split("_", 1)[1] if name.startswith(("left_", "right_")) else name]


# -- rotations (vectorised over leading axes; angles in radians) --------------------------------------------
def _rx(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _apply(r, v):
    """(T, 3, 3) @ (3,) or (T, 3) -> (T, 3)."""
    return np.einsum("tij,...j->t...i", r, v) if np.ndim(v) == 1 else np.einsum("tij,tj->ti", r, v)


def forward_kinematics(angles: dict[str, np.ndarray], bones: dict[str, float], yaw: np.ndarray,
                       root_xy: np.ndarray) -> np.ndarray:
    """Joint angles -> world joint positions on the floor.

    Args:
      angles: name (see ``ANGLE_NAMES``) -> (T,) degrees. Missing names take their neutral value.
      bones: ``BONES``-like lengths in metres.
      yaw: (T,) heading in radians (rotation about world Z; 0 = facing +X).
      root_xy: (T, 2) pelvis position on the floor plane, metres.
    Returns:
      (T, 17, 3) float64 world metres, h36m17, Z-up, lowest foot/knee on the floor.
    """
    t = yaw.shape[0]

    def ang(name):
        if name in angles:
            return np.radians(np.asarray(angles[name], dtype=np.float64))
        return np.full(t, np.radians(_limits(name)[2]))

    out = np.zeros((t, 17, 3))
    r_pelvis = _rz(yaw) @ _ry(ang("pelvis_pitch")) @ _rx(ang("pelvis_roll"))
    pelvis = np.zeros((t, 3))
    out[:, _J["pelvis"]] = pelvis

    def mirrored(r, side):
        return r if side == "left" else _MIRROR @ r @ _MIRROR

    for side, sign in (("left", 1.0), ("right", -1.0)):
        hip = pelvis + _apply(r_pelvis, np.array([0.0, sign * bones["hip_offset"], 0.0]))
        # Thigh: abduct in the frontal plane, then flex forward; twist about the bone turns the knee.
        local = _ry(-ang(f"{side}_hip_flex")) @ _rx(ang(f"{side}_hip_abd")) @ _rz(ang(f"{side}_hip_twist"))
        r_thigh = r_pelvis @ mirrored(local, side)
        knee = hip + _apply(r_thigh, np.array([0.0, 0.0, -bones["thigh"]]))
        # Knees bend backward only (positive rotation about the thigh's left axis moves the shin back).
        r_shin = r_thigh @ _ry(ang(f"{side}_knee"))
        ankle = knee + _apply(r_shin, np.array([0.0, 0.0, -bones["shin"]]))
        out[:, _J[f"{side}_hip"]], out[:, _J[f"{side}_knee"]], out[:, _J[f"{side}_ankle"]] = hip, knee, ankle

    r_spine = r_pelvis @ _rz(ang("spine_twist")) @ _ry(ang("spine_bend")) @ _rx(-ang("spine_side"))
    spine = pelvis + _apply(r_spine, np.array([0.0, 0.0, bones["lower_spine"]]))
    r_chest = r_spine @ _rz(ang("chest_twist")) @ _ry(ang("chest_bend")) @ _rx(-ang("chest_side"))
    thorax = spine + _apply(r_chest, np.array([0.0, 0.0, bones["upper_spine"]]))
    r_neck = r_chest @ _rz(ang("neck_turn")) @ _ry(ang("neck_nod")) @ _rx(-ang("neck_tilt"))
    # The h36m "nose" joint sits slightly in front of the neck line; the head joint is the top of the head.
    nose = thorax + _apply(r_neck, np.array([0.35, 0.0, 0.94]) * bones["neck"])
    head = nose + _apply(r_neck, np.array([-0.1, 0.0, 0.995]) * bones["head"])
    out[:, _J["spine"]], out[:, _J["thorax"]], out[:, _J["nose"]], out[:, _J["head"]] = spine, thorax, nose, head

    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder = thorax + _apply(r_chest, np.array([0.0, sign * bones["shoulder_offset"], -0.02]))
        az, elev = ang(f"{side}_arm_az"), ang(f"{side}_arm_elev")
        # Swing-twist: rotate the hanging arm by ``elev`` about the horizontal axis perpendicular to the
        # swing direction ``az`` (minimal rotation, so twist 0 keeps the natural forearm plane).
        swing = _rz(az) @ _ry(-elev) @ _rz(-az)
        local = swing @ _rz(ang(f"{side}_arm_twist"))
        r_upper = r_chest @ mirrored(local, side)
        elbow = shoulder + _apply(r_upper, np.array([0.0, 0.0, -bones["upper_arm"]]))
        # Elbows bend forward only (toward the palm side of the hanging arm).
        r_fore = r_upper @ _ry(-ang(f"{side}_elbow"))
        wrist = elbow + _apply(r_fore, np.array([0.0, 0.0, -bones["forearm"]]))
        out[:, _J[f"{side}_shoulder"]], out[:, _J[f"{side}_elbow"]], out[:, _J[f"{side}_wrist"]] = shoulder, elbow, wrist

    # Stand on the floor: the lowest ankle at ankle height, unless a knee would go through the floor.
    ankles = out[:, [_J["left_ankle"], _J["right_ankle"]], 2].min(axis=1) - ANKLE_HEIGHT
    knees = out[:, [_J["left_knee"], _J["right_knee"]], 2].min(axis=1) - KNEE_CLEARANCE
    rest = out[:, :, 2].min(axis=1)  # nothing (hands, head) below the floor either
    floor = np.minimum(np.minimum(ankles, knees), rest)
    out[:, :, 2] -= floor[:, None]
    out[:, :, :2] += root_xy[:, None, :]
    return out


# -- plausibility -----------------------------------------------------------------------------------------
TORSO_RADIUS = 0.08  # arm points closer than this to the pelvis-spine-thorax line are inside the body
LEG_TORSO_RADIUS = 0.12


def _distance_to_segment(p, a, b):
    """(..., 3) points, (..., 3) segment ends -> (...) Euclidean distance to the segment."""
    ab = b - a
    u = np.clip(np.sum((p - a) * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + u[..., None] * ab), axis=-1)


def torso_clearance(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far arms and legs stay from the torso's centre line.

    Args:
      poses: (..., 17, 3) h36m17 metres.
    Returns:
      arms (...,): smallest distance of elbows, wrists and the midpoints of upper arms and forearms to the
        pelvis-spine-thorax polyline; legs (...,): the same for knees and ankles.
    """
    j = _J
    pel, spi, tho = poses[..., j["pelvis"], :], poses[..., j["spine"], :], poses[..., j["thorax"], :]

    def dist(p):
        return np.minimum(_distance_to_segment(p, pel, spi), _distance_to_segment(p, spi, tho))

    arm_points = []
    for side in ("left", "right"):
        s, e, w = (poses[..., j[f"{side}_{n}"], :] for n in ("shoulder", "elbow", "wrist"))
        arm_points += [e, w, 0.5 * (e + w), 0.5 * (s + e)]
    leg_points = [poses[..., j[f"{side}_{n}"], :] for side in ("left", "right") for n in ("knee", "ankle")]
    arms = np.min(np.stack([dist(p) for p in arm_points], -1), -1)
    legs = np.min(np.stack([dist(p) for p in leg_points], -1), -1)
    return arms, legs


def is_plausible(poses: np.ndarray) -> np.ndarray:
    """(..., 17, 3) -> (...) bool: no arm or leg point inside the torso (see ``torso_clearance``)."""
    arms, legs = torso_clearance(poses)
    return (arms >= TORSO_RADIUS) & (legs >= LEG_TORSO_RADIUS)


# -- motion generators -------------------------------------------------------------------------------------
def _random_pose(rng: np.random.Generator, spread: float) -> dict[str, float]:
    """One pose within the limits; ``spread`` in [0, 1] scales how far from neutral it may go."""
    pose = {}
    for name in ANGLE_NAMES:
        lo, hi, neutral = _limits(name)
        # Some joints stay near rest in any given pose: real poses move a few joints at a time.
        if rng.random() < 0.25:
            value = neutral + rng.normal(0.0, 3.0)
        else:
            value = neutral + spread * (rng.uniform(lo, hi) - neutral)
        pose[name] = float(np.clip(value, lo, hi))
    return pose


def _ease(u):
    return u * u * (3.0 - 2.0 * u)  # smoothstep: zero velocity at each keyframe


def _keyframe_track(rng, t: int, values_fn) -> dict[str, np.ndarray]:
    times = [0]
    while len(times) < 2 or times[-1] < t - 1:
        times.append(times[-1] + int(rng.integers(int(0.5 * FPS), int(1.5 * FPS))))
    keys = [values_fn() for _ in times]
    times = np.asarray(times)
    frames = np.arange(t)
    seg = np.clip(np.searchsorted(times, frames, side="right") - 1, 0, len(times) - 2)
    u = _ease((frames - times[seg]) / (times[seg + 1] - times[seg]))
    out = {}
    for name in keys[0]:
        k = np.array([key[name] for key in keys])
        out[name] = k[seg] * (1 - u) + k[seg + 1] * u
    return out


def _root_wander(rng, t: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Slow random root motion: (yaw (T,), xy (T, 2)) within ``radius`` of the origin."""
    # Keys are a random walk (turn at most 90 degrees, step at most 0.5 m between keys) so the person turns
    # and drifts at human speeds instead of spinning between unrelated headings.
    state = {"x": rng.uniform(-radius, radius), "y": rng.uniform(-radius, radius), "yaw": rng.uniform(-np.pi, np.pi)}

    def step():
        key = dict(state)
        state["x"] = float(np.clip(state["x"] + rng.uniform(-0.5, 0.5), -radius, radius))
        state["y"] = float(np.clip(state["y"] + rng.uniform(-0.5, 0.5), -radius, radius))
        state["yaw"] += rng.uniform(-np.pi / 2, np.pi / 2)
        return key

    track = _keyframe_track(rng, t, step)
    return track["yaw"], np.stack([track["x"], track["y"]], -1)


def _walk(rng, t: int) -> tuple[dict, np.ndarray, np.ndarray]:
    freq = rng.uniform(0.8, 1.05)  # strides per second (one full left+right cycle)
    phase = 2 * np.pi * freq * np.arange(t) / FPS + rng.uniform(0, 2 * np.pi)
    hip_amp, arm_amp = rng.uniform(18, 30), rng.uniform(8, 30)
    angles = {
        "pelvis_pitch": np.full(t, rng.uniform(0, 8)),
        "spine_bend": np.full(t, rng.uniform(-3, 10)),
        "spine_twist": -rng.uniform(2, 8) * np.sin(phase),
        "neck_nod": np.full(t, rng.uniform(-10, 15)),
        "neck_turn": rng.uniform(-20, 20) * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * np.arange(t) / FPS),
    }
    for side, offset in (("left", 0.0), ("right", np.pi)):
        p = phase + offset
        angles[f"{side}_hip_flex"] = 8 + hip_amp * np.sin(p)
        # Knee flexes most in swing, just after the hip passes behind the body.
        angles[f"{side}_knee"] = 5 + rng.uniform(45, 65) * (0.5 + 0.5 * np.sin(p + 1.9)) ** 2
        angles[f"{side}_hip_abd"] = np.full(t, rng.uniform(0, 6))
        angles[f"{side}_arm_az"] = np.full(t, rng.uniform(-10, 5))
        angles[f"{side}_arm_elev"] = -arm_amp * np.sin(p) + rng.uniform(0, 8)  # arm swings opposite to the leg
        angles[f"{side}_elbow"] = rng.uniform(10, 40) + 10 * (0.5 - 0.5 * np.sin(p))
        angles[f"{side}_arm_twist"] = np.full(t, rng.uniform(-20, 10))
    if rng.random() < 0.2:  # walking in place (treadmill-like)
        yaw = np.full(t, rng.uniform(-np.pi, np.pi)) + np.cumsum(np.full(t, rng.uniform(-0.01, 0.01)))
        xy = np.tile(rng.uniform(-0.5, 0.5, 2), (t, 1))
    else:  # walk a circle around the volume centre, facing along the path
        radius, speed = rng.uniform(0.8, 1.6), rng.uniform(0.7, 1.3)
        direction = rng.choice([-1.0, 1.0])
        theta = rng.uniform(0, 2 * np.pi) + direction * speed / radius * np.arange(t) / FPS
        xy = radius * np.stack([np.cos(theta), np.sin(theta)], -1)
        yaw = theta + direction * np.pi / 2
    return angles, yaw, xy


def _keyframes(rng, t: int):
    spread = rng.uniform(0.5, 1.0)
    angles = _keyframe_track(rng, t, lambda: _random_pose(rng, spread))
    yaw, xy = _root_wander(rng, t, 0.8)
    return angles, yaw, xy


def _oscillate(rng, t: int):
    base = _random_pose(rng, rng.uniform(0.3, 0.7))
    seconds = np.arange(t) / FPS
    angles = {}
    for name in ANGLE_NAMES:
        lo, hi, _ = _limits(name)
        value = np.full(t, base[name])
        for _ in range(2):
            amp = rng.uniform(0.0, 0.25) * (hi - lo)
            value = value + amp * np.sin(2 * np.pi * rng.uniform(0.1, 0.8) * seconds + rng.uniform(0, 2 * np.pi))
        angles[name] = value
    yaw, xy = _root_wander(rng, t, 0.6)
    return angles, yaw, xy


def _clip_angles(angles: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clip every angle to its limits and make backward arm swings anatomical.

    A negative ``arm_elev`` swings the arm toward ``az + 180``: behind the back for az near 0, but straight
    through the chest for a sideways az. So backward swing is allowed fully for az <= 0, fades out by
    az = 40 and is absent beyond (continuous in both angles, so motions stay smooth).
    """
    out = {name: np.clip(v, *_limits(name)[:2]) for name, v in angles.items()}
    for side in ("left", "right"):
        az, elev = f"{side}_arm_az", f"{side}_arm_elev"
        if az in out and elev in out:
            fade = np.clip((40.0 - out[az]) / 40.0, 0.0, 1.0)
            out[elev] = np.where(out[elev] < 0.0, out[elev] * fade, out[elev])
    return out


def random_bones(rng: np.random.Generator) -> dict[str, float]:
    """Adult bone lengths scaled by U(0.9, 1.1) overall and +-4% per bone (left and right stay equal)."""
    scale = rng.uniform(0.9, 1.1)
    return {name: length * scale * rng.uniform(0.96, 1.04) for name, length in BONES.items()}


def generate_sequence(rng: np.random.Generator, frames: int, kind: str | None = None) -> tuple[np.ndarray, str]:
    """One synthetic motion.

    Args:
      rng: NumPy generator (the only source of randomness).
      frames: T >= 1, at 30 Hz.
      kind: one of ``MOTION_KINDS`` or None to draw one (walk 30%, keyframes 40%, oscillate 30%).
    Returns:
      poses (T, 17, 3) float64 world metres h36m17 Z-up; the motion kind.
    """
    if kind is None:
        kind = str(rng.choice(MOTION_KINDS, p=[0.3, 0.4, 0.3]))
    if kind not in MOTION_KINDS:
        raise PrposeError(f"generate_sequence: unknown motion kind {kind!r}; expected one of {MOTION_KINDS}")
    make = {"walk": _walk, "keyframes": _keyframes, "oscillate": _oscillate}
    # Joint limits alone cannot rule out every self-intersection (e.g. a bent chest plus an inward-reaching
    # arm), so redraw a motion that puts an arm or leg inside the torso (~3% of non-walk draws).
    for attempt in range(_MAX_ATTEMPTS):
        use = kind if attempt < _MAX_ATTEMPTS - 1 else "walk"
        bones = random_bones(rng)
        angles, yaw, xy = make[use](rng, frames)
        poses = forward_kinematics(_clip_angles(angles), bones, yaw, xy)
        if is_plausible(poses).all():
            return poses, use
    raise AssertionError("unreachable: synthetic walks never self-intersect")  # pragma: no cover


def generate_motions(num_sequences: int, frames: int, seed: int, *, return_kinds: bool = False):
    """``num_sequences`` synthetic motions of ``frames`` frames each (30 Hz), deterministic in ``seed``.

    Args:
      num_sequences: >= 1.  frames: T >= 1.  seed: any int; sequence i uses ``default_rng([seed, i])``.
      return_kinds: also return each sequence's motion kind.
    Returns:
      list of (T, 17, 3) float64 world metres (h36m17, Z-up); with ``return_kinds`` a (poses, kinds) pair.
    """
    for name, value in (("num_sequences", num_sequences), ("frames", frames)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise PrposeError(f"generate_motions: {name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise PrposeError(f"generate_motions: seed must be a non-negative integer, got {seed!r}")
    poses, kinds = [], []
    for i in range(int(num_sequences)):
        p, k = generate_sequence(np.random.default_rng([int(seed), i]), int(frames))
        poses.append(p)
        kinds.append(k)
    return (poses, kinds) if return_kinds else poses
