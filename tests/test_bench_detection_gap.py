"""bench/bench_detection_gap.py: the bias inversion against the noise model's forward step, and the rows on a
generated format-v2 dataset with detections (always runs)."""

import json

import numpy as np
import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_detection_gap")


def test_remove_bias_inverts_the_noise_models_bias_step(bench):
    from prpose import detector_noise as dn

    arrays = dn.noise_arrays(dn.load_noise_model(), "h36m17")
    rng = np.random.default_rng(3)
    truth = rng.normal(0.0, 100.0, (50, 17, 2)) + 500.0
    b, j, p = truth.shape[0], truth.shape[1], len(arrays.pairs)
    # Draws with no core error, no gross error and no swap: only the bias.
    draws = dn.Draws(np.zeros((b, j, 2)), np.zeros((b, j)), np.ones((b, j)), np.zeros((b, j)), np.ones((b, p)))
    biased = dn.corrupt_from_draws(np, truth, draws, arrays)
    assert np.abs(biased - truth).max() > 1.0  # the bias moves joints (hips inwards, shoulders outwards)
    np.testing.assert_allclose(bench.remove_bias(biased, arrays.params[:2], arrays.torso), truth, atol=1e-8)
    # Zero bias: the identity.
    np.testing.assert_allclose(bench.remove_bias(truth, np.zeros((2, j)), arrays.torso), truth)


def test_rows_on_a_generated_dataset(bench, tmp_path, capsys):
    from prpose import cli
    from prpose.eval.testing import tiny_dataset

    tiny_dataset(tmp_path / "ds", sequences=6, frames=10, splits=("train", "train", "test", "test", "val", "test"),
                 detections=True, missing_camera=None)
    assert cli.main(["train", "--config", "tiny", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"),
                     "--set", "train.steps=10", "train.eval_every=0", "train.checkpoint_every=10"]) == 0
    out = tmp_path / "gap.json"
    assert bench.main(["--data", str(tmp_path / "ds"), "--model", str(tmp_path / "run"), "--every", "1",
                       "--candidates", "5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    rows = {r["row"]: r["mean"] for r in res["results"]}
    assert len(rows) == 11 and res["frames"] == 30
    assert "gt, limbs detected" in printed and "detected, head top as nose" in printed
    for mean in rows.values():
        assert len(mean) == 3 and 0.0 <= mean[0] <= mean[1] <= mean[2] <= 1.0
    # Rows that change nothing the model sees give the same numbers: the detector's "true torso" is the gt torso
    # with the detector's limbs, as in "gt, limbs detected" (the tiny detections differ only by noise).
    assert rows["detected, true torso"] == pytest.approx(rows["gt, limbs detected"])
    only = bench.main(["--data", str(tmp_path / "ds"), "--model", str(tmp_path / "run"), "--rows", "nose hidden"])
    assert only == 0 and "gt, nose hidden" in capsys.readouterr().out
