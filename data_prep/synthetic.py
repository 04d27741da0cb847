"""`prpose prep synthetic`: a prepared dataset of procedurally generated (SYNTHETIC) human motion.

No download and no real people: poses come from ``prpose.synthetic`` (a kinematic skeleton with joint
limits), projected into a Human3.6M rig (subject S9's real cameras) or a ring of N cameras. Sequences are
split 80/10/10 into train/val/test, deterministically from the seed. Defaults give 20,000 frames in a few
seconds; use it for tests, demos and smoke runs, never to report accuracy on real data.
"""

from __future__ import annotations

import argparse
import sys
import time

from prpose.data_prep.common import SequenceInput, assign_splits, write_sequences
from prpose.camera import h36m_rig, ring_rig
from prpose.dataset import check_target
from prpose.errors import PrposeError
from prpose.synthetic import FPS, generate_motions

DEFAULT_OUT = "prpose-data/synthetic"
# Ring rig geometry: far enough that a person wandering within ~1.6 m of the centre stays in view.
RING_DISTANCE = 5.0
RING_HEIGHT = 1.5


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output dataset directory (default {DEFAULT_OUT})")
    parser.add_argument("--sequences", type=int, default=200, help="number of motions (default 200)")
    parser.add_argument("--frames", type=int, default=100, help="frames per motion at 30 Hz (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--rig", choices=("h36m", "ring"), default="h36m",
                        help="cameras: Human3.6M S9's four real cameras, or a ring (default h36m)")
    parser.add_argument("--cameras", type=int, default=4, help="ring rig: number of cameras (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def build_rig(kind: str, cameras: int):
    if kind == "h36m":
        return h36m_rig("S9")
    if kind == "ring":
        if cameras < 1:
            raise PrposeError(f"--cameras must be >= 1 for the ring rig; got {cameras}")
        return ring_rig(cameras, distance=RING_DISTANCE, height=RING_HEIGHT, target_height=1.0)
    raise PrposeError(f"--rig {kind!r}; expected 'h36m' or 'ring'")


def main(args) -> int:
    for name in ("sequences", "frames"):
        if getattr(args, name) < 1:
            raise PrposeError(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.seed < 0:
        raise PrposeError(f"--seed must be >= 0; got {args.seed}")
    rig = build_rig(args.rig, args.cameras)
    check_target(args.out, getattr(args, "overwrite", False))  # fail before any work
    start = time.perf_counter()
    poses, kinds = generate_motions(args.sequences, args.frames, args.seed, return_kinds=True)
    sequences = [
        SequenceInput(name=f"synthetic/{i:05d}-{kind}", subject="synthetic", source="synthetic", poses3d=p)
        for i, (p, kind) in enumerate(zip(poses, kinds))
    ]
    splits = assign_splits([s.name for s in sequences], (0.8, 0.1, 0.1), seed=args.seed)
    info = {
        "converter": "prpose prep synthetic",
        "synthetic": True,
        "note": "procedurally generated poses (prpose.synthetic), not real motion capture",
        "sequences": args.sequences, "frames": args.frames, "seed": args.seed, "fps": FPS,
        "rig": args.rig if args.rig == "h36m" else f"ring x{args.cameras} (distance {RING_DISTANCE} m, height {RING_HEIGHT} m)",
        "h36m_rig_subject": "S9" if args.rig == "h36m" else None,
        "split": "by sequence, 80/10/10, deterministic in the seed",
    }
    dataset = write_sequences(args.out, sequences, rig, splits, info=info,
                              overwrite=getattr(args, "overwrite", False), progress=True)
    print(dataset.summary())
    print(f"wrote {len(dataset):,d} frames to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m prpose.data_prep.synthetic
    from prpose.cli import run_script

    sys.exit(run_script("prpose prep synthetic", configure_parser, main))
