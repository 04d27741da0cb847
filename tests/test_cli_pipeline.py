"""The command line end to end on small synthetic data: prep -> train -> index build -> embed -> query."""

import json

import numpy as np
import pytest

from prpose.cli import COMMANDS, main


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data, run, index = root / "data", root / "run", root / "index"
    assert main(["prep", "synthetic", "--out", str(data), "--sequences", "10", "--frames", "30"]) == 0
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(run), "--no-progress",
                 "--fast-compile", "--set", "steps=20", "eval_every=20", "checkpoint_every=20"]) == 0
    assert main(["index", "build", "--model", str(run), "--data", str(data), "--out", str(index),
                 "--split", "train", "--cameras", "0", "1"]) == 0
    return root


def _query_file(root, rows=(0, 5), camera=2, **extra):
    from prpose.dataset import load_dataset

    dataset = load_dataset(root / "data")
    picked = dataset.indices(split="train")[list(rows)]
    path = root / "queries.npz"
    np.savez(path, keypoints=np.asarray(dataset.keypoints2d[picked, camera]), profile="h36m17",
             pose3d=np.asarray(dataset.poses3d[picked]), **extra)
    return path, picked


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS])
def test_every_command_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: prpose" in capsys.readouterr().out


def test_index_holds_the_requested_views(pipeline):
    from prpose.dataset import load_dataset
    from prpose.index import PoseIndex

    index = PoseIndex.load(pipeline / "index")
    dataset = load_dataset(pipeline / "data")
    assert len(index) == 2 * len(dataset.indices(split="train"))
    assert set(np.unique(index.metadata()["camera"])) == set(dataset.camera_names[:2])
    manifest = json.loads((pipeline / "index" / "model.json").read_text())
    assert manifest["fingerprint"] == index.fingerprint


def test_query_returns_the_same_frame_from_another_camera(pipeline, capsys):
    """A training pose seen from an unindexed camera finds itself (seen from indexed cameras) among the top hits."""
    queries, rows = _query_file(pipeline)
    capsys.readouterr()
    assert main(["query", "--index", str(pipeline / "index"), "--input", str(queries), "--k", "5", "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["skipped"] == []
    results = output["queries"]
    assert len(results) == 2 and [r["row"] for r in results] == [0, 1]
    for result in results:
        assert len(result["matches"]) == 5
        probabilities = [m["probability"] for m in result["matches"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all("np_mpjpe_to_truth" in m for m in result["matches"])
    # The tiny model is barely trained, so ask only that the best hit is a close 3D pose.
    assert min(m["np_mpjpe_to_truth"] for r in results for m in r["matches"]) < 0.1


def test_query_threads_give_the_same_matches(pipeline, capsys):
    queries, _ = _query_file(pipeline)
    outputs = []
    for threads in ("1", "2"):
        capsys.readouterr()
        assert main(["query", "--index", str(pipeline / "index"), "--input", str(queries), "--k", "5", "--json",
                     "--threads", threads]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert main(["query", "--index", str(pipeline / "index"), "--input", str(queries), "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "threads=0" in err, err


def test_query_table_and_picture(pipeline, capsys):
    queries, _ = _query_file(pipeline)
    picture = pipeline / "matches.png"
    assert main(["query", "--index", str(pipeline / "index"), "--input", str(queries), "--k", "3",
                 "--plot", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "P(match)" in out and "NP-MPJPE to truth" in out
    assert picture.stat().st_size > 10_000 and picture.read_bytes()[:4] == b"\x89PNG"


def test_embed_writes_everything_needed_to_rank(pipeline):
    from prpose.index.kernels import match_distance_np

    queries, _ = _query_file(pipeline)
    out = pipeline / "emb.npz"
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(queries), "--output", str(out)]) == 0
    with np.load(out) as emb:
        n, k, d = emb["samples"].shape
        assert emb["mean"].shape == (n, d) == emb["stddev"].shape and n == 2
        assert (emb["stddev"] > 0).all()
        # The stored scalars reproduce the model's distance: a pose matches itself better than another pose.
        a, b, s = float(emb["a"]), float(emb["b"]), float(emb["smoothing"])
        self_d = match_distance_np(emb["samples"][:1], emb["samples"][:1], a, b, s)
        assert np.isfinite(self_d).all() and str(emb["fingerprint"])


def test_query_refuses_an_index_built_by_another_model(pipeline, tmp_path, capsys):
    other = tmp_path / "other_run"
    assert main(["train", "--config", "tiny", "--data", str(pipeline / "data"), "--out", str(other),
                 "--no-progress", "--fast-compile", "--set", "steps=2", "seed=1", "eval_every=2",
                 "checkpoint_every=2"]) == 0
    queries, _ = _query_file(pipeline)
    capsys.readouterr()
    code = main(["query", "--index", str(pipeline / "index"), "--input", str(queries), "--model", str(other)])
    assert code == 2
    assert "fingerprint" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ({"keypoints": np.ones((2, 12, 2))}, "does not say which keypoint profile its 12 joints follow"),
        ({"keypoints": np.full((1, 17, 2), np.nan), "profile": "h36m17"},
         "none of the 1 pose(s) in the input can be embedded (row 0 (row 0): non-finite or extreme"),
        ({"keypoints": np.ones((1, 17, 2)), "profile": "openpose"}, "unknown keypoint profile"),
    ],
)
def test_query_bad_input_is_one_clear_line(pipeline, tmp_path, capsys, content, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **content)
    capsys.readouterr()
    assert main(["query", "--index", str(pipeline / "index"), "--input", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("prpose query: error:") and len(err.splitlines()) == 1


def test_index_build_refuses_to_overwrite(pipeline, capsys):
    code = main(["index", "build", "--model", str(pipeline / "run"), "--data", str(pipeline / "data"),
                 "--out", str(pipeline / "index")])
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--config", "tiny", "--steps", "20", "--sequences", "10",
                 "--queries", "2"]) == 0
    printed = capsys.readouterr().out
    assert "demo finished" in printed and "NP-MPJPE to truth" in printed
    assert (out / "matches.png").read_bytes()[:4] == b"\x89PNG"


def _detector_file(root, people=20, seed=0):
    """A COCO-17 detector results file as a real detector writes it: one image per frame, scores in (0, 1],
    eyes and ears undetected (v = 0), and two people cut by the image border: people 6 and 13 keep only
    joints that lie inside the image (fewer than two torso joints)."""
    from prpose import keypoints as kp
    from prpose.dataset import load_dataset

    dataset = load_dataset(root / "data")
    rows = dataset.indices(split="train")[:people]
    k17 = np.asarray(dataset.keypoints2d[rows, 2], np.float64)
    coco, available = kp.convert_partial(k17, "h36m17", "coco17")
    rng = np.random.default_rng(seed)
    scores = np.where(available, rng.uniform(0.35, 0.98, coco.shape[:2]), 0.0)
    # Person 6 walks out of the top of the frame: its torso (and what lies above it) is outside (y < 0).
    torso = [kp.COCO17.index(j) for j in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    coco[6, :, 1] -= coco[6, torso, 1].max() + 5.0
    scores[6] = np.where(coco[6, :, 1] < 0, 0.0, scores[6])
    # Person 13 is cut by the left border: only its right arm and right shoulder stay inside.
    keep = [kp.COCO17.index(j) for j in ("right_shoulder", "right_elbow", "right_wrist")]
    scores[13, [j for j in range(17) if j not in keep]] = 0.0
    records = [{"image_id": int(i), "category_id": 1, "score": float(rng.uniform(0.5, 1.0)),
                "keypoints": np.concatenate([coco[i], scores[i][:, None]], 1).ravel().round(2).tolist()}
               for i in range(people)]
    path = root / "detections.json"
    path.write_text(json.dumps(records))
    return path


def test_whole_detector_files_embed_the_usable_people_and_report_the_rest(pipeline, capsys):
    detections = _detector_file(pipeline)
    out = pipeline / "det_emb.npz"
    capsys.readouterr()
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(detections), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped 2 of 20 poses" in captured.err
    assert "row 6 (image 6 #0): 0 visible torso joint(s)" in captured.err
    assert "row 13 (image 13 #0): 1 visible torso joint(s)" in captured.err
    assert "embedded 18 of 20 poses (coco17 -> input13, 2 skipped)" in captured.out
    with np.load(out) as emb:
        assert emb["mean"].shape[0] == 18 and emb["rows"].tolist() == [i for i in range(20) if i not in (6, 13)]
        assert emb["skipped"].tolist() == [6, 13] and emb["skipped_ids"].tolist() == ["image 6 #0", "image 13 #0"]
        assert "torso" in str(emb["skipped_reasons"][1])
        assert emb["ids"][6] == "image 7 #0"

    assert main(["query", "--index", str(pipeline / "index"), "--input", str(detections), "--k", "3",
                 "--json"]) == 0
    captured = capsys.readouterr()
    output = json.loads(captured.out)
    assert [s["row"] for s in output["skipped"]] == [6, 13]
    assert output["skipped"][0]["id"] == "image 6 #0" and "torso" in output["skipped"][0]["reason"]
    assert len(output["queries"]) == 18 and output["queries"][6]["row"] == 7
    assert all(len(q["matches"]) == 3 for q in output["queries"])
    assert "row 13 (image 13 #0)" in captured.err


def test_a_detector_file_with_nobody_usable_is_refused(pipeline, tmp_path, capsys):
    records = [{"image_id": 1, "keypoints": [10.0, 10.0, 0.9] * 5 + [0.0, 0.0, 0.0] * 12}] * 3
    path = tmp_path / "nobody.json"
    path.write_text(json.dumps(records))
    capsys.readouterr()
    assert main(["embed", "--model", str(pipeline / "run"), "--input", str(path), "--output",
                 str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prpose embed: error:") and len(err.splitlines()) == 1
    assert "none of the 3 pose(s) in the input can be embedded (row 0 (image 1 #0): 0 visible torso" in err
    assert not (tmp_path / "e.npz").exists()
