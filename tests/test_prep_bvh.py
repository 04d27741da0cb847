"""``prpose prep bvh``: resampling, T-pose detection, centring, split keys, and the command end to end."""

import argparse

import numpy as np
import pytest

from prpose.data_prep import bvh as prep
from prpose.dataset import load_dataset
from prpose.errors import PrposeError
from prpose.keypoints import H36M17
from test_skeletons import BANDAI_JOINTS, make_bvh


def test_resample_integer_ratio_picks_exact_frames():
    poses = np.arange(13 * 17 * 3, dtype=float).reshape(13, 17, 3)
    out, fps = prep.resample(poses, 120.005, 30.0)  # header-rounded 120 fps
    assert fps == 30.0
    np.testing.assert_array_equal(out, poses[::4])


def test_resample_fractional_ratio_interpolates_linearly():
    t_in = np.arange(11) / 50.0
    poses = np.broadcast_to((3.0 * t_in + 1.0)[:, None, None], (11, 17, 3))  # linear in time
    out, fps = prep.resample(poses, 50.0, 30.0)
    t_out = np.arange(len(out)) / 30.0
    assert fps == 30.0 and len(out) == 7  # 0 .. 0.2 s every 1/30 s
    np.testing.assert_allclose(out[:, 0, 0], 3.0 * t_out + 1.0, atol=1e-12)


def test_resample_never_upsamples():
    poses = np.zeros((5, 17, 3))
    out, fps = prep.resample(poses, 25.0, 30.0)
    assert out is poses and fps == 25.0


def test_first_frame_detection():
    rng = np.random.default_rng(0)
    poses = np.cumsum(rng.normal(scale=0.002, size=(30, 17, 3)), axis=0)
    assert not prep.first_frame_is_added(poses)
    tpose = poses.copy()
    tpose[0, 11:] += np.array([0.0, 0.0, 0.3])  # arms raised in frame 0 only
    assert prep.first_frame_is_added(tpose)


def test_centre_take_puts_pelvis_at_origin_and_feet_on_floor():
    poses = np.zeros((20, 17, 3))
    poses[..., 2] = 1.0
    poses[:, [H36M17.index("left_ankle"), H36M17.index("right_ankle")], 2] = -0.5
    poses[:, :, 0] += np.linspace(3.0, 5.0, 20)[:, None]
    out = prep.centre_take(poses)
    assert abs(out[:, 0, 0].mean()) < 1e-12
    np.testing.assert_allclose(out[:, H36M17.index("left_ankle"), 2], prep.ANKLE_HEIGHT)


def test_salsa_partners_share_a_take_key_and_split():
    a = "cmu/x/train_data_bvh/salsa/03.bvh"
    b = "cmu/x/train_data_bvh/salsa/18.bvh"
    assert prep.take_key(a) == prep.take_key(b) == a
    assert prep.take_key("cmu/x/martial/18.bvh") == "cmu/x/martial/18.bvh"
    for seed in range(20):
        assert prep.assign_split(prep.take_key(a), seed, 0.2, 0.1) == prep.assign_split(prep.take_key(b), seed, 0.2, 0.1)
    splits = [prep.assign_split(f"take{i}", 0, 0.2, 0.1) for i in range(400)]
    assert splits == [prep.assign_split(f"take{i}", 0, 0.2, 0.1) for i in range(400)]  # deterministic
    assert 0.12 < splits.count("test") / 400 < 0.28 and 0.05 < splits.count("val") / 400 < 0.15


def test_subject_labels():
    assert prep.subject_label("cmu/TMoCo__InverseKinematics/bvh/02_01.bvh") == "cmu/02"
    assert prep.subject_label("cmu/p/train_data_bvh/salsa/16.bvh") == "cmu/salsa-b"
    assert prep.subject_label("cmu/p/train_data_bvh/salsa/01.bvh") == "cmu/salsa-a"
    assert prep.subject_label("bandai1/data/dataset-1_bow_active_001.bvh") == "bandai1"


def _args(inputs, out, **kw):
    parser = argparse.ArgumentParser()
    prep.configure_parser(parser)
    argv = [str(i) for i in inputs] + ["--out", str(out), "--rig", "ring", "--cameras", "3"]
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(argv)


def _write_takes(folder, frames=24):
    folder.mkdir(parents=True, exist_ok=True)
    text = make_bvh(BANDAI_JOINTS, frames=frames, root_pos=(150, 0, -80), end_sites={"Head": (0, 0, 0)})
    (folder / "walk_a.bvh").write_text(text)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "walk_b.bvh").write_text(text)
    (folder / "reference.bvh").write_text(make_bvh(BANDAI_JOINTS, frames=3))
    return text


def test_prep_bvh_end_to_end_reports_failures_and_skips(tmp_path, capsys):
    data = tmp_path / "mocap"
    text = _write_takes(data)
    bad = text.replace(" 0 0 0 0\n", " 0 0 x 0\n", 1)
    (data / "broken.bvh").write_text(bad)
    out = tmp_path / "ds"
    code = prep.main(_args([data], out))
    printed = capsys.readouterr().out
    assert code == 1  # one file failed, the rest is written
    assert "FAILED" in printed and "broken.bvh" in printed and "is not a number" in printed
    assert "reference.bvh" in printed and "skipped: only 3 frame(s)" in printed
    ds = load_dataset(out)
    assert ds.num_frames == 48 and ds.keypoints2d.shape == (48, 3, 17, 2)
    assert sorted(set(ds.labels("sequence"))) == ["sub/walk_b.bvh", "walk_a.bvh"]
    poses = np.asarray(ds.poses3d)
    # Centred in the capture volume (root was at x=1.5 m) with the ankles on the floor.
    np.testing.assert_allclose(poses[:, 0, :2], 0.0, atol=1e-6)
    np.testing.assert_allclose(poses[:, H36M17.index("left_ankle"), 2], prep.ANKLE_HEIGHT, atol=1e-6)
    assert np.asarray(ds.visibility).all()
    assert ds.manifest["info"]["failed_files"] == ["broken.bvh"]


def test_prep_bvh_strict_stops_and_writes_nothing(tmp_path):
    data = tmp_path / "mocap"
    text = _write_takes(data)
    (data / "broken.bvh").write_text(text.replace("MOTION", "MOTIONX"))
    out = tmp_path / "ds"
    with pytest.raises(PrposeError, match=r"broken\.bvh.*no MOTION section.*--strict"):
        prep.main(_args([data], out, strict=True))
    assert not out.exists()


def test_prep_bvh_missing_input_and_bad_fraction(tmp_path):
    with pytest.raises(PrposeError, match="does not exist"):
        prep.main(_args([tmp_path / "nope"], tmp_path / "ds"))
    with pytest.raises(PrposeError, match="--test-fraction must be in"):
        prep.main(_args([tmp_path], tmp_path / "ds", test_fraction=1.5))


def test_prep_bvh_one_extreme_take_fails_alone_and_is_named(tmp_path, capsys):
    """Issue 9, item 11: a value of 1e300 in one take used to overflow the whole dataset, naming no file."""
    data = tmp_path / "mocap"
    text = _write_takes(data)
    lines = text.splitlines()
    frame = lines.index("Frame Time: 0.0333333") + 5
    values = lines[frame].split()
    values[0] = "1e300"  # the root's x position in frame 4
    lines[frame] = " ".join(values)
    (data / "extreme.bvh").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    assert prep.main(_args([data], out)) == 1  # written, with one failed file
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("extreme.bvh"))
    assert "FAILED" in row and "frame 4" in row and "extreme joint positions" in row
    ds = load_dataset(out)
    assert sorted(set(ds.labels("sequence"))) == ["sub/walk_b.bvh", "walk_a.bvh"]  # the good takes are kept
    assert ds.manifest["info"]["failed_files"] == ["extreme.bvh"]
    assert np.isfinite(np.asarray(ds.poses3d)).all()


def test_check_poses_names_the_sequence_for_values_beyond_float32():
    from prpose.data_prep.common import check_poses

    poses = np.zeros((3, 17, 3))
    poses[1, 2, 0] = 1e300
    with pytest.raises(PrposeError, match=r"sequence 'x': 1 non-finite or out-of-range coordinate\(s\) in 1 frame"):
        check_poses(poses, "sequence 'x'")
