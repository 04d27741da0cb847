"""Cross-view retrieval of windows (temporal Pr-VIPE) against per-frame models on the same frames.

Built on the library protocol (prpose.protocol: methods, ranking, the hit test's NP-MPJPE, results). The views
are every frame of a split (prpose.views.views_from_dataset with every=1), so that each evaluated
frame has its neighbours; a *track* is a run of consecutive frames of one sequence that are usable in every
camera (prpose.windows.track_starts on the views' sequence and frame labels). A method embeds every frame of a
camera's tracks (prpose.windows.embed_track: the window centred on the frame, edge-replicated at track ends, for a
temporal model; the frame itself for a per-frame model); the queries and the index are then the *evaluated*
frames (every ``every``-th view position, at most ``max_frames``), as in the per-frame protocol.

Two hit tests on the same ranked results (kappa = 0.1 as in prpose.protocol):
  * "frame": the retrieved centre frame's 3D pose has NP-MPJPE < kappa to the query frame's (the per-frame
    protocol's test; what a user who wants "this pose" gets);
  * "window": the mean over the window's T frames of the NP-MPJPE between the retrieved window's frame t and
    the query window's frame t (the same edge-replicated windows the model saw) is < kappa (REFERENCE.md,
    temporal variant: "matching uses the NP-MPJPE averaged over the window"). A per-frame model is judged on the
    same windows, so both models answer the same question.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from prpose import protocol
from prpose.errors import PrposeError
from prpose.protocol import EmbeddingMethod
from prpose.views import ViewSet, views_from_dataset


@dataclasses.dataclass(frozen=True)
class TrackViews:
    """Every frame of a split (a ViewSet) with its tracks, the evaluated positions and the hit test's windows.

    views: prpose.views.ViewSet of every usable frame of the split (rows in dataset order).
    bounds: (S + 1,) track boundaries over the view positions (prpose.windows.track_starts).
    evaluated: (E,) view positions that are queries and index entries.
    windows: (N, T) view positions of the window centred on each position (T: the hit test's window).
    """

    views: ViewSet
    bounds: np.ndarray
    evaluated: np.ndarray
    windows: np.ndarray

    @property
    def window(self) -> int:
        return self.windows.shape[1]


def track_views(dataset, split: str, window: int, every: int = 10, max_frames: int | None = None,
                views: ViewSet | None = None) -> TrackViews:
    """TrackViews of a prepared dataset's split: all its frames, every ``every``-th evaluated (then at most
    ``max_frames``, evenly spread); ``views`` replaces the clean ViewSet (e.g. a corrupted copy of it)."""
    from prpose.windows import track_starts, window_indices

    if not isinstance(every, int) or every < 1:
        raise PrposeError(f"every: got {every!r}, expected a positive integer (frame subsampling step)")
    if views is None:
        views = views_from_dataset(dataset, split, every=1)
    bounds = track_starts(views.labels["sequence"], views.labels["frame"], views.num_frames)
    evaluated = np.arange(0, views.num_frames, every)
    if max_frames is not None and evaluated.size > max_frames:
        evaluated = evaluated[np.linspace(0, evaluated.size - 1, max_frames).round().astype(int)]
    return TrackViews(views, bounds, evaluated, window_indices(bounds, window))


class TrackMethod(EmbeddingMethod):
    """A Pr-VIPE model on tracks: ``features`` gets every frame of one camera (in the TrackViews' order) and
    embeds each with its window (prpose.windows.embed_track); ranking as EmbeddingMethod ("match" two-stage with
    ``candidates``, exact with None, or "l2")."""

    def __init__(self, embedder, bounds: np.ndarray, ranking: str = "match", name: str | None = None,
                 candidates: int | None = 100):
        super().__init__(embedder, ranking, name=name or f"Pr-VIPE window {embedder.window}", candidates=candidates)
        self.sequence = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))

    def features(self, keypoints2d, visible, poses3d, profile: str = "input13", camera: int = 0) -> protocol.Features:
        from prpose.windows import embed_track

        if len(keypoints2d) != len(self.sequence):
            raise PrposeError(f"{self.name}: features of {len(keypoints2d)} frames, expected the "
                              f"{len(self.sequence)} frames of the tracks")
        visible = np.asarray(visible, bool)
        scores = None if visible.all() else visible.astype(np.float32)
        out = embed_track(self.embedder, keypoints2d, profile, scores, protocol.camera_key(camera),
                          sequence=self.sequence)
        if out.skipped:
            row, reason = out.skipped[0]
            raise PrposeError(f"{self.name}: {len(out.skipped)} frame(s) cannot be embedded (frame {row}: {reason})")
        emb = out.embeddings
        features = {"mean": np.asarray(emb.mean, np.float32), "stddev": np.asarray(emb.stddev, np.float32)}
        if self.ranking == "match":
            features["samples"] = np.asarray(emb.samples, np.float32)
        return features


@dataclasses.dataclass
class WindowResult:
    """Hit@k of one method under both hit tests (CrossViewResults over the same ranked results)."""

    frame: protocol.CrossViewResult
    window: protocol.CrossViewResult

    def to_dict(self) -> dict:
        return {"frame": self.frame.to_dict(), "window": self.window.to_dict()}


def features_of(method, tracks: TrackViews, keypoints2d: np.ndarray | None = None,
                visible: np.ndarray | None = None) -> list:
    """Per camera, the method's features of every frame (optionally other keypoints / visibility (N, C, J[, 2]))."""
    return protocol.compute_features(method, tracks.views, visible, keypoints2d)


def window_hit_at_k(method, tracks: TrackViews, query_features: list, index_features: list,
                    ks: Sequence[int] = (1, 10), kappa: float = protocol.KAPPA, query_chunk: int = 256,
                    progress=None) -> WindowResult:
    """Cross-view Hit@k over every ordered camera pair on the evaluated frames (module docstring).

    query_features / index_features: per camera the method's features of every frame (:func:`features_of`); the
    queries may come from corrupted input, the index from clean input. progress(done, total) per camera pair.
    """
    ks = tuple(int(k) for k in ks)
    kmax = max(ks)
    views, win = tracks.views, tracks.windows
    start = time.perf_counter()
    frame_pairs, window_pairs = [], []
    pairs = protocol.camera_pairs(views.num_cameras)
    for pi, (cq, ci) in enumerate(pairs):
        q_rows = tracks.evaluated[views.valid[tracks.evaluated, cq]]
        x_rows = tracks.evaluated[views.valid[tracks.evaluated, ci]]
        fx = protocol.take(index_features[ci], x_rows)
        frame_hits, window_hits, first_f, first_w = [], [], [], []
        for s in range(0, q_rows.size, query_chunk):
            rows = q_rows[s:s + query_chunk]
            dist = method.distances(protocol.take(query_features[cq], rows), fx)
            if isinstance(dist, protocol.Candidates):
                local = np.take_along_axis(dist.ids, protocol.top_k(dist.distances, kmax), axis=1)
            else:
                local = protocol.top_k(np.asarray(dist), kmax)
            ids = x_rows[local]
            err_f = protocol.retrieved_np_mpjpe(views.poses3d[rows], views.poses3d[ids])
            err_w = np.mean([protocol.retrieved_np_mpjpe(views.poses3d[win[rows, t]], views.poses3d[win[ids, t]])
                             for t in range(win.shape[1])], axis=0)
            frame_hits.append(protocol.hits_from_errors(err_f, ks, kappa))
            window_hits.append(protocol.hits_from_errors(err_w, ks, kappa))
            first_f.append(err_f[:, 0]), first_w.append(err_w[:, 0])
        for out, hits, first in ((frame_pairs, frame_hits, first_f), (window_pairs, window_hits, first_w)):
            hits = np.concatenate(hits)
            out.append(protocol.PairResult(views.camera_names[cq], views.camera_names[ci], hits.mean(axis=0), q_rows,
                                           hits, int(x_rows.size), np.concatenate(first)))
        if progress is not None:
            progress(pi + 1, len(pairs))
    seconds = time.perf_counter() - start
    settings = {**views.settings, "evaluated_frames": int(tracks.evaluated.size), "tracks": int(len(tracks.bounds) - 1),
                "hit_window": tracks.window}
    return WindowResult(
        protocol.CrossViewResult(method.name, ks, float(kappa), views.camera_names, frame_pairs, seconds,
                                 {**settings, "hit": "frame"}),
        protocol.CrossViewResult(method.name, ks, float(kappa), views.camera_names, window_pairs, seconds,
                                 {**settings, "hit": "window"}))


def cross_view(embedder, tracks: TrackViews, ks: Sequence[int] = (1, 10), kappa: float = protocol.KAPPA,
               candidates: int | None = 100) -> WindowResult:
    """Clean cross-view Hit@k of one model (per-frame or temporal) on ``tracks`` (training's validation)."""
    method = TrackMethod(embedder, tracks.bounds, candidates=candidates)
    feats = features_of(method, tracks)
    return window_hit_at_k(method, tracks, feats, feats, ks, kappa)


_TRACKS: dict = {}


def validation(embedder, dataset, split: str, *, every: int, max_frames: int | None, kappa: float,
               candidates: int | None, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Training's validation of a temporal run, in prpose.crossview's result format: "hit@k" is the window hit
    test's mean over camera pairs, "frame_hit@k" the frame test's; the split's TrackViews are built once."""
    key = (str(getattr(dataset, "path", id(dataset))), split, embedder.window, every, max_frames)
    if key not in _TRACKS:
        _TRACKS.clear()  # one run validates one split
        _TRACKS[key] = track_views(dataset, split, embedder.window, every, max_frames)
    tracks = _TRACKS[key]
    result = cross_view(embedder, tracks, ks, kappa, candidates)
    out = {f"hit@{k}": float(v) for k, v in zip(result.window.ks, result.window.mean)}
    out.update({f"frame_hit@{k}": float(v) for k, v in zip(result.frame.ks, result.frame.mean)})
    out.update(per_pair=result.window.to_dict()["pairs"], num_frames=int(tracks.evaluated.size),
               dropped_frames=int(tracks.views.settings["dropped_frames"]), num_pairs=len(result.window.pairs),
               split=split, kappa=kappa, ranking="match", candidates=candidates, hit="window",
               window=embedder.window)
    return out


def compare(embedders: dict, tracks: TrackViews, ks: Sequence[int] = (1, 10), kappa: float = protocol.KAPPA,
            candidates: int | None = 100, say=print) -> list[dict]:
    """Clean cross-view Hit@k of several models (name -> PoseEmbedder, per-frame or temporal) on the same frames.

    Returns one row per model: {"method", "window", "fingerprint", "step", "frame": {hit@k}, "window_test": {hit@k}}.
    """
    rows = []
    for name, embedder in embedders.items():
        start = time.perf_counter()
        result = cross_view(embedder, tracks, ks, kappa, candidates)
        row = {"method": name, "window": embedder.window, "fingerprint": embedder.fingerprint, "step": embedder.step,
               "frame": {f"hit@{k}": float(v) for k, v in zip(ks, result.frame.mean)},
               "window_test": {f"hit@{k}": float(v) for k, v in zip(ks, result.window.mean)},
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        say(f"  {name:<24} window {embedder.window}:  frame test " + "  ".join(
            f"Hit@{k} {100 * row['frame'][f'hit@{k}']:5.1f}" for k in ks) + "   window test " + "  ".join(
            f"Hit@{k} {100 * row['window_test'][f'hit@{k}']:5.1f}" for k in ks) + f"  ({row['seconds']} s)")
    return rows
