"""Small synthetic inputs for the evaluation's tests and smoke runs (not data for results).

`tiny_dataset` writes a prepared dataset (prpose.dataset format) of a few synthetic motions
(prpose.synthetic.generate_motions) seen by a ring of cameras, split by sequence; with `detections=True` it adds
detector-like 2D keypoints (format version 2) shaped like Human3.6M's Stacked Hourglass ones: the projected
joints plus pixel noise, no nose, and one camera of one sequence without any detections.
"""

from __future__ import annotations

import numpy as np


def tiny_dataset(path, sequences: int = 6, frames: int = 40, cameras: int = 3, seed: int = 0,
                 splits=("train", "train", "train", "test", "test", "val"), names=None, detections: bool = False,
                 noise_px: float = 4.0, missing_camera: tuple[int, int] | None = (3, 0)) -> None:
    """Write a prepared dataset: `sequences` motions of `frames` frames, `cameras` ring cameras.

    splits: split of each sequence (cycled). names: optional sequence names (default "seq{i}").
    detections: also write detector-like keypoints (detections2d: projections + N(0, noise_px) pixel noise; the
    nose never visible; sequence missing_camera[0] has no detections in camera missing_camera[1]).
    """
    from prpose.camera import ring_rig
    from prpose.dataset import write_dataset
    from prpose.synthetic import generate_motions

    motions = generate_motions(sequences, frames, seed=seed)
    rig = ring_rig(cameras, 4.5, 1.5, start_azimuth_deg=15.0)
    poses = np.concatenate(motions).astype(np.float32)
    uv, depth = zip(*(cam.project(poses) for cam in rig))
    k2d = np.stack(uv, 1).astype(np.float32)
    vis = np.stack(depth, 1) > 0.1
    n = len(poses)
    seq_names = list(names) if names is not None else [f"seq{i}" for i in range(sequences)]
    per_frame = lambda values: np.repeat(np.asarray(values, dtype=object), frames)  # noqa: E731
    extra = {}
    if detections:
        from prpose.keypoints import H36M17

        rng = np.random.default_rng(seed + 1)
        det = (k2d + rng.normal(0.0, noise_px, k2d.shape)).astype(np.float32)
        det_vis = vis.copy()
        det_vis[..., H36M17.index("nose")] = False
        if missing_camera is not None and missing_camera[0] < sequences:
            s, c = missing_camera
            det_vis[s * frames:(s + 1) * frames, c] = False
        extra = {"detections2d": np.where(det_vis[..., None], det, 0.0).astype(np.float32),
                 "detections_visible": det_vis,
                 "detections": {"detector": "synthetic noise", "profile": "mpii16", "noise_px": noise_px}}
    write_dataset(
        path, poses3d=poses, keypoints2d=k2d, visibility=vis, rigs=[rig], rig_index=np.zeros(n, np.int16),
        source=per_frame(["synthetic"] * sequences), subject=per_frame([f"s{i % 2}" for i in range(sequences)]),
        sequence=per_frame(seq_names), split=per_frame([splits[i % len(splits)] for i in range(sequences)]),
        frame=np.tile(np.arange(frames), sequences), camera_names=[c.name for c in rig],
        info={"converter": "eval.testing.tiny_dataset", "seed": seed}, **extra)
