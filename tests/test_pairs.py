"""Training examples: loading a split (conversion, normalisation, drops reported) and in-jit sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpose import keypoints as kp
from prpose.dataset import load_dataset, write_dataset
from prpose.errors import PrposeError
from prpose.pairs import load_train_arrays, sample_batch, sample_windows


def _norm2d_reference(k13):
    """Independent float64 normalisation of input13 keypoints (REFERENCE.md)."""
    k13 = np.asarray(k13, np.float64)
    hips = (k13[7] + k13[8]) / 2
    torso = k13[[1, 2, 7, 8]]
    scale = max(np.linalg.norm(torso[i] - torso[j]) for i in range(4) for j in range(i + 1, 4))
    return (k13 - hips) * 0.5 / scale


def _dataset(tmp_path, n=12, c=3, seed=0):
    """A small dataset with known defects: frame 3 has an all-zero 3D pose (invalid), frame 5 has only one
    usable view (two views with an invisible keypoint), frame 7 camera 0 has a collapsed 2D torso."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(size=(n, 17, 3)).astype(np.float32)
    poses[3] = 0.0
    k2d = (rng.normal(size=(n, c, 17, 2)) * 100 + 500).astype(np.float32)
    vis = np.ones((n, c, 17), bool)
    vis[5, 0, 2] = False  # h36m17 right_knee
    vis[5, 1, 13] = False  # left_wrist
    vis[8, 2, 1] = False  # one unusable view, two left: kept
    k2d[7, 0, :] = 250.0  # collapsed: normalisation invalid
    seq = np.array(["a"] * 6 + ["b"] * (n - 6))
    frame = np.concatenate([np.arange(6), np.arange(n - 6)]).astype(np.int32)
    write_dataset(
        tmp_path / "ds", poses3d=poses, keypoints2d=k2d, visibility=vis, rigs=_rigs(c),
        rig_index=np.zeros(n, np.int16), source=["t"] * n, subject=["s"] * n, sequence=seq,
        split=["train"] * (n - 2) + ["val"] * 2, frame=frame, camera_names=[f"c{i}" for i in range(c)])
    return load_dataset(tmp_path / "ds")


def _rigs(c):
    from prpose.camera import ring_rig

    return [ring_rig(c, 4.0, 1.5)]


def test_load_converts_normalises_and_reports_drops(tmp_path):
    ds = _dataset(tmp_path)
    arrays, report = load_train_arrays(ds, "train")
    # train = frames 0..9; 3 (invalid 3D) and 5 (one usable view) dropped.
    assert report.frames_in_split == 10
    assert report.dropped_invalid_3d == 1 and report.dropped_too_few_views == 1
    assert report.frames_kept == 8
    assert report.views_unusable == 4  # frame 5: 2, frame 7: 1, frame 8: 1 (frame 3's 2D is fine)
    np.testing.assert_array_equal(np.asarray(arrays.frame_ids), [0, 1, 2, 4, 6, 7, 8, 9])
    assert "dropped 1 with invalid 3D" in report.summary()
    # Values: against an independent float64 normalisation of the raw pixels.
    row = 1  # dataset frame 1
    for cam in range(3):
        k13 = kp.convert(np.asarray(ds.keypoints2d[1, cam]), "h36m17", "input13")
        np.testing.assert_allclose(np.asarray(arrays.keypoints2d[row, cam]), _norm2d_reference(k13), atol=1e-5)
    p = np.asarray(ds.poses3d[1], np.float64)
    ref3d = (p - p[0]) / (np.linalg.norm(p[0] - p[7]) + np.linalg.norm(p[7] - p[8]))
    np.testing.assert_allclose(np.asarray(arrays.poses3d[row]), ref3d, atol=1e-5)
    # Frame 7 camera 0 is unusable, the other two are not.
    np.testing.assert_array_equal(np.asarray(arrays.view_valid[5]), [False, True, True])


def test_views_count_in_report(tmp_path):
    ds = _dataset(tmp_path)
    _, report = load_train_arrays(ds, "train")
    # Usable views are counted over every frame of the split, dropped or not.
    assert report.views_total == 30


def test_sample_batch_picks_distinct_usable_cameras_inside_jit(tmp_path):
    ds = _dataset(tmp_path)
    arrays, _ = load_train_arrays(ds, "train")
    sample = jax.jit(sample_batch, static_argnums=2)
    batch = sample(jax.random.key(0), arrays, 512)
    a, p, f = np.asarray(batch.anchor_camera), np.asarray(batch.positive_camera), np.asarray(batch.frame)
    assert (a != p).all()
    valid = np.asarray(arrays.view_valid)
    assert valid[f, a].all() and valid[f, p].all()
    np.testing.assert_array_equal(np.asarray(batch.anchor2d), np.asarray(arrays.keypoints2d)[f, a])
    np.testing.assert_array_equal(np.asarray(batch.positive2d), np.asarray(arrays.keypoints2d)[f, p])
    np.testing.assert_array_equal(np.asarray(batch.poses3d), np.asarray(arrays.poses3d)[f])
    # Every kept frame and every ordered pair of usable cameras of a full frame comes up.
    assert set(f.tolist()) == set(range(8))
    full = np.flatnonzero(valid.all(axis=1))
    pairs = {(x, y) for x, y, fr in zip(a, p, f) if fr in full}
    assert pairs == {(x, y) for x in range(3) for y in range(3) if x != y}
    # Same key, same batch; another key, another batch.
    again = sample(jax.random.key(0), arrays, 512)
    np.testing.assert_array_equal(np.asarray(again.frame), f)
    assert not np.array_equal(np.asarray(sample(jax.random.key(1), arrays, 512).frame), f)


def test_windows_stay_in_one_sequence_with_one_camera_pair(tmp_path):
    ds = _dataset(tmp_path, n=20)
    arrays, report = load_train_arrays(ds, "train", window=3)
    ids = np.asarray(arrays.frame_ids)
    starts = np.asarray(arrays.window_starts)
    assert report.windows == starts.size > 0
    seq, frame = np.asarray(ds.codes("sequence")), np.asarray(ds.frame)
    for s in starts:
        rows = ids[s:s + 3]
        assert len(set(seq[rows])) == 1 and np.array_equal(np.diff(frame[rows]), [1, 1])
    # Windows never bridge the dropped frames 3 and 5 nor the sequence change at row 6; windows starting
    # at 6 and 7 contain frames 7 (camera 0 unusable) and 8 (camera 2 unusable): one camera left -> dropped.
    assert {int(ids[s]) for s in starts} == {0, 8, 9, 10, 11, 12, 13, 14, 15}
    batch = jax.jit(sample_windows, static_argnums=(2, 3))(jax.random.key(0), arrays, 64, 3)
    assert batch.anchor2d.shape == (64, 3, 13, 2) and batch.poses3d.shape == (64, 3, 17, 3)
    kp2d = np.asarray(arrays.keypoints2d)
    a, p, st = np.asarray(batch.anchor_camera), np.asarray(batch.positive_camera), np.asarray(batch.frame)
    assert (a != p).all()
    for i in range(64):
        np.testing.assert_array_equal(np.asarray(batch.anchor2d[i]), kp2d[st[i]:st[i] + 3, a[i]])
        np.testing.assert_array_equal(np.asarray(batch.positive2d[i]), kp2d[st[i]:st[i] + 3, p[i]])


def test_empty_or_single_camera_split_is_a_clear_error(tmp_path):
    ds = _dataset(tmp_path)
    with pytest.raises(PrposeError, match="no frames in split 'test'"):
        load_train_arrays(ds, "test")


def test_mesh_load_shards_frames_and_samples_the_same_batches(tmp_path):
    ds = _dataset(tmp_path)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    plain, report = load_train_arrays(ds, "train")
    arrays, mesh_report = load_train_arrays(ds, "train", mesh=mesh)
    assert mesh_report == report
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    assert arrays.keypoints2d.sharding.is_equivalent_to(sharded, 4)
    np.testing.assert_array_equal(arrays.frame_rows, np.arange(report.frames_kept))
    n = report.frames_kept
    np.testing.assert_array_equal(np.asarray(arrays.keypoints2d)[:n], plain.keypoints2d)
    sample = jax.jit(sample_batch, static_argnums=2)
    for a, b in zip(sample(jax.random.key(3), plain, 32), sample(jax.random.key(3), arrays, 32)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _dataset_with_detections(tmp_path, n=40, c=4, seed=1):
    """A format-v2 dataset: detections = ground truth shifted by a known offset, no nose (like Stacked
    Hourglass), camera 3 without detections, frame 0 camera 1 with a collapsed detected torso."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(size=(n, 17, 3)).astype(np.float32)
    k2d = (rng.normal(size=(n, c, 17, 2)) * 100 + 500).astype(np.float32)
    vis = np.ones((n, c, 17), bool)
    det = k2d + np.float32(7.0)
    det[:, :, 9] = 0.0  # h36m17 index 9: nose (absent)
    dvis = np.ones((n, c, 17), bool)
    dvis[:, :, 9] = False
    dvis[:, 3] = False
    det[:, 3] = 0.0
    det[0, 1, :] = 300.0  # collapsed
    write_dataset(
        tmp_path / "ds2", poses3d=poses, keypoints2d=k2d, visibility=vis, rigs=_rigs(c),
        rig_index=np.zeros(n, np.int16), source=["t"] * n, subject=["s"] * n, sequence=["a"] * n,
        split=["train"] * n, frame=np.arange(n, dtype=np.int32), camera_names=[f"c{i}" for i in range(c)],
        detections2d=det, detections_visible=dvis, detections={"detector": "test", "profile": "mpii16"})
    return load_dataset(tmp_path / "ds2"), k2d, det


def test_detections_load_as_alternative_views(tmp_path):
    ds, k2d, det = _dataset_with_detections(tmp_path)
    plain, report = load_train_arrays(ds, "train")
    assert plain.detections2d.shape[0] == 0 and report.detection_views == 0
    arrays, report = load_train_arrays(ds, "train", detections=True)
    n, c = 40, 4
    assert arrays.detections2d.shape == (n, c, 13, 2)
    valid = np.asarray(arrays.detection_valid)
    assert not valid[:, 3].any() and not valid[0, 1] and valid.sum() == n * 3 - 1 == report.detection_views
    assert "usable real detected views" in report.summary()
    vis = np.asarray(arrays.detections_visible)
    assert not vis[..., 0].any() and vis[valid][:, 1:].all()  # input13 joint 0 = nose, absent
    # Values: normalised from the visible joints (the hips and shoulders define the frame; the nose is 0).
    k13 = kp.convert(det[2, 0], "h36m17", "input13").astype(np.float64)
    want = _norm2d_reference(k13)
    want[0] = 0.0
    np.testing.assert_allclose(np.asarray(arrays.detections2d[2, 0]), want, atol=1e-5)


def test_sample_batch_mixes_detections_and_ground_truth(tmp_path):
    ds, _, _ = _dataset_with_detections(tmp_path)
    arrays, _ = load_train_arrays(ds, "train", detections=True)
    sample = jax.jit(sample_batch, static_argnames=("batch_size", "detection_probability"))
    b = sample(jax.random.key(0), arrays, batch_size=512, detection_probability=0.5)
    det = np.asarray(b.anchor_detected)
    cam = np.asarray(b.anchor_camera)
    assert not det[cam == 3].any()  # no detections there
    assert 0.35 < det[cam != 3].mean() < 0.65
    vis = np.asarray(b.anchor_visible)
    assert vis[~det].all() and not vis[det, 0].any()
    frames = np.asarray(b.frame)
    np.testing.assert_allclose(np.asarray(b.anchor2d)[det], np.asarray(arrays.detections2d)[frames[det], cam[det]])
    np.testing.assert_allclose(np.asarray(b.anchor2d)[~det], np.asarray(arrays.keypoints2d)[frames[~det], cam[~det]])
    off = sample(jax.random.key(0), arrays, batch_size=64, detection_probability=0.0)
    assert not np.asarray(off.anchor_detected).any() and np.asarray(off.anchor_visible).all()


def test_process_shares_cover_the_split_in_order_and_windows_stay_whole(monkeypatch):
    from prpose import pairs

    rows = np.arange(100, 161)  # 61 frames: sequences of 20, 30 and 11 frames
    codes = np.zeros(200, np.int16)
    codes[120:150], codes[150:] = 1, 2
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    for window, expected_sizes in ((1, [20, 21, 20]), (5, [20, 30, 11])):
        shares = []
        for rank in range(3):
            monkeypatch.setattr(jax, "process_index", lambda rank=rank: rank)
            shares.append(pairs._process_share(rows, codes, window))
        np.testing.assert_array_equal(np.concatenate(shares), rows)  # every frame once, in dataset order
        assert [len(s) for s in shares] == expected_sizes
        if window > 1:  # cut between sequences: a window never spans two processes
            assert all(len(set(codes[s])) == 1 for s in shares)
