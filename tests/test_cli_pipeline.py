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
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2
    for result in results:
        assert len(result["matches"]) == 5
        probabilities = [m["probability"] for m in result["matches"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all("np_mpjpe_to_truth" in m for m in result["matches"])
    # The tiny model is barely trained, so ask only that the best hit is a close 3D pose.
    assert min(m["np_mpjpe_to_truth"] for r in results for m in r["matches"]) < 0.1


def test_query_table_and_picture(pipeline, capsys):
    queries, _ = _query_file(pipeline)
    picture = pipeline / "matches.png"
    assert main(["query", "--index", str(pipeline / "index"), "--input", str(queries), "--k", "3",
                 "--plot", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "P(match)" in out and "NP-MPJPE to truth" in out
    assert picture.stat().st_size > 10_000 and picture.read_bytes()[:4] == b"\x89PNG"


def test_embed_writes_everything_needed_to_rank(pipeline):
    from prpose.matching import match_distance_np

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
        ({"keypoints": np.ones((2, 12, 2))}, "cannot tell the keypoint profile"),
        ({"keypoints": np.full((1, 17, 2), np.nan), "profile": "h36m17"}, "NaN or infinite"),
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
