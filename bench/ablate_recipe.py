"""Ablation of the training recipe's ingredients: train each variant, then run the robustness table on it.

    python bench/ablate_recipe.py --data /work/data/mocap --out RUNS [--only A B ...] [--parallel 4]
        [--set train.steps=...] [--bench-args "--every 10"]

Each variant is the `cpu` preset with every ingredient field set explicitly (so a later change of the preset
does not change what a variant means), plus its own overrides. Runs go to RUNS/<variant>/ (train.log,
robustness.json); RUNS/summary.json and the printed table hold Hit@1 per robustness row, its ratio to clean, and
each run's training wall time. Variants run ``--parallel`` at a time (separate processes; on one GPU set
XLA_PYTHON_CLIENT_PREALLOCATE=false, which this script does for its children).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The cpu preset before this study, field by field (the variants below add to it; "soft_w512" is today's preset
# on a dataset without detections).
BASE = ("augment.depth=2.0", "augment.depth_max=0", "augment.elevation_range=-30,30", "augment.roll_range=-30,30",
        "augment.detector_noise_probability=0", "augment.dropout_p_apply=0", "augment.structured_probability=0",
        "augment.emit_visibility=false", "model.mask_mode=none", "loss.labels_visible_only=false",
        "augment.detection_probability=0", "augment.profile_dropout=0", "model.width=256", "train.eval_every=0")
DEPTH = ("augment.depth=5", "augment.depth_max=14")
WIDE = ("augment.elevation_range=-60,60",)
NOISE = ("augment.detector_noise_probability=0.5",)
DROPOUT = ("augment.dropout_p_apply=0.3", "augment.dropout_p_drop=0.2", "augment.structured_probability=0.2",
           "augment.emit_visibility=true", "model.mask_mode=both", "loss.labels_visible_only=true")
SOFT = ("augment.detector_noise_probability=0.3", "augment.dropout_p_apply=0.2", "augment.dropout_p_drop=0.2",
        "augment.structured_probability=0.1", "augment.emit_visibility=true", "model.mask_mode=both",
        "loss.labels_visible_only=true")
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "depth": DEPTH,
    "depth_wide": DEPTH + WIDE,
    "noise": NOISE,
    "dropout": DROPOUT,
    "depth_wide_noise": DEPTH + WIDE + NOISE,
    "all": DEPTH + WIDE + NOISE + DROPOUT,
    "all_narrow": DEPTH + NOISE + DROPOUT,
    "all_40k": DEPTH + WIDE + NOISE + DROPOUT + ("train.steps=40000",),
    "all_w512": DEPTH + WIDE + NOISE + DROPOUT + ("model.width=512",),
    "all_w768": DEPTH + WIDE + NOISE + DROPOUT + ("model.width=768",),
    "soft_w512": DEPTH + WIDE + SOFT + ("model.width=512",),
}


def run_variant(name: str, overrides: tuple[str, ...], args) -> dict:
    out = pathlib.Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONPATH=str(ROOT))
    train = [sys.executable, str(ROOT / "train.py"), "--config", "cpu", "--data", args.data, "--out", str(out / "run"),
             "--no-progress", "--set", *BASE, *overrides, *args.set]
    bench = [sys.executable, str(ROOT / "bench" / "bench_robustness.py"), "--model", str(out / "run"), "--data",
             args.data, "--json", str(out / "robustness.json"), *shlex.split(args.bench_args)]
    record = {"variant": name, "overrides": list(overrides), "train_command": shlex.join(train),
              "bench_command": shlex.join(bench)}
    with open(out / "train.log", "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(train, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            rc = proc.wait(timeout=max(args.deadline - (time.time() - args.started), 1) if args.deadline else None)
        except subprocess.TimeoutExpired:  # out of time: stop, and bench the last complete checkpoint
            proc.terminate()
            proc.wait()
            rc = 0 if any((out / "run" / "checkpoints").glob("*/meta")) else -1
            record["stopped_at_deadline"] = True
        record["train_seconds"] = round(time.perf_counter() - start, 1)
        record["train_rc"] = rc
        if rc == 0:
            start = time.perf_counter()
            rc = subprocess.call(bench, stdout=log, stderr=subprocess.STDOUT, env=env)
            record["bench_seconds"] = round(time.perf_counter() - start, 1)
            record["bench_rc"] = rc
    if (out / "robustness.json").is_file():
        record["rows"] = json.loads((out / "robustness.json").read_text())["rows"]
    print(f"{name}: train {record.get('train_seconds')} s (rc {record['train_rc']}), bench "
          f"{record.get('bench_seconds')} s (rc {record.get('bench_rc')})", flush=True)
    return record


def summary_table(records: list[dict]) -> str:
    settings = []
    for r in records:
        for row in r.get("rows", []):
            if row["setting"] not in settings:
                settings.append(row["setting"])
    head = f"{'variant':<18}{'train s':>8}" + "".join(f"{s[:13]:>14}" for s in settings)
    lines = ["Pr-VIPE Hit@1 % (ratio to clean); * = stopped at the deadline", head]
    for r in records:
        rows = {row["setting"]: row for row in r.get("rows", []) if row["method"] == "Pr-VIPE"}
        cells = "".join(f"{100 * rows[s]['hit@1']:7.1f} ({rows[s]['ratio_to_clean']:.2f})" if s in rows
                        else f"{'-':>14}" for s in settings)
        flag = "*" if r.get("stopped_at_deadline") else ""
        lines.append(f"{r['variant'] + flag:<18}{r.get('train_seconds', 0):8.0f}" + cells)
    base = next((r for r in records if r.get("rows")), None)
    if base:
        rows = {row["setting"]: row for row in base["rows"] if row["method"] != "Pr-VIPE"}
        lines.append(f"{'2D keypoints':<18}{'':>8}" + "".join(
            f"{100 * rows[s]['hit@1']:7.1f} ({rows[s]['ratio_to_clean']:.2f})" if s in rows else f"{'-':>14}"
            for s in settings))
    return "\n".join(lines)


def main(argv=None) -> int:
    from concurrent.futures import ThreadPoolExecutor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="variants to run (default all)")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every variant (e.g. train.steps=200)")
    parser.add_argument("--bench-args", default="", help="extra bench_robustness.py arguments")
    parser.add_argument("--deadline", type=float, default=0,
                        help="seconds after start when unfinished trainings are stopped and their last checkpoint "
                             "is benchmarked (recorded as stopped_at_deadline; 0 = no deadline)")
    args = parser.parse_args(argv)
    args.started = time.time()
    names = args.only or list(VARIANTS)
    print(f"ablate_recipe: {len(names)} variants, {args.parallel} at a time; base overrides {' '.join(BASE)}",
          flush=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        records = list(pool.map(lambda n: run_variant(n, VARIANTS[n], args), names))
    table = summary_table(records)
    print("\n" + table)
    out = pathlib.Path(args.out)
    (out / "summary.json").write_text(json.dumps(records, indent=1))
    (out / "summary.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
