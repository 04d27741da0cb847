"""Views: a frame's 2D keypoints seen from one camera, and the rule that says which views are usable.

A *view* is (frame, camera). :func:`prepare_views` is the one definition of a usable view, used by training
pairs (prpose.pairs), the retrieval protocol (prpose.protocol: training validation, ``prpose eval``, the
benchmarks) and real detections as training views: a view is usable when its 2D normalisation from its visible
joints is valid and every *required* joint is visible and finite (required: all joints of the profile by
default; the protocol does not require joints its 2D source never gives, like the Stacked Hourglass nose, and
real detected training views require none). Keypoints behind a camera have meaningless projections, and
partial views are produced on purpose by keypoint dropout (prpose.augment) rather than taken from wherever a
joint left the frame.

:class:`ViewSet` holds the frames a retrieval protocol runs on, seen from C cameras: built from a prepared
dataset (:func:`views_from_dataset`; the same frames in every camera: a frame is kept when its 3D pose
normalises and it is usable in every camera) or by projecting world poses into cameras
(:func:`views_from_cameras`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from prpose import keypoints as kp
from prpose.errors import PrposeError
from prpose.normalize import jit_normalize_2d, jit_normalize_3d

SOURCES = ("gt", "detected")


def prepare_views(keypoints2d_h36m17, visibility_h36m17, profile: str = "input13",
                  required: Sequence[str] | None = None):
    """Convert views to ``profile`` (by joint name), normalise them and apply the usable-view rule.

    Args:
      keypoints2d_h36m17: (..., 17, 2) pixels, h36m17 (h36m17 must hold every joint of ``profile``).
      visibility_h36m17: (..., 17) bool (in front of the camera and inside the image, or given by a detector).
      profile: the profile to convert to (the model's ``ModelConfig.input_profile``; input13 for the protocol).
      required: names of the ``profile`` joints that a usable view must show (visible and finite); None = all.
    Returns:
      (normalised (..., J, 2) float32, normalised from the visible joints (prpose.normalize.normalize_2d), zero
      at invisible joints and in unusable views; visible (..., J) bool, the visible finite joints of usable
      views; usable (...) bool, the 2D normalisation is valid and every required joint is visible and finite).
    """
    prof = kp.get_profile(profile)
    k = kp.convert(np.asarray(keypoints2d_h36m17, np.float32), "h36m17", profile)
    v = kp.convert(np.asarray(visibility_h36m17, bool), "h36m17", profile, axis=-1) & np.isfinite(k).all(axis=-1)
    need = list(range(prof.num_joints)) if required is None else [prof.index(j) for j in required]
    normalized, valid = jit_normalize_2d(k, v, profile=profile)
    usable = np.asarray(valid) & v[..., need].all(axis=-1)
    v = v & usable[..., None]
    return np.where(v[..., None], np.asarray(normalized, np.float32), 0.0).astype(np.float32), v, usable


def check_keypoints(keypoints2d, visible, profile: str = "input13"):
    """(M, J, 2) keypoints in `profile` and (M, J) bool visibility (all visible when None), checked."""
    j = kp.get_profile(profile).num_joints
    keypoints2d = np.asarray(keypoints2d, np.float32)
    if keypoints2d.ndim != 3 or keypoints2d.shape[1:] != (j, 2):
        raise PrposeError(f"keypoints2d: shape {keypoints2d.shape}, expected (M, {j}, 2) {profile}")
    visible = np.ones(keypoints2d.shape[:2], bool) if visible is None else np.asarray(visible, bool)
    if visible.shape != keypoints2d.shape[:2]:
        raise PrposeError(f"visible: shape {visible.shape}, expected {keypoints2d.shape[:2]}")
    return keypoints2d, visible


def input13_views(keypoints2d, visible, profile: str = "input13"):
    """Any profile -> the paper's 13 input keypoints (M, 13, 2) and visibility (M, 13), by joint name.

    REFERENCE.md's first input joint is "nose (or head)": where the nose is missing and the profile has a visible
    head (Stacked Hourglass gives a head top and no nose), the head takes the nose's place. Used by the model-free
    rows and the lifting baseline (prpose.eval.baselines), so that they use the joints both views of a pair have.
    """
    keypoints2d, visible = check_keypoints(keypoints2d, visible, profile)
    k13 = kp.convert(keypoints2d, profile, "input13")
    v13 = kp.convert(visible, profile, "input13", axis=-1)
    prof = kp.get_profile(profile)
    if "head" in prof.joints:
        head = prof.joints.index("head")
        swap = ~v13[:, 0] & visible[:, head]
        k13[swap, 0] = keypoints2d[swap, head]
        v13[swap, 0] = True
    return k13, v13


@dataclasses.dataclass(frozen=True)
class ViewSet:
    """Frames seen from C cameras, ready for cross-view retrieval (prpose.protocol).

    poses3d: (N, 17, 3) float64, h36m17, normalised (prpose.normalize.normalize_3d): the hit test's labels.
    keypoints2d: (N, C, J, 2) float32 in `profile` (J its joints; input13 unless asked otherwise), in any
        consistent 2D unit (pixels); methods normalise.
    visible: (N, C, J) bool, keypoints that a method may use (False where the 2D source lacks the joint, e.g.
        the nose of Stacked Hourglass detections).
    valid: (N, C) bool, views that are usable (:func:`prepare_views`); a frame enters a camera pair's queries /
        index only where it is valid in that camera, for every method alike.
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


def _usable_frames(poses3d, keypoints2d_h36m17, visibility_h36m17, required=None):
    """The frame rule of the ViewSet builders: a frame is kept when its 3D pose normalises and it is usable
    (:func:`prepare_views`, input13, ``required`` joint names) in every camera.

    Returns (poses3d normalised (N, 17, 3) float64, keep (N,) bool, usable (N, C) bool).
    """
    _, _, usable = prepare_views(keypoints2d_h36m17, visibility_h36m17, "input13", required)
    norm3d, ok3d = jit_normalize_3d(np.asarray(poses3d, np.float32))
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
    required = [j for j in kp.INPUT13.joints if provided[kp.H36M17.index(j)]]
    norm3d, keep, usable = _usable_frames(dataset.poses3d[rows], k2d, vis, required)
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
        "absent_joints": [j for j in kp.INPUT13.joints if j not in required],
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

    Used for views the model never saw (e.g. prpose.camera.elevation_ring_cameras). Image bounds are ignored on
    purpose (a view is usable when every joint is in front of the camera): the experiment tests viewpoint
    invariance, not framing.
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
    norm3d, keep, usable = _usable_frames(poses3d_world, k17, vis17)
    n = poses3d_world.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    k = np.flatnonzero(keep)
    settings = dict(settings or {})
    settings.update({"cameras": [c.name for c in cameras], "frames": int(k.size), "dropped_frames": int(n - k.size)})
    return ViewSet(norm3d[k], kp.convert(k17, "h36m17", "input13")[k],
                   kp.convert(vis17, "h36m17", "input13", axis=-1)[k], usable[k], tuple(c.name for c in cameras),
                   rows[k], {name: np.asarray(v)[k] for name, v in (labels or {}).items()}, settings)
