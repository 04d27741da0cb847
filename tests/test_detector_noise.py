"""The fitted detector-error model (prpose.detector_noise) and its training augmentation (prpose.augment).

References are written here in float64 NumPy from the model's definition (module docstring): bias along the true
up / lateral vectors, Gaussian core scaled by the torso, gross errors, left/right swaps.
"""

import dataclasses
import os
import pathlib

import jax
import numpy as np
import pytest

from prpose import augment as A
from prpose import detector_noise as dn
from prpose.errors import PrposeError

# input13 indices, spelled out.
NOSE, LSH, RSH, LEL, REL, LWR, RWR, LHIP, RHIP, LKN, RKN, LANK, RANK = range(13)


def standing_2d(n, seed=0, jitter=0.05):
    """Front views of a person facing the camera (image x right, y down): their left is on the image's right."""
    base = np.array([[0, -1.7], [0.2, -1.4], [-0.2, -1.4], [0.25, -1.1], [-0.25, -1.1], [0.28, -0.8], [-0.28, -0.8],
                     [0.12, -0.9], [-0.12, -0.9], [0.13, -0.5], [-0.13, -0.5], [0.14, -0.1], [-0.14, -0.1]])
    rng = np.random.default_rng(seed)
    x = base[None] + rng.normal(0, jitter, (n, 13, 2))
    scale = rng.uniform(50, 300, (n, 1, 1))
    return x * scale + rng.uniform(0, 1000, (n, 1, 2))


def torso_scale_ref(x):
    t = x[:, [LSH, RSH, LHIP, RHIP]]
    return np.max([np.linalg.norm(t[:, a] - t[:, b], axis=-1) for a in range(4) for b in range(a + 1, 4)], axis=0)


def model_with(**per_joint):
    """A model where every input13 joint has the given JointNoise fields and no swaps."""
    joints = {name: dn.JointNoise(**per_joint) for name in dn.kp.INPUT13.joints}
    return dn.NoiseModel(joints, {p: 0.0 for p in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")})


def test_corrupt_from_draws_matches_the_closed_form_in_float64():
    x = standing_2d(64)
    rng = np.random.default_rng(1)
    params = dict(bias_up=0.03, bias_lateral=-0.07, sigma=0.05, gross_rate=0.2, gross_log_mean=-1.0,
                  gross_log_std=0.5)
    arrays = dn.noise_arrays(model_with(**params), "input13")
    draws = dn.draws_np(rng, 64, 13, len(arrays.pairs))
    got = dn.corrupt_from_draws(np, x, draws, arrays)

    s = torso_scale_ref(x)
    up = (x[:, LSH] + x[:, RSH]) / 2 - (x[:, LHIP] + x[:, RHIP]) / 2
    lateral = x[:, LHIP] - x[:, RHIP]
    want = x + params["bias_up"] * up[:, None] + params["bias_lateral"] * lateral[:, None]
    gross = draws.gross_pick < params["gross_rate"]
    magnitude = np.exp(params["gross_log_mean"] + params["gross_log_std"] * draws.gross_magnitude)
    angle = 2 * np.pi * draws.gross_angle
    error = np.where(gross[..., None], magnitude[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1),
                     params["sigma"] * draws.core)
    want = want + s[:, None, None] * error
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert 0.05 < gross.mean() < 0.4


def test_numpy_and_jax_agree_on_the_same_draws():
    x = standing_2d(32)
    model = dn.load_noise_model()
    arrays = dn.noise_arrays(model, "input13")
    draws = dn.draws_jax(jax.random.key(3), 32, 13, len(arrays.pairs), np.float32)
    got_np = dn.corrupt_from_draws(np, x, dn.Draws(*(np.asarray(d, np.float64) for d in draws)), arrays)
    jarrays = dn.NoiseArrays(jax.numpy.asarray(arrays.params, np.float32), arrays.pairs,
                             jax.numpy.asarray(arrays.swap_rates, np.float32), arrays.torso)
    got_jax = np.asarray(dn.corrupt_from_draws(jax.numpy, jax.numpy.asarray(x, np.float32), draws, jarrays))
    np.testing.assert_allclose(got_jax, got_np, rtol=1e-4, atol=1e-2)  # pixels, float32


def test_error_spread_scales_with_the_torso_and_matches_sigma():
    x = standing_2d(20000, seed=2)
    noisy = dn.corrupt_np(x, np.random.default_rng(0), model_with(sigma=0.04))
    err = (noisy - x) / torso_scale_ref(x)[:, None, None]
    # Isotropic 2D Gaussian: each coordinate has standard deviation sigma; the radius median is sigma sqrt(2 ln 2).
    np.testing.assert_allclose(err.std(axis=0), 0.04, rtol=0.03)
    np.testing.assert_allclose(np.median(np.linalg.norm(err, axis=-1), axis=0), 0.04 * np.sqrt(2 * np.log(2)),
                               rtol=0.03)


def test_bias_turns_with_the_body():
    x = standing_2d(8, jitter=0.0)
    model = model_with(bias_up=0.1)
    arrays = dn.noise_arrays(model, "input13")
    zero = dn.Draws(np.zeros((8, 13, 2)), np.zeros((8, 13)), np.ones((8, 13)), np.zeros((8, 13)), np.ones((8, 6)))
    moved = dn.corrupt_from_draws(np, x, zero, arrays) - x
    assert np.all(moved[..., 1] < 0)  # up in the image is -y: the person is upright
    c, s = np.cos(0.7), np.sin(0.7)
    rot = np.array([[c, -s], [s, c]])
    moved_rot = dn.corrupt_from_draws(np, x @ rot.T, zero, arrays) - x @ rot.T
    np.testing.assert_allclose(moved_rot, moved @ rot.T, atol=1e-9)


def test_swaps_exchange_left_and_right_never_mirror_otherwise():
    x = standing_2d(16, jitter=0.0)
    model = dataclasses.replace(model_with(), swap_rates={"wrist": 1.0})
    out = dn.corrupt_np(x, np.random.default_rng(0), model)
    np.testing.assert_allclose(out[:, LWR], x[:, RWR])
    np.testing.assert_allclose(out[:, RWR], x[:, LWR])
    others = [j for j in range(13) if j not in (LWR, RWR)]
    np.testing.assert_allclose(out[:, others], x[:, others])
    # Without swaps, left stays on the image's right for a frontal view, whatever the noise.
    out = dn.corrupt_np(x, np.random.default_rng(0), dn.load_noise_model())
    frac = np.mean(out[:, LSH, 0] > out[:, RSH, 0])
    assert frac > 0.95


def test_detect_swaps_and_measure_on_a_known_swap():
    x = standing_2d(100, jitter=0.0)
    det = x.copy()
    det[:10, [LKN, RKN]] = det[:10, [RKN, LKN]]
    swaps = dn.detect_swaps(det, x, dn.kp.INPUT13.left_right_pairs, torso_scale_ref(x))
    knee = [i for i, (a, _) in enumerate(dn.kp.INPUT13.left_right_pairs) if a == LKN][0]
    assert swaps[:10, knee].all() and not swaps[10:].any() and swaps.sum() == 10
    np.testing.assert_allclose(dn.unswap(det, swaps, dn.kp.INPUT13.left_right_pairs), x)
    assert dn.measure(det, x, "input13")["swap_rate"]["knee"] == pytest.approx(0.1)


def test_fit_recovers_a_known_model():
    x = standing_2d(40000, seed=3)
    truth = dn.NoiseModel({n: dn.JointNoise(bias_up=0.05 if "hip" in n else 0.0,
                                            bias_lateral=-0.08 if n == "left_hip" else 0.0, sigma=0.04,
                                            gross_rate=0.1, gross_log_mean=np.log(0.25), gross_log_std=0.4)
                           for n in dn.kp.INPUT13.joints},
                          {"shoulder": 0.0, "elbow": 0.01, "wrist": 0.02, "hip": 0.0, "knee": 0.03, "ankle": 0.05})
    det = dn.corrupt_np(x, np.random.default_rng(4), truth)
    fit = dn.fit_noise_model(det, x, "input13", seed=5)
    for name in ("left_wrist", "left_hip", "right_knee"):
        j, t = fit.joints[name], truth.joints[name]
        assert j.sigma == pytest.approx(t.sigma, rel=0.1), name
        assert j.gross_rate == pytest.approx(t.gross_rate, abs=0.03), name
        assert np.exp(j.gross_log_mean) == pytest.approx(np.exp(t.gross_log_mean), rel=0.15), name
        assert j.bias_up == pytest.approx(t.bias_up, abs=0.01), name
        assert j.bias_lateral == pytest.approx(t.bias_lateral, abs=0.01), name
    for pair in ("elbow", "knee", "ankle"):
        assert fit.swap_rates[pair] == pytest.approx(truth.swap_rates[pair], abs=0.006), pair


def test_packaged_fit_is_sane_and_left_right_consistent():
    model = dn.load_noise_model()
    assert model.info["subjects"] == ["S1", "S5", "S6", "S7", "S8"]  # training subjects only
    # A mirrored joint order in the fit would show as swap rates near 1 and huge errors.
    assert all(r < 0.05 for r in model.swap_rates.values())
    assert all(0.01 < j.sigma < 0.15 for j in model.joints.values())
    # Hips: the detector's hip points lie inward of the mocap hip centres on both sides (mirror-consistent).
    assert model.joints["left_hip"].bias_lateral < 0 < model.joints["right_hip"].bias_lateral
    assert model.joints["left_shoulder"].bias_lateral > 0 > model.joints["right_shoulder"].bias_lateral
    assert model.joints["nose"].bias_up == 0 and model.joints["nose"].sigma == model.joints["head"].sigma


def test_bad_model_files_give_one_line_errors(tmp_path):
    with pytest.raises(PrposeError, match="cannot read"):
        dn.load_noise_model(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(PrposeError, match="not a prpose detector-noise model"):
        dn.load_noise_model(tmp_path / "bad.json")
    with pytest.raises(PrposeError, match=r"expected \(\.\.\., 13, 2\)"):
        dn.corrupt_np(np.zeros((4, 12, 2)), np.random.default_rng(0))


# --- the training augmentation -------------------------------------------------------------------------------

detector_noise = jax.jit(A.detector_noise, static_argnames=("config", "profile"),
                         compiler_options={"xla_backend_optimization_level": 0})


def test_augmentation_uses_the_same_model_and_renormalises():
    from prpose.normalize import normalize_2d

    x = standing_2d(256, seed=5).astype(np.float32)
    clean, _ = normalize_2d(x)
    clean = np.asarray(clean)
    off = np.asarray(detector_noise(clean, jax.random.key(0), config=A.AugmentConfig()))
    np.testing.assert_array_equal(off, clean)
    on_config = A.AugmentConfig(detector_noise_probability=1.0)
    on = np.asarray(detector_noise(clean, jax.random.key(0), config=on_config))
    assert np.abs(on - clean).max() > 0.01
    # Real detections are never corrupted again.
    exclude = np.arange(256) % 2 == 0
    part = np.asarray(detector_noise(clean, jax.random.key(0), config=on_config, exclude=exclude))
    np.testing.assert_array_equal(part[exclude], clean[exclude])
    np.testing.assert_allclose(part[~exclude], on[~exclude])
    # Normalised: the largest torso distance is 0.5.
    np.testing.assert_allclose(torso_scale_ref(on.astype(np.float64)), 0.5, rtol=1e-4)
    # Error size in torso units agrees with the NumPy corruption of the same keypoints (same model).
    err_jax = np.median(np.linalg.norm(on - clean, axis=-1), axis=0) / 0.5
    noisy_np = dn.corrupt_np(x, np.random.default_rng(0))
    cn, _ = normalize_2d(noisy_np.astype(np.float32))
    err_np = np.median(np.linalg.norm(np.asarray(cn) - np.asarray(clean), axis=-1), axis=0) / 0.5
    np.testing.assert_allclose(err_jax, err_np, rtol=0.35, atol=0.01)


def test_config_validates_the_new_fields():
    with pytest.raises(PrposeError, match="depth_max"):
        A.AugmentConfig(depth=5.0, depth_max=3.0)
    with pytest.raises(PrposeError, match="detector_noise_probability"):
        A.AugmentConfig(detector_noise_probability=1.5)
    assert A.AugmentConfig.from_dict(A.AugmentConfig(depth=5, depth_max=14).to_dict()).depth_max == 14.0


@pytest.mark.skipif(not os.environ.get("PRPOSE_H36M"), reason="PRPOSE_H36M (real Human3.6M tree) not set")
def test_real_stacked_hourglass_errors_match_the_packaged_fit():
    from conftest import load_bench

    fit = load_bench("fit_detector_noise")
    det, truth, report = fit.read_pairs(pathlib.Path(os.environ["PRPOSE_H36M"]), every=50, subjects=("S1",))
    assert report["trials"] > 25 and report["views"] > 1000
    measured = dn.measure(det, truth, fit.FIT_PROFILE)
    # Projection convention right (R transposed, distortion): limb medians of a few % of the torso, and left
    # stays left (a mirrored projection would swap nearly every pair).
    assert all(0.02 < measured["median"][j] < 0.2 for j in ("left_elbow", "right_knee", "left_wrist"))
    assert all(r < 0.05 for r in measured["swap_rate"].values())
