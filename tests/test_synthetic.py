import argparse

import numpy as np
import pytest

from prpose.data_prep import synthetic as prep_synthetic
from prpose import synthetic as syn
from prpose.camera import ring_rig
from prpose.cli import main
from prpose.dataset import load_dataset
from prpose.errors import PrposeError
from prpose.keypoints import H36M17

J = {n: i for i, n in enumerate(H36M17.joints)}


def _normalize_3d(p):
    """float64 reference of REFERENCE.md's 3D normalisation (pelvis origin, |pelvis-spine|+|spine-thorax| = 1)."""
    p = p - p[..., :1, :]
    s = np.linalg.norm(p[..., 7, :], axis=-1) + np.linalg.norm(p[..., 8, :] - p[..., 7, :], axis=-1)
    return p / s[..., None, None]


def _np_mpjpe(a, b):
    """float64 reference: align a to b (rotation without reflection, uniform scale, translation)."""
    a0, b0 = a - a.mean(-2, keepdims=True), b - b.mean(-2, keepdims=True)
    u, s, vt = np.linalg.svd(np.swapaxes(a0, -1, -2) @ b0)
    d = np.sign(np.linalg.det(u @ vt))
    s, u = s.copy(), u.copy()
    s[..., -1] *= d
    u[..., :, -1] *= d[..., None]
    scale = s.sum(-1) / (a0**2).sum((-1, -2))
    aligned = scale[..., None, None] * a0 @ (u @ vt) + b.mean(-2, keepdims=True)
    return np.linalg.norm(aligned - b, axis=-1).mean(-1)


@pytest.fixture(scope="module")
def motions():
    poses, kinds = syn.generate_motions(40, 60, seed=3, return_kinds=True)
    return np.stack(poses), kinds


def test_reference_np_mpjpe_is_zero_for_similar_copy_and_never_reflects(motions):
    p = motions[0][0, 10]
    c, s = np.cos(0.7), np.sin(0.7)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert _np_mpjpe(1.7 * p @ rot.T + 3.0, p) < 1e-9
    mirrored = p * np.array([1.0, -1.0, 1.0])
    # A mirror image is not a proper similarity: the alignment must not reflect.
    assert _np_mpjpe(_normalize_3d(mirrored), _normalize_3d(p)) > 0.01


def test_deterministic_and_prefix_stable():
    a = syn.generate_motions(3, 20, seed=5)
    b = syn.generate_motions(5, 20, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = syn.generate_motions(3, 20, seed=6)
    assert not np.allclose(a[0], c[0])
    assert all(p.shape == (20, 17, 3) for p in b)


def test_all_motion_kinds_occur(motions):
    assert set(motions[1]) == set(syn.MOTION_KINDS)


def test_bone_lengths_constant_over_time_and_adult(motions):
    poses = motions[0]
    lengths = np.stack([np.linalg.norm(poses[:, :, a] - poses[:, :, b], axis=-1) for a, b in H36M17.edge_indices], -1)
    np.testing.assert_allclose(lengths, np.broadcast_to(lengths[:, :1], lengths.shape), atol=1e-9)  # (S, T, E): same every frame
    # Left and right limbs have equal lengths.
    name_edges = H36M17.edges
    for e, (a, b) in enumerate(name_edges):
        if a.startswith("left_") or b.startswith("left_"):
            twin = name_edges.index((a.replace("left_", "right_"), b.replace("left_", "right_")))
            np.testing.assert_allclose(lengths[:, 0, e], lengths[:, 0, twin])
    # Adult sizes: thigh 0.45 m x U(0.9, 1.1) x U(0.96, 1.04); stature (ankle to head when standing) ~1.5-1.95 m.
    thigh = lengths[:, 0, name_edges.index(("right_hip", "right_knee"))]
    assert thigh.min() >= 0.45 * 0.9 * 0.96 - 1e-9 and thigh.max() <= 0.45 * 1.1 * 1.04 + 1e-9
    assert len(np.unique(np.round(thigh, 6))) > 30  # per-sequence scale really varies


def test_feet_on_the_floor_and_upright(motions):
    poses = motions[0]
    z = poses[..., 2]
    assert z.min() >= -1e-9  # nothing below the floor
    lowest = np.minimum(z[..., J["left_ankle"]], z[..., J["right_ankle"]])
    kneel = np.minimum(z[..., J["left_knee"]], z[..., J["right_knee"]])
    # Every frame stands on a foot (ankle at 8 cm) or kneels; nobody floats.
    assert np.all(np.isclose(lowest, syn.ANKLE_HEIGHT) | (lowest > syn.ANKLE_HEIGHT) & (kneel < 0.06 + 1e-9)
                  | (z.min(-1) < 1e-9))
    assert np.mean(np.isclose(lowest, syn.ANKLE_HEIGHT)) > 0.95
    assert np.all(z[..., J["head"]] > z[..., J["pelvis"]])  # no handstands
    assert np.abs(poses[..., :2]).max() < 2.5  # stays inside a capture volume


def test_knees_and_elbows_within_hinge_limits(motions):
    poses = motions[0]

    def interior_angle(a, b, c):
        u, v = poses[..., J[a], :] - poses[..., J[b], :], poses[..., J[c], :] - poses[..., J[b], :]
        cos = np.sum(u * v, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    for side in ("left", "right"):
        knee = interior_angle(f"{side}_hip", f"{side}_knee", f"{side}_ankle")
        elbow = interior_angle(f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist")
        assert knee.min() >= 180 - syn.LIMITS["knee"][1] - 1e-6
        assert elbow.min() >= 180 - syn.LIMITS["elbow"][1] - 1e-6
        assert knee.max() - knee.min() > 60 and elbow.max() - elbow.min() > 60  # they do move


def test_hinges_bend_the_anatomical_way():
    t = 1
    zero = np.zeros(t)

    def pose(**angles):
        return syn.forward_kinematics({k: np.full(t, v) for k, v in angles.items()}, syn.BONES, zero, np.zeros((t, 2)))[0]

    # Facing +X (yaw 0), left is +Y.
    p = pose(left_knee=90.0, right_knee=90.0, left_hip_flex=0.0, right_hip_flex=0.0)
    for side in ("left", "right"):
        assert p[J[f"{side}_ankle"], 0] < p[J[f"{side}_knee"], 0] - 0.3  # shin points backward
    p = pose(left_elbow=90.0, right_elbow=90.0, left_arm_elev=0.0, right_arm_elev=0.0, left_arm_az=0.0, right_arm_az=0.0)
    for side in ("left", "right"):
        assert p[J[f"{side}_wrist"], 0] > p[J[f"{side}_elbow"], 0] + 0.2  # forearm points forward
    p = pose(left_hip_flex=90.0)
    assert p[J["left_knee"], 0] > p[J["left_hip"], 0] + 0.4  # hip flexion lifts the thigh forward
    p = pose(left_arm_az=90.0, left_arm_elev=90.0, right_arm_az=90.0, right_arm_elev=90.0)
    assert p[J["left_wrist"], 1] > 0.6 and p[J["right_wrist"], 1] < -0.6  # T-pose: each arm out on its own side
    assert p[J["left_hip"], 1] > 0 > p[J["right_hip"], 1]


def test_left_stays_left_when_facing_a_camera():
    # A ring camera at azimuth 0 stands on the -Y side looking toward +Y. A person facing -Y (yaw -90 deg)
    # faces it, so the person's left must appear on the image's right (larger u).
    cam = ring_rig(1, distance=4.0, height=1.0)[0]
    p = syn.forward_kinematics({}, syn.BONES, np.array([-np.pi / 2]), np.zeros((1, 2)))[0]
    uv, depth = cam.project(p)
    assert np.all(depth > 0)
    for joint in ("hip", "shoulder", "ankle", "wrist"):
        assert uv[J[f"left_{joint}"], 0] > uv[J[f"right_{joint}"], 0]
    assert uv[J["head"], 1] < uv[J["pelvis"], 1] < uv[J["left_ankle"], 1]  # upright: head at the top


def test_no_limb_through_the_torso(motions):
    poses = motions[0]
    assert syn.is_plausible(poses).all()
    # Independent check: wrists never inside a 10 cm-radius cylinder around the pelvis-thorax axis below the
    # shoulders (the generator's own check uses the spine polyline and includes forearm midpoints).
    axis = poses[..., J["thorax"], :] - poses[..., J["pelvis"], :]
    for side in ("left", "right"):
        w = poses[..., J[f"{side}_wrist"], :] - poses[..., J["pelvis"], :]
        along = np.sum(w * axis, -1) / np.sum(axis * axis, -1)
        radial = np.linalg.norm(w - along[..., None] * axis, axis=-1)
        inside = (along > 0.1) & (along < 0.9) & (radial < 0.06)
        assert not inside.any()


def test_motion_is_smooth(motions):
    step = np.linalg.norm(np.diff(motions[0], axis=1), axis=-1)
    assert step.max() < 0.25  # metres per 1/30 s: under 7.5 m/s for any joint
    assert np.percentile(step, 50) < 0.05


def test_poses_are_diverse(motions):
    poses = motions[0]
    rng = np.random.default_rng(0)
    frames = _normalize_3d(poses[:, rng.integers(0, poses.shape[1], 6)].reshape(-1, 17, 3))  # 240 poses
    i, j = np.triu_indices(len(frames), 1)
    d = _np_mpjpe(frames[i], frames[j])
    assert np.mean(d >= 0.1) > 0.9  # the match threshold kappa = 0.1: most pairs are distinct poses
    assert np.median(d) > 0.2


def test_rejects_bad_arguments():
    with pytest.raises(PrposeError, match="num_sequences must be a positive integer"):
        syn.generate_motions(0, 10, 0)
    with pytest.raises(PrposeError, match="unknown motion kind 'dance'"):
        syn.generate_sequence(np.random.default_rng(0), 10, kind="dance")


def _prep_args(tmp_path, **kw):
    parser = argparse.ArgumentParser()
    prep_synthetic.configure_parser(parser)
    argv = ["--out", str(tmp_path / "syn"), "--sequences", "10", "--frames", "12"]
    for k, v in kw.items():
        argv += [f"--{k}"] + ([] if v is True else [str(v)])
    return parser.parse_args(argv)


def test_prep_synthetic_writes_split_dataset(tmp_path, capsys):
    assert prep_synthetic.main(_prep_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "120 frames x 4 cameras" in out and "synthetic: true" in out
    d = load_dataset(tmp_path / "syn")
    assert len(d) == 120 and d.camera_names == ["54138969", "55011271", "58860488", "60457274"]
    seqs = {s: set(d.labels("sequence", d.indices(split=s)).tolist()) for s in ("train", "val", "test")}
    assert [len(seqs[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert not (seqs["train"] & seqs["test"]) and not (seqs["train"] & seqs["val"])
    assert d.visibility.mean() > 0.99  # the person stays in every camera's view
    assert d.info["synthetic"] is True
    # Re-running refuses to overwrite, with one line on stderr, unless asked.
    assert main(["prep", "synthetic", "--out", str(tmp_path / "syn"), "--sequences", "10", "--frames", "12"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prpose prep synthetic: error:") and "overwrite" in err[0]
    assert prep_synthetic.main(_prep_args(tmp_path, overwrite=True)) == 0
    np.testing.assert_array_equal(load_dataset(tmp_path / "syn").keypoints2d, d.keypoints2d)  # deterministic


def test_prep_synthetic_ring_rig(tmp_path, capsys):
    assert prep_synthetic.main(_prep_args(tmp_path, rig="ring", cameras=6)) == 0
    d = load_dataset(tmp_path / "syn")
    assert d.camera_names == [f"ring{i}" for i in range(6)]
    assert d.visibility.mean() > 0.99
    with pytest.raises(PrposeError, match="--frames must be >= 1"):
        prep_synthetic.main(_prep_args(tmp_path, frames=0, overwrite=True))
