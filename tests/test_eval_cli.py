"""`prpose eval` end to end on a tiny synthetic dataset (model-free rows), JSON and markdown report."""

import json

import numpy as np
import pytest

from prpose import cli

NAMES = ["dataset-1_walk_a_001.bvh", "dataset-1_run_a_001.bvh", "dataset-1_walk_b_001.bvh",
         "dataset-1_walk_c_001.bvh", "dataset-1_run_b_001.bvh"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from prpose.eval.testing import tiny_dataset

    path = tmp_path_factory.mktemp("eval") / "ds"
    tiny_dataset(path, sequences=5, frames=16, names=NAMES, splits=("train", "train", "test", "test", "test"))
    return path


def test_eval_cli_writes_json_with_settings_and_a_report(data, tmp_path, capsys):
    out, rep = tmp_path / "out.json", tmp_path / "report"
    code = cli.main(["eval", "--data", str(data), "--every", "2", "--ks", "1", "5", "--baselines", "oracle", "random",
                     "2d", "expected-random", "--occlusion",
                     "--rates", "0", "0.3", "--patterns", "lower_legs", "--alignment", "--clip", "6", "--offset",
                     "2", "--probes", "--unseen-views", "--azimuths", "2", "--elevations", "0", "45", "--json",
                     str(out), "--report", str(rep)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "oracle (3D NP-MPJPE)" in printed and "Hit@1" in printed
    res = json.loads(out.read_text())
    s = res["settings"]
    assert s["split"] == "test" and s["every"] == 2 and s["kappa"] == 0.1 and s["ks"] == [1, 5]
    assert s["frames"] == 24 and s["cameras"] == ["ring0", "ring1", "ring2"]
    rows = {r["method"]: r for r in res["crossview"]}
    assert rows["oracle (3D NP-MPJPE)"]["mean"]["hit@1"] == 1.0
    assert len(rows["2D keypoints"]["pairs"]) == 6
    for r in rows.values():  # the mean is the mean of the per-pair table
        assert np.mean([p["hit@5"] for p in r["pairs"]]) == pytest.approx(r["mean"]["hit@5"])
    assert 0 < res["expected_random"]["mean"]["hit@1"] < 1
    assert [x["setting"] for x in res["occlusion"][0]["settings"]] == ["random 0%", "random 30%", "lower_legs"]
    assert res["alignment"]["offset"][0]["mean_error_frames"] == 0.0  # the oracle
    assert res["alignment"]["cross_take"][0]["pairs"] == 1  # the two test "walk" takes
    assert "normalised 2D keypoints" in res["probes"]
    unseen = {r["method"]: r for r in res["unseen_views"]["results"]}
    assert len(unseen["oracle (3D NP-MPJPE)"]["pairs"]) == 4 * 3  # 2 azimuths x 2 elevations, ordered pairs
    assert unseen["oracle (3D NP-MPJPE)"]["mean"]["hit@1"] == 1.0
    md = (rep / "report.md").read_text()
    assert "| oracle (3D NP-MPJPE) | 100 | 100 |" in md
    for png in ("hit_at_k.png", "pairs_hit1.png", "occlusion.png"):
        assert (rep / png).stat().st_size > 1000


def test_eval_cli_bad_input_is_one_line(data, tmp_path, capsys):
    assert cli.main(["eval", "--data", str(tmp_path / "nope")]) == 2
    assert cli.main(["eval", "--data", str(data), "--cameras", "ring0", "ring7"]) == 2
    err = capsys.readouterr().err
    assert "ring7" in err and err.count("prpose eval: error:") == 2
