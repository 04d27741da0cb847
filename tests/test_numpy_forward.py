"""The NumPy forward pass equals the JAX path: noise (bit-level keys), normalisation and network (1e-5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpose import model as model_module
from prpose import numpy_forward as nf
from prpose.export import flatten_tree
from prpose.model import init_split
from prpose.model import ModelConfig
from prpose.normalize import normalize_2d


@pytest.mark.parametrize("seed", [0, 7, 2**31 + 5])
def test_noise_equals_jax_random(seed):
    key = jax.random.key(seed)
    rows = np.arange(0, 700, 7)
    raw = np.asarray(jax.random.key_data(key))
    keys = nf.fold_in(raw, rows)
    ref_keys = np.asarray(jax.vmap(lambda r: jax.random.key_data(jax.random.fold_in(key, r)))(jnp.asarray(rows)))
    np.testing.assert_array_equal(keys, ref_keys)  # Threefry and fold-in: bit-exact
    ref = np.asarray(jax.vmap(lambda r: jax.random.normal(jax.random.fold_in(key, r), (20, 16)))(jnp.asarray(rows)))
    got = nf.normal(keys, (20, 16))
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    assert abs(got.mean()) < 0.05 and abs(got.std() - 1) < 0.05


def test_noise_tails_follow_jax_erfinv():
    # Uniforms near -1 and 1 exercise the second erfinv branch (w >= 5): compare on many draws.
    key = jax.random.key(3)
    ref = np.asarray(jax.random.normal(key, (200_000,)))
    got = nf.normal(np.asarray(jax.random.key_data(key))[None], (200_000,))[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-6)
    assert np.abs(ref).max() > 4.0  # the tail branch was reached


def test_normalize_2d_matches_jax():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 13, 2)).astype(np.float32) * 80 + 300
    vis = rng.uniform(size=(64, 13)) > 0.25
    vis[:8] = True
    vis[4, [7, 8]] = False          # no hips: offset from the shoulders
    vis[5, [1, 2, 7]] = False       # one torso joint: invalid
    x[6, 3] = np.nan                # non-finite counts as missing
    x[7] = 5.0                      # collapsed torso: invalid
    for visible in (None, vis):
        got, ok = nf.normalize_2d(x, visible)
        ref, ref_ok = normalize_2d(x, visible)
        np.testing.assert_array_equal(ok, np.asarray(ref_ok))
        np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-5, atol=1e-6)
    assert not ok[5] and not ok[7] and ok[4]
    # Another profile: the torso joints are found by name (input14 = input13 + head top).
    x14 = np.concatenate([x, x[:, :1] - 30], axis=1)
    vis14 = np.concatenate([vis, vis[:, :1]], axis=1)
    got, ok = nf.normalize_2d(x14, vis14, "input14")
    ref, ref_ok = normalize_2d(x14, vis14, "input14")
    np.testing.assert_array_equal(ok, np.asarray(ref_ok))
    np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm, mask_mode, profile", [("batch", "none", "input13"), ("batch", "both", "input14"),
                                                      ("layer", "channel", "input13"), ("none", "zero", "input13")])
def test_forward_matches_the_flax_model(norm, mask_mode, profile):
    from flax import nnx

    config = ModelConfig(width=48, num_blocks=2, embedding_dim=8, num_samples=4, norm=norm, mask_mode=mask_mode,
                         input_profile=profile)
    j = config.num_keypoints
    graphdef, params, batch_stats, rest = init_split(config)
    rng = np.random.default_rng(1)
    # Non-trivial batch statistics, so that the running mean / var really enter the eval-mode result.
    batch_stats = jax.tree.map(lambda v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype), batch_stats)
    arrays = {name: a for name, _, a in flatten_tree("params", params) + flatten_tree("batch_stats", batch_stats)}
    x = rng.normal(size=(33, j, 2)).astype(np.float32) * 0.3
    vis = rng.uniform(size=(33, j)) > 0.2
    model = nnx.merge(graphdef, params, batch_stats, rest)
    ref_mean, ref_std = model(jnp.asarray(x), jnp.asarray(vis))
    mean, std = nf.forward(arrays, config, x, vis)
    np.testing.assert_allclose(mean, np.asarray(ref_mean), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, np.asarray(ref_std), rtol=1e-5, atol=1e-5)


def test_constants_agree_with_the_model():
    from prpose import normalize

    assert nf.STDDEV_EPSILON == model_module.STDDEV_EPSILON
    assert nf.TORSO_JOINTS == normalize.TORSO_JOINTS and nf._NORMALIZE_EPS == normalize.EPS
    with pytest.raises(ValueError, match="norm 'group' not supported"):
        nf.forward({}, ModelConfig(width=64, norm="group", norm_groups=8), np.zeros((1, 13, 2)), np.ones((1, 13)))
