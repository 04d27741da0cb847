"""A 2D pose detector's errors as a random model fitted to measurements, for training and evaluation.

Perfect projected keypoints are not what users feed the model: a detector's keypoints are off by a few percent
of the torso, sometimes grossly wrong, sometimes left and right are exchanged, and some joints are defined
differently (a detector's "hip" is not a motion-capture hip joint centre). This module describes those errors
with a handful of numbers per joint, FITTED to real detections against projected ground truth
(``bench/fit_detector_noise.py``: Stacked Hourglass on the Human3.6M training subjects), and draws new errors
from them, in NumPy (evaluation: :func:`corrupt_np`) and in JAX (training augmentation:
:func:`corrupt_jax`, used by ``prpose.augment``). Both run the same function on the same kind of random draws
(:func:`corrupt_from_draws`), so training and the robustness table use one model.

Every error is measured in units of the view's 2D torso scale ``s``: the largest of the six distances among
{left shoulder, right shoulder, left hip, right hip} of the TRUE keypoints (the reference of
``prpose.normalize.normalize_2d``, which maps it to 0.5). Given the true keypoints ``x`` (J, 2) of one view,
a detection is drawn as:

1. bias (a joint defined differently): ``x_j + alpha_j * up + beta_j * lateral`` where ``up`` = shoulder
   midpoint - hip midpoint and ``lateral`` = left hip - right hip, both 2D vectors of the true view (so the
   offset turns and foreshortens with the body, as a 3D offset would);
2. core error: ``+ s * sigma_j * N(0, I_2)``;
3. gross error: with probability ``gross_rate_j`` the core error is replaced by ``s * m`` in a uniformly random
   direction, ``log m ~ N(gross_log_mean_j, gross_log_std_j)`` (a log-normal: heavy-tailed magnitudes);
4. left/right swap: for each pair (shoulders, elbows, ..., ankles), with probability ``swap_rate`` the two
   detections are exchanged.

Fitting (:func:`fit_noise_model`) inverts these steps on measurements: detected swaps are undone first
(:func:`detect_swaps`: the swapped assignment fits at least twice as well and the direct one is off by more
than ``SWAP_MIN_ERROR`` torso units), the bias is a least-squares fit on the 80 % of errors closest to it (iterated), and the
bias-free error magnitudes are fitted by EM as a mixture of a Rayleigh (the 2D Gaussian core) and a
log-normal (gross errors). The swap rate per pair is calibrated by simulation, since :func:`detect_swaps` misses
swaps of joints that lie close together (crossed legs) and sees a few false ones: the rule is applied to
simulated detections at rates 0 and r, and the linear relation is inverted to reproduce the measured rate.

The fitted numbers live in ``prpose/data/detector_noise.json`` with their provenance (a small table of
summary statistics; no data). The Stacked Hourglass detector has no nose: joints without a measurement can be
given a proxy (``"proxy_of"``: the nose uses the head top's spread, without its bias).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Mapping, NamedTuple

import numpy as np

from prpose import keypoints as kp
from prpose.errors import PrposeError

DEFAULT_MODEL_PATH = pathlib.Path(__file__).parent / "data" / "detector_noise.json"
SWAP_MIN_ERROR = 0.3  # torso units: a "swap" must fix an error at least this large (sum over the pair)
_TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_FIELDS = ("bias_up", "bias_lateral", "sigma", "gross_rate", "gross_log_mean", "gross_log_std")


@dataclasses.dataclass(frozen=True)
class JointNoise:
    """Fitted error statistics of one joint (torso units; see the module docstring)."""

    bias_up: float = 0.0
    bias_lateral: float = 0.0
    sigma: float = 0.0
    gross_rate: float = 0.0
    gross_log_mean: float = 0.0
    gross_log_std: float = 1.0


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """Per-joint statistics by joint name, swap rates by pair name ("elbow" = left/right elbow), provenance."""

    joints: Mapping[str, JointNoise]
    swap_rates: Mapping[str, float]
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": "prpose-detector-noise", "version": 1,
                "joints": {n: dataclasses.asdict(j) for n, j in self.joints.items()},
                "swap_rates": dict(self.swap_rates), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "detector noise model") -> "NoiseModel":
        if not isinstance(data, Mapping) or data.get("format") != "prpose-detector-noise":
            raise PrposeError(f"{source}: not a prpose detector-noise model (expected format "
                              f"'prpose-detector-noise')")
        joints = {}
        for name, values in data.get("joints", {}).items():
            try:
                joints[name] = JointNoise(**{k: float(v) for k, v in values.items() if k in _FIELDS})
            except (TypeError, ValueError) as e:
                raise PrposeError(f"{source}: joint {name!r}: {e}") from None
        for name, values in data.get("joints", {}).items():  # proxies: another joint's spread, no bias
            if "proxy_of" in values:
                other = joints.get(values["proxy_of"])
                if other is None:
                    raise PrposeError(f"{source}: joint {name!r} is a proxy of unknown joint {values['proxy_of']!r}")
                joints[name] = dataclasses.replace(other, bias_up=0.0, bias_lateral=0.0)
        swaps = {k: float(v) for k, v in data.get("swap_rates", {}).items()}
        for name, rate in swaps.items():
            if not 0.0 <= rate <= 1.0:
                raise PrposeError(f"{source}: swap rate of {name!r} is {rate}, expected a probability")
        return cls(joints, swaps, dict(data.get("info", {})))

    def scaled(self, factor: float) -> "NoiseModel":
        """The same model with every spread (bias, core, gross magnitude) multiplied by ``factor``; rates kept."""
        if not factor >= 0:
            raise PrposeError(f"detector noise scale: got {factor}, expected a number >= 0")
        log = math.log(factor) if factor > 0 else -np.inf
        joints = {n: dataclasses.replace(j, bias_up=j.bias_up * factor, bias_lateral=j.bias_lateral * factor,
                                         sigma=j.sigma * factor,
                                         gross_log_mean=j.gross_log_mean + log if factor > 0 else -50.0)
                  for n, j in self.joints.items()}
        return dataclasses.replace(self, joints=joints)


def load_noise_model(path: str | pathlib.Path | None = None) -> NoiseModel:
    """Read a noise model JSON (default: the packaged Stacked Hourglass fit)."""
    path = pathlib.Path(path) if path is not None else DEFAULT_MODEL_PATH
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise PrposeError(f"{path}: cannot read the detector noise model ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise PrposeError(f"{path}: not valid JSON ({e})") from None
    return NoiseModel.from_dict(data, str(path))


def save_noise_model(model: NoiseModel, path: str | pathlib.Path) -> None:
    pathlib.Path(path).write_text(json.dumps(model.to_dict(), indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------------------------
# The model as arrays for one keypoint profile.


class NoiseArrays(NamedTuple):
    """The model laid out for one profile (NumPy float64; jnp.asarray them for JAX).

    params: (6, J) rows bias_up, bias_lateral, sigma, gross_rate, gross_log_mean, gross_log_std.
    pairs: (P, 2) int (left index, right index). swap_rates: (P,). torso: (4,) int indices of l/r shoulder,
    l/r hip.
    """

    params: np.ndarray
    pairs: np.ndarray
    swap_rates: np.ndarray
    torso: np.ndarray


def noise_arrays(model: NoiseModel, profile: str | kp.KeypointProfile = "input13") -> NoiseArrays:
    """Lay out ``model`` for the joints of ``profile``; joints the model lacks get no error (listed in the error
    message if the profile lacks the torso)."""
    prof = kp.get_profile(profile)
    missing_torso = [j for j in _TORSO if j not in prof.joints]
    if missing_torso:
        raise PrposeError(f"detector noise: profile {prof.name!r} lacks torso joint(s) {missing_torso}")
    params = np.zeros((len(_FIELDS), prof.num_joints))
    params[_FIELDS.index("gross_log_std")] = 1.0
    for j, name in enumerate(prof.joints):
        if name in model.joints:
            params[:, j] = [getattr(model.joints[name], f) for f in _FIELDS]
    pairs, rates = [], []
    for left, right in prof.left_right_pairs:
        pairs.append((left, right))
        rates.append(model.swap_rates.get(prof.joints[left][len("left_"):], 0.0))
    return NoiseArrays(params, np.asarray(pairs, np.int64).reshape(-1, 2), np.asarray(rates, np.float64),
                       np.array([prof.index(j) for j in _TORSO]))


def torso_frame(xp, keypoints, torso):
    """(scale (...,), up (..., 2), lateral (..., 2)) of true keypoints (..., J, 2); xp = numpy or jax.numpy."""
    t = keypoints[..., torso, :]  # (..., 4, 2): l/r shoulder, l/r hip
    scale = 0.0
    for a, b in _PAIRS:
        d = t[..., a, :] - t[..., b, :]
        scale = xp.maximum(scale, xp.sqrt(xp.sum(d * d, axis=-1)))
    up = 0.5 * (t[..., 0, :] + t[..., 1, :]) - 0.5 * (t[..., 2, :] + t[..., 3, :])
    lateral = t[..., 2, :] - t[..., 3, :]
    return scale, up, lateral


class Draws(NamedTuple):
    """The random numbers of one corruption, for B views of J joints and P pairs.

    core: (B, J, 2) standard normal. gross_magnitude: (B, J) standard normal. gross_pick, gross_angle: (B, J)
    uniform [0, 1). swap: (B, P) uniform [0, 1).
    """

    core: Any
    gross_magnitude: Any
    gross_pick: Any
    gross_angle: Any
    swap: Any


def corrupt_from_draws(xp, keypoints, draws: Draws, arrays: NoiseArrays):
    """Simulated detections of true keypoints (B, J, 2) (any 2D unit: pixels or normalised) from given draws.

    xp: numpy or jax.numpy (the arrays of ``arrays`` must be of the same kind). Rows with a degenerate torso
    (scale 0) come back unchanged. Returns (B, J, 2).
    """
    p = arrays.params
    bias_up, bias_lat, sigma, gross_rate, gross_mu, gross_sd = (p[i] for i in range(len(_FIELDS)))
    scale, up, lateral = torso_frame(xp, keypoints, arrays.torso)  # (B,), (B, 2), (B, 2)
    biased = keypoints + bias_up[:, None] * up[:, None, :] + bias_lat[:, None] * lateral[:, None, :]
    core = sigma[:, None] * draws.core  # (B, J, 2), torso units
    magnitude = xp.exp(gross_mu + gross_sd * draws.gross_magnitude)  # (B, J)
    angle = 2.0 * math.pi * draws.gross_angle
    gross = magnitude[..., None] * xp.stack([xp.cos(angle), xp.sin(angle)], axis=-1)
    error = xp.where((draws.gross_pick < gross_rate)[..., None], gross, core)
    out = biased + scale[:, None, None] * error
    num_joints = keypoints.shape[-2]
    index = xp.broadcast_to(xp.arange(num_joints), keypoints.shape[:-1])  # (B, J)
    joint = xp.arange(num_joints)
    for k in range(arrays.pairs.shape[0]):
        left, right = int(arrays.pairs[k, 0]), int(arrays.pairs[k, 1])
        swap = (draws.swap[:, k] < arrays.swap_rates[k])[:, None]
        index = xp.where(swap & (joint == left), right, xp.where(swap & (joint == right), left, index))
    out = xp.take_along_axis(out, index[..., None], axis=-2)
    return xp.where((scale > 0)[:, None, None], out, keypoints)


def draws_np(rng: np.random.Generator, batch: int, num_joints: int, num_pairs: int) -> Draws:
    return Draws(rng.standard_normal((batch, num_joints, 2)), rng.standard_normal((batch, num_joints)),
                 rng.random((batch, num_joints)), rng.random((batch, num_joints)), rng.random((batch, num_pairs)))


def draws_jax(key, batch: int, num_joints: int, num_pairs: int, dtype=None) -> Draws:
    import jax
    import jax.numpy as jnp

    dtype = dtype or jnp.float32
    k1, k2 = jax.random.split(key)
    normal = jax.random.normal(k1, (batch, num_joints, 3), dtype)
    uniform = jax.random.uniform(k2, (batch, 2 * num_joints + num_pairs), dtype)
    return Draws(normal[..., :2], normal[..., 2], uniform[:, :num_joints], uniform[:, num_joints:2 * num_joints],
                 uniform[:, 2 * num_joints:])


def corrupt_np(keypoints, rng: np.random.Generator, model: NoiseModel | None = None,
               profile: str | kp.KeypointProfile = "input13") -> np.ndarray:
    """Simulated detections (float64) of true keypoints (..., J, 2) of ``profile`` (evaluation; NumPy)."""
    model = load_noise_model() if model is None else model
    x = np.asarray(keypoints, np.float64)
    prof = kp.get_profile(profile)
    if x.ndim < 2 or x.shape[-2:] != (prof.num_joints, 2):
        raise PrposeError(f"corrupt_np: keypoints have shape {x.shape}, expected (..., {prof.num_joints}, 2) "
                          f"({prof.name})")
    arrays = noise_arrays(model, prof)
    flat = x.reshape(-1, prof.num_joints, 2)
    out = corrupt_from_draws(np, flat, draws_np(rng, flat.shape[0], prof.num_joints, len(arrays.pairs)), arrays)
    return out.reshape(x.shape)


def corrupt_jax(keypoints, key, arrays: NoiseArrays):
    """Simulated detections of true keypoints (B, J, 2) in JAX (jittable; ``arrays`` from :func:`noise_arrays`)."""
    import jax.numpy as jnp

    x = jnp.asarray(keypoints)
    arrays = NoiseArrays(jnp.asarray(arrays.params, x.dtype), arrays.pairs, jnp.asarray(arrays.swap_rates, x.dtype),
                         arrays.torso)
    draws = draws_jax(key, x.shape[0], x.shape[1], arrays.pairs.shape[0], x.dtype)
    return corrupt_from_draws(jnp, x, draws, arrays)


# --------------------------------------------------------------------------------------------------------------
# Measuring and fitting (NumPy, float64).


def detect_swaps(detected, truth, pairs, scale) -> np.ndarray:
    """(N, P) bool: the pair's detections fit the exchanged truth at least twice as well, and the direct
    assignment is off by more than SWAP_MIN_ERROR torso units (summed over the pair)."""
    d = np.asarray(detected, np.float64)
    t = np.asarray(truth, np.float64)
    out = np.zeros((d.shape[0], len(pairs)), bool)
    for k, (left, right) in enumerate(pairs):
        direct = np.linalg.norm(d[:, left] - t[:, left], axis=-1) + np.linalg.norm(d[:, right] - t[:, right], axis=-1)
        swapped = np.linalg.norm(d[:, left] - t[:, right], axis=-1) + np.linalg.norm(d[:, right] - t[:, left], axis=-1)
        out[:, k] = (swapped < 0.5 * direct) & (direct > SWAP_MIN_ERROR * scale)
    return out


def unswap(detected, swaps, pairs) -> np.ndarray:
    """Detections (N, J, 2) with the pairs flagged in swaps (N, P) exchanged back."""
    d = np.array(detected, np.float64)
    for k, (left, right) in enumerate(pairs):
        m = swaps[:, k]
        d[m, left], d[m, right] = d[m, right].copy(), d[m, left].copy()
    return d


def measure(detected, truth, profile: str | kp.KeypointProfile) -> dict:
    """Summary of detection errors: per-joint median / p90 of |detected - truth| / scale (torso units, as
    detected: swaps included), and the per-pair rate of :func:`detect_swaps`. Rows with scale 0 are skipped."""
    prof = kp.get_profile(profile)
    d, t = np.asarray(detected, np.float64), np.asarray(truth, np.float64)
    torso = np.array([prof.index(j) for j in _TORSO])
    scale, _, _ = torso_frame(np, t, torso)
    ok = scale > 0
    d, t, scale = d[ok], t[ok], scale[ok]
    rel = np.linalg.norm(d - t, axis=-1) / scale[:, None]
    pairs = prof.left_right_pairs
    swaps = detect_swaps(d, t, pairs, scale)
    return {"frames": int(ok.sum()),
            "median": {n: float(np.median(rel[:, j])) for j, n in enumerate(prof.joints)},
            "p90": {n: float(np.percentile(rel[:, j], 90)) for j, n in enumerate(prof.joints)},
            "swap_rate": {prof.joints[a][len("left_"):]: float(swaps[:, k].mean()) for k, (a, _) in enumerate(pairs)}}


def _fit_mixture(r: np.ndarray, iterations: int = 200) -> tuple[float, float, float, float]:
    """EM for magnitudes r > 0: (1 - w) Rayleigh(sigma) + w LogNormal(mu, sd). Returns (sigma, w, mu, sd)."""
    r = np.maximum(np.asarray(r, np.float64), 1e-9)
    log_r = np.log(r)
    sigma = np.median(r) / math.sqrt(2 * math.log(2)) * 0.8
    w, mu, sd = 0.1, float(np.log(np.percentile(r, 95))), 0.5
    for _ in range(iterations):
        log_core = np.log(r) - 2 * np.log(sigma) - r * r / (2 * sigma * sigma)
        log_gross = -log_r - np.log(sd) - 0.5 * math.log(2 * math.pi) - (log_r - mu) ** 2 / (2 * sd * sd)
        a, b = np.log1p(-w) + log_core, np.log(w) + log_gross
        m = np.maximum(a, b)
        resp = np.exp(b - m) / (np.exp(a - m) + np.exp(b - m))  # responsibility of the gross component
        core_w = 1.0 - resp
        sigma = math.sqrt(np.sum(core_w * r * r) / (2 * max(np.sum(core_w), 1e-12)))
        w = float(np.clip(resp.mean(), 1e-6, 0.999))
        mu = float(np.sum(resp * log_r) / max(resp.sum(), 1e-12))
        sd = float(max(math.sqrt(np.sum(resp * (log_r - mu) ** 2) / max(resp.sum(), 1e-12)), 0.05))
    return float(sigma), w, mu, sd


def fit_noise_model(detected, truth, profile: str | kp.KeypointProfile, *, seed: int = 0,
                    info: Mapping | None = None) -> NoiseModel:
    """Fit the model to detections (N, J, 2) against true keypoints (N, J, 2) of ``profile`` (pixels)."""
    prof = kp.get_profile(profile)
    d, t = np.asarray(detected, np.float64), np.asarray(truth, np.float64)
    if d.shape != t.shape or d.ndim != 3 or d.shape[1:] != (prof.num_joints, 2):
        raise PrposeError(f"fit_noise_model: detected {d.shape} and truth {t.shape} must both be "
                          f"(N, {prof.num_joints}, 2) ({prof.name})")
    torso = np.array([prof.index(j) for j in _TORSO])
    scale, up, lateral = torso_frame(np, t, torso)
    ok = (scale > 0) & np.isfinite(d).all(axis=(1, 2)) & np.isfinite(t).all(axis=(1, 2))
    d, t, scale, up, lateral = d[ok], t[ok], scale[ok], up[ok], lateral[ok]
    pairs = prof.left_right_pairs
    swaps = detect_swaps(d, t, pairs, scale)
    d = unswap(d, swaps, pairs)
    joints = {}
    for j, name in enumerate(prof.joints):
        e = d[:, j] - t[:, j]
        residual = e
        for _ in range(5):  # least squares on the 80 % closest to the current bias (gross errors left out)
            rel = np.linalg.norm(residual, axis=-1) / scale
            core = rel <= np.percentile(rel, 80)
            basis = np.stack([up[core], lateral[core]], axis=-1)  # (M, 2 coords, 2 coefficients)
            coef = np.linalg.lstsq(basis.reshape(-1, 2), e[core].reshape(-1), rcond=None)[0]
            residual = e - coef[0] * up - coef[1] * lateral
        sigma, w, mu, sd = _fit_mixture(np.linalg.norm(residual, axis=-1) / scale)
        joints[name] = JointNoise(float(coef[0]), float(coef[1]), sigma, w, mu, sd)
    measured_swaps = swaps.mean(axis=0)
    draft = NoiseModel(joints, {prof.joints[a][len("left_"):]: float(r) for (a, _), r in zip(pairs, measured_swaps)})
    # Calibrate the swap rates: measured(r) ~ measured(0) + slope * r, with slope from a simulation at r.
    rng = np.random.default_rng(seed)
    zero = dataclasses.replace(draft, swap_rates={k: 0.0 for k in draft.swap_rates})
    rates = {}
    at_zero = measure(corrupt_np(t, rng, zero, prof), t, prof)["swap_rate"]
    at_r = measure(corrupt_np(t, rng, draft, prof), t, prof)["swap_rate"]
    for name, r in draft.swap_rates.items():
        slope = (at_r[name] - at_zero[name]) / r if r > 0 else 1.0
        rates[name] = float(np.clip((r - at_zero[name]) / slope, 0.0, 1.0)) if slope > 0.05 else r
    return NoiseModel(joints, rates, dict(info or {}))


def compare(measured: Mapping, simulated: Mapping) -> str:
    """A table of measured vs simulated median / p90 per joint and swap rate per pair."""
    lines = [f"{'joint':<16} {'median real':>11} {'sim':>7} {'p90 real':>9} {'sim':>7}"]
    for name in measured["median"]:
        lines.append(f"{name:<16} {measured['median'][name]:11.3f} {simulated['median'][name]:7.3f} "
                     f"{measured['p90'][name]:9.3f} {simulated['p90'][name]:7.3f}")
    lines.append(f"{'swap (pair)':<16} {'real':>11} {'sim':>7}")
    for name in measured["swap_rate"]:
        lines.append(f"{name:<16} {measured['swap_rate'][name]:11.4f} {simulated['swap_rate'][name]:7.4f}")
    return "\n".join(lines)


__all__ = ["JointNoise", "NoiseModel", "NoiseArrays", "Draws", "load_noise_model", "save_noise_model",
           "noise_arrays", "torso_frame", "corrupt_from_draws", "corrupt_np", "corrupt_jax", "draws_np",
           "draws_jax", "detect_swaps", "unswap", "measure", "fit_noise_model", "compare"]
