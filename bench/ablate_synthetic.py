"""Do synthetic poses help the packaged model? Train on the CMU + fair1 train takes with and without synthetic
motions added, same config / steps / seed, and compare cross-view Hit@k on the held-out CMU test takes.

    python bench/ablate_synthetic.py --cmu DIR [--work DIR] [--steps 5000] [--sequences 200] [--set KEY=VALUE ...]

DIR is ``prpose prep bvh ../shared/data/mocap/cmu ../shared/data/mocap/fair1 --out DIR``. The synthetic motions
(``prpose prep synthetic``, procedural skeleton with joint limits) enter only the training split; validation
and test stay the CMU takes. Prints one table row per variant with the training time.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent


def merge_train(cmu_dir: pathlib.Path, synthetic_dir: pathlib.Path, out: pathlib.Path) -> None:
    """CMU dataset + the train split of a synthetic dataset, as one prepared dataset (synthetic rigs appended)."""
    from prpose.dataset import load_dataset, write_dataset

    a, b = load_dataset(cmu_dir), load_dataset(synthetic_dir)
    if list(a.camera_names) != list(b.camera_names):
        raise SystemExit(f"camera names differ: {a.camera_names} vs {b.camera_names}")
    rows_b = b.indices(split="train")

    def cat(name):
        return np.concatenate([np.asarray(getattr(a, name)), np.asarray(getattr(b, name))[rows_b]])

    write_dataset(
        out, poses3d=cat("poses3d"), keypoints2d=cat("keypoints2d"), visibility=cat("visibility"),
        rigs=list(a.rigs) + list(b.rigs),
        rig_index=np.concatenate([np.asarray(a.rig_index), np.asarray(b.rig_index)[rows_b] + len(a.rigs)]),
        **{name: np.concatenate([a.labels(name), b.labels(name, rows_b)]) for name in ("source", "subject", "sequence",
                                                                                     "split")},
        frame=cat("frame"), camera_names=list(a.camera_names),
        info={"merged": [str(cmu_dir), f"{synthetic_dir} (train split)"]}, overwrite=True)


def evaluate(run_dir: pathlib.Path, data: pathlib.Path) -> dict:
    from prpose.inference import load_model
    from prpose.protocol import embedder_hit_at_k

    result = embedder_hit_at_k(load_model(run_dir), data, "test", ks=(1, 5, 10, 20), every=3, candidates=100)
    return {k: v for k, v in result.items() if k.startswith("hit@") or k in ("num_frames",)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cmu", required=True)
    parser.add_argument("--work", default="/tmp/prpose-ablate-synthetic")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    synthetic, merged = work / "synthetic", work / "cmu+synthetic"
    if not (synthetic / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "prpose.cli", "prep", "synthetic", "--out", str(synthetic),
                        "--sequences", str(args.sequences)], check=True, cwd=REPO)
    merge_train(pathlib.Path(args.cmu), synthetic, merged)
    rows = []
    for name, data in (("cmu+fair1", pathlib.Path(args.cmu)), ("cmu+fair1+synthetic", merged)):
        run_dir = work / f"run-{name}"
        cmd = [sys.executable, "-m", "prpose.cli", "train", "--config", "cpu", "--data", str(data), "--out",
               str(run_dir), "--no-progress", "--set", f"train.steps={args.steps}", "train.eval_every=0", *args.set]
        if not (run_dir / "checkpoints").is_dir():
            print("$", " ".join(cmd), flush=True)
            start = time.time()
            subprocess.run(cmd, check=True, cwd=REPO)
            (run_dir / "seconds.txt").write_text(f"{time.time() - start:.0f}")
        result = evaluate(run_dir, pathlib.Path(args.cmu))
        rows.append((name, result, (run_dir / "seconds.txt").read_text()))
        print(name, json.dumps(result), flush=True)
    print(f"\ncross-view Hit@k on the CMU test takes (every 3rd frame, 4 cameras, 12 ordered pairs), {args.steps} steps")
    print("| training data | Hit@1 | Hit@5 | Hit@10 | Hit@20 | train s |")
    print("|---|---|---|---|---|---|")
    for name, r, seconds in rows:
        print(f"| {name} | " + " | ".join(f"{100 * r[f'hit@{k}']:.1f}" for k in (1, 5, 10, 20)) + f" | {seconds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
