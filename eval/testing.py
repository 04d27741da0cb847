"""Small synthetic inputs for the evaluation's tests and smoke runs (not data for results).

`tiny_dataset` writes a prepared dataset (prpose.dataset format) of a few synthetic motions
(prpose.synthetic.generate_motions) seen by a ring of cameras, split by sequence.
"""

from __future__ import annotations

import numpy as np


def tiny_dataset(path, sequences: int = 6, frames: int = 40, cameras: int = 3, seed: int = 0,
                 splits=("train", "train", "train", "test", "test", "val"), names=None) -> None:
    """Write a prepared dataset: `sequences` motions of `frames` frames, `cameras` ring cameras.

    splits: split of each sequence (cycled). names: optional sequence names (default "seq{i}").
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
    write_dataset(
        path, poses3d=poses, keypoints2d=k2d, visibility=vis, rigs=[rig], rig_index=np.zeros(n, np.int16),
        source=per_frame(["synthetic"] * sequences), subject=per_frame([f"s{i % 2}" for i in range(sequences)]),
        sequence=per_frame(seq_names), split=per_frame([splits[i % len(splits)] for i in range(sequences)]),
        frame=np.tile(np.arange(frames), sequences), camera_names=[c.name for c in rig],
        info={"converter": "eval.testing.tiny_dataset", "seed": seed})
