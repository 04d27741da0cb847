"""The cross-view retrieval protocol (REFERENCE.md, "Evaluation protocol"), for any retrieval method.

For every ordered pair of distinct cameras (c_q, c_i): the queries are the test frames seen from c_q, the index
is the same test frames seen from c_i. A query *hits at k* when at least one of its k nearest index entries has
NP-MPJPE < kappa to the query's 3D pose. Hit@k is the fraction of queries that hit; the protocol reports the
per-pair table and the unweighted mean over camera pairs (the paper's number).

Everything that differs between methods (Pr-VIPE by match probability, by embedding-mean L2, the 2D-keypoint
baseline, 3D lifting, oracle, random) is behind a two-function `RetrievalMethod` interface: `features` turns a
batch of views into per-row arrays, `distances` scores queries against index entries (smaller = closer). The
queries, the index, the frame subsampling and the hit test are shared, so every row of a results table is
computed on exactly the same queries.

NP-MPJPE convention: the retrieved pose is Procrustes-aligned onto the query's pose (`np_mpjpe(retrieved,
query)`), i.e. "a retrieved pose with NP-MPJPE < kappa to the query's 3D pose".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from prpose import keypoints as kp
from prpose.buckets import pad_rows
from prpose.errors import PrposeError

KS = (1, 5, 10, 20)
KAPPA = 0.1

Features = Mapping[str, np.ndarray]  # per-row arrays, all with the same leading dimension


# --------------------------------------------------------------------------------------------------------------
# Views: the frames to evaluate on, seen from several cameras.


@dataclasses.dataclass(frozen=True)
class ViewSet:
    """Test frames seen from C cameras, ready for cross-view retrieval.

    poses3d: (N, 17, 3) float64, h36m17, normalised (prpose.normalize.normalize_3d): the hit test's labels.
    keypoints2d: (N, C, J, 2) float32 in `profile` (J its joints; input13 unless asked otherwise), in any
        consistent 2D unit (pixels); methods normalise.
    visible: (N, C, J) bool, keypoints that a method may use (False where the 2D source lacks the joint, e.g.
        the nose of Stacked Hourglass detections).
    valid: (N, C) bool, views that are usable (in front of the camera and with a normalisable torso); a frame
        enters a camera pair's queries / index only where it is valid in that camera, for every method alike.
    camera_names: C names.
    rows: (N,) int, the source rows (dataset rows, or frame numbers of projected poses).
    labels: optional per-frame string arrays (e.g. "sequence", "subject") for downstream analyses.
    settings: JSON-able description (dataset path, split, subsampling, cameras, 2D source, counts of dropped
        frames).
    profile: the keypoint profile of keypoints2d / visible (prpose.keypoints); methods convert by joint name.
    """

    poses3d: np.ndarray
    keypoints2d: np.ndarray
    visible: np.ndarray
    valid: np.ndarray
    camera_names: tuple[str, ...]
    rows: np.ndarray
    labels: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    profile: str = "input13"

    def __post_init__(self):
        n, c = self.keypoints2d.shape[:2]
        j = kp.get_profile(self.profile).num_joints
        expected = {
            "poses3d": (self.poses3d.shape, (n, 17, 3)),
            "keypoints2d": (self.keypoints2d.shape, (n, c, j, 2)),
            "visible": (self.visible.shape, (n, c, j)),
            "valid": (self.valid.shape, (n, c)),
            "rows": (self.rows.shape, (n,)),
        }
        for name, (got, want) in expected.items():
            if tuple(got) != want:
                raise PrposeError(f"ViewSet.{name}: shape {tuple(got)}, expected {want}")
        if len(self.camera_names) != c:
            raise PrposeError(f"ViewSet.camera_names: {len(self.camera_names)} names for {c} cameras")

    @property
    def num_frames(self) -> int:
        return self.poses3d.shape[0]

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)

    def converted(self, profile: str) -> "ViewSet":
        """The same views in another keypoint profile (by joint name; every target joint must exist here)."""
        return dataclasses.replace(self, keypoints2d=kp.convert(self.keypoints2d, self.profile, profile),
                                   visible=kp.convert(self.visible, self.profile, profile, axis=-1), profile=profile)

    def subset(self, frames: np.ndarray) -> "ViewSet":
        """The views of the given frame positions (int array or bool mask over N)."""
        frames = np.asarray(frames)
        return dataclasses.replace(
            self,
            poses3d=self.poses3d[frames],
            keypoints2d=self.keypoints2d[frames],
            visible=self.visible[frames],
            valid=self.valid[frames],
            rows=self.rows[frames],
            labels={k: np.asarray(v)[frames] for k, v in self.labels.items()},
        )


_JITTED: dict = {}


def jitted(name: str):
    """prpose.normalize.normalize_2d / normalize_3d under jax.jit (eagerly they dispatch dozens of small ops:
    ~5 s for a few hundred views on a busy 2-core machine, against < 1 s to compile once)."""
    if name not in _JITTED:
        import jax

        from prpose import normalize

        _JITTED[name] = jax.jit(getattr(normalize, name))
    return _JITTED[name]


SOURCES = ("gt", "detected")


def _usable_views(poses3d, keypoints2d_h36m17, visibility_h36m17, required=None):
    """Shared by the ViewSet builders, with the same rule as prpose.crossview / prpose.pairs.prepare_views (so
    that numbers agree; tests/test_eval_protocol.py checks it): a view is usable when its input13 keypoints are
    visible and finite and the 2D torso normalises; a frame is kept when its 3D pose normalises and it is usable
    in every camera. required: (13,) bool, the input13 joints the rule asks for (default all; a 2D source that
    never gives a joint, like the nose of Stacked Hourglass detections, is not asked for it).

    Returns (poses3d normalised (N,17,3) float64, keep (N,) bool, usable (N,C) bool).
    """
    k13 = kp.convert(np.asarray(keypoints2d_h36m17, np.float32), "h36m17", "input13")
    v13 = kp.convert(np.asarray(visibility_h36m17, bool), "h36m17", "input13", axis=-1)
    required = np.ones(13, bool) if required is None else np.asarray(required, bool)
    _, ok2d = jitted("normalize_2d")(np.where(v13[..., None], k13, 0.0), v13)
    usable = (np.asarray(ok2d, bool) & v13[..., required].all(axis=-1)
              & np.isfinite(k13[..., required, :]).all(axis=(-1, -2)))
    norm3d, ok3d = jitted("normalize_3d")(np.asarray(poses3d, np.float32))
    keep = np.asarray(ok3d, bool) & usable.all(axis=1)
    return np.asarray(norm3d, np.float64), keep, usable


def _source_arrays(dataset, source: str):
    """(keypoints (N, C, 17, 2), visibility (N, C, 17)) of a prepared dataset for a 2D source name."""
    if source == "gt":
        return dataset.keypoints2d, dataset.visibility
    if source == "detected":
        if not getattr(dataset, "has_detections", False):
            raise PrposeError(f"source 'detected': dataset {getattr(dataset, 'path', '')} holds no detected 2D "
                              f"keypoints (prepare it from a tree with detections, e.g. `prpose prep h36m` on "
                              f"3d-pose-baseline's StackedHourglass files)")
        return dataset.detections2d, dataset.detections_visible
    raise PrposeError(f"source: got {source!r}, expected one of {SOURCES}")


def views_from_dataset(dataset, split: str = "test", every: int = 1, max_frames: int | None = None,
                       cameras: Sequence[str] | None = None, source: str = "gt",
                       profile: str = "input13") -> ViewSet:
    """The cross-view protocol's frames from a prepared dataset (prpose.dataset.PreparedDataset or a path).

    split: which split's frames ("test" for the paper's protocol). every: keep every `every`-th frame of the
    split, in dataset order (the authors keep ~every 10th Human3.6M frame, the same frames in all cameras).
    max_frames: then keep at most this many, evenly spread. cameras: names of the cameras to use (default all).
    source: the 2D keypoints of queries and index: "gt" (projected ground truth) or "detected" (the dataset's
    detector output, e.g. Stacked Hourglass on Human3.6M); the hit test always uses the 3D poses.
    profile: keypoint profile of the ViewSet (input13, or a superset such as h36m17 so that models with more
    input joints get them); joints the source lacks are invisible.
    Frames whose 3D pose cannot be normalised, or that are not usable in every camera, are dropped and counted
    in settings["dropped_frames"] and, per camera, settings["unusable_by_camera"] (the same frames enter every
    camera pair and every method). The input13 joints the source never gives in the selection are reported in
    settings["absent_joints"] and not required.
    """
    if not hasattr(dataset, "keypoints2d"):
        from prpose.dataset import load_dataset

        dataset = load_dataset(dataset)
    if not isinstance(every, int) or every < 1:
        raise PrposeError(f"every: got {every!r}, expected a positive integer (frame subsampling step)")
    kp.get_profile(profile)
    src_k, src_v = _source_arrays(dataset, source)
    rows = np.asarray(dataset.indices(split=split))
    if rows.size == 0:
        raise PrposeError(f"dataset has no frames in split {split!r}")
    rows = rows[::every]
    if max_frames is not None and rows.size > max_frames:
        rows = rows[np.linspace(0, rows.size - 1, max_frames).round().astype(int)]
    names = tuple(dataset.camera_names)
    cam_idx = np.arange(len(names))
    if cameras:
        unknown = [c for c in cameras if c not in names]
        if unknown:
            raise PrposeError(f"cameras: {unknown} not in the dataset's cameras {list(names)}")
        cam_idx = np.array([names.index(c) for c in cameras])
        names = tuple(cameras)
    if len(names) < 2:
        raise PrposeError(f"cross-view retrieval needs at least 2 cameras, got {list(names)}")
    k2d = np.asarray(src_k[rows][:, cam_idx], np.float32)
    vis = np.asarray(src_v[rows][:, cam_idx], bool)
    provided = vis.any(axis=(0, 1))  # (17,) joints the source gives somewhere in the selection
    required = kp.convert(provided, "h36m17", "input13", axis=-1)
    norm3d, keep, usable = _usable_views(dataset.poses3d[rows], k2d, vis, required)
    vis = vis & provided
    k2d = np.where(vis[..., None], k2d, 0.0).astype(np.float32)
    k2d = kp.convert(k2d, "h36m17", profile)
    vis = kp.convert(vis, "h36m17", profile, axis=-1)
    labels = {"frame": np.asarray(dataset.frame)[rows]}
    for name in ("sequence", "subject", "source"):
        labels[name] = np.asarray(dataset.labels(name))[rows]
    settings = {
        "dataset": str(getattr(dataset, "path", "")),
        "split": split,
        "every": every,
        "max_frames": max_frames,
        "cameras": list(names),
        "source": source,
        "profile": profile,
        "absent_joints": [j for j, r in zip(kp.INPUT13.joints, required) if not r],
        "frames_selected": int(rows.size),
        "frames": int(keep.sum()),
        "dropped_frames": int((~keep).sum()),
        "unusable_by_camera": {n: int((~usable[:, i]).sum()) for i, n in enumerate(names)},
    }
    k = np.flatnonzero(keep)
    return ViewSet(norm3d[k], k2d[k], vis[k], usable[k], names, rows[k], {n: v[k] for n, v in labels.items()},
                   settings, profile)


def common_frames(*views: ViewSet) -> list[ViewSet]:
    """The ViewSets restricted to the dataset rows that all of them keep (e.g. ground-truth and detected 2D of
    the same split, so that both rows of a table are computed on the same queries), in the first one's order.
    settings["dropped_frames"] grows by the frames removed here; settings["common_with"] names the others'
    sources."""
    if not views:
        return []
    common = views[0].rows
    for v in views[1:]:
        common = common[np.isin(common, v.rows)]
    out = []
    for v in views:
        pos = {r: i for i, r in enumerate(v.rows.tolist())}
        sub = v.subset(np.array([pos[r] for r in common.tolist()], np.int64))
        settings = dict(v.settings)
        removed = v.num_frames - sub.num_frames
        settings.update(frames=sub.num_frames, dropped_frames=int(settings.get("dropped_frames", 0)) + removed,
                        common_with=[w.settings.get("source") for w in views if w is not v])
        out.append(dataclasses.replace(sub, settings=settings))
    return out


def views_from_cameras(poses3d_world: np.ndarray, cameras: Sequence, rows: np.ndarray | None = None,
                       labels: Mapping[str, np.ndarray] | None = None, settings: Mapping | None = None) -> ViewSet:
    """Project world 3D poses (N, 17, 3) (h36m17, metres, Z-up) into `cameras` (prpose.camera.Camera).

    Used for views the model never saw. Image bounds are ignored on purpose (a view is usable when every joint
    is in front of the camera): the experiment tests viewpoint invariance, not framing.
    """
    poses3d_world = np.asarray(poses3d_world, np.float64)
    if poses3d_world.ndim != 3 or poses3d_world.shape[1:] != (17, 3):
        raise PrposeError(f"poses3d_world: shape {poses3d_world.shape}, expected (N, 17, 3) h36m17 metres")
    uv, depth = [], []
    for cam in cameras:
        u, d = cam.project(poses3d_world, distort=False)
        uv.append(np.asarray(u, np.float64))
        depth.append(np.asarray(d, np.float64))
    k17 = np.stack(uv, axis=1).astype(np.float32)  # (N, C, 17, 2)
    vis17 = np.stack(depth, axis=1) > 1e-3  # (N, C, 17)
    k17 = np.where(vis17[..., None], k17, 0.0).astype(np.float32)
    norm3d, keep, usable = _usable_views(poses3d_world, k17, vis17)
    n = poses3d_world.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    k = np.flatnonzero(keep)
    settings = dict(settings or {})
    settings.update({"cameras": [c.name for c in cameras], "frames": int(k.size), "dropped_frames": int(n - k.size)})
    return ViewSet(norm3d[k], kp.convert(k17, "h36m17", "input13")[k],
                   kp.convert(vis17, "h36m17", "input13", axis=-1)[k], usable[k], tuple(c.name for c in cameras),
                   rows[k], {name: np.asarray(v)[k] for name, v in (labels or {}).items()}, settings)


def elevation_ring_cameras(num_azimuths: int = 8, elevations_deg: Sequence[float] = (0.0, 30.0, 60.0),
                           distance: float = 5.0, target=(0.0, 0.0, 1.0), focal: float = 1145.0,
                           size=(1000, 1000), start_azimuth_deg: float = 0.0) -> list:
    """A rig of cameras on rings at several elevations, all looking at `target` (world metres, Z-up).

    Camera (ring e, azimuth a) sits at target + distance * (cos(el) sin(az), -cos(el) cos(az), sin(el)) (azimuth
    0 on the -Y side, as prpose.camera.view_rotation) and looks at the target. Names are "az{deg}_el{deg}".
    """
    from prpose.camera import Camera, look_at

    target = np.asarray(target, np.float64)
    cams = []
    for el in elevations_deg:
        for i in range(num_azimuths):
            az = start_azimuth_deg + 360.0 * i / num_azimuths
            a, e = math.radians(az), math.radians(el)
            center = target + distance * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a),
                                                   math.sin(e)])
            # Straight down would make look_at's up vector degenerate; elevations stay below 90 degrees.
            if abs(el) >= 89.0:
                raise PrposeError(f"elevations_deg: {el} is too close to +-90 (camera straight above/below)")
            cams.append(Camera(name=f"az{az:g}_el{el:g}", rotation=look_at(center, target), center=center,
                               focal=(focal, focal), principal=(size[0] / 2, size[1] / 2), radial=(0.0, 0.0, 0.0),
                               tangential=(0.0, 0.0), width=size[0], height=size[1]))
    return cams


# --------------------------------------------------------------------------------------------------------------
# Methods.


class RetrievalMethod(Protocol):
    """What the protocol needs from a retrieval method."""

    name: str

    def features(self, keypoints2d: np.ndarray, visible: np.ndarray, poses3d: np.ndarray,
                 profile: str = "input13") -> Features:
        """Per-view features: keypoints2d (M, J, 2) in `profile` (a prpose.keypoints name), visible (M, J),
        poses3d (M, 17, 3) normalised (only oracles may look at it) -> dict of arrays with leading dimension M."""

    def distances(self, query: Features, index: Features) -> "np.ndarray | Candidates":
        """(Q, N) dissimilarities, smaller = closer; or Candidates (two-stage methods: only the nearest few
        entries per query, with their exact distances)."""


class Candidates(NamedTuple):
    """A sparse answer of `RetrievalMethod.distances`: per query, `ids` (Q, C) index positions and their exact
    `distances` (Q, C); every other entry counts as farther than all of them."""

    ids: np.ndarray
    distances: np.ndarray

    def dense(self, num_index: int) -> np.ndarray:
        """(Q, num_index) with +inf outside the candidates."""
        out = np.full((len(self.ids), num_index), np.inf)
        np.put_along_axis(out, self.ids, self.distances, axis=1)
        return out


def take(features: Features, rows) -> dict[str, np.ndarray]:
    """Rows of every per-row array in `features`."""
    return {k: v[rows] for k, v in features.items()}


# --------------------------------------------------------------------------------------------------------------
# Ranking and the hit test.


def top_k(distances: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest entries per row of distances (Q, N), nearest first -> (Q, min(k, N)).

    Ties are broken by the lower index, so the result does not depend on the partition algorithm.
    """
    distances = np.asarray(distances)
    q, n = distances.shape
    k = min(k, n)
    if k == n:
        part = np.broadcast_to(np.arange(n), (q, n))
    else:
        part = np.argpartition(distances, k - 1, axis=1)[:, :k]
        # Entries tied with the k-th value may have been cut arbitrarily: take all of them, then sort and cut.
        kth = np.take_along_axis(distances, part, axis=1).max(axis=1, keepdims=True)
        if np.count_nonzero(distances <= kth) > q * k:
            cand = [np.flatnonzero(row <= t) for row, t in zip(distances, kth[:, 0])]
            out = np.empty((q, k), np.int64)
            for i, c in enumerate(cand):
                out[i] = c[np.lexsort((c, distances[i, c]))][:k]
            return out
    vals = np.take_along_axis(distances, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


_NP_MPJPE_JIT = None


def _padded_np_mpjpe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np_mpjpe(a, b) for (M, 17, 3) pairs, padded to a power-of-two M (prpose.buckets) so that few shapes get
    compiled."""
    global _NP_MPJPE_JIT
    if _NP_MPJPE_JIT is None:
        import jax

        from prpose.procrustes import np_mpjpe

        _NP_MPJPE_JIT = jax.jit(np_mpjpe)
    m = a.shape[0]
    return np.asarray(_NP_MPJPE_JIT(pad_rows(a, 1024), pad_rows(b, 1024)))[:m]


def retrieved_np_mpjpe(query_poses: np.ndarray, retrieved_poses: np.ndarray, batch: int = 32768) -> np.ndarray:
    """NP-MPJPE of each retrieved pose aligned onto its query: (Q, 17, 3), (Q, k, 17, 3) -> (Q, k)."""
    q, k = retrieved_poses.shape[:2]
    a = retrieved_poses.reshape(q * k, 17, 3).astype(np.float32)
    b = np.repeat(query_poses.astype(np.float32), k, axis=0)
    out = np.empty(q * k, np.float64)
    for s in range(0, q * k, batch):
        out[s:s + batch] = _padded_np_mpjpe(a[s:s + batch], b[s:s + batch])
    return out.reshape(q, k)


def hits_from_errors(errors: np.ndarray, ks: Sequence[int], kappa: float) -> np.ndarray:
    """errors (Q, k_max) of the ranked results -> hits (Q, len(ks)) bool: any of the first k below kappa.

    With fewer than k retrieved entries (a tiny index), Hit@k uses all of them.
    """
    match = np.asarray(errors) < kappa
    first = np.cumsum(match, axis=1) > 0
    cols = [min(k, first.shape[1]) - 1 for k in ks]
    return first[:, cols]


def pairwise_np_mpjpe_chunked(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[i, j] = NP-MPJPE of a[i] aligned onto b[j]; a (N, 17, 3), b (M, 17, 3) -> (N, M), chunked over N."""
    from prpose.procrustes import pairwise_np_mpjpe

    out = np.empty((a.shape[0], b.shape[0]), np.float64)
    b32 = pad_rows(np.asarray(b, np.float32))  # few distinct shapes: each new one is an XLA compile
    for s in range(0, a.shape[0], chunk):
        part = np.asarray(a[s:s + chunk], np.float32)
        out[s:s + chunk] = np.asarray(pairwise_np_mpjpe(pad_rows(part), b32))[:len(part), :b.shape[0]]
    return out


def expected_random_hit_rate(num_matches: np.ndarray, num_index: int, ks: Sequence[int]) -> np.ndarray:
    """Expected Hit@k of a uniformly random ranking: per query, 1 - C(N - m, k) / C(N, k).

    num_matches: (Q,) m, index entries within kappa of each query. Returns (len(ks),) the mean over queries.
    """
    m = np.asarray(num_matches, np.float64)
    out = []
    for k in ks:
        miss = np.ones_like(m)
        for t in range(min(k, num_index)):
            miss *= np.clip(num_index - m - t, 0, None) / (num_index - t)
        out.append(float(np.mean(1.0 - miss)))
    return np.array(out)


# --------------------------------------------------------------------------------------------------------------
# The protocol.


@dataclasses.dataclass
class PairResult:
    query_camera: str
    index_camera: str
    hit_rates: np.ndarray  # (len(ks),)
    query_rows: np.ndarray  # (Q,) positions into the ViewSet
    hits: np.ndarray  # (Q, len(ks)) bool
    num_index: int
    first_error: np.ndarray  # (Q,) NP-MPJPE of the top-1 retrieved pose


@dataclasses.dataclass
class CrossViewResult:
    """Per-pair Hit@k and their unweighted mean over ordered camera pairs."""

    method: str
    ks: tuple[int, ...]
    kappa: float
    camera_names: tuple[str, ...]
    pairs: list[PairResult]
    seconds: float
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        """(len(ks),) the protocol's number: mean over camera pairs of the per-pair Hit@k."""
        return np.mean([p.hit_rates for p in self.pairs], axis=0)

    def pair_matrix(self, k: int) -> np.ndarray:
        """(C, C) Hit@k with rows = query camera, columns = index camera; NaN on the diagonal."""
        c = len(self.camera_names)
        out = np.full((c, c), np.nan)
        j = self.ks.index(k)
        for p in self.pairs:
            out[self.camera_names.index(p.query_camera), self.camera_names.index(p.index_camera)] = p.hit_rates[j]
        return out

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "ks": list(self.ks),
            "kappa": self.kappa,
            "mean": {f"hit@{k}": float(v) for k, v in zip(self.ks, self.mean)},
            "pairs": [
                {"query_camera": p.query_camera, "index_camera": p.index_camera, "queries": int(p.hits.shape[0]),
                 "index": p.num_index, **{f"hit@{k}": float(v) for k, v in zip(self.ks, p.hit_rates)}}
                for p in self.pairs
            ],
            "seconds": round(self.seconds, 3),
            **({"settings": self.settings} if self.settings else {}),
        }


def camera_pairs(num_cameras: int) -> list[tuple[int, int]]:
    """Every ordered pair of distinct cameras."""
    return [(a, b) for a, b in itertools.permutations(range(num_cameras), 2)]


def compute_features(method: RetrievalMethod, views: ViewSet, query_visible: np.ndarray | None = None,
                     query_keypoints: np.ndarray | None = None):
    """Features of every (frame, camera) view: list over cameras of Features (leading dim N)."""
    kps = views.keypoints2d if query_keypoints is None else query_keypoints
    vis = views.visible if query_visible is None else query_visible
    return [method.features(kps[:, c], vis[:, c], views.poses3d, profile=views.profile)
            for c in range(views.num_cameras)]


def cross_view_hit_at_k(method: RetrievalMethod, views: ViewSet, ks: Sequence[int] = KS, kappa: float = KAPPA,
                        pairs: Sequence[tuple[int, int]] | None = None, query_chunk: int = 256,
                        query_visible: np.ndarray | None = None, query_keypoints: np.ndarray | None = None,
                        index_features=None, progress=None) -> CrossViewResult:
    """Run the cross-view protocol for one method.

    views: the frames and cameras (ViewSet). ks: the k of Hit@k. kappa: the NP-MPJPE match threshold.
    pairs: ordered camera pairs (default: all). query_visible / query_keypoints (N, C, J[, 2]): replace the
    queries' visibility / keypoints (occlusion experiments); the index always uses the clean views.
    index_features: precomputed clean features (list over cameras), to reuse across occlusion settings.
    progress: optional callable(done, total, pair: PairResult), called after each camera pair (`pair_line`
    formats one plain line with an estimate of the time left; `prpose eval` feeds prpose.progress).
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise PrposeError(f"ks: got {ks}, expected positive integers")
    if not kappa > 0:
        raise PrposeError(f"kappa: got {kappa}, expected a positive NP-MPJPE threshold (paper: 0.1)")
    start = time.perf_counter()
    kmax = max(ks)
    if index_features is None:
        index_features = compute_features(method, views)
    if query_visible is None and query_keypoints is None:
        query_features = index_features
    else:
        query_features = compute_features(method, views, query_visible, query_keypoints)
    results = []
    pairs = list(pairs if pairs is not None else camera_pairs(views.num_cameras))
    for pi, (cq, ci) in enumerate(pairs):
        q_rows = np.flatnonzero(views.valid[:, cq])
        x_rows = np.flatnonzero(views.valid[:, ci])
        if q_rows.size == 0 or x_rows.size == 0:
            raise PrposeError(f"camera pair ({views.camera_names[cq]}, {views.camera_names[ci]}) has no valid "
                              f"{'queries' if q_rows.size == 0 else 'index entries'}")
        fx = take(index_features[ci], x_rows)
        hits, first = [], []
        for s in range(0, q_rows.size, query_chunk):
            rows = q_rows[s:s + query_chunk]
            dist = method.distances(take(query_features[cq], rows), fx)
            if isinstance(dist, Candidates):
                if dist.ids.shape != dist.distances.shape or dist.ids.shape[0] != rows.size:
                    raise PrposeError(f"method {method.name!r} returned candidates {dist.ids.shape} with distances "
                                      f"{dist.distances.shape}, expected ({rows.size}, C) both")
                local = np.take_along_axis(dist.ids, top_k(dist.distances, kmax), axis=1)
            else:
                dist = np.asarray(dist)
                if dist.shape != (rows.size, x_rows.size):
                    raise PrposeError(f"method {method.name!r} returned distances of shape {dist.shape}, "
                                      f"expected {(rows.size, x_rows.size)}")
                local = top_k(dist, kmax)
            ids = x_rows[local]
            err = retrieved_np_mpjpe(views.poses3d[rows], views.poses3d[ids])
            hits.append(hits_from_errors(err, ks, kappa))
            first.append(err[:, 0])
        hits = np.concatenate(hits)
        results.append(PairResult(views.camera_names[cq], views.camera_names[ci], hits.mean(axis=0), q_rows,
                                  hits, int(x_rows.size), np.concatenate(first)))
        if progress is not None:
            progress(pi + 1, len(pairs), results[-1])
    return CrossViewResult(method.name, ks, float(kappa), tuple(views.camera_names), results,
                           time.perf_counter() - start, dict(views.settings))


def pair_line(name: str, ks: Sequence[int], start: float):
    """A `progress` callback for cross_view_hit_at_k that returns one plain line per camera pair: its Hit@k,
    the time since `start` (time.perf_counter()) and an estimate of the time left. Use as
    `progress=lambda *a: print(line(*a))` with `line = pair_line(name, ks, time.perf_counter())`."""

    def line(done: int, total: int, pair: PairResult) -> str:
        spent = time.perf_counter() - start
        return (f"{name}: pair {done}/{total} ({pair.query_camera} -> {pair.index_camera}, {pair.hits.shape[0]} "
                f"queries) Hit@{ks[0]} {100 * pair.hit_rates[0]:.1f}%; {spent:.0f} s, about "
                f"{spent / done * (total - done):.0f} s left")

    return line


def expected_random_result(views: ViewSet, ks: Sequence[int] = KS, kappa: float = KAPPA) -> dict:
    """The random baseline's expected Hit@k, per pair and mean, from the exact count of matches per query.

    Costs a full (N, N) NP-MPJPE matrix; use on subsampled frames.
    """
    ks = tuple(ks)
    err = pairwise_np_mpjpe_chunked(views.poses3d, views.poses3d)  # [x, q]: x aligned onto q
    per_pair = []
    for cq, ci in camera_pairs(views.num_cameras):
        q_rows = np.flatnonzero(views.valid[:, cq])
        x_rows = np.flatnonzero(views.valid[:, ci])
        m = (err[np.ix_(x_rows, q_rows)] < kappa).sum(axis=0)
        per_pair.append(expected_random_hit_rate(m, x_rows.size, ks))
    mean = np.mean(per_pair, axis=0)
    return {"method": "random (expected)", "ks": list(ks), "kappa": kappa,
            "mean": {f"hit@{k}": float(v) for k, v in zip(ks, mean)}}


def format_table(rows: Sequence[Mapping], ks: Sequence[int] = KS, title: str | None = None) -> str:
    """A plain-text table: one row per result dict (`to_dict()` form), Hit@k in percent."""
    ks = tuple(ks)
    name_w = max([len("method")] + [len(r["method"]) for r in rows])
    head = f"{'method':<{name_w}}  " + "  ".join(f"{'Hit@' + str(k):>7}" for k in ks)
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for r in rows:
        vals = [r["mean"].get(f"hit@{k}") for k in ks]
        lines.append(f"{r['method']:<{name_w}}  " + "  ".join(
            f"{100 * v:7.1f}" if v is not None else f"{'-':>7}" for v in vals))
    return "\n".join(lines)


def format_pair_table(result: CrossViewResult, k: int = 1) -> str:
    """Per-camera-pair Hit@k (percent), rows = query camera, columns = index camera."""
    m = result.pair_matrix(k)
    names = result.camera_names
    w = max(8, max(len(n) for n in names))
    lines = [f"{result.method}: Hit@{k} per camera pair (row: query camera, column: index camera)",
             f"{'':<{w}}  " + "  ".join(f"{n:>{w}}" for n in names)]
    for i, n in enumerate(names):
        lines.append(f"{n:<{w}}  " + "  ".join(
            f"{'-':>{w}}" if np.isnan(v) else f"{100 * v:>{w}.1f}" for v in m[i]))
    return "\n".join(lines)
