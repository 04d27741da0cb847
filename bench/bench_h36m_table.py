"""The paper's Human3.6M table, for real: ours beside the published rows, with ground-truth and detected 2D.

Protocol (REFERENCE.md, "Evaluation protocol"): test subjects S9 and S11, the authors' frame list (the same
frames in all four cameras), every ordered camera pair (12), Hit@k = a query hits when one of its k nearest index
entries has NP-MPJPE < 0.1 to its 3D pose; the mean over pairs. Queries and index use the same 2D source: the
projected ground truth ("gt") or the Stacked Hourglass detections shipped with 3d-pose-baseline ("detected");
the hit is always judged on the 3D poses. Both sources are evaluated on the same frames (those usable with both).

Rows: 2D-keypoint nearest neighbour, 3D lifting then NP-MPJPE, L2-VIPE, Pr-VIPE (match distance), and any extra
embedders given with --model NAME=RUN. Ranking is two-stage by default (prpose.protocol: exact match distance /
NP-MPJPE on the --candidates entries nearest by L2 of embedding means / of pose-distance matrices);
--check-every N reruns the two-stage rows exactly on every N-th frame and prints both.

Commands (prepared data: `prpose prep h36m /work/h36m --out /work/data/h36m --keep-frames
../shared/data/h36m_eval_frames.json ...`, see the h36m section of README.md):

    python train.py --config cpu --data /work/data/h36m --out RUNS/prvipe
    python train.py --config cpu --data /work/data/h36m --out RUNS/l2vipe --set loss.embedding=l2
    python train.py --config cpu --data /work/data/h36m --out RUNS/lifter --set train.task=lifting
    python bench/bench_h36m_table.py --data /work/data/h36m --prvipe RUNS/prvipe --l2vipe RUNS/l2vipe \\
        --lifter RUNS/lifter [--model "Pr-VIPE robust=RUNS/robust"] [--check-every 10] [--json table.json]

Prints the frame accounting (how many of the authors' 10,910 frames x 4 cameras the data provides and how many
each 2D source can use), a progress line per camera pair, and the table in percent.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# Published Hit@1/@10/@20 (%) on Human3.6M (REFERENCE.md, "Published results"); None where it lists none.
# REFERENCE.md gives the baselines without naming their 2D source; the paper's main table uses detected 2D.
PUBLISHED = {
    "2D keypoints": {"gt": None, "detected": "28.7 / 47.1 / 50.9"},
    "3D lifting + NP-MPJPE": {"gt": None, "detected": "69.0 / 89.7 / 92.7"},
    "L2-VIPE": {"gt": None, "detected": None},
    "Pr-VIPE (match probability)": {"gt": "97.6 / 99.9 / 100.0", "detected": "72.1-76.2 / 94.3-95.6 / 96.8-97.7"},
}
AUTHORS_FRAMES = 10910  # lines per camera in the authors' h36m-val-C{0..3}.txt
KS = (1, 10, 20)


def _say(*a):
    print(*a, flush=True)


def build_methods(args, candidates):
    from prpose import protocol
    from prpose.eval import baselines
    from prpose.eval.lifting import Lifter
    from prpose.inference import load_model

    methods, models = ([] if args.no_2d else [baselines.Keypoints2DMethod()]), {}
    if args.lifter:
        methods.append(baselines.LiftingMethod(Lifter(args.lifter).lift, candidates=candidates))
        models["3D lifting + NP-MPJPE"] = str(args.lifter)
    if args.l2vipe:
        m = load_model(args.l2vipe)
        methods.append(protocol.EmbeddingMethod(m, "l2", name="L2-VIPE"))
        if args.head_as_nose:
            methods.append(protocol.EmbeddingMethod(m, "l2", name="L2-VIPE, head top as nose", head_as_nose=True))
        models["L2-VIPE"] = {"run": str(args.l2vipe), "fingerprint": m.fingerprint}
    if args.prvipe:
        m = load_model(args.prvipe)
        methods.append(protocol.EmbeddingMethod(m, "match", candidates=candidates))
        if args.head_as_nose:
            methods.append(protocol.EmbeddingMethod(m, "match", name="Pr-VIPE, head top as nose",
                                                    candidates=candidates, head_as_nose=True))
        models["Pr-VIPE (match probability)"] = {"run": str(args.prvipe), "fingerprint": m.fingerprint}
    for spec in args.model:
        name, _, run = spec.partition("=")
        if not run:
            raise SystemExit(f"--model {spec!r}: expected NAME=RUN")
        m = load_model(run)
        methods.append(protocol.EmbeddingMethod(m, "match", name=name, candidates=candidates))
        models[name] = {"run": run, "fingerprint": m.fingerprint}
    return methods, models


def frame_accounting(dataset, views) -> dict:
    info = (getattr(dataset, "info", None) or {}).get("keep_frames", {})
    out = {"authors_frames_per_camera": AUTHORS_FRAMES,
           "listed_frames": info.get("listed_frames"), "provided_frames": info.get("provided_frames"),
           "missing_trials": info.get("missing_trials"),
           "test_frames_in_dataset": int(len(dataset.indices(split="test")))}
    for v in views:
        s = v.settings
        out[s["source"]] = {"usable_frames": s["frames"], "dropped": s["dropped_frames"],
                            "unusable_by_camera": s["unusable_by_camera"], "absent_joints": s["absent_joints"]}
    return out


def print_table(results, frames, rankings) -> None:
    _say("")
    _say(f"Human3.6M S9/S11, {frames} frames x 4 cameras, 12 ordered camera pairs, Hit@1 / @10 / @20 (%), "
         f"ranking {', '.join(rankings)}")
    w = max([len("method")] + [len(r["method"]) for r in results]) + 2
    _say(f"{'method':<{w}}{'2D':<10}{'ours':<22}published")
    for src in ("gt", "detected"):
        for r in results:
            if r["source"] != src:
                continue
            pub = PUBLISHED.get(r["method"], {}).get(r["source"])
            ours = " / ".join(f"{100 * r['mean'][f'hit@{k}']:.1f}" for k in KS)
            _say(f"{r['method']:<{w}}{r['source']:<10}{ours:<22}{pub or '-'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="prepared Human3.6M (format v2, with detections)")
    p.add_argument("--prvipe", help="Pr-VIPE run directory")
    p.add_argument("--l2vipe", help="L2-VIPE run directory (loss.embedding=l2)")
    p.add_argument("--lifter", help="lifting baseline run directory (eval.lifting)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=RUN", help="extra Pr-VIPE rows")
    p.add_argument("--head-as-nose", action="store_true",
                   help="also rows feeding the embedders the head top in the nose's place (detections lack a nose; "
                        "by default it is fed as missing)")
    p.add_argument("--sources", nargs="+", default=["gt", "detected"], choices=["gt", "detected"])
    p.add_argument("--every", type=int, default=1, help="keep every n-th test frame (1: the authors' list)")
    p.add_argument("--candidates", type=int, default=100, help="two-stage ranking width (0: exact)")
    p.add_argument("--check-every", type=int, default=0,
                   help="also rank exactly on every n-th frame and print two-stage vs exact (0: skip)")
    p.add_argument("--no-2d", action="store_true", help="leave out the 2D-keypoint row")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--tables", nargs="+", metavar="JSON",
                   help="print one table from earlier --json outputs (rows evaluated in several runs) and exit")
    args = p.parse_args(argv)
    if args.tables:
        runs = [json.loads(pathlib.Path(t).read_text()) for t in args.tables]
        frames = {r["frames"].get("gt", r["frames"].get("detected", {})).get("usable_frames") for r in runs}
        if len(frames) != 1:
            raise SystemExit(f"--tables: the runs used different frames ({sorted(map(str, frames))})")
        print_table([row for r in runs for row in r["results"]], frames.pop(), sorted({r["ranking"] for r in runs}))
        for r in runs:
            for c in r.get("checks", []):
                _say(f"check [{c['source']}] {c['method']} on {c['frames']} frames: two-stage "
                     + " / ".join(f"{100 * x:.1f}" for x in c["two_stage"]) + " vs exact "
                     + " / ".join(f"{100 * x:.1f}" for x in c["exact"])
                     + ("; per-query hits identical" if c["identical_hits"] else "; per-query hits differ"))
        return 0
    if not args.data:
        p.error("--data is required (unless --tables)")

    from prpose import protocol
    from prpose.dataset import load_dataset
    from prpose.views import common_frames, views_from_dataset

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    views = [views_from_dataset(dataset, "test", args.every, source=s, profile="h36m17")
             for s in args.sources]
    views = common_frames(*views) if len(views) > 1 else views
    acc = frame_accounting(dataset, views)
    _say(f"frames: the authors list {AUTHORS_FRAMES} per camera; the data provides {acc['provided_frames']} "
         f"(missing trials {acc['missing_trials']}); test split {acc['test_frames_in_dataset']}, every {args.every}")
    for v in views:
        s = v.settings
        _say(f"  {s['source']}: {s['frames']} frames x {v.num_cameras} cameras used ({s['dropped_frames']} dropped; "
             f"unusable per camera {s['unusable_by_camera']}; joints the source lacks: {s['absent_joints'] or 'none'})")
    candidates = args.candidates or None
    methods, models = build_methods(args, candidates)
    results = []
    for v in views:
        src = v.settings["source"]
        for m in methods:
            if src == "gt" and getattr(m, "head_as_nose", False):
                continue  # ground truth has a nose: the same views, the same numbers
            line = protocol.pair_line(f"  [{src}] {m.name}", KS, time.perf_counter())
            r = protocol.cross_view_hit_at_k(m, v, KS, progress=lambda *a: _say(line(*a)))
            results.append({"source": src, **r.to_dict()})
            _say(f"{src:>8}  {m.name}: " + " / ".join(f"{100 * x:.1f}" for x in r.mean) + f"  ({r.seconds:.0f} s)")

    checks = []
    if args.check_every and candidates:
        for v in views:
            sub = v.subset(range(0, v.num_frames, args.check_every))
            for m in methods:
                if getattr(m, "candidates", None) is None or getattr(m, "head_as_nose", False):
                    continue
                exact = copy.copy(m)
                exact.candidates = None
                a = protocol.cross_view_hit_at_k(m, sub, KS)
                b = protocol.cross_view_hit_at_k(exact, sub, KS)
                same = all((x.hits == y.hits).all() for x, y in zip(a.pairs, b.pairs))
                checks.append({"source": v.settings["source"], "method": m.name, "frames": sub.num_frames,
                               "two_stage": a.mean.tolist(), "exact": b.mean.tolist(), "identical_hits": bool(same),
                               "seconds_two_stage": round(a.seconds, 1), "seconds_exact": round(b.seconds, 1)})
                _say(f"check [{v.settings['source']}] {m.name} on {sub.num_frames} frames: two-stage "
                     + " / ".join(f"{100 * x:.1f}" for x in a.mean) + f" ({a.seconds:.0f} s), exact "
                     + " / ".join(f"{100 * x:.1f}" for x in b.mean) + f" ({b.seconds:.0f} s); per-query hits "
                     + ("identical" if same else "differ"))

    print_table(results, views[0].num_frames,
                [f"two-stage, {candidates} candidates" if candidates else "exact"])
    _say(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "data": str(args.data), "frames": acc, "models": models, "ks": list(KS),
            "ranking": f"two-stage, {candidates} candidates" if candidates else "exact",
            "results": [{k: r[k] for k in ("source", "method", "mean", "pairs", "seconds")} for r in results],
            "published": PUBLISHED, "checks": checks}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
