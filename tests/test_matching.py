"""Match probability / distance against float64 NumPy references and closed-form cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prpose.errors import PrposeError
from prpose.index.kernels import match_distance_np, pairwise_match_distance_np
from prpose.matching import (
    log_match_probability,
    match_distance,
    match_probability,
    pairwise_match_distance,
    sample_embeddings,
)

A, B, S = 0.52, -0.5, 0.1


def brute_force_distance(s1, s2, a, b, s):
    """Independent reference: explicit double loop over sample pairs, float64, no log-space tricks."""
    s1 = np.asarray(s1, np.float64)
    s2 = np.asarray(s2, np.float64)
    out = np.empty(s1.shape[0])
    for i in range(s1.shape[0]):
        total = 0.0
        for k in range(s1.shape[1]):
            for l in range(s2.shape[1]):
                dist = np.sqrt(np.sum((s1[i, k] - s2[i, l]) ** 2))
                total += (1 - s) / (1 + np.exp(a * dist - b)) + s / 2
        out[i] = -np.log(total / (s1.shape[1] * s2.shape[1]))
    return out


def test_identical_samples_give_maximal_probability():
    z = jnp.array([[0.3, -1.0, 2.0]])
    expected = (1 - S) / (1 + np.exp(-B)) + S / 2
    np.testing.assert_allclose(match_probability(z, z, A, B, S), [expected], rtol=1e-6)
    np.testing.assert_allclose(log_match_probability(z, z, A, B, S), [np.log(expected)], rtol=1e-6)
    # Farther apart -> strictly less likely.
    assert match_probability(z, z + 1.0, A, B, S)[0] < expected


def test_probability_uses_plain_l2():
    z1 = jnp.zeros((1, 2))
    z2 = jnp.array([[3.0, 4.0]])  # distance 5, squared 25
    expected = (1 - S) / (1 + np.exp(A * 5.0 - B)) + S / 2
    np.testing.assert_allclose(match_probability(z1, z2, A, B, S), [expected], rtol=1e-6)


def test_match_distance_equals_brute_force_mean_over_k_by_k():
    rng = np.random.default_rng(0)
    s1 = rng.normal(size=(3, 4, 5)).astype(np.float32)
    s2 = rng.normal(size=(3, 6, 5)).astype(np.float32)  # K1 != K2 is allowed
    ref = brute_force_distance(s1, s2, A, B, S)
    np.testing.assert_allclose(match_distance(s1, s2, A, B, S), ref, rtol=1e-5)
    np.testing.assert_allclose(match_distance_np(s1, s2, A, B, S), ref, rtol=1e-12)


def test_pairwise_matches_row_by_row_reference():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(3, 4, 5))
    x = rng.normal(size=(7, 4, 5)) + 1.0
    ref = np.array([[brute_force_distance(q[i : i + 1], x[j : j + 1], A, B, S)[0] for j in range(7)]
                    for i in range(3)])
    np.testing.assert_allclose(pairwise_match_distance_np(q, x, A, B, S, chunk_size=3), ref, rtol=1e-12)
    np.testing.assert_allclose(pairwise_match_distance(q.astype(np.float32), x.astype(np.float32), A, B, S),
                               ref, rtol=2e-4)


def test_identical_inputs_give_minimal_distance():
    z = np.tile(np.array([[[1.0, 2.0, 3.0]]], np.float32), (1, 4, 1))
    expected = -np.log((1 - S) / (1 + np.exp(-B)) + S / 2)
    np.testing.assert_allclose(match_distance(z, z, A, B, S), [expected], rtol=1e-6)
    np.testing.assert_allclose(pairwise_match_distance(z, z, A, B, S), [[expected]], rtol=1e-4)


def test_far_apart_samples_are_finite_with_finite_gradients():
    s1 = jnp.zeros((2, 3, 4))
    s2 = jnp.full((2, 3, 4), 1e4)
    for s in (S, 0.0):
        d = match_distance(s1, s2, A, B, s)
        assert np.all(np.isfinite(d))
        if s > 0:  # the smoothing floor bounds d by -log(s/2)
            np.testing.assert_allclose(d, -np.log(s / 2), rtol=1e-5)
        else:  # no floor: d ~ a * dist - b
            np.testing.assert_allclose(d, A * 2e4 - B, rtol=1e-5)
        grads = jax.jit(jax.grad(lambda x, y, a, b: match_distance(x, y, a, b, s).sum(), argnums=(0, 1, 2, 3)))(
            s1, s2, jnp.float32(A), jnp.float32(B))
        for g in grads:
            assert np.all(np.isfinite(g))
    np.testing.assert_allclose(match_distance_np(s1, s2, A, B, 0.0), A * 2e4 - B, rtol=1e-12)


def test_gradient_is_finite_at_identical_samples():
    z = jnp.ones((2, 3, 4))
    g = jax.jit(jax.grad(lambda x: match_distance(x, z, A, B, S).sum()))(z)
    assert np.all(np.isfinite(g))
    g = jax.jit(jax.grad(lambda x: pairwise_match_distance(x, z, A, B, S).sum()))(z)
    assert np.all(np.isfinite(g))


def test_sample_embeddings_shape_and_statistics():
    mean = jnp.array([[1.0, -2.0], [0.0, 3.0]])
    std = jnp.array([[0.5, 2.0], [1.0, 0.1]])
    z = sample_embeddings(mean, std, jax.random.key(0), 4000)
    assert z.shape == (2, 4000, 2)
    np.testing.assert_allclose(z.mean(axis=1), mean, atol=0.1)
    np.testing.assert_allclose(z.std(axis=1), std, rtol=0.06)
    # Reparameterised: d z / d mean = 1 per sample.
    g = jax.grad(lambda m: sample_embeddings(m, std, jax.random.key(0), 3).sum())(mean)
    np.testing.assert_allclose(g, 3.0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(PrposeError, match="samples1"):
        match_distance(np.zeros((3, 4)), np.zeros((3, 4, 2)), A, B, S)
    with pytest.raises(PrposeError, match="smoothing"):
        match_distance(np.zeros((3, 4, 2)), np.zeros((3, 4, 2)), A, B, 1.5)
    with pytest.raises(PrposeError, match="D"):
        pairwise_match_distance(np.zeros((3, 4, 2)), np.zeros((5, 4, 3)), A, B, S)
    with pytest.raises(PrposeError, match="num_samples"):
        sample_embeddings(np.zeros((2, 3)), np.ones((2, 3)), jax.random.key(0), 0)
