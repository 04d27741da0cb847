"""`prpose demo`: the whole pipeline on built-in synthetic data, with no downloads.

It runs the same commands a user would type, printing each one, so the demo doubles as a tutorial:
prepare synthetic data -> train a small model -> index every frame as seen by all cameras but one -> query
with test frames (never trained on) seen from the remaining camera -> write a picture of each query beside its
matches, with each match's 3D error to the truth.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import time

import numpy as np


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="prpose-demo", help="folder for everything the demo writes (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (more is better, slower) (default: %(default)s)")
    parser.add_argument("--config", default="cpu", help="training preset (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=4, help="number of test poses to query (default: %(default)s)")
    parser.add_argument("--sequences", type=int, default=60, help="synthetic sequences to generate (default: %(default)s)")


def _run(argv: list[str]) -> None:
    from prpose.cli import main as cli_main
    from prpose.errors import PrposeError

    print(f"\n$ prpose {shlex.join(argv)}", flush=True)
    code = cli_main(argv)
    if code:
        raise PrposeError(f"step `prpose {shlex.join(argv)}` failed with exit code {code}")


def _write_queries(data_dir: pathlib.Path, out: pathlib.Path, count: int) -> None:
    """Pick test-split frames seen from the last camera and save their 2D keypoints as a query file."""
    from prpose.dataset import load_dataset

    dataset = load_dataset(data_dir)
    test = dataset.indices(split="test")
    rows = test[np.linspace(0, len(test) - 1, count).astype(int)]
    camera = len(dataset.camera_names) - 1
    np.savez(
        out,
        keypoints=np.asarray(dataset.keypoints2d[rows, camera]),
        scores=np.asarray(dataset.visibility[rows, camera], np.float32),
        profile="h36m17",
        pose3d=np.asarray(dataset.poses3d[rows]),  # the truth, so `query` can show how close each match is
    )
    print(f"\nwrote {count} query poses (test split, camera {dataset.camera_names[camera]}) to {out}")


def main(args) -> int:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, run, index = out / "data", out / "run", out / "index"
    queries, picture = out / "queries.npz", out / "matches.png"
    start = time.perf_counter()
    _run(["prep", "synthetic", "--out", str(data), "--sequences", str(args.sequences), "--overwrite"])
    _run(["train", "--config", args.config, "--data", str(data), "--out", str(run),
          "--set", f"steps={args.steps}"])
    # Index every frame as seen from all cameras but the last; query test frames (never trained on) as seen
    # from that last camera: the same 3D pose is in the index, only from other viewpoints.
    from prpose.dataset import load_dataset

    cameras = [str(c) for c in range(len(load_dataset(data).camera_names) - 1)]
    _run(["index", "build", "--model", str(run), "--data", str(data), "--out", str(index),
          "--cameras", *cameras, "--overwrite"])
    _write_queries(data, queries, args.queries)
    _run(["query", "--index", str(index), "--input", str(queries), "--k", "5", "--plot", str(picture)])
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\ndemo finished in {minutes:.1f} min. Outputs:\n"
        f"  prepared data   {data}\n  trained model   {run}\n  pose index      {index}\n"
        f"  queries         {queries}\n  matches picture {picture}"
    )
    return 0
