"""Embedder / TemporalEmbedder: shapes, positivity, mask modes, train/eval, gradients to match params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prpose.errors import PrposeError
from prpose.matching import match_distance, sample_embeddings
from prpose.model import Embedder, ModelConfig, TemporalEmbedder, _positive_stddev

SMALL = dict(width=32, embedding_dim=8, num_samples=4)


def make(**overrides):
    config = ModelConfig(**{**SMALL, **overrides})
    return Embedder(config, rngs=nnx.Rngs(params=0, dropout=1))


def keypoints(batch=5, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, 13, 2)), jnp.float32)


@pytest.mark.parametrize("norm", ["batch", "layer", "group", "none"])
def test_output_shapes_and_positive_stddev(norm):
    model = make(norm=norm, norm_groups=4)
    mean, std = model(keypoints())
    assert mean.shape == (5, 8) and std.shape == (5, 8)
    assert mean.dtype == jnp.float32
    assert np.all(np.asarray(std) > 0)


def test_stddev_is_elu_plus_one_and_never_zero():
    x = jnp.array([-200.0, -30.0, -1.0, 0.0, 0.5, 3.0])
    elu1 = np.where(np.asarray(x) > 0, np.asarray(x, np.float64) + 1, np.exp(np.asarray(x, np.float64)))
    got = np.asarray(_positive_stddev(x))
    assert np.all(got > 0)
    np.testing.assert_allclose(got, elu1 + 1e-6, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("mode,width", [("none", 26), ("zero", 26), ("channel", 39), ("both", 39)])
def test_mask_modes_set_the_input_width(mode, width):
    model = make(mask_mode=mode)
    assert model.config.input_dim == width
    assert model.encoder.input_layer.kernel[...].shape == (width, 32)


def test_zero_mode_ignores_coordinates_of_invisible_keypoints():
    model = make(mask_mode="zero")
    model.eval()
    x = keypoints(3)
    visible = jnp.ones((3, 13), bool).at[:, 4].set(False)
    moved = x.at[:, 4].add(10.0)
    np.testing.assert_allclose(model(x, visible)[0], model(moved, visible)[0], rtol=1e-6)
    # ... and the mask matters: all-visible input differs.
    assert not np.allclose(model(x, visible)[0], model(x)[0])


def test_channel_mode_sees_the_mask():
    model = make(mask_mode="channel")
    model.eval()
    x = keypoints(3)
    visible = jnp.ones((3, 13), bool).at[:, 4].set(False)
    assert not np.allclose(model(x, visible)[0], model(x, jnp.ones((3, 13), bool))[0])


def test_train_mode_dropout_is_random_eval_is_deterministic():
    model = make(norm="layer", dropout=0.5)
    x = keypoints()
    model.train()
    assert not np.allclose(model(x)[0], model(x)[0])
    model.eval()
    np.testing.assert_array_equal(model(x)[0], model(x)[0])


def test_batch_norm_uses_running_statistics_in_eval():
    model = make(norm="batch", dropout=0.0)
    x = keypoints(8)
    model.eval()
    single = model(x[:1])[0]
    np.testing.assert_allclose(single, model(x)[0][:1], rtol=1e-5, atol=1e-6)  # per-example in eval


def test_match_params_init_and_gradients_flow_to_raw_a_and_b():
    model = make()
    a, b = model.match_params()
    np.testing.assert_allclose(a, np.exp(-0.65), rtol=1e-6)  # ELU(-0.65) + 1
    np.testing.assert_allclose(b, -0.5)
    assert model.raw_a[...].dtype == jnp.float32 and model.raw_a[...].shape == ()

    def loss(m):
        mean, std = m(keypoints())
        z = sample_embeddings(mean, std, jax.random.key(0), 4)
        a, b = m.match_params()
        return match_distance(z, jnp.roll(z, 1, axis=0), a, b, 0.1).mean()

    grads = nnx.jit(nnx.grad(loss))(model)
    assert float(jnp.abs(grads.raw_a[...])) > 0
    assert float(jnp.abs(grads.b[...])) > 0
    assert float(jnp.abs(grads.encoder.input_layer.kernel[...]).sum()) > 0


def test_paper_defaults():
    c = ModelConfig()
    assert (c.width, c.num_blocks, c.embedding_dim, c.dropout, c.norm, c.num_samples) == (1024, 2, 16, 0.3, "batch", 20)
    model = Embedder(ModelConfig(width=32, num_blocks=3), rngs=nnx.Rngs(0))
    assert len(model.encoder.blocks) == 3


@pytest.mark.parametrize("fusion", ["concat", "mean"])
def test_temporal_embedder(fusion):
    config = ModelConfig(**SMALL, temporal_fusion=fusion, mask_mode="channel")
    model = TemporalEmbedder(config, num_frames=7, rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 13, 2)), jnp.float32)
    mean, std = model(x, jnp.ones((2, 7, 13)))
    assert mean.shape == (2, 8) and np.all(np.asarray(std) > 0)
    reversed_mean = model(x[:, ::-1])[0]
    if fusion == "concat":  # time order matters
        assert not np.allclose(mean, reversed_mean, atol=1e-5)
    else:
        np.testing.assert_allclose(mean, reversed_mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(PrposeError, match="num_frames"):
        model(x[:, :5])


def test_bad_config_and_inputs_raise_clear_errors():
    with pytest.raises(PrposeError, match="norm"):
        ModelConfig(norm="instance")
    with pytest.raises(PrposeError, match="mask_mode"):
        ModelConfig(mask_mode="yes")
    with pytest.raises(PrposeError, match="norm_groups"):
        ModelConfig(width=32, norm="group", norm_groups=32)  # 1 unit per group would zero every feature
    with pytest.raises(PrposeError, match="dropout"):
        ModelConfig(dropout=1.0)
    model = make()
    with pytest.raises(PrposeError, match=r"expected \(B, 13, 2\)"):
        model(jnp.zeros((4, 17, 2)))
    with pytest.raises(PrposeError, match="visible"):
        model(keypoints(), jnp.ones((5, 12)))


def test_dropout_keeps_the_rate_independently_and_unbiased():
    """prpose.model.Dropout (two 16-bit uniforms per Threefry word): keep rate, no correlation between the two
    halves of a word or between calls, expectation preserved, identity in eval mode."""
    from prpose.model import Dropout

    drop = Dropout(0.3, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones((256, 1024))
    first, second = np.asarray(drop(x)), np.asarray(drop(x))
    kept = first != 0
    n = kept.size
    assert abs(kept.mean() - 0.7) < 4 * np.sqrt(0.21 / n)  # binomial, 4 sigma
    np.testing.assert_allclose(first[kept], 1.0 / (45875 / 65536), rtol=1e-6)
    assert abs(first.mean() - 1.0) < 4 * np.sqrt(0.3 / 0.7 / n)
    flat = kept.reshape(-1).astype(np.float64)
    for a, b in ((flat[0::2], flat[1::2]), (flat, (second != 0).reshape(-1).astype(np.float64))):
        assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(len(a))  # the halves of a word; two calls
    assert kept.sum(axis=0).std() < 2 * np.sqrt(256 * 0.21)  # no unit is favoured
    drop.eval()
    np.testing.assert_array_equal(np.asarray(drop(x)), np.asarray(x))
    odd = Dropout(0.5, rngs=nnx.Rngs(dropout=1))(jnp.ones((3, 5)))  # odd size: the last word's half unused
    assert odd.shape == (3, 5) and set(np.unique(np.asarray(odd))) <= {0.0, 2.0}
    assert jax.tree.leaves(nnx.state(drop, nnx.RngState))  # the same RNG state as nnx.Dropout (checkpoints)
