"""Retrain the packaged model prpose-cmu-v1 from the shared motion capture and report its model-card numbers.

    python bench/train_shipped_model.py [--mocap ../shared/data/mocap] [--work /tmp/prpose-shipped]
        [--out prpose/models/prpose-cmu-v1] [--set KEY=VALUE ...] [--stage all|package|eval] [--h36m-data DIR]

Stages (each an ordinary prpose command, printed as it runs):
  1. prepare: ``prpose prep bvh MOCAP/cmu MOCAP/fair1`` (CMU: free for any use; AnimatedDrawings fair1: MIT).
     Never the Bandai Namco clips (non-commercial, no derivatives) nor Human3.6M. Splits by take; the test takes
     are held out of training and of the library.
  2. train: ``prpose train --config cpu`` (the robust recipe) on the train split (timed), with the detector-noise
     augmentation drawn from the COCO annotator sigmas (prpose/data/detector_noise_coco.json) instead of the
     packaged Stacked Hourglass fit, which was measured on Human3.6M.
  3. package: ``prpose export`` and ``prpose library build`` (train + val takes) into WORK/package, plus
     reference.json (the example detections embedded, for the packaged-model test); then those files replace
     the ones in --out (MODEL_CARD.md stays).
  4. eval: cross-view Hit@k on the held-out takes (bench/bench_robustness.py: clean, detector noise, missing
     joints, occluded parts, steep cameras) and, when PRPOSE_H36M is set (or --h36m-data names a prepared
     Human3.6M with detections), Human3.6M S9/S11 with ground-truth and detected 2D (the same bench's --h36m
     rows). The numbers go into MODEL_CARD.md by hand, with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA_SOURCES = ("cmu", "fair1")  # licences allow redistributing a derived model (see MODEL_CARD.md)
# The recipe's detector noise, from published COCO constants rather than the Human3.6M fit.
RECIPE = ("augment.detector_noise_model=prpose/data/detector_noise_coco.json",)
EXAMPLE = REPO / "examples" / "cmu_detections_coco17.json"


def run(argv: list[str]) -> None:
    print(f"\n$ {shlex.join(argv)}", flush=True)
    subprocess.run(argv, check=True, cwd=REPO)


def prpose(*args: str) -> list[str]:
    return [sys.executable, "-m", "prpose.cli", *args]


def write_reference(model_dir: pathlib.Path) -> None:
    """Embed the example detections with the packaged model and store input and output (tests/test_packaged_model.py)."""
    sys.path.insert(0, str(REPO))
    from prpose.inference import load_model
    from prpose.keypoint_io import read_keypoints

    model = load_model(model_dir)
    poses = read_keypoints(EXAMPLE)
    emb = model.embed(poses.keypoints, profile=poses.profile, scores=poses.scores)
    reference = {"fingerprint": model.fingerprint, "profile": poses.profile, "score_threshold": 0.3,
                 "keypoints": poses.keypoints.tolist(), "scores": poses.scores.tolist(),
                 "mean": emb.mean.tolist(), "stddev": emb.stddev.tolist(), "samples": emb.samples[:, :3].tolist()}
    (model_dir / "reference.json").write_text(json.dumps(reference))
    print(f"wrote {model_dir / 'reference.json'}")


def install(staged: pathlib.Path, out: pathlib.Path) -> None:
    """Copy a staged model (weights, config, manifest, reference, library) over --out, keeping its model card."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "weights.npz", "model.json", "reference.json"):
        shutil.copyfile(staged / name, out / name)
    shutil.rmtree(out / "library", ignore_errors=True)
    shutil.copytree(staged / "library", out / "library")
    print(f"installed {staged} -> {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mocap", default=str(REPO.parent / "shared" / "data" / "mocap"))
    parser.add_argument("--work", default="/tmp/prpose-shipped", help="prepared data and training run go here")
    parser.add_argument("--out", default=str(REPO / "prpose" / "models" / "prpose-cmu-v1"))
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--set", nargs="*", default=list(RECIPE),
                        help="training overrides (recorded in the model; default: %(default)s)")
    parser.add_argument("--h36m-data", default=None,
                        help="prepared Human3.6M with detections for the eval rows (default: prepared from "
                             "$PRPOSE_H36M into WORK/h36m when that is set)")
    parser.add_argument("--stage", choices=("all", "package", "eval"), default="all",
                        help="all: prepare, train, package, eval; package: from an existing run; eval: numbers only")
    args = parser.parse_args()
    work, out = pathlib.Path(args.work), pathlib.Path(args.out)
    data, run_dir = work / "cmu", work / "run"
    inputs = [str(pathlib.Path(args.mocap) / s) for s in DATA_SOURCES]
    train_cmd = ["train", "--config", args.config, "--data", str(data), "--out", str(run_dir), "--no-progress"]
    if args.set:
        train_cmd += ["--set", *args.set]
    if args.stage == "all":
        if not (data / "manifest.json").is_file():
            run(prpose("prep", "bvh", *inputs, "--out", str(data)))
        start = time.time()
        run(prpose(*train_cmd))
        (work / "train_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    if args.stage in ("all", "package"):
        seconds = float((work / "train_seconds.txt").read_text()) if (work / "train_seconds.txt").is_file() else None
        info = {"training_data": {"sources": list(DATA_SOURCES), "inputs": [f"../shared/data/mocap/{s}" for s in DATA_SOURCES],
                                  "split": "train takes (prpose prep bvh default split, seed 0)"},
                "training_command": "prpose " + shlex.join(train_cmd),
                "training_seconds": seconds, "machine": f"{os.cpu_count()} CPU cores"}
        staged = work / "package" / out.name
        run(prpose("export", "--model", str(run_dir), "--out", str(staged), "--name", out.name, "--overwrite",
                   "--info", json.dumps(info)))
        run(prpose("library", "build", "--model", str(staged), "--data", str(data), "--out",
                   str(staged / "library"), "--overwrite"))
        write_reference(staged)
        install(staged, out)
    if args.stage in ("all", "eval"):
        h36m = pathlib.Path(args.h36m_data) if args.h36m_data else None
        if h36m is None and os.environ.get("PRPOSE_H36M"):
            h36m = work / "h36m"
            if not (h36m / "manifest.json").is_file():
                run(prpose("prep", "h36m", os.environ["PRPOSE_H36M"], "--out", str(h36m), "--subsample", "5",
                           "--keep-frames", str(pathlib.Path(args.mocap).parent / "h36m_eval_frames.json")))
        bench = [sys.executable, str(REPO / "bench" / "bench_robustness.py"), "--model", str(out), "--data", str(data),
                 "--split", "test", "--every", "10", "--json", str(work / "robustness.json")]
        run(bench + (["--h36m", str(h36m), "--h36m-every", "10"] if h36m else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
