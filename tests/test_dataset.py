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
    edit_manifest(p, version=2)
    with pytest.raises(PrposeError, match="version 2 is newer than this prpose supports"):
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
