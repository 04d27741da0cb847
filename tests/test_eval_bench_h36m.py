"""bench/bench_h36m_table.py on a generated format-v2 dataset with detections (always runs): the table's rows for
both 2D sources, the two-stage vs exact check, and re-printing a table from earlier JSON outputs."""

import json

import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_h36m_table")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from prpose.eval.lifting import train_lifter
    from prpose.eval.testing import tiny_dataset
    from prpose import cli
    from prpose.config import from_overrides

    root = tmp_path_factory.mktemp("bench_h36m")
    tiny_dataset(root / "ds", sequences=6, frames=10, splits=("train", "train", "test", "test", "val", "test"),
                 detections=True, missing_camera=(3, 1))
    assert cli.main(["train", "--config", "tiny", "--data", str(root / "ds"), "--out", str(root / "prvipe"),
                     "--set", "train.steps=20", "train.eval_every=0", "train.checkpoint_every=20"]) == 0
    train_lifter(from_overrides("tiny", ["train.steps=10"]), root / "ds", root / "lifter", log=lambda *a: None)
    return root


def test_bench_prints_both_sources_and_checks_two_stage(bench, runs, capsys):
    out = runs / "table.json"
    assert bench.main(["--data", str(runs / "ds"), "--prvipe", str(runs / "prvipe"), "--lifter", str(runs / "lifter"),
                       "--candidates", "5", "--check-every", "2", "--head-as-nose", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["frames"]["detected"]["unusable_by_camera"]["ring1"] == 10
    assert res["frames"]["detected"]["absent_joints"] == ["nose"]
    rows = {(r["source"], r["method"]) for r in res["results"]}
    for method in ("2D keypoints", "3D lifting + NP-MPJPE", "Pr-VIPE (match probability)"):
        assert ("gt", method) in rows and ("detected", method) in rows
    assert ("detected", "Pr-VIPE, head top as nose") in rows and ("gt", "Pr-VIPE, head top as nose") not in rows
    assert all(len(r["pairs"]) == 6 for r in res["results"])
    # The published row sits beside ours.
    assert "97.6 / 99.9 / 100.0" in printed and "28.7 / 47.1 / 50.9" in printed
    checks = {(c["source"], c["method"]): c for c in res["checks"]}
    assert ("gt", "Pr-VIPE (match probability)") in checks and ("detected", "3D lifting + NP-MPJPE") in checks
    assert all(c["frames"] == 10 for c in checks.values())
    # Re-print from JSON (rows evaluated in several runs).
    assert bench.main(["--tables", str(out), str(out)]) == 0
    again = capsys.readouterr().out
    assert again.count("Pr-VIPE (match probability)") >= 4 and "check [gt]" in again
