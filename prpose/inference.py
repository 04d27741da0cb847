"""Load a model and embed 2D poses: ``load_model().embed(keypoints, profile=...)``.

``load_model`` takes the packaged default model (no argument), a packaged model's name, an exported model
directory (``prpose export``: config + EMA weights) or a training run directory (``config.json`` + the EMA
weights of the latest complete checkpoint, what the authors use at inference), and puts the model in eval mode
(no dropout, batch-norm running statistics). ``PoseEmbedder.embed`` converts any keypoint profile to the model's input profile
(``config.model.input_profile``, input13 unless the run chose another) by joint name, normalises, and runs the model in fixed-size chunks: a call pads its last chunk up to a power-of-two bucket
(64 ... ``batch_size``), so arbitrary N compiles at most a handful of shapes, never one per N.

Samples: row i of a call gets ``z_k = mean + stddev * eps_k`` with eps drawn from ``fold_in(key, i)``, so
results do not depend on chunking or padding, and ``key=None`` (a fixed key) makes ``embed`` deterministic.

Joints the model reads but the detector's profile lacks (a head top for COCO, a nose for MPII-16 on an input14
model) are fed as missing: zero, with the visibility mask False. Only a model that takes a mask
(``model.mask_mode`` != "none") may be fed so; otherwise the call is an error naming the missing joints.
``embed_usable`` embeds the usable rows of a whole detector file and says why it skipped each other row.

Small calls on an exported model (up to ``NUMPY_MAX_ROWS`` poses) run in plain NumPy (``prpose.numpy_forward``:
same normalisation, network and noise, equal to the JAX path within 1e-5), so a one-off query neither
imports nor compiles JAX. This module imports JAX and Flax only when the JAX path is used.
"""

from __future__ import annotations

import functools
import os
import pathlib
import sys
from typing import NamedTuple

import numpy as np

from prpose import keypoints as kp
from prpose.buckets import bucket_size
from prpose.errors import PrposeError

DEFAULT_BATCH_SIZE = 1024
_MIN_BUCKET = 64
#: Calls of at most this many poses on an exported model use the NumPy forward pass (no JAX compile).
NUMPY_MAX_ROWS = 1024


class UsableEmbeddings(NamedTuple):
    """What :meth:`PoseEmbedder.embed_usable` returns.

    embeddings: Embeddings of the M usable rows (in input order).
    rows: (M,) int64, their row numbers in the input.
    skipped: ((row, reason), ...) for every other row, in input order.
    """

    embeddings: "Embeddings"
    rows: np.ndarray
    skipped: tuple[tuple[int, str], ...]


class Embeddings(NamedTuple):
    """Probabilistic embeddings of N poses (NumPy float32).

    mean: (N, D); stddev: (N, D) > 0; samples: (N, K, D) = mean + stddev * eps.
    """

    mean: np.ndarray
    stddev: np.ndarray
    samples: np.ndarray


@functools.lru_cache(maxsize=8)
def _eval_template(model_config, window: int):
    """(eval graphdef, non-param state) of a model config, built once: training validates repeatedly."""
    from prpose.model import init_split

    graphdef, _, _, rest = init_split(model_config, window)
    return graphdef, rest


@functools.cache
def _jax_forward():
    """The jitted forward pass (built on first use, so that importing this module does not import JAX)."""
    import jax

    return jax.jit(_forward, static_argnames=("graphdef", "num_samples", "normalize", "profile"))


def _forward(graphdef, state, keypoints, visible, key, row_offset, num_samples: int, normalize: bool, profile: str):
    """Eval-mode embedding of one padded chunk, normalisation included (so every step is bucketed).

    keypoints (M, J, 2) raw keypoints of the model's input ``profile`` (or already normalised when
    ``normalize`` is False), visible (M, J) -> mean, stddev (M, D), samples (M, K, D), valid (M,) (False
    where normalisation failed).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from prpose.normalize import normalize_2d

    if normalize:
        keypoints, valid = normalize_2d(keypoints, visible, profile)
    else:
        valid = jnp.ones(keypoints.shape[:1], bool)
    model = nnx.merge(graphdef, state)
    mean, stddev = model(keypoints, visible)
    rows = row_offset + jnp.arange(keypoints.shape[0])
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(rows)
    eps = jax.vmap(lambda k: jax.random.normal(k, (num_samples, mean.shape[-1]), mean.dtype))(keys)
    return mean, stddev, mean[:, None, :] + stddev[:, None, :] * eps, valid


class PoseEmbedder:
    """A trained Pr-VIPE model ready to embed poses (eval mode, EMA weights).

    Attributes:
      config: the run's TrainConfig.
      fingerprint: "<config hash>-<weights hash>" (prpose.checkpoint.fingerprint); indexes store it.
      match_params: (a, b, smoothing) python floats of the match probability.
      step: training step of the weights (None for in-memory models).
      embedding_dim, num_samples: D and K.

    Built from an nnx (graphdef, state), or from an exported model (``exported``: a
    ``prpose.export.ExportedModel``), whose JAX state is then only built when a call needs the JAX path.
    """

    def __init__(self, config, graphdef=None, state=None, *, fingerprint: str, step: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, exported=None):
        if (graphdef is None) == (exported is None) or (config is None) == (exported is None):
            raise PrposeError("PoseEmbedder: give either (config, graphdef, state) or exported")
        #: frames per embedded window: 1 for a per-frame model; T > 1 for a temporal model, which embeds tracks
        #: (prpose.windows.embed_track), never single poses.
        self.window = int(exported.window if config is None else config.window)
        self._config = config
        self._model_spec = exported.model_spec if config is None else config.model
        self._graphdef = graphdef
        self._state = state
        self._exported = exported
        self.fingerprint = fingerprint
        self.step = step
        self.batch_size = int(batch_size)
        if exported is not None:
            self.match_params = exported.match_params
        else:
            from flax import nnx

            a, b = nnx.merge(graphdef, state).match_params()
            self.match_params = (float(a), float(b), float(config.loss.smoothing))
        self.embedding_dim = self._model_spec.embedding_dim
        self.num_samples = self._model_spec.num_samples

    @property
    def config(self):
        """The TrainConfig (for an exported model, parsed on first access)."""
        return self._exported.config if self._config is None else self._config

    def _jax_model(self):
        """(graphdef, state) for the JAX path; built from the exported arrays on first use."""
        if self._graphdef is None:
            from flax import nnx

            from prpose.model import init_split

            stored = self._exported
            graphdef, params, batch_stats, rest = init_split(stored.config.model, stored.config.window)
            self._state = nnx.merge_state(stored.tree("params", params), stored.tree("batch_stats", batch_stats), rest)
            self._graphdef = graphdef
        return self._graphdef, self._state

    @classmethod
    def from_state(cls, config, params, batch_stats, *, fingerprint: str, step: int | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> "PoseEmbedder":
        """Build from in-memory weights (training's validation uses the live EMA)."""
        from flax import nnx

        graphdef, rest = _eval_template(config.model, config.window)
        state = nnx.merge_state(params, batch_stats, rest)
        return cls(config, graphdef, state, fingerprint=fingerprint, step=step, batch_size=batch_size)

    # --- embedding ---------------------------------------------------------------------------------------------
    @property
    def input_profile(self) -> str:
        """The keypoint profile the model reads (``config.model.input_profile``)."""
        return self._model_spec.input_profile

    def embed(self, keypoints, profile: str | None = None, scores=None, score_threshold: float = 0.3,
              key=None, *, visible=None) -> Embeddings:
        """Embed N 2D poses; every row must be usable (see :meth:`embed_usable` for whole detector files).

        Args:
          keypoints: (N, J, 2) pixel (or any consistent unit) coordinates in ``profile`` (J its joint count).
          profile: any prpose.keypoints profile (name or KeypointProfile; "coco17", "body25", "mediapipe33",
            "h36m17", ...); default: the model's input profile. Joints are converted to the model's input
            profile by name; the ones ``profile`` lacks are fed as missing (needs a model with a mask input).
          scores: optional (N, J) detector confidences; keypoints scoring below ``score_threshold`` count as
            missing: they do not enter the normalisation and are zeroed (and fed as a mask to models trained
            with one). Missing keypoints may be NaN; used ones must be finite.
          visible: optional (N, J) bool, instead of ``scores`` when visibility is known (a prepared dataset's
            projections): False marks a missing keypoint.
          key: jax PRNG key for the samples (default: a fixed key, so results are reproducible).
        Returns:
          Embeddings(mean (N, D), stddev (N, D), samples (N, K, D)) as NumPy float32.
        Raises:
          PrposeError for a wrong shape, unknown profile, a profile lacking model joints for a model without a
          mask input, or rows that are not usable (non-finite used keypoints, fewer than two visible torso
          joints, collapsed torso; the rows and the first reason are named).
        """
        out, _, skipped = self.embed_usable(keypoints, profile, scores, score_threshold, key, visible=visible)
        if skipped:
            rows = [row for row, _ in skipped]
            raise PrposeError(f"embed: {len(rows)} pose(s) cannot be embedded: rows {rows[:10]}"
                              f"{' ...' if len(rows) > 10 else ''} (row {rows[0]}: {skipped[0][1]})")
        return out

    def embed_usable(self, keypoints, profile: str | None = None, scores=None, score_threshold: float = 0.3,
                     key=None, *, visible=None) -> UsableEmbeddings:
        """Embed every usable row of a detector file and skip the others, saying why.

        Same arguments as :meth:`embed`. A row is skipped when a keypoint it uses (score >= threshold) is NaN
        or infinite, when fewer than two of its torso joints (shoulders, hips) are visible, or when its torso
        cannot be normalised (visible torso joints coincide). Row i's samples are the same as in ``embed``.

        Returns:
          UsableEmbeddings(embeddings of the M usable rows, rows (M,), skipped ((row, reason), ...)).
        Raises:
          PrposeError for the argument errors of :meth:`embed` (never for a bad row).
        """
        if self.window > 1:
            raise PrposeError(f"embed: this is a temporal model (window={self.window}): it embeds windows of a track "
                              "of frames (prpose.windows.embed_track), not single poses")
        prof, k_in, v_in, bad = self._model_inputs(keypoints, profile, scores, score_threshold, visible)
        out, valid = self._run(k_in, v_in, key, normalize=True)
        skipped = self._skip_reasons(prof, bad, valid, v_in, score_threshold)
        keep = np.ones(k_in.shape[0], bool)
        keep[[row for row, _ in skipped]] = False
        rows = np.flatnonzero(keep)
        return UsableEmbeddings(Embeddings(out.mean[rows], out.stddev[rows], out.samples[rows]), rows, tuple(skipped))

    def _model_inputs(self, keypoints, profile, scores, score_threshold, visible=None):
        """Checked keypoints in the model's input profile: (source profile, keypoints (N, J, 2) with missing
        joints zeroed, visible (N, J), bad (N, J_source): used keypoints that are non-finite or extreme)."""
        target = self.input_profile
        try:
            prof = kp.get_profile(target if profile is None else profile)
        except ValueError as e:
            raise PrposeError(f"embed: profile: {e}") from None
        x = np.asarray(keypoints)
        if x.dtype.kind not in "fiub":
            raise PrposeError(f"embed: keypoints have dtype {x.dtype}; expected numbers")
        if x.ndim != 3 or x.shape[1:] != (prof.num_joints, 2):
            raise PrposeError(f"embed: keypoints have shape {x.shape}, expected (N, {prof.num_joints}, 2) "
                              f"for profile {prof.name!r}")
        lacking = kp.missing_joints(prof, target)
        if lacking and self._model_spec.mask_mode == "none":
            raise PrposeError(
                f"embed: the model reads {target!r}, whose joint(s) {', '.join(lacking)} profile {prof.name!r} "
                f"lacks; only a model trained with a mask input (model.mask_mode other than 'none') can take "
                f"them as missing")
        x = x.astype(np.float32, copy=False)
        if visible is not None:
            if scores is not None:
                raise PrposeError("embed: got both scores and visible; give one of them")
            visible = np.asarray(visible)
            if visible.dtype != bool or visible.shape != x.shape[:2]:
                raise PrposeError(f"embed: visible has shape {visible.shape} and dtype {visible.dtype}, expected "
                                  f"bool {x.shape[:2]} (N, J)")
        elif scores is None:
            visible = np.ones(x.shape[:2], bool)
        else:
            s = np.asarray(scores, np.float32)
            if s.shape != x.shape[:2]:
                raise PrposeError(f"embed: scores have shape {s.shape}, expected {x.shape[:2]} (N, J)")
            visible = s >= score_threshold
        from prpose.numpy_forward import MAX_COORDINATE  # normalize.py's, without importing JAX

        finite = (np.abs(x) <= MAX_COORDINATE).all(axis=-1)  # NaN, inf and overflowing magnitudes: unusable
        bad = visible & ~finite
        visible = visible & finite
        k_in, _ = kp.convert_partial(np.where(visible[..., None], x, 0.0), prof, target)
        v_in = kp.convert_partial(visible, prof, target, axis=-1)[0] > 0  # joints the profile lacks: False
        return prof, k_in.astype(np.float32, copy=False), v_in, bad

    def _skip_reasons(self, prof, bad, valid, v_in, score_threshold) -> tuple[tuple[int, str], ...]:
        """((row, reason), ...) for the rows that cannot be embedded (bad keypoints or no normalisation)."""
        from prpose.numpy_forward import MAX_COORDINATE, TORSO_JOINTS  # normalize.py's, without importing JAX

        torso = [kp.get_profile(self.input_profile).index(j) for j in TORSO_JOINTS]
        torso_seen = v_in[:, torso].sum(axis=1)
        skipped = []
        for row in np.flatnonzero(bad.any(axis=1) | ~valid):
            if bad[row].any():
                names = [prof.joints[j] for j in np.flatnonzero(bad[row])]
                reason = (f"non-finite or extreme (beyond {MAX_COORDINATE:g}) keypoint(s) with score >= "
                          f"{score_threshold}: {', '.join(names)}")
            elif torso_seen[row] < 2:
                reason = (f"{int(torso_seen[row])} visible torso joint(s) (needs 2 of {', '.join(TORSO_JOINTS)}; "
                          f"scores >= {score_threshold})")
            else:
                reason = "degenerate torso (the visible torso joints coincide, or the coordinates are too large)"
            skipped.append((int(row), reason))
        return tuple(skipped)

    def embed_normalized(self, keypoints, visible=None, key=None) -> Embeddings:
        """Embed already normalised keypoints of the model's input profile: (N, J, 2) poses, or (N, T, J, 2)
        windows for a temporal model (T = ``window``); optional bool mask of the same shape without the last axis."""
        j = kp.get_profile(self.input_profile).num_joints
        x = np.asarray(keypoints, np.float32)
        expected = (j, 2) if self.window == 1 else (self.window, j, 2)
        if x.ndim != 1 + len(expected) or x.shape[1:] != expected:
            raise PrposeError(f"embed_normalized: keypoints have shape {x.shape}, expected (N, "
                              f"{', '.join(map(str, expected))}) ({self.input_profile}"
                              f"{f', windows of {self.window} frames' if self.window > 1 else ''})")
        vis = np.ones(x.shape[:-1], bool) if visible is None else np.asarray(visible, bool)
        if vis.shape != x.shape[:-1]:
            raise PrposeError(f"embed_normalized: visible has shape {vis.shape}, expected {x.shape[:-1]}")
        return self._run(x, vis, key, normalize=False)[0]

    def _run(self, x, vis, key, *, normalize: bool):
        """Chunks of ``batch_size``, the last padded to a power-of-two bucket; returns (Embeddings, valid).

        Small calls on an exported model go to :meth:`_run_numpy` instead (same results within 1e-5)."""
        n = x.shape[0]
        raw_key = _raw_threefry_key(key)
        if self._exported is not None and 0 < n <= NUMPY_MAX_ROWS and raw_key is not None and self.window == 1:
            from prpose import numpy_forward

            if self._model_spec.norm in numpy_forward.SUPPORTED_NORMS:
                return self._run_numpy(x, vis, raw_key, normalize)
        import jax

        graphdef, state = self._jax_model()
        forward = _jax_forward()
        key = jax.random.key(0) if key is None else key
        # Without missing keypoints the mask is all True: normalize_2d then equals its unmasked form.
        means, stds, samples, valids = [], [], [], []
        for start in range(0, n, self.batch_size):
            stop = min(n, start + self.batch_size)
            m = stop - start
            bucket = bucket_size(m, _MIN_BUCKET) if m < self.batch_size else self.batch_size
            xp = np.zeros((bucket,) + x.shape[1:], np.float32)
            vp = np.ones((bucket,) + vis.shape[1:], bool)
            xp[:m], vp[:m] = x[start:stop], vis[start:stop]
            out = forward(graphdef, state, xp, vp, key, np.int32(start), self.num_samples, normalize,
                          self.input_profile)
            out = jax.device_get(out)
            means.append(out[0][:m]), stds.append(out[1][:m]), samples.append(out[2][:m]), valids.append(out[3][:m])
        if n == 0:
            d, k = self.embedding_dim, self.num_samples
            return Embeddings(np.zeros((0, d), np.float32), np.zeros((0, d), np.float32),
                              np.zeros((0, k, d), np.float32)), np.zeros((0,), bool)
        return (Embeddings(np.concatenate(means), np.concatenate(stds), np.concatenate(samples)),
                np.concatenate(valids))

    def _run_numpy(self, x, vis, raw_key, normalize: bool):
        """The NumPy forward pass of an exported model (prpose.numpy_forward); returns (Embeddings, valid)."""
        from prpose import numpy_forward as nf

        if normalize:
            x, valid = nf.normalize_2d(x, vis, self.input_profile)
        else:
            x, valid = np.asarray(x, np.float32), np.ones(x.shape[:1], bool)
        mean, stddev = nf.forward(self._exported.arrays, self._model_spec, x, vis)
        eps = nf.normal(nf.fold_in(raw_key, np.arange(x.shape[0])), (self.num_samples, self.embedding_dim))
        return Embeddings(mean, stddev, mean[:, None, :] + stddev[:, None, :] * eps), valid

    def weights(self):
        """(params, batch_stats) nnx states of the model (what ``prpose export`` writes)."""
        from flax import nnx

        graphdef, state = self._jax_model()
        _, params, batch_stats, _ = nnx.split(nnx.merge(graphdef, state), nnx.Param, nnx.BatchStat, ...)
        return params, batch_stats

    def __repr__(self) -> str:
        return (f"PoseEmbedder(fingerprint={self.fingerprint!r}, step={self.step}, D={self.embedding_dim}, "
                f"K={self.num_samples})")


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def load_model(model: str | os.PathLike | None = None, *, step: int | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, log=None) -> PoseEmbedder:
    """Load a model in eval mode.

    ``model`` is None (the packaged default model, ``prpose.export.DEFAULT_MODEL``), the name of a packaged
    model (``"prpose-cmu-v1"``), an exported model directory (``prpose export``: weights and config only), or
    a training run directory (its EMA weights at the latest complete checkpoint, or at ``step``). Without
    ``step``, a damaged latest checkpoint of a run is reported through ``log`` (default: a line on stderr)
    and the newest intact one is loaded instead.
    """
    from prpose import export

    path = export.resolve(model)
    if export.is_exported(path):
        if step is not None:
            raise PrposeError(f"load_model: {path} is an exported model (one step, {export.MANIFEST}); "
                              f"step={step} applies to training run directories only")
        stored = export.ExportedModel(path)
        return PoseEmbedder(None, fingerprint=stored.fingerprint, step=stored.step, batch_size=batch_size,
                            exported=stored)
    return _load_run(path, step, batch_size, log or _warn)


def _load_run(run_dir: pathlib.Path, step: int | None, batch_size: int, log) -> PoseEmbedder:
    """The EMA weights of a training run (``step``, or the newest intact checkpoint, saying so via ``log``)."""
    from flax import nnx

    from prpose import checkpoint as ckpt
    from prpose.config import load_config

    config = load_config(run_dir)
    if config.task != "embedding":
        raise PrposeError(f"load_model: {run_dir} trained train.task={config.task!r}, not a pose embedder"
                          + (" (load it with prpose.eval.lifting.Lifter)" if config.task == "lifting" else ""))
    graphdef, step, state, fp = ckpt.load_ema_model(run_dir, config, step, log=log, where="load_model")
    return PoseEmbedder(config, graphdef, state, fingerprint=fp, step=step, batch_size=batch_size)


def _raw_threefry_key(key) -> np.ndarray | None:
    """(2,) uint32 raw data of a threefry key (None -> key 0), or None for another PRNG implementation."""
    if key is None:
        return np.zeros(2, np.uint32)
    import jax

    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != "threefry2x32" or key.shape != ():
            return None
        key = jax.random.key_data(key)
    raw = np.asarray(key)
    return raw.astype(np.uint32) if raw.shape == (2,) and raw.dtype == np.uint32 else None
