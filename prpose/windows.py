"""Windows of consecutive frames for temporal Pr-VIPE (a TemporalEmbedder trained with ``train.window`` = T > 1).

A window belongs to its centre frame: the window of frame t of a track holds frames t - c ... t + T - 1 - c with
c = T // 2 (for odd T, c frames either side). At the ends of a track the missing frames are the end frame
repeated (edge replication, as VideoPose3D's unchunked generator pads its input: ``np.pad(..., "edge")``), so a
track of N frames gives exactly N windows, one per frame, and the embedding of row t belongs to frame t.

A *track* is a run of consecutive frames of one person: a sequence code that does not change and frame numbers
that step by one. Windows never cross a track boundary.

Functions (NumPy; shapes in the docstrings):
  * :func:`window_offsets`, :func:`track_window_indices`, :func:`track_starts`, :func:`window_indices`: which
    frames make up each window.
  * :func:`embed_track`: embeddings of a track of per-frame keypoints, one per frame (the window centred on it),
    for a temporal model or (one frame per "window") a per-frame model: the same call serves both.
  * :func:`warm_start`: a temporal model's weights made equal to a per-frame model applied to the centre frame
    (``train.init_from``), so that temporal training starts from the per-frame model and only learns context.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from prpose.errors import PrposeError


def window_offsets(window: int) -> np.ndarray:
    """(T,) int64 frame offsets of a window relative to its centre frame: -c ... T - 1 - c, c = T // 2."""
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise PrposeError(f"window: got {window!r}, expected an integer >= 1")
    c = int(window) // 2
    return np.arange(window, dtype=np.int64) - c


def track_window_indices(length: int, window: int) -> np.ndarray:
    """(length, T) int64: row t holds the frames of the window centred on frame t of a track of ``length``
    frames, edge-replicated at both ends (indices clipped to [0, length - 1])."""
    if length < 1:
        raise PrposeError(f"track length: got {length}, expected >= 1 frame")
    return np.clip(np.arange(length)[:, None] + window_offsets(window)[None, :], 0, length - 1)


def track_starts(sequence: np.ndarray | None, frame: np.ndarray | None, num_frames: int) -> np.ndarray:
    """(S + 1,) int64 boundaries of the tracks in rows 0 .. num_frames - 1: track s is rows [b[s], b[s + 1]).

    A new track starts where ``sequence`` (any per-row labels or codes, (N,)) changes or ``frame`` ((N,) frame
    numbers) does not step by +1 from the previous row. Both None: all rows are one track.
    """
    breaks = np.zeros(max(num_frames - 1, 0), bool)
    for name, values in (("sequence", sequence), ("frame", frame)):
        if values is None:
            continue
        values = np.asarray(values)
        if values.shape != (num_frames,):
            raise PrposeError(f"{name}: shape {values.shape}, expected ({num_frames},) (one per row)")
        breaks |= (values[1:] != values[:-1]) if name == "sequence" else (values[1:] != values[:-1] + 1)
    return np.concatenate([[0], np.flatnonzero(breaks) + 1, [num_frames]]).astype(np.int64)


def window_indices(bounds: np.ndarray, window: int) -> np.ndarray:
    """(N, T) int64 row indices: row t's window within its track (``bounds`` from :func:`track_starts`)."""
    parts = [start + track_window_indices(stop - start, window) for start, stop in zip(bounds[:-1], bounds[1:])
             if stop > start]
    return np.concatenate(parts) if parts else np.zeros((0, window), np.int64)


class TrackEmbeddings(NamedTuple):
    """What :func:`embed_track` returns.

    embeddings: prpose.inference.Embeddings of the M embedded windows (mean (M, D), stddev, samples (M, K, D)).
    frames: (M,) int64 input rows of their centre frames: embedding i belongs to frame ``frames[i]``.
    skipped: ((row, reason), ...) for the frames without an embedding (their own keypoints cannot be used).
    filled: (M,) int64 per embedded window, how many of its frames were unusable and replaced by the nearest
      usable frame of the same window (0 for a per-frame model).
    """

    embeddings: object
    frames: np.ndarray
    skipped: tuple[tuple[int, str], ...]
    filled: np.ndarray


def fill_unusable(indices: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace each window slot whose frame is unusable by the nearest usable slot of the same window.

    indices (M, T) frame rows, usable (N,) bool per frame -> (indices (M, T), filled (M,) count of replaced
    slots). Ties go to the earlier slot; a window without any usable frame is returned unchanged.
    """
    ok = usable[indices]
    slots = np.arange(indices.shape[1])
    gap = np.abs(slots[None, :, None] - slots[None, None, :]) + np.where(ok[:, None, :], 0, indices.shape[1] + 1)
    nearest = np.argmin(gap, axis=-1)  # (M, T): for each slot, the usable slot closest to it (itself if usable)
    out = np.where(ok.any(axis=1, keepdims=True), np.take_along_axis(indices, nearest, axis=1), indices)
    return out, (out != indices).sum(axis=1).astype(np.int64)


def embed_track(embedder, keypoints, profile: str | None = None, scores=None, score_threshold: float = 0.3,
                key=None, *, visible=None, sequence=None, frame=None) -> TrackEmbeddings:
    """One embedding per frame of one or more tracks of per-frame 2D keypoints.

    Args:
      embedder: a prpose.inference.PoseEmbedder; a temporal model (``embedder.window`` = T > 1) embeds the
        window centred on each frame, edge-replicated at the ends of each track (module docstring); a per-frame
        model embeds each frame (so callers need no second code path).
      keypoints, profile, scores, score_threshold, visible: as PoseEmbedder.embed, rows in time order: (N, J, 2).
      key: PRNG key of the samples; frame t's samples are drawn with fold_in(key, t), as row t's in ``embed``.
      sequence, frame: optional (N,) track labels and frame numbers; a new track starts where either breaks
        (:func:`track_starts`). Default: all rows are one track.
    Returns:
      TrackEmbeddings. A frame whose own keypoints cannot be used (non-finite used keypoints, fewer than two
      torso joints, collapsed torso) gets no embedding (skipped, with the reason); as a neighbour in another
      frame's window it is replaced by the nearest usable frame of that window (counted in ``filled``).
    Raises:
      PrposeError for argument errors (as ``embed``); never for a bad frame.
    """
    from prpose.numpy_forward import normalize_2d  # normalize.py's NumPy twin: no JAX for the preparation

    if embedder.window == 1:
        out = embedder.embed_usable(keypoints, profile, scores, score_threshold, key, visible=visible)
        return TrackEmbeddings(out.embeddings, out.rows.astype(np.int64), out.skipped,
                               np.zeros(out.rows.shape, np.int64))
    prof, x, visible, bad = embedder._model_inputs(keypoints, profile, scores, score_threshold, visible)
    normalized, valid = normalize_2d(x, visible, embedder.input_profile)
    skipped = embedder._skip_reasons(prof, bad, valid, visible, score_threshold)
    usable = valid & ~bad.any(axis=1)
    indices, filled = fill_unusable(window_indices(track_starts(sequence, frame, x.shape[0]), embedder.window),
                                    usable)
    # Every frame's window goes through the model (row t of the call is frame t: its samples are fold_in(key, t)),
    # then the frames without an embedding are dropped.
    out = embedder.embed_normalized(normalized[indices], visible[indices] & usable[indices][..., None], key)
    rows = np.flatnonzero(usable)
    return TrackEmbeddings(type(out)(out.mean[rows], out.stddev[rows], out.samples[rows]), rows.astype(np.int64),
                           skipped, filled[rows])


def warm_start(frame_params, frame_batch_stats, temporal_params, temporal_batch_stats, window: int):
    """Weights of a window-``window`` TemporalEmbedder equal to a per-frame Embedder on the centre frame.

    The encoder, batch statistics and match parameters are copied; the heads' kernels ((T * width, D) on the
    concatenated per-frame features) get the per-frame kernel in the centre frame's block and zeros elsewhere
    (their gradients are not zero, so training learns to use the other frames). Needs temporal_fusion "concat"
    (for "mean" fusion the heads are copied as they are: the mean of T equal features is the feature).

    Arguments are nnx States (params, batch statistics) of the two models; returns the temporal (params,
    batch_stats) as new nnx States. For window == 1 the per-frame weights are returned (after a shape check).
    """
    import jax.numpy as jnp
    from flax import nnx

    src = nnx.to_pure_dict(frame_params)
    dst = nnx.to_pure_dict(temporal_params)
    c = window // 2

    def merge(s, d, path):
        if isinstance(d, dict):
            if set(s) != set(d):
                raise PrposeError(f"init_from: the per-frame model's parameters {path or '/'} have keys {sorted(s)}, "
                                  f"the temporal model's {sorted(d)}: not the same architecture")
            return {k: merge(s[k], d[k], f"{path}/{k}") for k in d}
        s, d = jnp.asarray(s), jnp.asarray(d)
        if s.shape == d.shape:
            return s
        if path.startswith("/heads/") and path.endswith("kernel") and d.shape == (s.shape[0] * window, s.shape[1]):
            width = s.shape[0]
            return jnp.zeros_like(d).at[c * width:(c + 1) * width].set(s)
        raise PrposeError(f"init_from: parameter {path} has shape {s.shape} in the per-frame model, {d.shape} in "
                          f"the temporal model (model settings must match: width, blocks, embedding_dim, mask_mode)")

    nnx.replace_by_pure_dict(temporal_params, merge(src, dst, ""))
    nnx.replace_by_pure_dict(temporal_batch_stats,
                             merge(nnx.to_pure_dict(frame_batch_stats), nnx.to_pure_dict(temporal_batch_stats), ""))
    return temporal_params, temporal_batch_stats
