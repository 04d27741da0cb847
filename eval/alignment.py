"""Temporal alignment of two performances seen from different cameras (REFERENCE.md, downstream uses).

Per-frame features from any retrieval method (prpose.protocol.RetrievalMethod: Pr-VIPE by -log P, the 2D
baseline by L2, ...), a frame distance averaged over neighbouring frames (the authors' recipe: the mean of the
per-frame distance over a few frames along the diagonal), then dynamic time warping (DTW).

Experiments on a prepared dataset (every frame kept, so that rows of a sequence are consecutive frames):
  * `offset_alignment`: a clip of a take seen from camera A is located inside the whole take seen from camera B
    (subsequence DTW); the true answer is frame i -> i + offset; error in frames.
  * `cross_take_alignment`: two different takes of the same content (e.g. Bandai "walk" in two styles) seen from
    two cameras; the reference alignment is DTW on the true 3D NP-MPJPE; error in frames against it.
  * `content_retrieval`: nearest take by aligned (DTW, per-step normalised) distance; accuracy of the content
    label (Bandai file names `dataset-1_<content>_<style>_<take>.bvh`).
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from prpose.errors import PrposeError


def smooth_diagonal(dist: np.ndarray, window: int) -> np.ndarray:
    """Average a frame distance (T1, T2) over neighbouring frames along the diagonal.

    out[i, j] = mean over o in [-window, window] of dist[i + o, j + o], over the offsets where both indices are
    inside the sequences. window = 0 returns the input.
    """
    dist = np.asarray(dist, np.float64)
    if window < 0:
        raise PrposeError(f"window: got {window}, expected >= 0 frames")
    if window == 0:
        return dist.copy()
    t1, t2 = dist.shape
    total = np.zeros_like(dist)
    count = np.zeros_like(dist)
    for o in range(-window, window + 1):
        # dst[i, j] += dist[i + o, j + o] where 0 <= i + o < t1 and 0 <= j + o < t2
        i0, i1 = max(0, -o), min(t1, t1 - o)
        j0, j1 = max(0, -o), min(t2, t2 - o)
        if i1 <= i0 or j1 <= j0:
            continue
        total[i0:i1, j0:j1] += dist[i0 + o:i1 + o, j0 + o:j1 + o]
        count[i0:i1, j0:j1] += 1
    return total / count


@dataclasses.dataclass(frozen=True)
class DtwResult:
    cost: float  # total cost along the path
    path: np.ndarray  # (L, 2) int pairs (i, j), increasing

    @property
    def normalized_cost(self) -> float:
        """Cost per path step (comparable across sequence lengths)."""
        return self.cost / len(self.path)


def dtw(cost: np.ndarray, subsequence: bool = False) -> DtwResult:
    """Dynamic time warping on a cost matrix (T1, T2), steps (1,0), (0,1), (1,1).

    subsequence=False: the path runs from (0, 0) to (T1-1, T2-1). subsequence=True: the whole first sequence is
    matched to the best-fitting stretch of the second (free start and end in the second sequence).
    Vectorised over anti-diagonals (cells with i + j = s depend only on diagonals s-1 and s-2).
    Ties prefer the diagonal step, then (1, 0), then (0, 1).
    """
    c = np.asarray(cost, np.float64)
    if c.ndim != 2 or 0 in c.shape:
        raise PrposeError(f"cost: shape {c.shape}, expected a non-empty (T1, T2) matrix")
    if not np.isfinite(c).all():
        raise PrposeError("cost: contains non-finite values")
    t1, t2 = c.shape
    acc = np.full((t1 + 1, t2 + 1), np.inf)  # acc[i+1, j+1] = best cost of a path ending at (i, j)
    acc[0, 0] = 0.0
    if subsequence:
        acc[0, :] = 0.0  # a path may enter the second sequence anywhere
    for s in range(t1 + t2 - 1):
        i = np.arange(max(0, s - t2 + 1), min(t1, s + 1))
        j = s - i
        best = np.minimum(np.minimum(acc[i, j], acc[i, j + 1]), acc[i + 1, j])
        acc[i + 1, j + 1] = c[i, j] + best
    if subsequence:
        end_j = int(np.argmin(acc[t1, 1:]))
    else:
        end_j = t2 - 1
    total = float(acc[t1, end_j + 1])
    path = [(t1 - 1, end_j)]
    i, j = t1 - 1, end_j
    while i > 0 or (j > 0 and not subsequence):
        if subsequence and i == 0:
            break
        options = ((acc[i, j], i - 1, j - 1), (acc[i, j + 1], i - 1, j), (acc[i + 1, j], i, j - 1))
        _, i, j = min(options, key=lambda o: o[0])  # min keeps the first of equal values: diagonal first
        path.append((i, j))
    return DtwResult(total, np.array(path[::-1], np.int64))


def path_to_mapping(path: np.ndarray, length: int) -> np.ndarray:
    """For every frame i of the first sequence, the mean frame of the second it is aligned to: (length,)."""
    sums = np.bincount(path[:, 0], weights=path[:, 1], minlength=length)
    counts = np.bincount(path[:, 0], minlength=length)
    return sums / np.maximum(counts, 1)


def alignment_error(path: np.ndarray, true_mapping: np.ndarray) -> float:
    """Mean absolute error in frames between a DTW path and the true frame mapping (T1,) of sequence 1."""
    est = path_to_mapping(path, len(true_mapping))
    return float(np.mean(np.abs(est - true_mapping)))


def frame_distances(method, feats_a, feats_b, window: int) -> np.ndarray:
    """The method's per-frame distances (T1, T2), averaged over +-window neighbouring frames."""
    from prpose.protocol import Candidates

    d = method.distances(feats_a, feats_b)
    if isinstance(d, Candidates):  # a two-stage method: DTW needs every distance, so +inf outside its candidates
        d = d.dense(len(next(iter(feats_b.values()))))
    return smooth_diagonal(np.asarray(d, np.float64), window)


# --------------------------------------------------------------------------------------------------------------
# Experiments on a ViewSet built with every frame of the split (prpose.views.views_from_dataset(..., every=1)).


def sequences_of(views) -> dict[str, np.ndarray]:
    """Positions of each sequence's frames in the ViewSet, in frame order (requires labels["sequence"])."""
    if "sequence" not in views.labels:
        raise PrposeError("views have no 'sequence' labels: build them from a prepared dataset")
    seq = np.asarray(views.labels["sequence"])
    frame = np.asarray(views.labels.get("frame", views.rows))
    out = collections.OrderedDict()
    for name in dict.fromkeys(seq.tolist()):
        pos = np.flatnonzero(seq == name)
        out[name] = pos[np.argsort(frame[pos], kind="stable")]
    return out


def content_label(sequence: str) -> str | None:
    """Bandai content from `.../dataset-1_<content>_<style>_<take>.bvh`; None for other files."""
    stem = pathlib.PurePath(sequence).stem
    parts = stem.split("_")
    if len(parts) >= 4 and parts[0] == "dataset-1":
        return parts[1]
    return None


def offset_alignment(method, views, features, cam_a: int, cam_b: int, clip: int = 60, offset: int = 30,
                     window: int = 2, max_sequences: int | None = None) -> dict:
    """Locate a clip (frames offset .. offset+clip of a take, camera A) inside the whole take (camera B).

    features: per-camera Features of `views` (prpose.protocol.compute_features). Takes shorter than
    offset + clip frames are skipped (counted). Returns mean / median error in frames and per-take errors.
    """
    errors, skipped = {}, 0
    for name, pos in sequences_of(views).items():
        if max_sequences is not None and len(errors) >= max_sequences:
            break
        if len(pos) < offset + clip or not (views.valid[pos, cam_a].all() and views.valid[pos, cam_b].all()):
            skipped += 1
            continue
        q = pos[offset:offset + clip]
        fa = {k: v[q] for k, v in features[cam_a].items()}
        fb = {k: v[pos] for k, v in features[cam_b].items()}
        res = dtw(frame_distances(method, fa, fb, window), subsequence=True)
        errors[name] = alignment_error(res.path, np.arange(offset, offset + clip, dtype=np.float64))
    if not errors:
        return {"method": method.name, "takes": 0, "skipped_takes": skipped, "mean_error_frames": None,
                "note": f"no take has {offset + clip} frames usable in both cameras"}
    vals = np.array(list(errors.values()))
    return {"method": method.name, "cameras": [views.camera_names[cam_a], views.camera_names[cam_b]],
            "clip": clip, "offset": offset, "window": window, "takes": len(errors), "skipped_takes": skipped,
            "mean_error_frames": float(vals.mean()), "median_error_frames": float(np.median(vals)),
            "per_take": {k: float(v) for k, v in errors.items()}}


def _pose_cost(views, pa, pb) -> np.ndarray:
    from prpose.protocol import pairwise_np_mpjpe_chunked

    return pairwise_np_mpjpe_chunked(views.poses3d[pb], views.poses3d[pa]).T  # [i, j]: b_j aligned onto a_i


def cross_take_alignment(method, views, features, cam_a: int, cam_b: int, window: int = 2, step: int = 1,
                         max_pairs: int = 40) -> dict:
    """Align different takes of the same content (camera A vs camera B) and compare with the 3D reference.

    The reference alignment is DTW on the true NP-MPJPE between the takes' 3D poses; the error is the mean
    absolute frame difference between the method's path and the reference's (in frames of the subsampled
    sequences; `step` keeps every step-th frame to bound the cost).
    """
    seqs = {n: p[::step] for n, p in sequences_of(views).items() if content_label(n)}
    by_content = collections.defaultdict(list)
    for n in seqs:
        by_content[content_label(n)].append(n)
    errors = {}
    for content, names in sorted(by_content.items()):
        for a, b in zip(names[:-1], names[1:]):
            if len(errors) >= max_pairs:
                break
            pa, pb = seqs[a], seqs[b]
            if not (views.valid[pa, cam_a].all() and views.valid[pb, cam_b].all()):
                continue
            ref = dtw(_pose_cost(views, pa, pb))
            fa = {k: v[pa] for k, v in features[cam_a].items()}
            fb = {k: v[pb] for k, v in features[cam_b].items()}
            est = dtw(frame_distances(method, fa, fb, window))
            errors[f"{a} | {b}"] = alignment_error(est.path, path_to_mapping(ref.path, len(pa)))
    if not errors:
        return {"method": method.name, "pairs": 0, "mean_error_frames": None,
                "note": "no two takes of the same content in these views"}
    vals = np.array(list(errors.values()))
    return {"method": method.name, "cameras": [views.camera_names[cam_a], views.camera_names[cam_b]],
            "window": window, "step": step, "pairs": len(errors), "mean_error_frames": float(vals.mean()),
            "median_error_frames": float(np.median(vals)), "per_pair": {k: float(v) for k, v in errors.items()}}


def content_retrieval(method, views, features, cam_a: int, cam_b: int, window: int = 2, step: int = 2,
                      labels: dict[str, str] | None = None) -> dict:
    """Nearest other take (camera B) to each take (camera A) by DTW cost per step: content-label accuracy.

    labels: sequence -> content (default: Bandai file names). Takes without a label are ignored; a query whose
    content has no other take is skipped (counted).
    """
    seqs = sequences_of(views)
    labels = labels or {n: content_label(n) for n in seqs}
    names = [n for n in seqs if labels.get(n) and views.valid[seqs[n], cam_a].all()
             and views.valid[seqs[n], cam_b].all()]
    counts = collections.Counter(labels[n] for n in names)
    correct, total, skipped = 0, 0, 0
    feats = {n: ({k: v[seqs[n][::step]] for k, v in features[cam_a].items()},
                 {k: v[seqs[n][::step]] for k, v in features[cam_b].items()}) for n in names}
    for q in names:
        if counts[labels[q]] < 2:
            skipped += 1
            continue
        best = min((dtw(frame_distances(method, feats[q][0], feats[x][1], window)).normalized_cost, x)
                   for x in names if x != q)
        correct += labels[best[1]] == labels[q]
        total += 1
    # Chance: a query whose content has c takes among n candidates picks a right one with (c-1)/(n-1).
    evaluated = [counts[labels[q]] for q in names if counts[labels[q]] >= 2]
    chance = float(np.mean([(c - 1) / (len(names) - 1) for c in evaluated])) if evaluated else None
    return {"method": method.name, "queries": total, "skipped_queries": skipped, "candidates": len(names),
            "chance": chance, "accuracy": float(correct / total) if total else None}
