"""Checkpoints: bit-exact round trip (with RNG keys), atomicity, compatibility errors, fingerprints."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from prpose import checkpoint as ckpt
from prpose.errors import PrposeError
from prpose.fingerprint import fingerprint, named_leaves


class _Toy(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.drop(self.norm(self.dense(x)))


def _state(seed=0):
    model = _Toy(nnx.Rngs(params=seed, dropout=seed + 1))
    model(jnp.ones((5, 3)))  # moves batch stats and the dropout RNG counter away from their init
    _, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-3)
    opt_state = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)[1]
    state = {"params": params, "rest": rest, "opt_state": opt_state, "step": jnp.int32(7),
             "key": jax.random.key(seed)}
    ema = {"params": jax.tree.map(lambda x: x * 0.5, params)}
    return state, ema


def _assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(ckpt.to_storable(a))
    lb, tb = jax.tree.flatten(ckpt.to_storable(b))
    assert ta == tb
    for x, y in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_bit_exact_including_rng_keys(tmp_path):
    state, ema = _state(0)
    saver = ckpt.Checkpointer(tmp_path)
    saver.save(7, state, ema, {"fingerprint": "x"})
    template_state, template_ema = _state(1)  # different values, same structure
    restored_state, restored_ema, meta = saver.restore(7, template_state, template_ema)
    _assert_trees_equal(restored_state, state)
    _assert_trees_equal(restored_ema, ema)
    assert meta == {"fingerprint": "x", "step": 7}
    assert jax.dtypes.issubdtype(restored_state["key"].dtype, jax.dtypes.prng_key)
    # The restored key draws the same numbers as the saved one.
    np.testing.assert_array_equal(jax.random.normal(restored_state["key"], (3,)), jax.random.normal(state["key"], (3,)))
    step, ema_only, _ = ckpt.restore_ema(tmp_path, template_ema)
    assert step == 7
    _assert_trees_equal(ema_only, ema)


def test_interrupted_save_never_loads_as_good(tmp_path):
    state, ema = _state(0)
    saver = ckpt.Checkpointer(tmp_path, max_to_keep=5)
    saver.save(10, state, ema, {})
    saver.close()
    root = ckpt.checkpoint_dir(tmp_path)
    # A save killed mid-write leaves Orbax's temp dir; a crash while copying by hand leaves a step dir
    # without the finalisation marker. Neither may count.
    shutil.copytree(root / "10", root / "20.orbax-checkpoint-tmp-1234")
    shutil.copytree(root / "10", root / "30")
    (root / "30" / "_CHECKPOINT_METADATA").unlink()
    assert ckpt.complete_steps(tmp_path) == [10]
    assert ckpt.latest_step(tmp_path) == 10
    assert ckpt.latest_step(tmp_path / "nowhere") is None


def test_max_to_keep_prunes_old_steps(tmp_path):
    state, ema = _state(0)
    saver = ckpt.Checkpointer(tmp_path, max_to_keep=2)
    for step in (1, 2, 3):
        saver.save(step, state, ema, {})
    assert ckpt.complete_steps(tmp_path) == [2, 3]


def test_restore_ema_without_checkpoint_is_a_clear_error(tmp_path):
    _, ema = _state(0)
    with pytest.raises(PrposeError, match="no complete checkpoint"):
        ckpt.restore_ema(tmp_path, ema)


def test_incompatible_config_names_every_difference():
    saved = {"model": {"width": 64, "embedding_dim": 16, "mask_mode": "none"}, "window": 1}
    current = {"model": {"width": 128, "embedding_dim": 8, "mask_mode": "none"}, "window": 1}
    with pytest.raises(PrposeError, match=r"^run/config.json: checkpoint is incompatible") as err:
        ckpt.check_compatible(saved, current, "run/config.json")
    assert "model.width: checkpoint has 64, config has 128" in str(err.value)
    assert "model.embedding_dim: checkpoint has 16, config has 8" in str(err.value)
    assert "mask_mode" not in str(err.value)
    ckpt.check_compatible(saved, {"model": dict(saved["model"]), "window": 1}, "same")  # no error
    # Tuples from a live config compare equal to the lists read back from JSON.
    ckpt.check_compatible({"model": {"r": [1, 2]}}, {"model": {"r": (1, 2)}}, "tuples")


def test_fingerprint_tracks_config_and_weights():
    _, ema = _state(0)
    model_dict = {"model": {"width": 4}, "window": 1}
    fp = fingerprint(model_dict, named_leaves(ema["params"]))
    assert fp == fingerprint({"window": 1, "model": {"width": 4}}, named_leaves(ema["params"]))  # key order is irrelevant
    assert fp != fingerprint({"model": {"width": 5}, "window": 1}, named_leaves(ema["params"]))
    bumped = jax.tree.map(lambda x: x.at[(0,) * x.ndim].add(1e-7) if x.size else x, ema["params"])
    assert fp.split("-")[1] != fingerprint(model_dict, named_leaves(bumped)).split("-")[1]
    assert fp.split("-")[0] == fingerprint(model_dict, named_leaves(bumped)).split("-")[0]
