import json

import numpy as np
import pytest

from prpose import dataset as ds
from prpose.errors import PrposeError


def _camera(name, x):
    return {
        "name": name, "rotation": np.eye(3).tolist(), "center": [x, 0.0, 0.0], "focal": [1000.0, 1000.0],
        "principal": [500.0, 500.0], "radial": [0.0, 0.0, 0.0], "tangential": [0.0, 0.0],
        "width": 1000, "height": 1000,
    }


def _arrays(n=7, c=2, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        poses3d=rng.normal(size=(n, 17, 3)).astype(np.float32),
        keypoints2d=rng.uniform(0, 1000, size=(n, c, 17, 2)).astype(np.float32),
        visibility=rng.uniform(size=(n, c, 17)) > 0.2,
        rigs=[[_camera("a", 0.0), _camera("b", 1.0)], [_camera("a", 2.0), _camera("b", 3.0)]],
        rig_index=np.array([0, 0, 0, 1, 1, 1, 1][:n]),
        source=["synth"] * n,
        subject=["S9", "S9", "S1", "S1", "S1", "S1", "S1"][:n],
        sequence=["walk", "walk", "run", "run", "sit", "sit", "sit"][:n],
        split=["test", "test", "train", "train", "val", "val", "val"][:n],
        frame=np.arange(n),
        camera_names=["a", "b"],
        info={"generator": "test", "seed": 0},
    )


def test_round_trip_values_dtypes_and_memory_map(tmp_path):
    a = _arrays()
    ds.write_dataset(tmp_path / "d", **a)
    d = ds.load_dataset(tmp_path / "d")
    assert len(d) == 7 and d.num_cameras == 2 and d.camera_names == ["a", "b"]
    np.testing.assert_array_equal(d.poses3d, a["poses3d"])
    np.testing.assert_array_equal(d.keypoints2d, a["keypoints2d"])
    np.testing.assert_array_equal(d.visibility, a["visibility"])
    np.testing.assert_array_equal(d.rig_index, a["rig_index"])
    np.testing.assert_array_equal(d.frame, a["frame"])
    assert d.poses3d.dtype == np.float32 and d.keypoints2d.dtype == np.float32
    assert d.visibility.dtype == np.bool_ and d.rig_index.dtype == np.int16 and d.frame.dtype == np.int32
    assert isinstance(d.poses3d, np.memmap) and not d.poses3d.flags.writeable
    for name in ("source", "subject", "sequence", "split"):
        assert d.labels(name).tolist() == list(a[name])
        assert d.codes(name).dtype == np.int16
    # Tables keep first-appearance order; split table is the fixed (train, val, test).
    assert d.table("sequence") == ["walk", "run", "sit"]
    assert d.table("split") == ["train", "val", "test"]
    assert d.info == {"generator": "test", "seed": 0}
    assert d.labels("sequence", np.array([4, 0])).tolist() == ["sit", "walk"]


def test_rigs_become_cameras(tmp_path):
    ds.write_dataset(tmp_path / "d", **_arrays())
    d = ds.load_dataset(tmp_path / "d")
    from prpose.camera import Camera

    assert len(d.rigs) == 2 and all(isinstance(c, Camera) for rig in d.rigs for c in rig)
    np.testing.assert_allclose(d.cameras(4)[1].center, [3.0, 0.0, 0.0])


def test_indices_filters_and_rejects_unknown_values(tmp_path):
    ds.write_dataset(tmp_path / "d", **_arrays())
    d = ds.load_dataset(tmp_path / "d")
    assert d.indices(split="train").tolist() == [2, 3]
    assert d.indices(split=("val", "test")).tolist() == [0, 1, 4, 5, 6]
    assert d.indices(split="train", sequence="run").tolist() == [2, 3]
    assert d.indices(subject="S1", sequence=["sit"]).tolist() == [4, 5, 6]
    assert d.indices().tolist() == list(range(7))
    with pytest.raises(PrposeError, match="unknown subject value.*S2"):
        d.indices(subject="S2")
    with pytest.raises(PrposeError, match="unknown split value.*training"):
        d.indices(split="training")


def test_summary_counts_and_truncates(tmp_path):
    a = _arrays()
    ds.write_dataset(tmp_path / "d", **a)
    text = ds.load_dataset(tmp_path / "d").summary(top=2)
    assert "7 frames x 2 cameras = 14 views, 2 rig(s)" in text
    seq_block = text.split("sequence (3 distinct):")[1].split("cameras")[0]
    # 3 sequences, top 2 by count shown (sit 3, then walk 2 before run 2: ties keep table order).
    assert "sit" in seq_block and "walk" in seq_block and "run" not in seq_block
    assert "... and 1 more (2 frames)" in seq_block
    split_block = text.split("split:")[1].split("source")[0]
    assert "train" in split_block and " 2  " in split_block and "val" in split_block
    vis = a["visibility"][:, 0].mean() * 100
    assert f"{vis:5.1f}% visible" in text
    assert "generator: test" in text


def test_write_validates_shapes_and_values(tmp_path):
    bad = _arrays()
    bad["keypoints2d"] = bad["keypoints2d"][:, :1]
    with pytest.raises(PrposeError, match=r"keypoints2d has shape \(7, 1, 17, 2\); expected \(7, 2, 17, 2\)"):
        ds.write_dataset(tmp_path / "d", **bad)
    bad = _arrays()
    bad["poses3d"][3, 2, 1] = np.nan
    with pytest.raises(PrposeError, match=r"poses3d has 1 non-finite value\(s\), first at index \(3, 2, 1\)"):
        ds.write_dataset(tmp_path / "d", **bad)
    bad = _arrays()
    bad["split"] = ["train"] * 6 + ["training"]
    with pytest.raises(PrposeError, match="split has unknown value.*training"):
        ds.write_dataset(tmp_path / "d", **bad)
    bad = _arrays()
    bad["rig_index"] = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(PrposeError, match="rig_index values span"):
        ds.write_dataset(tmp_path / "d", **bad)
    bad = _arrays()
    bad["subject"] = ["S1"] * 6
    with pytest.raises(PrposeError, match="subject must hold one label per frame"):
        ds.write_dataset(tmp_path / "d", **bad)
    assert not (tmp_path / "d").exists()
    assert list(tmp_path.iterdir()) == []  # no temp dirs left behind either


def test_overwrite_rules(tmp_path):
    target = tmp_path / "d"
    ds.write_dataset(target, **_arrays())
    with pytest.raises(PrposeError, match="already holds a prpose dataset; pass overwrite=True"):
        ds.write_dataset(target, **_arrays())
    ds.write_dataset(target, **_arrays(n=5, seed=1), overwrite=True)
    assert len(ds.load_dataset(target)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]

    other = tmp_path / "notes"
    other.mkdir()
    (other / "important.txt").write_text("keep me")
    with pytest.raises(PrposeError, match="not empty and is not a prpose dataset"):
        ds.write_dataset(other, **_arrays(), overwrite=True)
    assert (other / "important.txt").read_text() == "keep me"

    empty = tmp_path / "empty"
    empty.mkdir()
    ds.write_dataset(empty, **_arrays())  # an empty directory is fine to fill
    assert len(ds.load_dataset(empty)) == 7


def test_failed_write_keeps_previous_dataset(tmp_path, monkeypatch):
    target = tmp_path / "d"
    ds.write_dataset(target, **_arrays())

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ds.np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        ds.write_dataset(target, **_arrays(n=5), overwrite=True)
    monkeypatch.undo()
    assert len(ds.load_dataset(target)) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_load_rejects_broken_datasets(tmp_path):
    with pytest.raises(PrposeError, match="not a directory"):
        ds.load_dataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(PrposeError, match="no manifest.json"):
        ds.load_dataset(tmp_path / "plain")

    def fresh(name):
        ds.write_dataset(tmp_path / name, **_arrays())
        return tmp_path / name

    def edit_manifest(path, **changes):
        m = json.loads((path / "manifest.json").read_text())
        m.update(changes)
        (path / "manifest.json").write_text(json.dumps(m))

    p = fresh("newer")
    edit_manifest(p, version=3)
    with pytest.raises(PrposeError, match="version 3 is newer than this prpose supports"):
        ds.load_dataset(p)
    p = fresh("fmt")
    edit_manifest(p, format="something-else")
    with pytest.raises(PrposeError, match="format is 'something-else'; expected 'prpose-dataset'"):
        ds.load_dataset(p)
    p = fresh("nofile")
    (p / "visibility.npy").unlink()
    with pytest.raises(PrposeError, match=r"visibility.npy: missing array file"):
        ds.load_dataset(p)
    p = fresh("shape")
    np.save(p / "poses3d.npy", np.zeros((6, 17, 3), np.float32))
    with pytest.raises(PrposeError, match=r"poses3d.npy: float32 array of shape \(6, 17, 3\); expected float32 of shape \(7, 17, 3\)"):
        ds.load_dataset(p)
    p = fresh("dtype")
    np.save(p / "frame.npy", np.zeros(7, np.int64))
    with pytest.raises(PrposeError, match="frame.npy: int64 array"):
        ds.load_dataset(p)
    p = fresh("codes")
    np.save(p / "sequence.npy", np.full(7, 9, np.int16))
    with pytest.raises(PrposeError, match=r"sequence.npy: codes span \[9, 9\]; expected \[0, 2\]"):
        ds.load_dataset(p)
    p = fresh("json")
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(PrposeError, match="not valid JSON"):
        ds.load_dataset(p)


def test_empty_dataset_round_trip(tmp_path):
    a = _arrays()
    n0 = {k: (v[:0] if isinstance(v, (np.ndarray, list)) and k not in ("rigs", "camera_names") else v)
          for k, v in a.items()}
    ds.write_dataset(tmp_path / "d", **n0)
    d = ds.load_dataset(tmp_path / "d")
    assert len(d) == 0 and d.indices(split="train").size == 0
    assert "0 frames" in d.summary()


# -- converter helpers (data_prep/common.py) ---------------------------------------------------------------
from prpose.data_prep import common  # noqa: E402
from prpose.camera import Camera, ring_rig  # noqa: E402


def test_project_to_rig_matches_hand_pinhole_and_flags_hidden_points():
    cam = Camera(name="c", rotation=np.eye(3), center=[0.0, 0.0, -5.0], focal=[1000.0, 800.0],
                 principal=[320.0, 240.0], width=640, height=480)
    pts = np.array([[[0.5, -0.25, 0.0], [0.0, 0.0, -10.0], [2.0, 0.0, 0.0]]])  # in view, behind, off-image
    kp, vis = common.project_to_rig(pts, [cam])
    # Hand-worked: camera z = 5 for the first point -> u = 1000 * 0.5 / 5 + 320, v = 800 * -0.25 / 5 + 240.
    np.testing.assert_allclose(kp[0, 0, 0], [420.0, 200.0], rtol=1e-6)
    assert vis[0, 0].tolist() == [True, False, False]
    np.testing.assert_array_equal(kp[0, 0, 1], [0.0, 0.0])  # behind the camera: no meaningful pixel
    np.testing.assert_allclose(kp[0, 0, 2], [720.0, 240.0], rtol=1e-6)  # merely outside the image: kept
    assert kp.dtype == np.float32 and vis.dtype == bool


def test_project_to_rig_hides_points_folded_back_by_distortion():
    # A strong barrel distortion folds a point 52 degrees off-axis back into the image; it must not count.
    cam = Camera(name="c", rotation=np.eye(3), center=[0.0, 0.0, 0.0], focal=[500.0, 500.0],
                 principal=[500.0, 500.0], radial=[-0.5, 0.0, 0.0], width=1000, height=1000)
    far = np.array([[[1.3, 0.0, 1.0]]])
    uv, _ = cam.project(far[0])
    assert cam.in_image(uv).all()  # the fold-back really happens
    _, vis = common.project_to_rig(far, [cam])
    assert not vis.any()


def test_assign_splits_exact_and_deterministic():
    keys = [f"seq{i}" for i in range(20)]
    a = common.assign_splits(keys, (0.8, 0.1, 0.1), seed=1)
    assert sorted(a) == sorted(keys)
    assert [list(a.values()).count(s) for s in ("train", "val", "test")] == [16, 2, 2]
    assert a == common.assign_splits(keys, (0.8, 0.1, 0.1), seed=1)
    assert a != common.assign_splits(keys, (0.8, 0.1, 0.1), seed=2)
    small = common.assign_splits(["a", "b", "c"], (0.8, 0.1, 0.1))
    assert sorted(small.values()) == ["test", "train", "val"]
    with pytest.raises(PrposeError, match="summing to 1"):
        common.assign_splits(keys, (0.5, 0.1, 0.1))


def test_hash_split_is_stable_and_proportional():
    splits = [common.hash_split(f"take{i}") for i in range(2000)]
    assert splits == [common.hash_split(f"take{i}") for i in range(2000)]
    frac = [splits.count(s) / 2000 for s in ("train", "val", "test")]
    assert abs(frac[0] - 0.8) < 0.04 and abs(frac[1] - 0.1) < 0.03
    assert common.hash_split("x", (0.0, 0.0, 1.0)) == "test"


def _walker(t=5, x=0.0):
    p = np.zeros((t, 17, 3))
    p[:, :, 2] = np.linspace(0.1, 1.7, 17)  # a vertical line of joints, standing at (x, 0)
    p[:, :, 0] = x + np.linspace(-0.2, 0.2, 17)
    return p


def test_assemble_per_subject_rigs_labels_and_frames(tmp_path):
    rig_a, rig_b = ring_rig(3, 4.0, 1.5), ring_rig(3, 4.0, 1.5, start_azimuth_deg=30.0)
    seqs = [
        common.SequenceInput("s1/walk", "S1", "test", _walker(4), frames=np.array([0, 10, 20, 30])),
        common.SequenceInput("s2/walk", "S2", "test", _walker(3, 0.5)),
        common.SequenceInput("s1/run", "S1", "test", _walker(2)),
    ]
    d = common.write_sequences(tmp_path / "d", seqs, {"S1": rig_a, "S2": rig_b},
                               {"s1/walk": "train", "s2/walk": "test", "s1/run": "val"}, info={"x": 1},
                               progress=False)
    assert len(d) == 9 and d.camera_names == ["ring0", "ring1", "ring2"]
    assert d.rig_index.tolist() == [0] * 4 + [1] * 3 + [0] * 2 and len(d.rigs) == 2
    assert d.frame.tolist() == [0, 10, 20, 30, 0, 1, 2, 0, 1]
    assert d.labels("split").tolist() == ["train"] * 4 + ["test"] * 3 + ["val"] * 2
    assert d.labels("subject").tolist() == ["S1"] * 4 + ["S2"] * 3 + ["S1"] * 2
    kp, vis = common.project_to_rig(_walker(3, 0.5), rig_b)
    np.testing.assert_array_equal(d.keypoints2d[4:7], kp)
    assert d.visibility.all()


def test_assemble_rejects_bad_sequences():
    rig = ring_rig(2, 4.0, 1.5)
    bad = _walker(4)
    bad[2, 5, 1] = np.nan
    with pytest.raises(PrposeError, match=r"sequence 'b': 1 non-finite or out-of-range coordinate\(s\) in 1 frame\(s\), first at frame 2"):
        common.assemble([common.SequenceInput("a", "S", "t", _walker()), common.SequenceInput("b", "S", "t", bad)],
                        rig, "train")
    with pytest.raises(PrposeError, match=r"sequence 'a': poses have shape \(5, 16, 3\); expected \(T, 17, 3\)"):
        common.assemble([common.SequenceInput("a", "S", "t", _walker()[:, :16])], rig, "train")
    with pytest.raises(PrposeError, match="duplicate sequence names"):
        common.assemble([common.SequenceInput("a", "S", "t", _walker())] * 2, rig, "train")
    with pytest.raises(PrposeError, match="no camera rig for subject 'S'"):
        common.assemble([common.SequenceInput("a", "S", "t", _walker())], {"S1": rig}, "train")
    with pytest.raises(PrposeError, match="split 'dev'"):
        common.assemble([common.SequenceInput("a", "S", "t", _walker())], rig, "dev")
    with pytest.raises(PrposeError, match="same number of cameras"):
        common.assemble([common.SequenceInput("a", "S1", "t", _walker()), common.SequenceInput("b", "S2", "t", _walker())],
                        {"S1": rig, "S2": ring_rig(3, 4.0, 1.5)}, "train")


def test_conversion_report_counts_everything():
    r = common.ConversionReport()
    r.converted("a.bvh", 100, 50, "resampled 60->30 fps")
    r.skipped("standard.bvh", "3 frames: reference skeleton", frames_read=3)
    r.failed("broken.bvh", "line 12: expected 6 values")
    text = r.table()
    assert "resampled 60->30 fps" in text and "skipped: 3 frames" in text and "FAILED: line 12" in text
    assert text.splitlines()[-1] == "total: 3 file(s), 103 frames read, 50 converted, 1 skipped, 1 failed"
    assert r.failures == 1


def _detections(n=7, c=2, seed=1, scores=False):
    rng = np.random.default_rng(seed)
    visible = rng.uniform(size=(n, c, 17)) > 0.3
    visible[:, :, 9] = False  # a detector without a nose
    out = dict(
        detections2d=np.where(visible[..., None], rng.uniform(0, 1000, size=(n, c, 17, 2)), 0).astype(np.float32),
        detections_visible=visible,
        detections={"detector": "stacked_hourglass", "profile": "mpii16", "files": 3},
    )
    if scores:
        out["detections_score"] = rng.uniform(size=(n, c, 17)).astype(np.float32)
    return out


@pytest.mark.parametrize("scores", [False, True])
def test_detections_round_trip_as_format_version_2(tmp_path, scores):
    det = _detections(scores=scores)
    ds.write_dataset(tmp_path / "d", **_arrays(), **det)
    d = ds.load_dataset(tmp_path / "d")
    assert d.manifest["version"] == 2 and d.has_detections
    np.testing.assert_array_equal(d.detections2d, det["detections2d"])
    np.testing.assert_array_equal(d.detections_visible, det["detections_visible"])
    assert d.detections2d.dtype == np.float32 and d.detections_visible.dtype == np.bool_
    assert d.detections_info == {"detector": "stacked_hourglass", "profile": "mpii16", "files": 3}
    if scores:
        np.testing.assert_array_equal(d.detections_score, det["detections_score"])
    else:
        assert d.detections_score is None and not (tmp_path / "d" / "detections_score.npy").exists()
    # The ground-truth 2D is untouched by the second source.
    np.testing.assert_array_equal(d.keypoints2d, _arrays()["keypoints2d"])
    text = d.summary()
    assert "detections: stacked_hourglass (profile mpii16" in text and "files: 3" in text
    frac = 100.0 * det["detections_visible"][:, 0].mean()
    assert f"a  {frac:5.1f}% visible" in text.split("detections:")[1]


def test_dataset_without_detections_stays_version_1_and_says_so(tmp_path):
    ds.write_dataset(tmp_path / "d", **_arrays())
    d = ds.load_dataset(tmp_path / "d")
    assert d.manifest["version"] == 1 and "detections" not in d.manifest
    assert not d.has_detections and d.detections2d is None and d.detections_visible is None
    assert d.detections_score is None and d.detections_info is None
    assert "detections: none" in d.summary()


def test_version_1_directory_written_by_hand_still_loads(tmp_path):
    """A directory exactly as format version 1 specified it (no detection keys or files)."""
    a = _arrays()
    p = tmp_path / "v1"
    p.mkdir()
    np.save(p / "poses3d.npy", a["poses3d"])
    np.save(p / "keypoints2d.npy", a["keypoints2d"])
    np.save(p / "visibility.npy", a["visibility"])
    np.save(p / "rig.npy", a["rig_index"].astype(np.int16))
    np.save(p / "frame.npy", a["frame"].astype(np.int32))
    tables = {}
    for name in ("source", "subject", "sequence"):
        tables[name] = list(dict.fromkeys(a[name]))
        np.save(p / f"{name}.npy", np.array([tables[name].index(v) for v in a[name]], np.int16))
    tables["split"] = ["train", "val", "test"]
    np.save(p / "split.npy", np.array([tables["split"].index(v) for v in a["split"]], np.int16))
    (p / "manifest.json").write_text(json.dumps({
        "format": "prpose-dataset", "version": 1, "num_frames": 7, "camera_names": ["a", "b"], "profile": "h36m17",
        "rigs": a["rigs"], "tables": tables, "info": {"old": True}}))
    d = ds.load_dataset(p)
    assert len(d) == 7 and not d.has_detections and d.info == {"old": True}
    np.testing.assert_array_equal(d.keypoints2d, a["keypoints2d"])
    assert d.labels("sequence").tolist() == a["sequence"]


def test_bad_detections_are_refused_on_write_and_load(tmp_path):
    a, det = _arrays(), _detections()
    with pytest.raises(PrposeError, match=r"detections2d has shape \(7, 2, 16, 2\); expected \(7, 2, 17, 2\)"):
        ds.write_dataset(tmp_path / "w1", **a, **{**det, "detections2d": det["detections2d"][:, :, :16]})
    bad = det["detections2d"].copy()
    bad[2, 1, 3, 0] = np.nan
    with pytest.raises(PrposeError, match=r"detections2d has 1 non-finite value\(s\), first at index \(2, 1, 3, 0\)"):
        ds.write_dataset(tmp_path / "w2", **a, **{**det, "detections2d": bad})
    with pytest.raises(PrposeError, match="without detections_visible"):
        ds.write_dataset(tmp_path / "w3", **a, **{**det, "detections_visible": None})
    with pytest.raises(PrposeError, match="'detector' and 'profile'"):
        ds.write_dataset(tmp_path / "w4", **a, **{**det, "detections": {"detector": "sh"}})
    with pytest.raises(PrposeError, match="without detections2d"):
        ds.write_dataset(tmp_path / "w5", **a, detections_visible=det["detections_visible"])
    assert not any(p.name.startswith("w") for p in tmp_path.iterdir())

    ds.write_dataset(tmp_path / "d", **a, **det)
    np.save(tmp_path / "d" / "detections_visible.npy", det["detections_visible"][:, :1])
    with pytest.raises(PrposeError, match=r"detections_visible.npy: bool array of shape \(7, 1, 17\); expected bool of shape \(7, 2, 17\)"):
        ds.load_dataset(tmp_path / "d")
    (tmp_path / "d" / "detections_visible.npy").unlink()
    with pytest.raises(PrposeError, match="detections_visible.npy: missing array file"):
        ds.load_dataset(tmp_path / "d")
    np.save(tmp_path / "d" / "detections_visible.npy", det["detections_visible"])
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({**m, "version": 1}))
    with pytest.raises(PrposeError, match="'detections' needs format version 2"):
        ds.load_dataset(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({**m, "detections": ["sh"]}))
    with pytest.raises(PrposeError, match="'detections': expected a dict"):
        ds.load_dataset(tmp_path / "d")
