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
import shutil
import time

import numpy as np


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="prpose-demo", help="folder for everything the demo writes (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (more is better, slower) (default: %(default)s)")
    parser.add_argument("--config", default="cpu", help="training preset (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=4, help="number of test poses to query (default: %(default)s)")
    parser.add_argument("--sequences", type=int, default=60, help="synthetic sequences to generate (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier demo in --out (data/, run/, index/, queries.npz, "
                             "matches.png, each checked to be what the demo writes); without it a non-empty "
                             "--out is refused, and anything else in --out is never touched")


def _run(argv: list[str]) -> None:
    """Run one step as `prpose ARGV` would; its errors end the demo (one line, from the demo's handler)."""
    from prpose.cli import build_parser
    from prpose.errors import PrposeError

    print(f"\n$ prpose {shlex.join(argv)}", flush=True)
    args = build_parser(argv).parse_args(argv)
    code = int(args._run(args) or 0)
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


def _is_npz(path: pathlib.Path) -> bool:
    return path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"PK\x03\x04"


def _is_png(path: pathlib.Path) -> bool:
    return path.is_file() and not path.is_symlink() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _is_index(path: pathlib.Path) -> bool:
    import json

    from prpose.index import FORMAT_NAME, MANIFEST

    try:
        return not path.is_symlink() and json.loads((path / MANIFEST).read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _own_outputs() -> dict:
    """Name in --out -> the check that it is what the demo writes there (by format, not by name)."""
    from prpose.checkpoint import is_run_dir
    from prpose.dataset import _is_dataset_dir

    return {"data": lambda p: not p.is_symlink() and p.is_dir() and _is_dataset_dir(p), "run": is_run_dir,
            "index": _is_index, "queries.npz": _is_npz, "matches.png": _is_png}


def check_out_dir(out: pathlib.Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; even then, refuse if it holds anything the demo did not
    write (each entry is checked by its format). Nothing is changed here."""
    from prpose.errors import PrposeError

    if out.exists() and not out.is_dir():
        raise PrposeError(f"--out {out}: exists and is not a directory")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    if not overwrite:
        raise PrposeError(f"--out {out}: exists and is not empty; pass --overwrite to replace the outputs of an "
                          "earlier demo there, or choose a new folder")
    checks = _own_outputs()
    foreign = [e.name for e in entries if e.name not in checks or not checks[e.name](e)]
    if foreign:
        raise PrposeError(f"--out {out}: {', '.join(foreign)} not written by prpose demo (it writes "
                          f"{', '.join(checks)}); refusing to replace anything there")


def main(args) -> int:
    out = pathlib.Path(args.out)
    check_out_dir(out, args.overwrite)  # before any work: a refused --out costs nothing and changes nothing
    out.mkdir(parents=True, exist_ok=True)
    data, run, index = out / "data", out / "run", out / "index"
    queries, picture = out / "queries.npz", out / "matches.png"
    replace = ["--overwrite"] if args.overwrite else []
    start = time.perf_counter()
    _run(["prep", "synthetic", "--out", str(data), "--sequences", str(args.sequences), *replace])
    if run.exists():
        shutil.rmtree(run)  # an earlier demo's run (checked by check_out_dir): training refuses to reuse it
    _run(["train", "--config", args.config, "--data", str(data), "--out", str(run),
          "--set", f"steps={args.steps}"])
    # Index every frame as seen from all cameras but the last; query test frames (never trained on) as seen
    # from that last camera: the same 3D pose is in the index, only from other viewpoints.
    from prpose.dataset import load_dataset

    cameras = [str(c) for c in range(len(load_dataset(data).camera_names) - 1)]
    _run(["index", "build", "--model", str(run), "--data", str(data), "--out", str(index),
          "--cameras", *cameras, *replace])
    _write_queries(data, queries, args.queries)
    _run(["query", "--index", str(index), "--input", str(queries), "--k", "5", "--plot", str(picture)])
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\ndemo finished in {minutes:.1f} min. Outputs:\n"
        f"  prepared data   {data}\n  trained model   {run}\n  pose index      {index}\n"
        f"  queries         {queries}\n  matches picture {picture}"
    )
    return 0
