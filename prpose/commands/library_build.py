"""`prpose library build`: distinct 3D poses of a prepared dataset + their embeddings, as a compact pose library."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from prpose.library import DEFAULT_MIN_DISTANCE

    parser.add_argument("--model", default=None,
                        help="packaged model name, exported model or training run (default: the packaged model)")
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--out", required=True, help="library directory to write (library.npz + library.json)")
    parser.add_argument("--split", nargs="+", default=["train", "val"],
                        help="splits to include (default: %(default)s; keep held-out takes out)")
    parser.add_argument("--min-distance", type=float, default=DEFAULT_MIN_DISTANCE,
                        help="leave out frames within this NP-MPJPE of a kept frame of the same take "
                             "(default: %(default)s; poses match below 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples regenerated at load time")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def main(args) -> int:
    import pathlib

    from prpose.dataset import load_dataset
    from prpose.inference import load_model
    from prpose.library import PoseLibrary, build_library, save_library

    from prpose import atomic
    from prpose.library import is_library_dir

    out = pathlib.Path(args.out)
    atomic.check_target(out, args.overwrite, is_library_dir, "prpose pose library")  # before the long work
    dataset = load_dataset(args.data)
    model = load_model(args.model)
    library = build_library(model, dataset, splits=tuple(args.split), min_distance=args.min_distance, seed=args.seed,
                            info={"dataset": str(pathlib.Path(args.data).resolve()), "splits": args.split})
    save_library(library, out, overwrite=args.overwrite)
    saved = PoseLibrary(out, expected_fingerprint=model.fingerprint)
    m = saved.manifest
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"library: {m['num_poses']} distinct poses of {m['num_frames']} frames (min NP-MPJPE {m['min_distance']}), "
          f"{m['num_entries']} camera views ({m['skipped_views']} skipped: torso not visible) -> {out} "
          f"[{size / 1e6:.2f} MB]")
    return 0
