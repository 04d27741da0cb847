"""Camera augmentation and keypoint occlusion (prpose.augment).

References here are written independently in float64 NumPy: the canonical standing pose, the 3D and 2D
normalisation, the front-view rotation and the perspective projection.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest

from prpose import augment as A
from prpose.camera import view_rotation
from prpose.errors import PrposeError

# input13 indices, spelled out so that the tests do not reuse the module's tables.
NOSE, LSH, RSH, LEL, REL, LWR, RWR, LHIP, RHIP, LKN, RKN, LANK, RANK = range(13)
# h36m17 -> input13 by name, spelled out: nose 9, l/r shoulder 11/14, elbows 12/15, wrists 13/16,
# hips 4/1, knees 5/2, ankles 6/3.
H36M_TO_INPUT13 = np.array([9, 11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3])

# A person standing at the origin, facing -Y (toward a camera at azimuth 0), Z up, metres: left is +X.
STANDING = np.array(
    [
        [0.0, 0.0, 1.0],  # pelvis
        [-0.12, 0.0, 1.0], [-0.12, 0.0, 0.55], [-0.12, 0.05, 0.1],  # right hip, knee, ankle
        [0.12, 0.0, 1.0], [0.12, 0.0, 0.55], [0.12, 0.05, 0.1],  # left hip, knee, ankle
        [0.0, 0.0, 1.23], [0.0, 0.0, 1.48],  # spine, thorax
        [0.0, -0.08, 1.6], [0.0, 0.0, 1.72],  # nose, head
        [0.18, 0.0, 1.45], [0.2, 0.0, 1.18], [0.22, -0.05, 0.95],  # left shoulder, elbow, wrist
        [-0.18, 0.0, 1.45], [-0.2, 0.0, 1.18], [-0.22, -0.05, 0.95],  # right shoulder, elbow, wrist
    ]
)


def normalize_3d_ref(poses):
    poses = np.asarray(poses, np.float64)
    pelvis, spine, thorax = poses[..., 0, :], poses[..., 7, :], poses[..., 8, :]
    size = np.linalg.norm(spine - pelvis, axis=-1) + np.linalg.norm(thorax - spine, axis=-1)
    return (poses - pelvis[..., None, :]) / size[..., None, None]


def normalize_2d_ref(keypoints, visible=None):
    """Hip midpoint (visible hips; else visible shoulders) and largest visible torso distance -> 0.5."""
    keypoints = np.asarray(keypoints, np.float64)
    out = np.zeros_like(keypoints)
    visible = np.ones(keypoints.shape[:-1], bool) if visible is None else np.asarray(visible)
    for b in range(keypoints.shape[0]):
        vis = visible[b]
        hips = [j for j in (LHIP, RHIP) if vis[j]] or [j for j in (LSH, RSH) if vis[j]]
        torso = [j for j in (LSH, RSH, LHIP, RHIP) if vis[j]]
        size = max(
            (np.linalg.norm(keypoints[b, i] - keypoints[b, j]) for i in torso for j in torso), default=0.0
        )
        if size > 1e-6:
            out[b] = (keypoints[b] - keypoints[b, hips].mean(0)) * 0.5 / size
            out[b, ~vis] = 0.0
    return out


def project_ref(poses3d, rotations, depth):
    """float64 pinhole projection of h36m17 poses into input13 normalised 2D."""
    cam = np.einsum("bij,bkj->bki", np.asarray(rotations, np.float64), poses3d[:, H36M_TO_INPUT13])
    cam[..., 2] += depth
    assert np.all(cam[..., 2] > 0)
    return normalize_2d_ref(cam[..., :2] / cam[..., 2:])


def random_poses(batch, seed=0, noise=0.04):
    """Normalised variations of the standing pose (random limb offsets, random heading)."""
    rng = np.random.default_rng(seed)
    poses = STANDING[None] + rng.normal(0.0, noise, (batch, 17, 3))
    heading = rng.uniform(-np.pi, np.pi, batch)
    c, s = np.cos(heading), np.sin(heading)
    rot = np.zeros((batch, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    return normalize_3d_ref(np.einsum("bij,bkj->bki", rot, poses))


# World->camera rotation of the front camera: on the -Y side looking toward +Y, upright
# (camera x = world X, camera y = -Z, i.e. down, camera z = +Y).
FRONT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def front_view(poses3d, depth=2.0):
    return project_ref(poses3d, FRONT[None].repeat(len(poses3d), 0), depth)


def cross2d(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


# Compiling, not running, dominates these tests on a small CPU: every entry point is jitted once and the
# tests share one batch size (B) and as few configurations as they can.
B = 512
DEFAULT = A.AugmentConfig()
FRONT_ONLY = A.AugmentConfig(azimuth_range=(0, 0), elevation_range=(0, 0), roll_range=(0, 0))
POSES = random_poses(B, seed=1)
STANDING_B = normalize_3d_ref(STANDING)[None].repeat(B, 0)
FRONT_B = FRONT[None].repeat(B, 0)



def fast_jit(fun, static=()):
    """jax.jit with XLA's backend optimisation off: halves compile time (measured 0.85 -> 0.42 s CPU for
    camera_augment); these tests check values, not speed."""
    return jax.jit(fun, static_argnames=static, compiler_options={"xla_backend_optimization_level": 0})


project_views = fast_jit(A.project_views, "config")
project_random_views = fast_jit(A.project_random_views, "config")
camera_augment = fast_jit(A.camera_augment, "config")
random_view_rotations = fast_jit(A.random_view_rotations, ("batch", "config"))
sample_view_angles = fast_jit(A.sample_view_angles, ("batch", "config"))
random_keypoint_dropout = fast_jit(A.random_keypoint_dropout, ("batch", "num_joints"))
structured_keypoint_dropout = fast_jit(A.structured_keypoint_dropout, "config")
apply_visibility = fast_jit(A.apply_visibility)
occlude_keypoints = fast_jit(A.occlude_keypoints, "config")


def test_projection_keeps_left_on_the_left():
    # Frontal view (all angles zero) of a person facing the camera: their left is on the image's right.
    front = np.asarray(project_random_views(STANDING_B, jax.random.key(0), config=FRONT_ONLY))[0]
    for left, right in ((LSH, RSH), (LHIP, RHIP), (LWR, RWR), (LEL, REL), (LANK, RANK)):
        assert front[left, 0] > front[right, 0] + 0.05, (left, right, front)
    assert front[NOSE, 1] < front[LHIP, 1] < front[LANK, 1]  # image v points down: head above feet

    # Random views: the projected pose is never the mirror image. Under a central projection, the 2D
    # orientation of the triangle (left shoulder, right shoulder, hip) equals the sign of the triple product
    # ((P1 - P0) x (P2 - P0)) . (P0 - C) in the world (C: camera centre), exactly; a mirror flips it.
    rotations = np.asarray(random_view_rotations(jax.random.key(2), batch=B, config=DEFAULT), np.float64)
    image, valid = project_views(POSES, rotations, config=DEFAULT)
    image = np.asarray(image)
    assert np.all(np.asarray(valid))
    centre = -DEFAULT.depth * rotations[:, 2, :]  # on the optical axis, depth before the pelvis
    lsh, rsh = POSES[:, 11], POSES[:, 14]
    checked = 0
    for hip3, hip2 in ((POSES[:, 4], LHIP), (POSES[:, 1], RHIP)):
        normal = np.cross(rsh - lsh, hip3 - lsh)
        triple = np.einsum("bd,bd->b", normal, lsh - centre) / np.linalg.norm(normal, axis=-1)
        orient = cross2d(image[:, RSH] - image[:, LSH], image[:, hip2] - image[:, LSH])
        clear = np.abs(triple) > 1e-3  # a triangle seen exactly edge-on has no orientation
        assert np.all(np.sign(orient[clear]) == np.sign(triple[clear]))
        # A mirrored image (x -> -x) fails this very check: the test catches issue #636.
        mirror = image * np.array([-1.0, 1.0])
        orient_mirror = cross2d(mirror[:, RSH] - mirror[:, LSH], mirror[:, hip2] - mirror[:, LSH])
        assert np.all(np.sign(orient_mirror[clear]) != np.sign(triple[clear]))
        # Both front and back views occur, so the agreement above is not vacuous.
        assert 0.2 < np.mean(triple[clear] > 0) < 0.8
        checked += clear.sum()
    assert checked > 0.9 * 2 * B


def test_projection_is_rotation_plus_perspective():
    rotations = np.asarray(random_view_rotations(jax.random.key(4), batch=B, config=DEFAULT), np.float64)
    # Proper rotations: orthonormal, det +1 (lengths kept, never a reflection).
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3)[None].repeat(B, 0), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-5)
    got, valid = project_views(POSES, rotations, config=DEFAULT)
    assert np.all(np.asarray(valid))
    np.testing.assert_allclose(np.asarray(got), project_ref(POSES, rotations, DEFAULT.depth), atol=2e-5)


def test_zero_angles_give_the_front_view():
    got = project_random_views(POSES, jax.random.key(6), config=FRONT_ONLY)
    np.testing.assert_allclose(np.asarray(got), front_view(POSES), atol=2e-5)
    # The reference discriminates: perspective at depth 2 is far from an orthographic (distant) view.
    assert np.abs(front_view(POSES, 2.0) - front_view(POSES, 1e4)).max() > 0.05


def test_near_plane_guard_backs_the_camera_away():
    # An arm stretched 3 torso lengths toward the camera would sit behind a camera at depth 2.
    poses = STANDING_B.copy()
    poses[0, 13] = [0.3, -3.0, 1.0]  # left wrist toward the azimuth-0 camera
    got, valid = project_views(poses, np.asarray(view_rotation(0.0, 0.0, 0.0))[None].repeat(B, 0), config=DEFAULT)
    got = np.asarray(got)[:1]
    assert bool(valid[0]) and np.all(np.isfinite(got))
    # Equivalent to a camera at depth 2 + (3 - 2 + 0.1): the wrist is exactly min_joint_depth in front of it.
    np.testing.assert_allclose(got, front_view(poses[:1], 3.1), atol=2e-5)
    assert got[0, LWR, 0] > got[0, RWR, 0]  # still left on the right, not flipped through the camera
    # Ordinary poses are untouched by the guard.
    ordinary = np.asarray(project_views(poses, FRONT_B, config=DEFAULT)[0])[1:]
    np.testing.assert_allclose(ordinary, front_view(poses[1:]), atol=2e-5)


def test_angles_are_drawn_within_the_configured_ranges():
    config = A.AugmentConfig(elevation_range=(-30, 30), roll_range=(-10, 20))
    n = 20000
    drawn = sample_view_angles(jax.random.key(7), batch=n, config=config)
    angles = [np.degrees(np.asarray(a, np.float64)) for a in drawn]
    for values, (lo, hi) in zip(angles, (config.azimuth_range, config.elevation_range, config.roll_range)):
        assert values.shape == (n,) and lo <= values.min() and values.max() <= hi
        width = hi - lo
        assert abs(values.mean() - (lo + hi) / 2) < 4 * width / np.sqrt(12 * n)
        assert abs(values.std() / (width / np.sqrt(12)) - 1) < 0.03
        counts, _ = np.histogram(values, bins=10, range=(lo, hi))
        assert np.all(np.abs(counts - n / 10) < 0.15 * n / 10)
    # The realised rotations have those elevations: the optical axis' vertical component is -sin(elevation).
    rotations = np.asarray(random_view_rotations(jax.random.key(2), batch=B, config=DEFAULT), np.float64)
    elevation = np.degrees(np.asarray(sample_view_angles(jax.random.key(2), batch=B, config=DEFAULT)[1]))
    np.testing.assert_allclose(np.degrees(np.arcsin(-rotations[:, 2, 2])), elevation, atol=1e-2)
    assert -30 <= elevation.min() and elevation.max() <= 30 and elevation.max() - elevation.min() > 50


def test_projection_probability_chooses_real_or_projected():
    real = np.random.default_rng(9).normal(size=(B, 13, 2)).astype(np.float32)
    key = jax.random.key(10)
    same = lambda out: np.all(np.asarray(out) == real, axis=(1, 2))  # noqa: E731
    assert same(camera_augment(real, POSES, key, config=dataclasses.replace(DEFAULT, projection_probability=0.0))).all()
    projected = camera_augment(real, POSES, key, config=dataclasses.replace(DEFAULT, projection_probability=1.0))
    assert not same(projected).any()
    # Each projected row is a normalised pose: hip midpoint at 0, largest torso distance 0.5.
    p = np.asarray(projected, np.float64)
    np.testing.assert_allclose((p[:, LHIP] + p[:, RHIP]) / 2, 0.0, atol=1e-5)
    torso = p[:, [LSH, RSH, LHIP, RHIP]]
    size = np.linalg.norm(torso[:, :, None] - torso[:, None], axis=-1).max(axis=(1, 2))
    np.testing.assert_allclose(size, 0.5, atol=1e-5)
    half = 1.0 - same(camera_augment(real, POSES, key, config=DEFAULT)).mean()
    assert abs(half - 0.5) < 4 * np.sqrt(0.25 / B)


def test_random_dropout_rate_matches_p_apply_times_p_drop():
    batch, p_apply, p_drop = 4000, 0.4, 0.3
    visible = np.asarray(random_keypoint_dropout(jax.random.key(11), batch=batch, p_apply=p_apply, p_drop=p_drop))
    assert visible.shape == (batch, 13) and visible.dtype == bool
    rate = p_apply * p_drop
    assert abs((~visible).mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / (batch * 13))
    touched = p_apply * (1 - (1 - p_drop) ** 13)  # an example chosen but losing no keypoint looks untouched
    assert abs((~visible).any(1).mean() - touched) < 4 * np.sqrt(touched * (1 - touched) / batch)
    assert np.asarray(random_keypoint_dropout(jax.random.key(12), batch=batch, p_apply=0.0, p_drop=1.0)).all()
    assert not np.asarray(random_keypoint_dropout(jax.random.key(12), batch=batch, p_apply=1.0, p_drop=1.0)).any()
    with pytest.raises(PrposeError, match="p_drop"):
        A.random_keypoint_dropout(jax.random.key(0), 4, 13, 0.5, 1.5)


EXPECTED_VARIANTS = {
    "arm": [{LSH, LEL, LWR}, {LEL, LWR}, {RSH, REL, RWR}, {REL, RWR}],
    "leg": [{LHIP, LKN, LANK}, {LKN, LANK}, {RHIP, RKN, RANK}, {RKN, RANK}],
    "side": [{LSH, LEL, LWR, LHIP, LKN, LANK}, {RSH, REL, RWR, RHIP, RKN, RANK}],
    "lower_body": [{LHIP, RHIP, LKN, RKN, LANK, RANK}],
}
FRONT_KEYPOINTS = front_view(POSES).astype(np.float32)


def test_structured_patterns_hide_exactly_the_intended_joints():
    config = A.AugmentConfig(structured_probability=0.5, structured_patterns=tuple(EXPECTED_VARIANTS))
    prior = np.ones((B, 13), bool)
    prior[::2, NOSE] = False  # keypoints already hidden must stay hidden
    visible = np.asarray(structured_keypoint_dropout(jax.random.key(14), FRONT_KEYPOINTS, config=config, visible=prior))
    assert np.all(visible <= prior)
    hidden_sets = [set(np.flatnonzero(~row)) - {NOSE} for row in visible]
    all_variants = [v for variants in EXPECTED_VARIANTS.values() for v in variants]
    touched = np.array([bool(h) for h in hidden_sets])
    for hidden in hidden_sets:
        assert not hidden or hidden in all_variants, hidden
    # Each of the 11 variants has probability 1/2 * 1/4 * 1/(pattern's variants) >= 1/32 per row.
    for variant in all_variants:
        assert variant in hidden_sets, variant
    assert abs(touched.mean() - 0.5) < 4 * np.sqrt(0.25 / B)
    lower = np.array([h == EXPECTED_VARIANTS["lower_body"][0] for h in hidden_sets])
    assert abs(lower.sum() / touched.sum() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / touched.sum())


def test_box_occluder_hides_the_keypoints_inside_a_rectangle():
    # Hand-worked case.
    keypoints = np.array([[[0.0, 0.0], [1.0, 1.0], [0.5, 0.2], [2.0, 0.1]]])
    hidden = A.box_occlusion(keypoints, np.array([[0.4, -0.1]]), np.array([[1.5, 1.2]]))
    np.testing.assert_array_equal(np.asarray(hidden), [[False, True, True, False]])
    # Random boxes: no visible keypoint lies inside the bounding box of the hidden ones (they were cut
    # out by one rectangle), and boxes hide a varying, partial number of keypoints.
    config = A.AugmentConfig(structured_probability=1.0, structured_patterns=("box",), box_size_range=(0.3, 0.6))
    visible = np.asarray(structured_keypoint_dropout(jax.random.key(18), FRONT_KEYPOINTS, config=config))
    counts = (~visible).sum(1)
    assert counts.max() < 13 and counts.mean() > 1.0 and len(np.unique(counts)) >= 4
    for kp, vis in zip(FRONT_KEYPOINTS, visible):
        if vis.all():
            continue
        lo, hi = kp[~vis].min(0), kp[~vis].max(0)
        inside = np.all((kp >= lo - 1e-6) & (kp <= hi + 1e-6), axis=1)
        assert not np.any(inside & vis)


def test_apply_visibility_renormalises_from_visible_keypoints():
    rng = np.random.default_rng(19)
    keypoints = (rng.normal(size=(B, 13, 2)) * 100 + 300).astype(np.float32)  # pixels
    visible = rng.uniform(size=(B, 13)) > 0.3
    visible[0] = True
    visible[1, [LHIP, RHIP]] = False  # the offset falls back to the shoulders
    visible[1, [LSH, RSH]] = True
    visible[2, [LSH, RSH, LHIP]] = True
    visible[-2:] = False  # everything hidden
    got, valid = apply_visibility(keypoints, visible)
    got, valid = np.asarray(got), np.asarray(valid)
    assert np.all(valid[:3])
    ref = normalize_2d_ref(keypoints, visible)
    np.testing.assert_allclose(got[valid], ref[valid], atol=1e-5)
    assert np.all(got[~visible] == 0.0)
    # Rows with fewer than two visible torso joints cannot be normalised: zeros, flagged, no NaN.
    assert np.all(valid == (visible[:, [LSH, RSH, LHIP, RHIP]].sum(1) >= 2))
    assert not valid[-2:].any() and np.all(got[~valid] == 0.0) and np.all(np.isfinite(got))


MIXED = A.AugmentConfig(dropout_p_apply=0.5, dropout_p_drop=0.5, structured_probability=0.7)


def test_occlusion_never_nan_and_reverts_impossible_examples():
    # Everything hidden -> normalisation impossible -> every example left whole, and reported.
    everything = A.AugmentConfig(dropout_p_apply=1.0, dropout_p_drop=1.0)
    out = occlude_keypoints(FRONT_KEYPOINTS, jax.random.key(21), config=everything)
    assert np.asarray(out.reverted).all() and np.asarray(out.visible).all() and np.asarray(out.visible3d).all()
    np.testing.assert_array_equal(np.asarray(out.keypoints), FRONT_KEYPOINTS)
    # Every kind of occlusion at once: finite; hidden keypoints zero; occluded rows re-normalised from their
    # visible keypoints; rows left with fewer than 2 torso joints (about 0.5 * 5/16 from the random dropout
    # alone) are reverted to the input, all visible.
    out = occlude_keypoints(FRONT_KEYPOINTS, jax.random.key(23), config=MIXED)
    got, visible, visible3d, reverted = (np.asarray(x) for x in out)
    assert np.all(np.isfinite(got)) and np.all(got[~visible] == 0.0)
    assert 0.3 < (~visible).any(1).mean() < 0.95 and 0.1 < reverted.mean() < 0.35
    np.testing.assert_array_equal(got[reverted], FRONT_KEYPOINTS[reverted])
    assert visible[reverted].all() and visible3d[reverted].all()
    np.testing.assert_allclose(got[~reverted], normalize_2d_ref(FRONT_KEYPOINTS, visible)[~reverted], atol=1e-5)
    np.testing.assert_array_equal(visible3d, np.asarray(A.visibility_to_h36m17(visible)))


def test_lower_body_occlusion_normalises_from_the_shoulders():
    visible = np.ones((B, 13), bool)
    visible[:, LHIP:] = False
    got, valid = apply_visibility(FRONT_KEYPOINTS, visible)
    got = np.asarray(got)
    assert np.asarray(valid).all() and np.all(got[:, LHIP:] == 0.0)
    np.testing.assert_allclose(got[:, [LSH, RSH]].mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got[:, LSH] - got[:, RSH], axis=-1), 0.5, atol=1e-5)
    # The mining mask keeps the upper body only: h36m17 pelvis, r hip/knee/ankle, l hip/knee/ankle, spine,
    # thorax, nose, head, l arm, r arm.
    np.testing.assert_array_equal(
        np.asarray(A.visibility_to_h36m17(visible[:1]))[0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    )


def test_visibility_maps_to_h36m17_joints():
    visible = np.ones((3, 13), bool)
    visible[0, LHIP] = False
    visible[1, RSH] = False
    visible[2, NOSE] = False
    got = np.asarray(A.visibility_to_h36m17(visible))
    hidden = [set(np.flatnonzero(~row)) for row in got]
    # h36m17 indices: pelvis 0, left hip 4, spine 7, thorax 8, nose 9, head 10, right shoulder 14.
    assert hidden == [{0, 4, 7}, {7, 8, 14}, {9, 10}]


def test_works_under_jit_and_vmap():
    # Anchor and positive views as one vmapped, jitted step; compared with the same calls one at a time.
    keys = jax.random.split(jax.random.key(26), 2)

    def step(key):
        k1, k2 = jax.random.split(key)
        view = A.camera_augment(FRONT_KEYPOINTS, POSES, k1, DEFAULT)
        return view, A.occlude_keypoints(view, k2, MIXED)

    views, batched = fast_jit(jax.vmap(step))(keys)
    assert views.shape == (2, B, 13, 2) and batched.visible3d.shape == (2, B, 17)
    for i in range(2):
        k1, k2 = jax.random.split(keys[i])
        view = camera_augment(FRONT_KEYPOINTS, POSES, k1, config=DEFAULT)
        one = occlude_keypoints(view, k2, config=MIXED)
        np.testing.assert_allclose(np.asarray(views[i]), np.asarray(view), atol=1e-5)
        np.testing.assert_allclose(np.asarray(batched.keypoints[i]), np.asarray(one.keypoints), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(batched.visible[i]), np.asarray(one.visible))
    assert not np.array_equal(np.asarray(views[0]), np.asarray(views[1]))


def test_config_validation_and_round_trip():
    config = A.AugmentConfig(structured_patterns=["arm", "box"], roll_range=[-5, 5])
    assert config.structured_patterns == ("arm", "box") and config.roll_range == (-5.0, 5.0)
    hash(config)  # static argument of jax.jit
    assert A.AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    bad = [
        dict(elevation_range=(30, -30)),
        dict(projection_probability=1.5),
        dict(structured_patterns=("arm", "tail")),
        dict(structured_patterns=()),
        dict(depth=0.0),
        dict(min_joint_depth=5.0),
        dict(box_size_range=(0.0, 0.0)),
    ]
    for kwargs in bad:
        name = next(iter(kwargs))
        with pytest.raises(PrposeError, match=name):
            A.AugmentConfig(**kwargs)
    with pytest.raises(PrposeError, match="unknown key"):
        A.AugmentConfig.from_dict({"azimuth": 3})
    with pytest.raises(PrposeError, match=r"poses3d_h36m17 has shape \(4, 13, 3\)"):
        A.project_random_views(np.zeros((4, 13, 3)), jax.random.key(0), config)
    with pytest.raises(PrposeError, match="batch size 3"):
        A.camera_augment(np.zeros((4, 13, 2)), np.zeros((3, 17, 3)), jax.random.key(0), config)


REALISTIC = A.AugmentConfig(depth=5.0, depth_max=14.0, elevation_range=(-60.0, 60.0))


def test_realistic_depths_keep_left_on_the_left_and_match_the_reference():
    # Per-view camera distance in [5, 14] torso units, elevations up to 60 degrees above/below: the same
    # orientation check as above (a mirror flips it), and the values equal a float64 projection at the
    # distance drawn from the same uniform (camera_augment's draw: 3 angles, the choice, then the depth).
    key = jax.random.key(11)
    config = dataclasses.replace(REALISTIC, projection_probability=1.0)
    image = np.asarray(camera_augment(front_view(POSES), POSES, key, config=config), np.float64)
    u = np.asarray(jax.random.uniform(key, (B, 5)), np.float64)
    deg = np.deg2rad
    az = deg(-180.0) + u[:, 0] * deg(360.0)
    el = deg(-60.0) + u[:, 1] * deg(120.0)
    roll = deg(-30.0) + u[:, 2] * deg(60.0)
    rotations = np.asarray(view_rotation(az, el, roll), np.float64)
    depth = 5.0 + u[:, 4] * 9.0
    want = np.stack([project_ref(POSES[i:i + 1], rotations[i:i + 1], depth[i])[0] for i in range(B)])
    np.testing.assert_allclose(image, want, atol=5e-5)
    assert np.abs(el).max() > deg(50) and depth.min() < 6 and depth.max() > 13
    centre = -depth[:, None] * rotations[:, 2, :]
    lsh, rsh, lhip = POSES[:, 11], POSES[:, 14], POSES[:, 4]
    normal = np.cross(rsh - lsh, lhip - lsh)
    triple = np.einsum("bd,bd->b", normal, lsh - centre) / np.linalg.norm(normal, axis=-1)
    orient = cross2d(image[:, RSH] - image[:, LSH], image[:, LHIP] - image[:, LSH])
    clear = np.abs(triple) > 1e-3
    assert clear.mean() > 0.9 and 0.2 < np.mean(triple[clear] > 0) < 0.8
    assert np.all(np.sign(orient[clear]) == np.sign(triple[clear]))
    # Far cameras are close to orthographic: much less perspective than the paper's depth 2.
    assert np.abs(front_view(POSES, 10.0) - front_view(POSES, 1e4)).max() < 0.5 * np.abs(
        front_view(POSES, 2.0) - front_view(POSES, 1e4)).max()


def test_profile_dropout_hides_the_nose_or_the_head_top():
    from prpose import keypoints as kp

    config = A.AugmentConfig(profile_dropout=1.0)
    x14 = np.concatenate([FRONT_KEYPOINTS, FRONT_KEYPOINTS[:, :1] + np.array([0.0, -0.1], np.float32)], axis=1)
    occ = A.occlude_keypoints(x14, jax.random.key(3), config, "input14")
    vis = np.asarray(occ.visible)
    nose, head = kp.get_profile("input14").index("nose"), kp.get_profile("input14").index("head")
    assert np.all(vis.sum(axis=1) == 13)  # exactly one joint hidden per example...
    assert np.all(~vis[:, nose] ^ ~vis[:, head])  # ... the nose or the head top,
    assert 0.35 < np.mean(~vis[:, nose]) < 0.65  # each about half the time
    # The torso is untouched, so the other joints keep their normalised positions.
    np.testing.assert_allclose(np.asarray(occ.keypoints)[:, :13][vis[:, :13]], x14[:, :13][vis[:, :13]], atol=1e-5)
    assert not np.asarray(occ.reverted).any()
    # input13 has no head top: the nose goes; with probability 0 nothing changes (same draws as before).
    vis13 = np.asarray(A.occlude_keypoints(FRONT_KEYPOINTS, jax.random.key(3), config).visible)
    assert not vis13[:, NOSE].any() and vis13[:, 1:].all()
    plain = A.occlude_keypoints(FRONT_KEYPOINTS, jax.random.key(3), A.AugmentConfig(dropout_p_apply=0.5))
    same = A.occlude_keypoints(FRONT_KEYPOINTS, jax.random.key(3), A.AugmentConfig(dropout_p_apply=0.5,
                                                                                   profile_dropout=0.0))
    np.testing.assert_array_equal(np.asarray(plain.visible), np.asarray(same.visible))


def test_structured_patterns_are_the_shared_body_parts_in_order():
    """Training's patterns hide prpose.keypoints.BODY_PARTS (the evaluation's vocabulary), variant by variant in the
    order that the sampled variant index selects (the table's rows did not change with the shared vocabulary)."""
    from prpose import keypoints as kp

    table, starts, counts = A._variant_table(("arm", "leg", "side", "lower_body", "box"), "input13")
    names = [set(np.flatnonzero(row)) for row in table]
    expected = [v for variants in EXPECTED_VARIANTS.values() for v in variants] + [set()]
    assert names == expected
    assert starts.tolist() == [0, 4, 8, 10, 11] and counts.tolist() == [4, 4, 2, 1, 1]
    for pattern, parts in A.STRUCTURED_VARIANTS.items():
        for part in parts:
            assert part is None or part in kp.BODY_PARTS, (pattern, part)
