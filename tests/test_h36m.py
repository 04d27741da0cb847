import argparse

import h5py
import numpy as np
import pytest

from prpose.data_prep import common, h36m
from prpose import synthetic
from prpose.camera import h36m_rig
from prpose.dataset import load_dataset
from prpose.errors import run_command
from prpose.keypoints import H36M17, H36M32, H36M32_TO_H36M17


def _to_h36m32(p17):
    """Synthetic h36m17 poses (T, 17, 3) -> the raw 32-joint layout; the extra joints sit near their parents."""
    t = p17.shape[0]
    out = np.zeros((t, 32, 3))
    out[:, list(H36M32_TO_H36M17)] = p17
    for i, name in enumerate(H36M32.joints):
        if i in H36M32_TO_H36M17:
            continue
        base = name.replace("_dup2", "").replace("_dup", "")
        for suffix, parent in (("foot", "ankle"), ("toe", "ankle"), ("thumb", "wrist"), ("hand_tip", "wrist"),
                               ("hand", "wrist")):
            base = base.replace(suffix, parent) if base.endswith(suffix) else base
        out[:, i] = p17[:, H36M17.index(base)] + 0.05 * (i % 3)
    return out


@pytest.fixture(scope="module")
def motions():
    poses = synthetic.generate_motions(4, 23, seed=11)
    names = [("S1", "Walking"), ("S1", "Directions 1"), ("S9", "Sitting"), ("S11", "Greeting 2")]
    return {key: _to_h36m32(p) for key, p in zip(names, poses)}


def _write_videopose3d(path, motions, dtype=np.float32):
    data = {}
    for (subject, action), p in motions.items():
        data.setdefault(subject, {})[action] = p.astype(dtype)
    np.savez(path, positions_3d=data)
    return path


def _write_baseline(root, motions):
    for (subject, action), p in motions.items():
        folder = root / subject / "MyPoses" / "3D_positions"
        folder.mkdir(parents=True, exist_ok=True)
        with h5py.File(folder / f"{action}.h5", "w") as f:
            # (96, T) millimetres, joint-major: column t is frame t's (32, 3) flattened.
            f["3D_positions"] = (p * 1000.0).reshape(len(p), 96).T
    return root


def _run(source, out, *extra, trust=True):
    parser = argparse.ArgumentParser()
    h36m.configure_parser(parser)
    trusted = ["--trust-pickle"] if trust and str(source).endswith(".npz") else []
    args = parser.parse_args([str(source), "--out", str(out), *trusted, *extra])
    return run_command("prpose prep h36m", h36m.main, args)  # the CLI's error handling, as `prpose prep h36m`


def test_videopose3d_archive_converts_with_real_cameras_and_protocol_splits(tmp_path, motions, capsys):
    src = _write_videopose3d(tmp_path / "data_3d_h36m.npz", motions)
    assert _run(src, tmp_path / "out") == 0
    d = load_dataset(tmp_path / "out")
    assert len(d) == 4 * 23 and d.camera_names == ["54138969", "55011271", "58860488", "60457274"]
    assert d.table("sequence") == ["S1/Directions 1", "S1/Walking", "S9/Sitting", "S11/Greeting 2"]
    seq = d.labels("sequence")
    rows = np.flatnonzero(seq == "S9/Sitting")
    # 3D labels: the 17 of the 32 joints, unchanged (metres).
    expected = motions[("S9", "Sitting")][:, list(H36M32_TO_H36M17)].astype(np.float32)
    np.testing.assert_allclose(d.poses3d[rows], expected, atol=1e-6)
    # 2D: S9's own cameras (not S1's), with distortion.
    kp, vis = common.project_to_rig(expected.astype(np.float64), h36m_rig("S9"))
    np.testing.assert_allclose(d.keypoints2d[rows], kp, atol=1e-3)
    s1_cams = h36m_rig("S1")
    assert d.cameras(int(rows[0])) == h36m_rig("S9") and d.cameras(0) == s1_cams
    assert not np.allclose(common.project_to_rig(expected.astype(np.float64), s1_cams)[0], kp)
    assert set(d.labels("subject", d.indices(split="train"))) == {"S1"}
    assert set(d.labels("subject", d.indices(split="test"))) == {"S9", "S11"}
    assert d.indices(split="val").size == 0
    assert d.info["layout"] == "videopose3d"
    out = capsys.readouterr().out
    assert "S9/Sitting" in out and "total: 4 file(s), 92 frames read, 92 converted" in out


def test_baseline_tree_in_millimetres_gives_the_same_dataset(tmp_path, motions):
    _run(_write_videopose3d(tmp_path / "a.npz", motions, dtype=np.float64), tmp_path / "vp")
    root = _write_baseline(tmp_path / "h36m", motions)
    assert _run(root, tmp_path / "bl") == 0
    a, b = load_dataset(tmp_path / "vp"), load_dataset(tmp_path / "bl")
    assert b.info["layout"] == "baseline"
    assert a.table("sequence") == b.table("sequence")
    np.testing.assert_allclose(b.poses3d, a.poses3d, atol=1e-6)
    np.testing.assert_allclose(b.keypoints2d, a.keypoints2d, atol=1e-3)
    np.testing.assert_array_equal(b.visibility, a.visibility)


def test_subsample_and_subject_filter(tmp_path, motions, capsys):
    src = _write_videopose3d(tmp_path / "data_3d_h36m.npz", motions)
    assert _run(src, tmp_path / "out", "--subsample", "10", "--subjects", "S9", "S11") == 0
    d = load_dataset(tmp_path / "out")
    assert set(d.table("subject")) == {"S9", "S11"}
    assert d.frame.tolist() == [0, 10, 20, 0, 10, 20]  # original frame numbers, every 10th
    rows = np.flatnonzero(d.labels("sequence") == "S11/Greeting 2")
    np.testing.assert_allclose(d.poses3d[rows], motions[("S11", "Greeting 2")][[0, 10, 20]][:, list(H36M32_TO_H36M17)],
                               atol=1e-6)
    assert "skipped: subject not selected" in capsys.readouterr().out


def _error(capsys):
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]  # minus progress bars
    assert len(err) == 1 and err[0].startswith("prpose prep h36m: error: ")
    return err[0]


@pytest.mark.parametrize("case, message", [
    ("shape", r"positions_3d\['S1'\]\['Walking'\]: positions have shape \(23, 31, 3\); expected \(T, 32, 3\)"),
    ("nan", r"positions_3d\['S9'\]\['Sitting'\]: 1 non-finite value\(s\) in 1 frame\(s\), first at frame 4"),
    ("subject", r"positions_3d: unknown subject 'S2'"),
    ("millimetres", r"median \|coordinate\| is .* m after reading as m; expected metres-scale"),
    ("key", r"missing key 'positions_3d' \(keys: \['poses'\]\)"),
])
def test_bad_archives_fail_with_one_line_and_no_output(tmp_path, motions, capsys, case, message):
    m = dict(motions)
    path = tmp_path / "data_3d_h36m.npz"
    if case == "shape":
        m[("S1", "Walking")] = m[("S1", "Walking")][:, :31]
    elif case == "nan":
        m[("S9", "Sitting")] = m[("S9", "Sitting")].copy()
        m[("S9", "Sitting")][4, 3, 0] = np.nan
    elif case == "subject":
        m[("S2", "Walking")] = m[("S1", "Walking")]
    elif case == "millimetres":
        m = {k: v * 1000.0 for k, v in m.items()}
    if case == "key":
        np.savez(path, poses=np.zeros(3))
    else:
        _write_videopose3d(path, m)
    assert _run(path, tmp_path / "out") == 2
    line = _error(capsys)
    assert str(path) in line
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_3d_h36m.npz"]  # no temp dirs either


def test_bad_baseline_trees(tmp_path, motions, capsys):
    root = _write_baseline(tmp_path / "h36m", {k: v for k, v in motions.items() if k[0] == "S1"})
    bad = root / "S1" / "MyPoses" / "3D_positions" / "Eating.h5"
    with h5py.File(bad, "w") as f:
        f["3D_positions"] = np.zeros((95, 10))
    assert _run(root, tmp_path / "out") == 2
    assert f"{bad}: '3D_positions' has shape (95, 10); expected (96, T)" in _error(capsys)
    with h5py.File(bad, "w") as f:
        f["positions"] = np.zeros((96, 10))
    assert _run(root, tmp_path / "out") == 2
    assert "missing dataset '3D_positions'" in _error(capsys)
    bad.unlink()
    (tmp_path / "h36m" / "S4" / "MyPoses" / "3D_positions").mkdir(parents=True)
    assert _run(root, tmp_path / "out") == 2
    assert "unknown subject 'S4'" in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_argument_errors(tmp_path, motions, capsys):
    src = _write_videopose3d(tmp_path / "data_3d_h36m.npz", motions)
    assert _run(src, tmp_path / "out", "--subjects", "S3") == 2
    assert "--subjects: unknown subject 'S3'" in _error(capsys)
    assert _run(src, tmp_path / "out", "--subjects", "S5") == 2
    assert "subject(s) ['S5'] requested but not in the source" in _error(capsys)
    assert _run(src, tmp_path / "out", "--subsample", "0") == 2
    assert "--subsample must be >= 1" in _error(capsys)
    assert _run(tmp_path / "nothing.npz", tmp_path / "out") == 2
    assert "no such file or folder" in _error(capsys)
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path / "empty", tmp_path / "out") == 2
    assert "not a 3d-pose-baseline tree" in _error(capsys)
    assert _run(src, tmp_path / "out", "--layout", "baseline") == 2
    assert "--layout baseline expects the 3d-pose-baseline root folder" in _error(capsys)


# ---- the 3d-pose-baseline layout: cameras.h5 + 3D_positions + StackedHourglass --------------------------
# Stacked Hourglass / MPII joint order (3d-pose-baseline: RFoot, RKnee, RHip, LHip, LKnee, LFoot, Hip, Spine,
# Thorax, Head, RWrist, RElbow, RShoulder, LShoulder, LElbow, LWrist) with the h36m17 joint each slot stands
# for, written out independently of prpose.keypoints. Slot 7 is MPII's thorax, slot 8 its upper neck (no h36m17
# twin: the fixture puts it halfway between thorax and nose), as measured on the real data.
SH_AS_H36M17 = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
                None, "head", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
                "left_wrist")


def _sh_order(ref):
    """(T, 17, 2) h36m17 pixels -> (T, 16, 2) in the detector's slot order."""
    mid = 0.5 * (ref[:, H36M17.index("thorax")] + ref[:, H36M17.index("nose")])
    return np.stack([ref[:, H36M17.index(j)] if j else mid for j in SH_AS_H36M17], 1)


def project_point_radial(P, R, T, f, c, k, p):
    """3d-pose-baseline's cameras.project_point_radial, float64: P (N, 3) mm, R world->camera (the stored R
    transposed), T (3, 1) mm, f, c (2, 1), k (3, 1), p (2, 1) -> (N, 2) pixels."""
    N = P.shape[0]
    X = R.dot(P.T - T)
    XX = X[:2, :] / X[2, :]
    r2 = XX[0, :] ** 2 + XX[1, :] ** 2
    radial = 1 + np.einsum("ij,ij->j", np.tile(k, (1, N)), np.array([r2, r2 ** 2, r2 ** 3]))
    tan = p[0] * XX[1, :] + p[1] * XX[0, :]
    XXX = XX * np.tile(radial + tan, (2, 1)) + np.outer(np.array([p[1], p[0]]).reshape(-1), r2)
    return ((f * XXX) + c).T


def _file_cameras(seed=0):
    """Per-subject camera parameters as cameras.h5 stores them; deliberately unlike the packaged table."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in ("S1", "S9", "S11"):
        cams = []
        for cam in h36m_rig(s):
            cams.append(dict(R=cam.rotation.T.copy(),  # stored transposed
                             T=(cam.center * 1000.0 + rng.normal(0, 80, 3)).reshape(3, 1),
                             f=(cam.focal * 1.02).reshape(2, 1), c=(cam.principal + [7.0, -5.0]).reshape(2, 1),
                             k=np.array([[-0.21], [0.25], [-0.004]]), p=np.array([[-0.004], [0.002]]), name=cam.name))
        out[s] = cams
    return out


def _write_cameras_h5(path, cameras):
    with h5py.File(path, "w") as f:
        for s, cams in cameras.items():
            for i, cam in enumerate(cams, 1):
                g = f.create_group(f"subject{s[1:]}/camera{i}")
                for key in ("R", "T", "f", "c", "k", "p"):
                    g[key] = cam[key]
                g["Name"] = np.array([[float(ord(ch))] for ch in cam["name"]])
        f.create_group("3dtest")  # the real file has it too; it is not a subject


def _write_detections(root, subject, trial, camera_index, detections):
    folder = root / subject / "StackedHourglass"
    folder.mkdir(parents=True, exist_ok=True)
    name = h36m.CAMERA_IDS[camera_index]
    with h5py.File(folder / f"{trial.replace(' ', '_')}.{name}.h5", "w") as f:
        f["poses"] = detections


def _reference_pixels(p32_metres, cam):
    """(T, 32, 3) world metres -> (T, 17, 2) h36m17 pixels by the float64 reference."""
    p17 = p32_metres[:, list(H36M32_TO_H36M17)] * 1000.0
    flat = project_point_radial(p17.reshape(-1, 3), cam["R"].T, cam["T"], cam["f"], cam["c"], cam["k"], cam["p"])
    return flat.reshape(len(p17), 17, 2)


@pytest.fixture()
def baseline_tree(tmp_path, motions):
    """A full fixture tree: cameras.h5, 3D files, detections = reference projection + a per-joint offset, except:
    S11/Greeting 2 has no file for camera 54138969, S9/Sitting has one non-finite joint, and an orphan file."""
    root = _write_baseline(tmp_path / "h36m", motions)
    cameras = _file_cameras()
    _write_cameras_h5(root / "cameras.h5", cameras)
    offset = np.stack([np.arange(16.0), 0.5 * np.arange(16.0)], -1)
    for (subject, trial), p in motions.items():
        for c, cam in enumerate(cameras[subject]):
            if (subject, trial, c) == ("S11", "Greeting 2", 0):
                continue
            ref = _reference_pixels(p, cam)
            det = _sh_order(ref) + offset
            if (subject, trial, c) == ("S9", "Sitting", 2):
                det[5, 15, 1] = np.nan  # left wrist of frame 5
            _write_detections(root, subject, trial, c, det)
    _write_detections(root, "S1", "Eating", 1, np.zeros((4, 16, 2)))  # no 3D file for it
    return root, cameras, offset


def test_baseline_tree_uses_cameras_h5_and_matches_project_point_radial(tmp_path, motions, baseline_tree, capsys):
    root, cameras, _ = baseline_tree
    assert _run(root, tmp_path / "out", "--val-fraction", "0") == 0
    d = load_dataset(tmp_path / "out")
    assert "cameras.h5" in d.info["cameras"]
    for (subject, trial), p in motions.items():
        rows = np.flatnonzero(d.labels("sequence") == f"{subject}/{trial}")
        for c, cam in enumerate(cameras[subject]):
            ref = _reference_pixels(p, cam)
            np.testing.assert_allclose(d.keypoints2d[rows, c], ref, atol=2e-3, err_msg=f"{subject}/{trial} camera {c}")
        # Not the packaged table's calibration (the fixture moved every camera).
        assert np.abs(d.keypoints2d[rows] - common.project_to_rig(d.poses3d[rows].astype(np.float64),
                                                                   h36m_rig(subject))[0]).max() > 5.0
    cam = d.cameras(0)[0]
    np.testing.assert_allclose(cam.center, cameras["S1"][0]["T"].ravel() / 1000.0)
    np.testing.assert_allclose(cam.rotation, cameras["S1"][0]["R"].T)


def test_detections_are_stored_by_joint_name_beside_the_projection(tmp_path, motions, baseline_tree, capsys):
    root, cameras, offset = baseline_tree
    assert _run(root, tmp_path / "out") == 0
    out = capsys.readouterr().out
    d = load_dataset(tmp_path / "out")
    assert d.manifest["version"] == 2 and d.has_detections
    assert d.detections_info["detector"] == "stacked_hourglass" and d.detections_info["profile"] == "mpii16"
    assert d.detections_info["missing_files"] == ["S11/StackedHourglass/Greeting_2.54138969.h5"]
    assert d.detections_info["nonfinite_joints"] == 1 and d.detections_score is None
    nose = H36M17.index("nose")
    for (subject, trial), p in motions.items():
        rows = np.flatnonzero(d.labels("sequence") == f"{subject}/{trial}")
        for c, cam in enumerate(cameras[subject]):
            det, vis = d.detections2d[rows, c], d.detections_visible[rows, c]
            if (subject, trial, c) == ("S11", "Greeting 2", 0):
                assert not vis.any() and not det.any()
                continue
            ref = _reference_pixels(p, cam)
            for i, joint in enumerate(SH_AS_H36M17):
                if joint is None:
                    continue
                j = H36M17.index(joint)
                expect_vis = np.ones(len(rows), bool)
                if (subject, trial, c) == ("S9", "Sitting", 2) and joint == "left_wrist":
                    expect_vis[5] = False
                np.testing.assert_array_equal(vis[:, j], expect_vis)
                np.testing.assert_allclose(det[vis[:, j], j], ref[vis[:, j], j] + offset[i], atol=2e-3, err_msg=joint)
            spine = H36M17.index("spine")
            assert not vis[:, [nose, spine]].any() and not det[:, [nose, spine]].any()
            # Projected ground truth and detections agree within the fixture's offsets (largest 15 px).
            assert np.abs(det[vis] - d.keypoints2d[rows, c][vis]).max() < 16.0
    assert "S1/StackedHourglass/Eating.55011271.h5" in out and "skipped: detections without a 3D_positions file" in out
    assert "no detections for camera(s) 54138969" in out
    assert "1 missing (S11/StackedHourglass/Greeting_2.54138969.h5), 1 non-finite joint(s)" in out
    summary = d.summary()
    assert "detections: stacked_hourglass (profile mpii16)" in summary


def test_baseline_left_stays_left_and_the_optical_axis_hits_the_principal_point(tmp_path):
    """A hand-built scene: cameras 5 m in front of / behind / beside a subject facing -Y whose left side is +X."""
    from prpose.camera import look_at

    pose17 = {"pelvis": (0, 0, 1.0), "right_hip": (-0.12, 0, 1.0), "right_knee": (-0.12, 0, 0.55),
              "right_ankle": (-0.12, 0, 0.1), "left_hip": (0.12, 0, 1.0), "left_knee": (0.12, 0, 0.55),
              "left_ankle": (0.12, 0, 0.1), "spine": (0, 0, 1.25), "thorax": (0, 0, 1.5), "nose": (0, -0.1, 1.62),
              "head": (0, 0, 1.75), "left_shoulder": (0.2, 0, 1.48), "left_elbow": (0.45, 0, 1.48),
              "left_wrist": (0.7, 0, 1.48), "right_shoulder": (-0.2, 0, 1.48), "right_elbow": (-0.45, 0, 1.48),
              "right_wrist": (-0.7, 0, 1.48)}
    p17 = np.array([pose17[j] for j in H36M17.joints])
    p32 = _to_h36m32(np.repeat(p17[None], 3, 0))
    root = _write_baseline(tmp_path / "h36m", {("S9", "Posing 1"): p32})
    centres = [(0, -5.0, 1.0), (0, 5.0, 1.0), (5.0, 0, 1.0), (-5.0, 0, 1.0)]  # front, back, subject's left, right
    cams = []
    for name, centre in zip(h36m.CAMERA_IDS, centres):
        r = look_at(np.array(centre), np.array([0, 0, 1.0]))
        cams.append(dict(R=r.T, T=np.array(centre).reshape(3, 1) * 1000.0, f=np.array([[1150.0], [1148.0]]),
                         c=np.array([[512.0], [515.0]]), k=np.array([[-0.2], [0.24], [-0.003]]),
                         p=np.array([[-0.0014], [-0.001]]), name=name))
    _write_cameras_h5(root / "cameras.h5", {"S9": cams})
    for c, cam in enumerate(cams):  # a perfect detector
        _write_detections(root, "S9", "Posing 1", c,
                          _sh_order(_reference_pixels(p32, cam)))
    assert _run(root, tmp_path / "out") == 0
    d = load_dataset(tmp_path / "out")
    kp, det = d.keypoints2d[0], d.detections2d[0]
    i = {j: H36M17.index(j) for j in ("pelvis", "left_wrist", "right_wrist", "left_ankle", "right_ankle", "head")}
    for source in (kp, det):
        # The pelvis is on every camera's optical axis: exactly the principal point, distortion or not.
        np.testing.assert_allclose(source[:, i["pelvis"]], [[512.0, 515.0]] * 4, atol=1e-3)
        # Seen from the front the subject's left is on the image's right; from behind, on the left.
        assert source[0, i["left_wrist"], 0] > 512 + 100 > 512 - 100 > source[0, i["right_wrist"], 0]
        assert source[1, i["left_wrist"], 0] < 512 - 100 < 512 + 100 < source[1, i["right_wrist"], 0]
        assert source[0, i["left_ankle"], 0] > source[0, i["right_ankle"], 0]
        # Up is up (v grows downward).
        assert source[0, i["head"], 1] < 515 < source[0, i["left_ankle"], 1]
    np.testing.assert_allclose(det[d.detections_visible[0]], kp[d.detections_visible[0]], atol=1e-3)


def test_baseline_detection_file_of_the_wrong_length_is_refused(tmp_path, motions, baseline_tree, capsys):
    root, _, _ = baseline_tree
    _write_detections(root, "S9", "Sitting", 3, np.zeros((22, 16, 2)))
    assert _run(root, tmp_path / "out") == 2
    line = _error(capsys)
    assert "S9/StackedHourglass/Sitting.60457274.h5: 'poses' is float64 (22, 16, 2); expected numbers of shape (23, 16, 2)" in line
    assert not (tmp_path / "out").exists()
    capsys.readouterr()
    assert _run(root, tmp_path / "out", "--no-detections") == 0
    d = load_dataset(tmp_path / "out")
    assert not d.has_detections and d.manifest["version"] == 1


def test_keep_frames_keeps_exactly_the_listed_frames_and_reports_what_is_missing(tmp_path, motions, capsys):
    root = _write_baseline(tmp_path / "h36m", motions)
    listed = {"S9:Sitting": [0, 10, 20, 30, 40], "S11:Greeting 2": [5, 6], "S9:Discussion 1": [10, 20, 30]}
    (tmp_path / "frames.json").write_text(__import__("json").dumps({"frames": listed}))
    assert _run(root, tmp_path / "out", "--keep-frames", str(tmp_path / "frames.json"), "--subsample", "7",
                "--val-fraction", "0") == 0
    out = capsys.readouterr().out
    d = load_dataset(tmp_path / "out")
    seq = d.labels("sequence")
    assert d.frame[seq == "S9/Sitting"].tolist() == [0, 10, 20]  # 30 and 40 are beyond its 23 frames
    assert d.frame[seq == "S11/Greeting 2"].tolist() == [5, 6]
    assert d.frame[seq == "S1/Walking"].tolist() == [0, 7, 14, 21]  # S1 is not in the list: --subsample
    rows = np.flatnonzero(seq == "S9/Sitting")
    np.testing.assert_allclose(d.poses3d[rows], motions[("S9", "Sitting")][[0, 10, 20]][:, list(H36M32_TO_H36M17)], atol=1e-6)
    k = d.info["keep_frames"]
    assert (k["listed_frames"], k["provided_frames"], k["missing_trials"]) == (10, 5, ["S9:Discussion 1"])
    assert k["frames_beyond_trial_end"] == {"S9:Sitting": 2}
    assert "--keep-frames: 5 of 10 listed frames provided; missing trials: S9:Discussion 1" in out
    assert "2 listed frame(s) beyond the trial's end" in out
    assert set(d.labels("split", np.flatnonzero(d.labels("subject") != "S1"))) == {"test"}


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "expected an object with a non-empty 'frames' object"),
    ('{"frames": {"S9-Sitting": [1]}}', "key 'S9-Sitting'; expected '<subject>:<trial>'"),
    ('{"frames": {"S2:Sitting": [1]}}', "unknown subject 'S2'"),
    ('{"frames": {"S9:Sitting": [1, -2]}}', "'S9:Sitting' must list non-negative integer frame numbers"),
    ("{nope", "not valid JSON"),
])
def test_bad_keep_frames_files(tmp_path, motions, capsys, content, message):
    root = _write_baseline(tmp_path / "h36m", motions)
    (tmp_path / "f.json").write_text(content)
    assert _run(root, tmp_path / "out", "--keep-frames", str(tmp_path / "f.json")) == 2
    line = _error(capsys)
    assert f"--keep-frames {tmp_path / 'f.json'}" in line and message in line


def test_validation_holds_out_whole_training_trials_by_hash():
    trials = [f"{s}/{a}{n}" for s in h36m.TRAIN_SUBJECTS for a in ("Walking", "Eating", "Posing", "Sitting")
              for n in ("", " 1", " 2")]
    splits = {t: h36m.split_of(*t.split("/"), 0.25) for t in trials}
    assert splits == {t: h36m.split_of(*t.split("/"), 0.25) for t in trials}  # deterministic
    frac = sum(v == "val" for v in splits.values()) / len(trials)
    assert 0.1 < frac < 0.4 and set(splits.values()) == {"train", "val"}
    assert all(h36m.split_of(s, "Walking", 0.25) == "test" for s in h36m.TEST_SUBJECTS)
    assert all(h36m.split_of(*t.split("/"), 0.0) == "train" for t in trials)


class _RunsCode:
    """Unpickling this executes code (it writes the marker file): what a crafted archive would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_pickled_archives_are_refused_without_trust_pickle(tmp_path, capsys):
    import pickle

    marker = tmp_path / "code-ran"
    crafted = tmp_path / "data_3d_h36m.npz"
    np.savez(crafted, positions_3d=np.array(_RunsCode(marker), dtype=object))
    raw = tmp_path / "raw.npz"  # not a zip at all: np.load would hand it to pickle.load
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    for path in (crafted, raw):
        assert _run(path, tmp_path / "out", trust=False) == 2
        line = _error(capsys)
        assert str(path) in line and "unpickling runs whatever code the file names" in line and "--trust-pickle" in line
        assert not marker.exists() and not (tmp_path / "out").exists()
    # The archive really would run code: with --trust-pickle it does (then fails as not a dict of poses).
    assert _run(crafted, tmp_path / "out") == 2
    assert marker.read_text() == "ran"
    assert "expected a pickled dict" in _error(capsys)
    parser = argparse.ArgumentParser()
    h36m.configure_parser(parser)
    assert "can take over your account" in " ".join(parser.format_help().split())


# ---- the real 3d-pose-baseline tree (PRPOSE_H36M) --------------------------------------------------------
REAL = __import__("os").environ.get("PRPOSE_H36M")
EVAL_FRAMES = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "h36m_eval_frames.json"
needs_real = pytest.mark.skipif(not REAL, reason="set PRPOSE_H36M to the 3d-pose-baseline Human3.6M tree")


@needs_real
def test_real_cameras_h5_agrees_with_the_packaged_table():
    import pathlib

    rigs = h36m.read_cameras_h5(pathlib.Path(REAL) / "cameras.h5")
    assert sorted(rigs, key=lambda s: int(s[1:])) == ["S1", "S5", "S6", "S7", "S8", "S9", "S11"]
    points = np.array([[0.3, -0.2, 1.2], [-0.5, 0.4, 0.1], [0.0, 0.0, 1.8]])
    for subject, cams in rigs.items():
        assert [c.name for c in cams] == list(h36m.CAMERA_IDS)
        for a, b in zip(cams, h36m_rig(subject)):
            np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-6)
            np.testing.assert_allclose(a.center, b.center, atol=1e-6)
            np.testing.assert_allclose(a.tangential, b.tangential, atol=1e-7)  # same order after the table's swap
            np.testing.assert_allclose(a.project(points)[0], b.project(points)[0], atol=0.01)


@needs_real
def test_real_detections_agree_with_the_projection_and_keep_left_left(tmp_path, capsys):
    import pathlib

    if not EVAL_FRAMES.is_file():
        pytest.skip(f"{EVAL_FRAMES} absent")
    assert _run(REAL, tmp_path / "s9", "--subjects", "S9", "--keep-frames", str(EVAL_FRAMES)) == 0
    out = capsys.readouterr().out
    assert "missing trials: S9:Discussion 1" in out  # S9 Discussion 1 is one of the five files absent
    d = load_dataset(tmp_path / "s9")
    listed = __import__("json").loads(EVAL_FRAMES.read_text())["frames"]
    seq = d.labels("sequence")
    for key, frames in listed.items():
        subject, trial = key.split(":", 1)
        if subject == "S9" and trial != "Discussion 1":
            assert d.frame[seq == f"S9/{trial}"].tolist() == frames, key
    assert len(d) == sum(len(v) for k, v in listed.items() if k.startswith("S9:") and k != "S9:Discussion 1")
    s9_listed = sum(len(v) for k, v in listed.items() if k.startswith("S9:"))
    assert f"--keep-frames: {len(d):,d} of {s9_listed:,d} listed frames provided" in out  # S11 not counted
    assert set(d.labels("split")) == {"test"} and d.has_detections
    limbs = [H36M17.index(f"{s}_{j}") for j in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
             for s in ("left", "right")]
    for c in range(4):
        vis = np.asarray(d.detections_visible[:, c])
        assert vis.mean() == pytest.approx(15 / 17)  # every joint but the nose and spine, in every S9 frame
        err = np.linalg.norm(d.detections2d[:, c] - d.keypoints2d[:, c], axis=-1)[:, limbs]
        assert 5.0 < np.median(err) < 12.0 and np.percentile(err, 90) < 40.0  # bench/check_h36m.py: 8.1-10.3, 22-35
        kept = []  # per joint: how often the detected left X is nearer the projected left X than the right X
        for side, other in (("left", "right"), ("right", "left")):
            for joint in ("wrist", "ankle", "elbow", "knee", "hip", "shoulder"):
                det = d.detections2d[:, c, H36M17.index(f"{side}_{joint}")]
                near = np.linalg.norm(det - d.keypoints2d[:, c, H36M17.index(f"{side}_{joint}")], axis=-1)
                far = np.linalg.norm(det - d.keypoints2d[:, c, H36M17.index(f"{other}_{joint}")], axis=-1)
                kept.append(np.mean(near < far))
        # Real detectors swap sides now and then (ankles in side views most): mirrored data would give ~0.
        assert min(kept) > 0.75 and np.mean(kept) > 0.9, (c, kept)
    # S11 Directions has no detections for camera 54138969: stored as not visible, never dropped.
    det, vis, missing, _ = h36m.read_detections(pathlib.Path(REAL), "S11", "Directions", 1825, np.arange(0, 1825, 100))
    assert missing == ["S11/StackedHourglass/Directions.54138969.h5"]
    assert not vis[:, 0].any() and vis[:, 1:].mean() == pytest.approx(15 / 17)


def _corrupt(root, case):
    cams = root / "cameras.h5"
    det = root / "S9" / "StackedHourglass" / "Sitting.55011271.h5"
    if case == "truncated cameras.h5":
        cams.write_bytes(cams.read_bytes()[: cams.stat().st_size // 2])
        return cams, "cannot read as HDF5"
    if case == "byte-flipped detections":
        data = bytearray(det.read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0xFF
        det.write_bytes(bytes(data))
        return det, "cannot read as HDF5"
    if case == "poses is a group":
        with h5py.File(det, "w") as f:
            f.create_group("poses")
        return det, "'poses' is a Group; expected an HDF5 dataset"
    if case == "poses are strings":
        with h5py.File(det, "w") as f:
            f["poses"] = np.array([b"abc"] * 23)
        return det, "'poses' is |S3 (23,); expected numbers of shape (23, 16, 2)"
    with h5py.File(cams, "a") as f:
        g = f["subject9/camera2"]
        if case == "R is not a rotation":
            del g["R"]
            g["R"] = 2.0 * np.eye(3)
            return cams, "subject9/camera2: Camera '55011271': field 'rotation' must be a proper rotation"
        if case == "camera lacks k":
            del g["k"]
            return cams, "subject9/camera2: missing dataset(s) ['k']"
        if case == "camera name":
            del g["Name"]
            g["Name"] = np.array([[120.0], [120.0]])
            return cams, "subject9/camera2: camera name 'xx'; expected one of"
        if case == "subject is a dataset":
            del f["subject9"]
            f["subject9"] = np.zeros(3)
            return cams, "'subject9' is a Dataset; expected a group of cameras"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated cameras.h5", "byte-flipped detections", "poses is a group",
                                  "poses are strings", "R is not a rotation", "camera lacks k", "camera name",
                                  "subject is a dataset"])
def test_damaged_baseline_files_give_one_line_naming_the_file(tmp_path, baseline_tree, capsys, case):
    root, _, _ = baseline_tree
    path, message = _corrupt(root, case)
    capsys.readouterr()
    assert _run(root, tmp_path / "out") == 2
    line = _error(capsys)
    assert str(path) in line and message in line, line
    assert not (tmp_path / "out").exists()
