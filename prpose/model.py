"""The Pr-VIPE embedder: 2D keypoints -> a Gaussian embedding N(mean, diag(stddev^2)).

Architecture (Sun et al. 2020, after Martinez et al. 2017's "simple baseline"): an input Dense layer of
`width` units, then `num_blocks` residual blocks, each 2 x [Dense(width) -> Norm -> ReLU -> Dropout] with the
block input added to its output; He-normal init; two linear heads, mean (D) and stddev (D) with
stddev = ELU(x) + 1. The match parameters of the probability P(z1, z2) = (1-s) sigmoid(-a ||z1-z2|| + b) + s/2
are trained with the network, so they live here: `raw_a` (a = ELU(raw_a) + 1 > 0) and `b`.

Train / eval behaviour (dropout, batch-norm statistics) follows flax.nnx: `model.train()` / `model.eval()`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from prpose import keypoints as kp
from prpose.errors import PrposeError
from prpose.normalize import torso_indices

DEFAULT_INPUT_PROFILE = "input13"  # the paper's input; every config without ``input_profile`` means it
NORMS = ("batch", "layer", "group", "none")
MASK_MODES = ("none", "zero", "channel", "both")
TEMPORAL_FUSIONS = ("concat", "mean")

# Added to ELU(x) + 1. In float32, ELU(x) + 1 computed as expm1(x) + 1 rounds to exactly 0 once x < ~-17,
# and even exp(x) underflows below ~-104; a zero stddev makes the KL prior's log(sigma^2) infinite. 1e-6 is
# far below any sigma the model uses (typically 0.05-2), so it changes nothing else.
STDDEV_EPSILON = 1e-6

RAW_A_INIT = -0.65  # a = ELU(-0.65) + 1 ~= 0.522 (authors' initial value)
B_INIT = -0.5


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Model hyper-parameters (saved with every checkpoint; the config module imports this class).

    width: units of every hidden Dense layer (paper: 1024).
    num_blocks: residual blocks after the input layer (paper: 2).
    embedding_dim: D, size of the mean and stddev heads (paper: 16).
    dropout: dropout rate inside the blocks, active only in train mode (paper: 0.3).
    norm: "batch" (paper), "layer", "group" or "none"; the normalisation after each hidden Dense.
    norm_groups: number of groups for norm="group"; width must be a multiple of it, with >= 2 units per group.
    input_profile: the keypoint profile the model reads (prpose.keypoints; "input13" = the paper's 13 joints,
        "input14" adds the head top so that detectors with a nose and with a head top both fit). Inputs are
        (B, J, 2) in this profile's joint order; joints a detector lacks are fed as missing (needs a mask).
    mask_mode: how a visibility mask (B, J) enters: "none" (ignored; inputs are assumed already zeroed by
        prpose.normalize.normalize_2d), "zero" (invisible keypoints zeroed), "channel" (visibility appended as
        a third coordinate -> 3 J inputs), "both" (zeroed and appended).
    num_samples: K, samples drawn per embedding for the match probability (paper: 20).
    temporal_fusion: for TemporalEmbedder, "concat" (per-frame features concatenated in time order) or
        "mean" (averaged over frames).
    """

    width: int = 1024
    num_blocks: int = 2
    embedding_dim: int = 16
    dropout: float = 0.3
    norm: str = "batch"
    norm_groups: int = 32
    mask_mode: str = "none"
    num_samples: int = 20
    temporal_fusion: str = "concat"
    input_profile: str = DEFAULT_INPUT_PROFILE

    def __post_init__(self):
        def bad(field, expected):
            raise PrposeError(
                f"ModelConfig.{field}: got {getattr(self, field)!r}, expected {expected}"
            )

        for name in ("width", "embedding_dim", "num_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, "a positive integer")
        if not isinstance(self.num_blocks, int) or isinstance(self.num_blocks, bool) or self.num_blocks < 0:
            bad("num_blocks", "a non-negative integer")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            bad("dropout", "a rate in [0, 1)")
        if self.norm not in NORMS:
            bad("norm", f"one of {NORMS}")
        if self.mask_mode not in MASK_MODES:
            bad("mask_mode", f"one of {MASK_MODES}")
        if self.temporal_fusion not in TEMPORAL_FUSIONS:
            bad("temporal_fusion", f"one of {TEMPORAL_FUSIONS}")
        if not isinstance(self.input_profile, str) or self.input_profile not in kp.PROFILES:
            bad("input_profile", f"a keypoint profile name, one of {sorted(kp.PROFILES)}")
        torso_indices(self.input_profile)  # the profile must hold the joints that define normalisation
        if self.norm == "group":
            g = self.norm_groups
            if not isinstance(g, int) or g < 1 or self.width % g != 0 or self.width // g < 2:
                bad("norm_groups", f"a divisor of width={self.width} leaving >= 2 units per group")

    @property
    def num_keypoints(self) -> int:
        """J, the joint count of ``input_profile``."""
        return kp.get_profile(self.input_profile).num_joints

    @property
    def input_dim(self) -> int:
        """Flattened input size: 2 J (x, y per keypoint) or 3 J with the visibility channel (J = 13: 26 / 39)."""
        channels = 3 if self.mask_mode in ("channel", "both") else 2
        return self.num_keypoints * channels


def _he_normal():
    return jax.nn.initializers.he_normal()


def _make_norm(config: ModelConfig, rngs: nnx.Rngs):
    if config.norm == "batch":
        return nnx.BatchNorm(config.width, rngs=rngs)
    if config.norm == "layer":
        return nnx.LayerNorm(config.width, rngs=rngs)
    if config.norm == "group":
        return nnx.GroupNorm(config.width, num_groups=config.norm_groups, rngs=rngs)
    return None


class Dropout(nnx.Dropout):
    """nnx.Dropout (same state, key stream and train/eval switch) drawing half the random bits.

    Each 32-bit Threefry output gives two 16-bit uniforms: a unit is kept when its uniform is below
    round(keep * 65536), i.e. with probability keep to 1.5e-5 (0.7 -> 45875 / 65536 = 0.699997), and scaled by
    the inverse of that probability. The Threefry bits were most of the embedder's non-matmul cost at width 1024
    (bench/bench_train_step.py: "same without dropout"); the halves are as independent as the bits.
    """

    def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None):
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.rate == 0.0 or deterministic or self.broadcast_dims:
            return super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        threshold = round((1.0 - self.rate) * 65536)
        size = inputs.size
        with jax.named_scope("dropout_rng"):  # a row of bench/bench_train_step.py --profile
            stream = rngs if rngs is not None else self.rngs
            key = stream[self.rng_collection]() if isinstance(stream, nnx.Rngs) else stream()
            bits = jax.random.bits(key, ((size + 1) // 2,), jnp.uint32)
            halves = jax.lax.bitcast_convert_type(bits, jnp.uint16).reshape(-1)[:size].reshape(inputs.shape)
            keep = halves < jnp.uint16(threshold) if threshold < 65536 else jnp.ones(inputs.shape, bool)
        return jnp.where(keep, inputs * (65536.0 / threshold), jnp.zeros_like(inputs))


class _DenseUnit(nnx.Module):
    """Dense(width) -> Norm -> ReLU -> Dropout."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(config.width, config.width, kernel_init=_he_normal(), rngs=rngs)
        self.norm = _make_norm(config, rngs)
        self.dropout = Dropout(config.dropout, rngs=rngs)

    def __call__(self, x):
        x = self.dense(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(jax.nn.relu(x))


class _ResidualBlock(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.unit1 = _DenseUnit(config, rngs=rngs)
        self.unit2 = _DenseUnit(config, rngs=rngs)

    def __call__(self, x):
        return x + self.unit2(self.unit1(x))


def _positive_stddev(x):
    """ELU(x) + 1, computed as exp(x) on the negative side (no cancellation), plus STDDEV_EPSILON."""
    return jnp.where(x > 0, x + 1.0, jnp.exp(jnp.minimum(x, 0.0))) + STDDEV_EPSILON


def _check_keypoints(x, visible, expected_leading: int, name: str, config: ModelConfig):
    """Validate (..., J, 2) keypoints and an optional (..., J) mask at trace time (shapes are static)."""
    shape = tuple(jnp.shape(x))
    if len(shape) != expected_leading + 2 or shape[-2:] != (config.num_keypoints, 2):
        lead = ", ".join(["B", "T"][:expected_leading])
        raise PrposeError(
            f"{name}: keypoints have shape {shape}, expected ({lead}, {config.num_keypoints}, 2) "
            f"(normalised {config.input_profile} keypoints)"
        )
    if visible is not None and tuple(jnp.shape(visible)) != shape[:-1]:
        raise PrposeError(
            f"{name}: visible has shape {tuple(jnp.shape(visible))}, expected {shape[:-1]} to match keypoints {shape}"
        )


def _input_features(x, visible, mask_mode: str):
    """(..., J, 2) keypoints [+ (..., J) visibility] -> (..., 2 J or 3 J) flat features."""
    x = jnp.asarray(x, jnp.float32)
    if mask_mode == "none":
        return x.reshape(*x.shape[:-2], -1)
    # No mask given to a masked model means "everything visible": the same model then serves full-body queries.
    vis = jnp.ones(x.shape[:-1], jnp.float32) if visible is None else jnp.asarray(visible).astype(jnp.float32)
    if mask_mode in ("zero", "both"):
        x = x * vis[..., None]
    if mask_mode in ("channel", "both"):
        x = jnp.concatenate([x, vis[..., None]], axis=-1)
    return x.reshape(*x.shape[:-2], -1)


class _Encoder(nnx.Module):
    """Input Dense + residual blocks: (N, input_dim) -> (N, width) features."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.input_layer = nnx.Linear(config.input_dim, config.width, kernel_init=_he_normal(), rngs=rngs)
        self.blocks = nnx.List([_ResidualBlock(config, rngs=rngs) for _ in range(config.num_blocks)])

    def __call__(self, x):
        x = self.input_layer(x)
        for block in self.blocks:
            x = block(x)
        return x


class _GaussianHeads(nnx.Module):
    def __init__(self, in_features: int, embedding_dim: int, *, rngs: nnx.Rngs):
        self.mean = nnx.Linear(in_features, embedding_dim, kernel_init=_he_normal(), rngs=rngs)
        self.stddev = nnx.Linear(in_features, embedding_dim, kernel_init=_he_normal(), rngs=rngs)

    def __call__(self, features):
        return self.mean(features), _positive_stddev(self.stddev(features))


class _MatchParamsMixin:
    def _init_match_params(self):
        # float32 (not weak-typed python floats): weak types caused extra recompiles (NOTES-ECOSYSTEM.md).
        self.raw_a = nnx.Param(jnp.full((), RAW_A_INIT, jnp.float32))
        self.b = nnx.Param(jnp.full((), B_INIT, jnp.float32))

    def match_params(self):
        """(a, b) float32 scalars of the match probability; a = ELU(raw_a) + 1 > 0."""
        return jax.nn.elu(self.raw_a[...]) + 1.0, self.b[...]


class Embedder(_MatchParamsMixin, nnx.Module):
    """Pr-VIPE embedder for single poses.

    Embedder(config, rngs=nnx.Rngs(params=0, dropout=1)); call with
    x (B, J, 2) normalised keypoints of ``config.input_profile`` and visible (B, J) bool/float or None
    -> (mean (B, D), stddev (B, D)) float32, stddev > 0.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, ModelConfig):
            raise PrposeError(f"Embedder: config is {type(config).__name__}, expected prpose.model.ModelConfig")
        self.config = config
        self.encoder = _Encoder(config, rngs=rngs)
        self.heads = _GaussianHeads(config.width, config.embedding_dim, rngs=rngs)
        self._init_match_params()

    def __call__(self, x, visible=None):
        _check_keypoints(x, visible, 1, "Embedder", self.config)
        features = self.encoder(_input_features(x, visible, self.config.mask_mode))
        return self.heads(features)


class TemporalEmbedder(_MatchParamsMixin, nnx.Module):
    """Embeds a window of T frames into one Gaussian embedding.

    Late fusion, as the authors did: one encoder shared by all frames (same weights, so a window is T
    ordinary pose embeddings' worth of features), then the per-frame features are fused and the heads see
    the fused vector. "concat" (default) keeps time order, so a motion and its reverse embed differently and
    the heads can weigh frames; "mean" is order-invariant and independent of T (cheaper heads, but it cannot
    tell a sit-down from a stand-up).

    TemporalEmbedder(config, num_frames=7, rngs=...); call with x (B, T, J, 2), visible (B, T, J) or None
    -> (mean (B, D), stddev (B, D)).
    """

    def __init__(self, config: ModelConfig, num_frames: int = 7, *, rngs: nnx.Rngs):
        if not isinstance(config, ModelConfig):
            raise PrposeError(
                f"TemporalEmbedder: config is {type(config).__name__}, expected prpose.model.ModelConfig"
            )
        if not isinstance(num_frames, int) or num_frames < 1:
            raise PrposeError(f"TemporalEmbedder: num_frames={num_frames!r}, expected a positive integer")
        self.config = config
        self.num_frames = num_frames
        self.encoder = _Encoder(config, rngs=rngs)
        fused = config.width * num_frames if config.temporal_fusion == "concat" else config.width
        self.heads = _GaussianHeads(fused, config.embedding_dim, rngs=rngs)
        self._init_match_params()

    def __call__(self, x, visible=None):
        _check_keypoints(x, visible, 2, "TemporalEmbedder", self.config)
        batch, frames = x.shape[:2]
        if frames != self.num_frames:
            raise PrposeError(
                f"TemporalEmbedder: window has {frames} frames, expected num_frames={self.num_frames}"
            )
        flat = _input_features(x, visible, self.config.mask_mode)  # (B, T, F)
        # Frames go through the encoder as one (B*T) batch: batch norm sees all frames' statistics.
        features = self.encoder(flat.reshape(batch * frames, -1)).reshape(batch, frames, -1)
        if self.config.temporal_fusion == "concat":
            fused = features.reshape(batch, -1)
        else:
            fused = features.mean(axis=1)
        return self.heads(fused)


class PoseLifter(nnx.Module):
    """The 3D-lifting baseline (Martinez et al.): the embedder's encoder with one linear head regressing the
    normalised h36m17 3D pose (prpose.normalize.normalize_3d).

    PoseLifter(config, rngs=...); call with x (B, J, 2) normalised keypoints of ``config.input_profile`` and
    visible (B, J) or None -> (B, 17, 3).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, ModelConfig):
            raise PrposeError(f"PoseLifter: config is {type(config).__name__}, expected prpose.model.ModelConfig")
        self.config = config
        self.encoder = _Encoder(config, rngs=rngs)
        self.head = nnx.Linear(config.width, 17 * 3, kernel_init=_he_normal(), rngs=rngs)

    def __call__(self, x, visible=None):
        _check_keypoints(x, visible, 1, "PoseLifter", self.config)
        features = self.encoder(_input_features(x, visible, self.config.mask_mode))
        return self.head(features).reshape(-1, 17, 3)


# --- building a model ----------------------------------------------------------------------------------------

def build_model(model_config: ModelConfig, window: int = 1, seed: int = 0) -> nnx.Module:
    """A fresh embedder for a ModelConfig (TemporalEmbedder when window > 1)."""
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    if window > 1:
        return TemporalEmbedder(model_config, num_frames=window, rngs=rngs)
    return Embedder(model_config, rngs=rngs)


def build_lifter(model_config: ModelConfig, window: int = 1, seed: int = 0) -> nnx.Module:
    """A fresh PoseLifter (same signature as :func:`build_model`; single frames only)."""
    if window != 1:
        raise PrposeError(f"the 3D-lifting model takes single frames; got window={window}")
    return PoseLifter(model_config, rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def init_split(model_config: ModelConfig, window: int = 1, seed: int = 0, *, train: bool = False,
               build=build_model, sharding=None):
    """A fresh model as (graphdef, params, batch_stats, rest) with the graphdef in eval (or train) mode.

    ``build(model_config, window, seed)`` makes the model (:func:`build_model`, :func:`build_lifter`).
    The arrays are initialised under one jit (eager nnx initialisation dispatches op by op: seconds on 2 cores),
    placed with ``sharding`` when given (e.g. replicated over a multi-process mesh), else on the default device.
    """
    abstract = nnx.eval_shape(lambda: build(model_config, window, seed))
    abstract.train() if train else abstract.eval()
    graphdef = nnx.graphdef(abstract)

    @functools.partial(jax.jit, out_shardings=sharding)
    def init():
        return nnx.split(build(model_config, window, seed), nnx.Param, nnx.BatchStat, ...)[1:]

    params, batch_stats, rest = init()
    return graphdef, params, batch_stats, rest
