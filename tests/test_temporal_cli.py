"""Temporal Pr-VIPE from the command line: train (window 3) -> index build of windows -> embed / query a clip."""

import json

import numpy as np
import pytest

from prpose.cli import main


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("temporal")
    data, run, index = root / "data", root / "run", root / "index"
    assert main(["prep", "synthetic", "--out", str(data), "--sequences", "6", "--frames", "30"]) == 0
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(run), "--no-progress",
                 "--fast-compile", "--set", "steps=10", "window=3", "model.mask_mode=both", "eval_every=10", "checkpoint_every=10"]) == 0
    assert main(["index", "build", "--model", str(run), "--data", str(data), "--out", str(index),
                 "--split", "train", "--cameras", "0", "1", "--every", "2"]) == 0
    return root


def _clip(root, start=3, length=8, camera=2):
    """A clip of consecutive training frames of one take, seen by an unindexed camera, as COCO results."""
    from prpose import keypoints as kp
    from prpose.dataset import load_dataset

    dataset = load_dataset(root / "data")
    rows = dataset.indices(split="train")
    seq = dataset.codes("sequence")[rows]
    rows = rows[seq == seq[0]][start:start + length]
    coco, present = kp.convert_partial(np.asarray(dataset.keypoints2d[rows, camera]), "h36m17", "coco17")
    records = [{"image_id": int(100 + i), "category_id": 1, "score": 1.0,  # eyes and ears: score 0 (missing)
                "keypoints": np.concatenate([p, present[:, None].astype(float)], axis=1).ravel().tolist()}
               for i, p in enumerate(coco)]
    return records, rows, dataset


def test_index_holds_windows_of_the_kept_frames(pipeline, capsys):
    from prpose.dataset import load_dataset
    from prpose.index import PoseIndex

    index = PoseIndex.load(pipeline / "index")
    dataset = load_dataset(pipeline / "data")
    assert len(index) == 2 * len(dataset.indices(split="train")[::2])
    assert json.loads((pipeline / "index" / "model.json").read_text())["window"] == 3


def test_embed_a_coco_track(pipeline, tmp_path):
    records, rows, _ = _clip(pipeline)
    records[4]["keypoints"] = [0.0] * 51  # a frame the detector lost: skipped, its neighbours still embedded
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "emb.npz"
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(path), "--output", str(out)]) == 0
    with np.load(out) as emb:
        assert int(emb["window"]) == 3
        np.testing.assert_array_equal(emb["rows"], [0, 1, 2, 3, 5, 6, 7])
        assert list(emb["skipped"]) == [4] and emb["mean"].shape[0] == 7


def test_embed_refuses_what_is_not_one_track(pipeline, tmp_path, capsys):
    records, _, _ = _clip(pipeline)
    two = records + [dict(records[2])]  # a second person in image 102
    path = tmp_path / "two.json"
    path.write_text(json.dumps(two))
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(path), "--output",
                 str(tmp_path / "x.npz")]) == 2
    assert "second pose of one image" in capsys.readouterr().err
    path.write_text(json.dumps(records[::-1]))  # image ids decreasing: not in time order
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(path), "--output",
                 str(tmp_path / "x.npz")]) == 2
    assert "time order" in capsys.readouterr().err


def test_query_by_a_clip_finds_its_frames_in_other_cameras(pipeline, tmp_path, capsys):
    records, rows, dataset = _clip(pipeline)
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(records))
    capsys.readouterr()
    assert main(["query", "--index", str(pipeline / "index"), "--input", str(path), "--k", "5", "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert [q["row"] for q in output["queries"]] == list(range(len(rows)))
    # Every match is a window-centre frame of the index (every 2nd training frame, cameras 0 and 1).
    frames = {int(f) for f in dataset.frame[dataset.indices(split="train")[::2]]}
    assert all(m["frame"] in frames and m["camera"] in dataset.camera_names[:2] for q in output["queries"]
               for m in q["matches"])


def test_eval_windows(pipeline, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--data", str(pipeline / "data"), "--window-model", str(pipeline / "run"), "--split", "train",
                 "--every", "3", "--ks", "1", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["windows"]
    (row,) = result["rows"]
    assert row["window"] == 3 and result["window"] == 3 and result["evaluated_frames"] > 0
    for test in ("frame", "window_test"):
        assert 0 <= row[test]["hit@1"] <= row[test]["hit@5"] <= 1
    assert "window test" in capsys.readouterr().out
