import argparse

import h5py
import numpy as np
import pytest

from data_prep import common, h36m
from prpose import synthetic
from prpose.camera import h36m_rig
from prpose.dataset import load_dataset
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
    return h36m.main(parser.parse_args([str(source), "--out", str(out), *trusted, *extra]))


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
    err = capsys.readouterr().err.strip().splitlines()
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
