import importlib.resources
import json

import jax.numpy as jnp
import numpy as np
import pytest

from prpose import camera
from prpose.camera import Camera, h36m_rig, look_at, project_normalized_pose, ring_rig, view_rotation
from prpose.errors import PrposeError

SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
UP = np.array([0.0, 0.0, 1.0])


def standing_person(front):
    """Head, feet, left and right shoulder of a person at the origin facing horizontal direction ``front``.

    For a Z-up person facing f, their left is up x f (facing +Y, the left hand points to -X).
    """
    f = np.asarray(front, float)
    f = f / np.linalg.norm(f)
    left = np.cross(UP, f)
    return {
        "head": np.array([0.0, 0.0, 1.7]),
        "feet": np.array([0.0, 0.0, 0.0]),
        "left_shoulder": 0.2 * left + [0, 0, 1.45],
        "right_shoulder": -0.2 * left + [0, 0, 1.45],
    }


def quat_rotate(q, v):
    """Rotate v by unit quaternion q = (w, x, y, z) via q v q* (independent of quaternion_to_matrix)."""
    def mul(a, b):
        w1, x1, y1, z1 = a
        w2, x2, y2, z2 = b
        return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                         w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])
    q = np.asarray(q, float) / np.linalg.norm(q)
    return mul(mul(q, np.concatenate([[0.0], v])), q * [1, -1, -1, -1])[1:]


@pytest.mark.parametrize("subject", ["S1", "S9"])
def test_projection_keeps_left_on_the_left(subject):
    # Real camera: the person faces the camera (front = horizontal direction to the camera centre).
    for cam in h36m_rig(subject):
        person = standing_person(cam.center * [1, 1, 0])
        uv = {k: cam.project(v)[0] for k, v in person.items()}
        assert uv["left_shoulder"][0] > uv["right_shoulder"][0] + 10, cam.name
        assert uv["head"][1] < uv["feet"][1], cam.name
    # Virtual camera at azimuth a stands in direction (sin a, -cos a, 0): a person facing it shows its front.
    for a in np.linspace(-np.pi, np.pi, 9):
        person = standing_person([np.sin(a), -np.cos(a), 0.0])
        pose = jnp.asarray(np.stack([person[k] - [0, 0, 1.0] for k in ("head", "feet", "left_shoulder",
                                                                       "right_shoulder")]))
        for e in (-0.5, 0.0, 0.5):
            uv = np.asarray(project_normalized_pose(pose, view_rotation(a, e, 0.0), depth=4.0))
            assert uv[2, 0] > uv[3, 0] + 0.01, (a, e)
            assert uv[0, 1] < uv[1, 1], (a, e)
    # Seen from behind, the left shoulder is on the image's left.
    person = standing_person([0.0, 1.0, 0.0])
    pose = jnp.asarray(np.stack([person["left_shoulder"], person["right_shoulder"]]))
    uv = np.asarray(project_normalized_pose(pose, view_rotation(0.0, 0.0, 0.0)))
    assert uv[0, 0] < uv[1, 0]


def test_x_and_y_are_not_swapped():
    cam = h36m_rig("S5")[1]
    base = cam.camera_to_world([0.0, 0.0, 4.0])
    for axis, moved in ((0, 1), (1, 0)):
        step = np.zeros(3)
        step[axis] = 0.3
        uv0 = cam.project(base, distort=False)[0]
        uv1 = cam.project(cam.camera_to_world(np.array([0.0, 0.0, 4.0]) + step), distort=False)[0]
        assert uv1[axis] > uv0[axis] + 50
        assert abs(uv1[moved] - uv0[moved]) < 1e-9
    rot = view_rotation(0.7, 0.2, 0.0)
    p = jnp.asarray(np.stack([np.zeros(3), np.asarray(rot[0]) * 0.3, np.asarray(rot[1]) * 0.3]))
    uv = np.asarray(project_normalized_pose(p, rot))
    assert uv[1, 0] > 0.1 and abs(uv[1, 1]) < 1e-6  # along camera x: u only
    assert uv[2, 1] > 0.1 and abs(uv[2, 0]) < 1e-6  # along camera y: v only


def test_real_h36m_cameras_see_a_person_at_the_origin():
    for subject in SUBJECTS:
        rig = h36m_rig(subject)
        assert len(rig) == 4
        for cam in rig:
            uv, depth = cam.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.7]]))
            assert np.all(depth > 2.0), (subject, cam.name, depth)
            assert np.all(cam.in_image(uv)), (subject, cam.name, uv)
            assert uv[1, 1] < uv[0, 1] - 200, (subject, cam.name, uv)  # head well above the feet
            # Cameras stand about 1.5 m above the floor, roughly level.
            assert 1.0 < cam.center[2] < 2.0


def test_camera_table_matches_the_json():
    text = importlib.resources.files("prpose").joinpath("data/h36m_cameras.json").read_text()
    table = json.loads(text)
    x_world_mm = np.array([300.0, -200.0, 1200.0])
    for subject in SUBJECTS:
        for cam, intr, extr in zip(h36m_rig(subject), table["intrinsics"], table["extrinsics"][subject]):
            assert cam.name == intr["id"]
            np.testing.assert_array_equal(cam.focal, intr["focal_length"])
            np.testing.assert_array_equal(cam.principal, intr["center"])
            np.testing.assert_array_equal(cam.radial, intr["radial_distortion"])
            # VideoPose3D's (p1, p0) -> 3d-pose-baseline's (p0, p1), the order Camera.project uses.
            np.testing.assert_array_equal(cam.tangential, intr["tangential_distortion"][::-1])
            assert (cam.width, cam.height) == (intr["res_w"], intr["res_h"])
            np.testing.assert_allclose(cam.center * 1000.0, extr["translation"], rtol=1e-12)
            # json: camera coords = R(q)^T (X - t), R(q) rotates camera into world; ours: R (X - C) in metres.
            q = np.asarray(extr["orientation"])
            expected_cam_mm = np.array([quat_rotate(q * [1, -1, -1, -1], x_world_mm - extr["translation"])])
            np.testing.assert_allclose(cam.world_to_camera(x_world_mm / 1000.0) * 1000.0, expected_cam_mm[0],
                                       atol=1e-6)


def test_unknown_subject_is_a_clear_error():
    with pytest.raises(PrposeError, match=r"'S2'.*S1, S5, S6, S7, S8, S9, S11"):
        h36m_rig("S2")


def test_distortion_small_near_centre_and_centre_ray_hits_principal_point():
    for cam in h36m_rig("S11"):
        ray = cam.camera_to_world(np.array([0.0, 0.0, 5.0]))
        for distort in (True, False):
            uv, depth = cam.project(ray, distort=distort)
            np.testing.assert_allclose(uv, cam.principal, atol=1e-9)
            assert depth == pytest.approx(5.0)
        near = cam.camera_to_world(np.array([0.1, -0.08, 5.0]))  # ~25 px from the centre
        far = cam.camera_to_world(np.array([1.5, 1.2, 5.0]))  # near the image corner
        d_near = np.linalg.norm(cam.project(near)[0] - cam.project(near, distort=False)[0])
        d_far = np.linalg.norm(cam.project(far)[0] - cam.project(far, distort=False)[0])
        assert 0 < d_near < 0.5
        assert d_far > 10 * d_near and d_far > 5


def test_distortion_formula_against_hand_computation():
    k = np.array([-0.2, 0.25, -0.003])
    p = np.array([-0.001, -0.0015])
    cam = Camera("c", np.eye(3), np.zeros(3), (1000.0, 1100.0), (500.0, 400.0), k, p, 1000, 800)
    x, y = 0.2, -0.1
    r2 = x * x + y * y
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * y + p[1] * x
    xd, yd = x * (radial + tan) + p[1] * r2, y * (radial + tan) + p[0] * r2
    uv, _ = cam.project(np.array([x * 3, y * 3, 3.0]))
    np.testing.assert_allclose(uv, (1000 * xd + 500, 1100 * yd + 400), rtol=1e-12)


def test_points_behind_camera_are_finite_with_negative_depth():
    cam = h36m_rig("S1")[0]
    uv, depth = cam.project(cam.camera_to_world(np.array([[0.1, 0.1, -1.0], [0.0, 0.0, 0.0]])))
    assert np.all(np.isfinite(uv)) and depth[0] < 0 and depth[1] == pytest.approx(0.0, abs=1e-12)


def test_camera_dict_round_trip_equality_and_hash():
    for cam in h36m_rig("S7") + ring_rig(3, 4.0, 1.5):
        back = Camera.from_dict(json.loads(json.dumps(cam.to_dict())))
        assert back == cam and hash(back) == hash(cam)
    a, b = h36m_rig("S7")[:2]
    assert a != b and len({a, b, Camera.from_dict(a.to_dict())}) == 2
    with pytest.raises(ValueError):
        a.rotation[0, 0] = 2.0  # read-only arrays keep the frozen dataclass honest


def test_camera_validation_errors():
    good = h36m_rig("S1")[0].to_dict()
    with pytest.raises(PrposeError, match="missing keys.*'focal'"):
        Camera.from_dict({k: v for k, v in good.items() if k != "focal"})
    with pytest.raises(PrposeError, match="'rotation'.*det"):
        Camera.from_dict({**good, "rotation": np.diag([1.0, 1.0, -1.0]).tolist()})  # a mirror
    with pytest.raises(PrposeError, match="'center'.*shape"):
        Camera.from_dict({**good, "center": [1.0, 2.0]})
    with pytest.raises(PrposeError, match="'width'"):
        Camera.from_dict({**good, "width": 0})
    with pytest.raises(PrposeError, match=r"points have shape \(4, 2\)"):
        h36m_rig("S1")[0].project(np.zeros((4, 2)))


def test_look_at_and_ring_rig():
    r = look_at([0.0, -5.0, 1.0], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(r, [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    rig = ring_rig(4, 5.0, 1.6, target_height=1.0, size=(800, 600), start_azimuth_deg=0.0)
    np.testing.assert_allclose(rig[0].center, [0.0, -5.0, 1.6], atol=1e-12)
    np.testing.assert_allclose(rig[1].center, [5.0, 0.0, 1.6], atol=1e-12)  # azimuth 90: the +X side
    for cam in rig:
        uv, depth = cam.project(np.array([0.0, 0.0, 1.0]))
        np.testing.assert_allclose(uv, (400.0, 300.0), atol=1e-9)
        assert depth > 0 and (cam.width, cam.height) == (800, 600)
        np.testing.assert_allclose(np.linalg.det(cam.rotation), 1.0)
    with pytest.raises(PrposeError, match="parallel"):
        look_at([0, 0, 5], [0, 0, 0])
    with pytest.raises(PrposeError, match="num_cameras"):
        ring_rig(0, 5.0, 1.5)


def test_view_rotation_is_proper_and_elevation_looks_down():
    rng = np.random.default_rng(0)
    a, e, r = rng.uniform(-np.pi, np.pi, 50), rng.uniform(-0.6, 0.6, 50), rng.uniform(-0.6, 0.6, 50)
    rot = np.asarray(view_rotation(a, e, r), np.float64)
    assert rot.shape == (50, 3, 3)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (50, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-6)
    # Broadcasting: scalar elevation/roll against a batch of azimuths.
    assert view_rotation(jnp.zeros((2, 3)), 0.1, 0.0).shape == (2, 3, 3, 3)
    # Without roll it equals look_at from the centre direction to the origin.
    for ai, ei in zip(a[:10], e[:10]):
        c = np.array([np.cos(ei) * np.sin(ai), -np.cos(ei) * np.cos(ai), np.sin(ei)])
        np.testing.assert_allclose(view_rotation(ai, ei, 0.0), look_at(3 * c, np.zeros(3)), atol=1e-6)
    # Elevation > 0: the optical axis points down, and the camera centre (origin - depth * z) is above.
    for elev in (0.2, 0.5):
        z_axis = np.asarray(view_rotation(0.3, elev, 0.0))[2]
        assert z_axis[2] < 0 and (-2.0 * z_axis)[2] > 0
        head_feet = jnp.asarray([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
        up_view = np.asarray(project_normalized_pose(head_feet, view_rotation(0.0, elev, 0.0), depth=4.0))
        level = np.asarray(project_normalized_pose(head_feet, view_rotation(0.0, 0.0, 0.0), depth=4.0))
        # From above, the head is closer to the camera than the feet: it lies farther from the image
        # centre (a level view is symmetric). Head above feet either way.
        assert abs(up_view[0, 1]) > abs(up_view[1, 1]) and up_view[0, 1] < up_view[1, 1]
        np.testing.assert_allclose(abs(level[0, 1]), abs(level[1, 1]), rtol=1e-6)


def test_roll_rotates_the_image_clockwise():
    base = view_rotation(0.4, 0.1, 0.0)
    right = jnp.asarray(base[0])[None]  # a point along the camera's x axis: image right
    uv0 = np.asarray(project_normalized_pose(right, base))[0]
    uv = np.asarray(project_normalized_pose(right, view_rotation(0.4, 0.1, np.pi / 2)))[0]
    assert uv0[0] > 0.3 and abs(uv0[1]) < 1e-6
    assert uv[1] > 0.3 and abs(uv[0]) < 1e-6  # right -> down: clockwise on screen (v down)
    # Roll changes no distances from the image centre.
    pose = jnp.asarray(np.random.default_rng(1).normal(size=(17, 3)) * 0.3)
    p0 = np.asarray(project_normalized_pose(pose, view_rotation(0.4, 0.1, 0.0)))
    p1 = np.asarray(project_normalized_pose(pose, view_rotation(0.4, 0.1, 0.5)))
    np.testing.assert_allclose(np.linalg.norm(p0, axis=-1), np.linalg.norm(p1, axis=-1), rtol=1e-5)


def test_project_normalized_pose_matches_numpy_and_is_finite():
    rng = np.random.default_rng(2)
    pose = rng.normal(size=(4, 17, 3)) * 0.5
    rot = np.asarray(view_rotation(rng.uniform(-3, 3, 4), rng.uniform(-0.5, 0.5, 4), rng.uniform(-0.5, 0.5, 4)),
                     np.float64)
    cam = np.einsum("bij,bkj->bki", rot, pose) + [0, 0, 2.0]
    expected = cam[..., :2] / cam[..., 2:]
    np.testing.assert_allclose(project_normalized_pose(pose, rot), expected, rtol=1e-4, atol=1e-5)
    # A joint at or behind the camera plane gives a finite value instead of inf/NaN.
    behind = jnp.asarray([[0.0, 0.0, -2.0], [0.1, 0.0, -3.0]])  # identity rotation: camera-z 0 and -1
    out = project_normalized_pose(behind, jnp.eye(3))
    assert np.all(np.isfinite(np.asarray(out)))
    with pytest.raises(PrposeError, match="rotation"):
        project_normalized_pose(pose, np.eye(2))
