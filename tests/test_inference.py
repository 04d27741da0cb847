"""Inference: load_model gives the EMA weights in eval mode; embed is profile-, batch- and scale-consistent."""

import argparse

import jax
import numpy as np
import pytest
from flax import nnx

from prpose import checkpoint as ckpt
from prpose import keypoints as kp
from prpose.config import from_overrides, model_fingerprint_dict
from prpose.fingerprint import config_hash, named_leaves, weights_hash
from prpose.errors import PrposeError
from prpose.inference import _jax_forward, load_model
from prpose.training import create_train_state, final_state, make_optimizer, train_and_evaluate

FAST = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from prpose.data_prep import synthetic

    root = tmp_path_factory.mktemp("inference")
    data = root / "synthetic"
    assert synthetic.main(argparse.Namespace(out=str(data), sequences=8, frames=20, seed=1, rig="h36m", cameras=4,
                                             overwrite=False)) == 0
    config = from_overrides("tiny", ["train.eval_every=0", "train.log_every=5", "train.checkpoint_every=10",
                                     "train.steps=10"])
    train_and_evaluate(config, data, root / "run", progress=False, log=lambda *_: None, compiler_options=FAST)
    from prpose.dataset import load_dataset

    return root / "run", config, load_dataset(data)


def _reference_embedding(config, run_dir, keypoints13):
    """Means from the checkpoint's EMA weights through a separately built eval-mode model, float64 normalisation."""
    _, ema = final_state(run_dir, config)
    _, eval_graphdef, state, _ = create_train_state(config, make_optimizer(config))
    model = nnx.merge(eval_graphdef, ema["params"], ema["batch_stats"], state.rng_state)
    x = np.asarray(keypoints13, np.float64)
    hips = (x[:, 7] + x[:, 8]) / 2
    torso = x[:, [1, 2, 7, 8]]
    scale = np.max(np.linalg.norm(torso[:, :, None] - torso[:, None], axis=-1), axis=(1, 2))
    normalized = (x - hips[:, None]) * (0.5 / scale)[:, None, None]
    mean, stddev = model(normalized.astype(np.float32))
    return np.asarray(mean), np.asarray(stddev)


def test_load_model_uses_ema_weights_in_eval_mode(run):
    run_dir, config, dataset = run
    model = load_model(run_dir)
    assert model.step == 10 and model.config == config
    assert (model.embedding_dim, model.num_samples) == (config.model.embedding_dim, config.model.num_samples)
    k17 = np.asarray(dataset.keypoints2d[:40, 0])
    out = model.embed(k17, profile="h36m17")
    assert out.mean.shape == (40, 8) and out.stddev.shape == (40, 8) and out.samples.shape == (40, 8, 8)
    assert (out.stddev > 0).all()
    ref_mean, ref_std = _reference_embedding(config, run_dir, kp.convert(k17, "h36m17", "input13"))
    np.testing.assert_allclose(out.mean, ref_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.stddev, ref_std, rtol=1e-4, atol=1e-5)
    # Eval mode: no dropout, so embedding twice gives the same result.
    np.testing.assert_array_equal(model.embed(k17, profile="h36m17").mean, out.mean)
    # match_params come from the EMA weights: a = ELU(raw_a) + 1, plus the config's smoothing.
    _, ema = final_state(run_dir, config)
    raw_a, b = float(ema["params"]["raw_a"][...]), float(ema["params"]["b"][...])
    a = raw_a + 1 if raw_a > 0 else np.exp(raw_a)
    assert model.match_params == pytest.approx((a, b, config.loss.smoothing), rel=1e-6)


def test_fingerprint_is_recorded_and_reproducible(run):
    run_dir, config, _ = run
    model = load_model(run_dir)
    assert model.fingerprint == load_model(run_dir, step=10).fingerprint
    config_part, weights_part = model.fingerprint.split("-")
    assert config_part == config_hash(model_fingerprint_dict(config))[:12]
    _, ema = final_state(run_dir, config)
    assert weights_part == weights_hash(named_leaves(ema["params"]))[:12]


def test_profiles_scale_and_translation_give_the_same_embedding(run):
    run_dir, _, dataset = run
    model = load_model(run_dir)
    k17 = np.asarray(dataset.keypoints2d[:16, 1], np.float32)
    k13 = kp.convert(k17, "h36m17", "input13")
    # A COCO layout with made-up face joints (not used by the model).
    coco = np.zeros((16, 17, 2), np.float32)
    idx = kp.conversion_indices("coco17", "input13")
    coco[:, idx] = k13
    coco[:, 1:5] = 123.0
    base = model.embed(k13, profile="input13")
    for other in (model.embed(k17, profile="h36m17"), model.embed(coco, profile="coco17"),
                  model.embed(k13 * 0.5 + 300.0, profile="input13")):
        np.testing.assert_allclose(other.mean, base.mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(other.samples, base.samples, rtol=1e-4, atol=1e-4)


def test_batching_padding_and_compiles(run):
    run_dir, _, dataset = run
    model = load_model(run_dir, batch_size=128)
    k17 = np.asarray(dataset.keypoints2d[:, 2], np.float32)[:300]
    full = model.embed(k17, profile="h36m17")  # chunks of 128, 128, 44 (padded to 64)
    part = model.embed(k17[130:170], profile="h36m17")
    np.testing.assert_allclose(part.mean, full.mean[130:170], rtol=1e-5, atol=1e-6)
    # Samples of row i come from fold_in(key, i): the first rows agree whatever the call's size.
    head = model.embed(k17[:5], profile="h36m17")
    np.testing.assert_allclose(head.samples, full.samples[:5], rtol=1e-5, atol=1e-6)
    other_key = model.embed(k17[:5], profile="h36m17", key=jax.random.key(7))
    assert not np.allclose(other_key.samples, head.samples)
    np.testing.assert_allclose(other_key.mean, head.mean)
    before = _jax_forward()._cache_size()
    for n in (1, 3, 17, 33, 63, 64, 65, 100, 127):
        assert model.embed(k17[:n], profile="h36m17").mean.shape[0] == n
    assert _jax_forward()._cache_size() - before <= 1  # buckets 64 and 128 exist already: at most one new shape
    assert model.embed(k17[:0], profile="h36m17").samples.shape == (0, 8, 8)


def test_scores_mark_missing_keypoints(run):
    run_dir, _, dataset = run
    model = load_model(run_dir)
    k13 = kp.convert(np.asarray(dataset.keypoints2d[:4, 0], np.float32), "h36m17", "input13")
    scores = np.ones((4, 13), np.float32)
    scores[0, 5] = 0.1  # left wrist missing
    k_nan = k13.copy()
    k_nan[0, 5] = np.nan  # a missing keypoint may be NaN
    out = model.embed(k_nan, scores=scores, score_threshold=0.3)
    assert np.isfinite(out.mean).all()
    full = model.embed(k13)
    np.testing.assert_allclose(out.mean[1:], full.mean[1:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.mean[0], full.mean[0])


def test_visible_mask_is_the_scores_rule_without_fake_scores(run):
    run_dir, _, dataset = run
    model = load_model(run_dir)
    points = np.asarray(dataset.keypoints2d[:6, 0], np.float32)
    visible = np.ones((6, 17), bool)
    visible[0, [12, 13, 15, 16]] = False  # row 0: elbows and wrists hidden
    visible[1, [1, 4, 11, 14]] = False  # row 1: both hips and both shoulders hidden -> not usable
    by_mask = model.embed_usable(points, profile="h36m17", visible=visible)
    by_scores = model.embed_usable(points, profile="h36m17", scores=visible.astype(np.float32), score_threshold=0.5)
    assert by_mask.rows.tolist() == by_scores.rows.tolist() == [0, 2, 3, 4, 5]
    assert [row for row, _ in by_mask.skipped] == [1] and "torso" in by_mask.skipped[0][1]
    np.testing.assert_array_equal(by_mask.embeddings.samples, by_scores.embeddings.samples)
    with pytest.raises(PrposeError, match="both scores and visible"):
        model.embed(points, profile="h36m17", scores=np.ones((6, 17)), visible=visible)
    with pytest.raises(PrposeError, match=r"visible has shape \(6, 13\)"):
        model.embed(points, profile="h36m17", visible=np.ones((6, 13), bool))


@pytest.mark.parametrize("make, message", [
    (lambda k: k[:, :12], r"shape \(4, 12, 2\), expected \(N, 13, 2\) for profile 'input13'"),
    (lambda k: k[0], r"expected \(N, 13, 2\)"),
    (lambda k: np.where(np.arange(13)[None, :, None] == 3, np.inf, k), r"cannot be embedded: rows \[0, 1, 2, 3\] \(row 0: non-finite or extreme .*left_elbow"),
    (lambda k: np.zeros_like(k), r"cannot be embedded: rows \[0, 1, 2, 3\] \(row 0: degenerate torso"),
])
def test_bad_keypoints_are_clear_errors(run, make, message):
    run_dir, _, dataset = run
    model = load_model(run_dir)
    k13 = kp.convert(np.asarray(dataset.keypoints2d[:4, 0], np.float32), "h36m17", "input13")
    with pytest.raises(PrposeError, match=message):
        model.embed(make(k13))


def test_bad_arguments_and_paths(run, tmp_path):
    run_dir, _, dataset = run
    model = load_model(run_dir)
    k13 = np.zeros((2, 13, 2), np.float32)
    with pytest.raises(PrposeError, match="unknown keypoint profile 'openpose25'"):
        model.embed(k13, profile="openpose25")
    with pytest.raises(PrposeError, match=r"scores have shape \(2, 12\), expected \(2, 13\)"):
        model.embed(k13, scores=np.ones((2, 12)))
    with pytest.raises(PrposeError, match="is not a directory"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrposeError, match="no such config file"):
        load_model(tmp_path / "empty")
