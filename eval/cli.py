"""`prpose eval`: the cross-view retrieval protocol with baselines, and the optional analyses.

    prpose eval --data DIR [--model RUN] [--l2vipe RUN] [--lifter RUN | --train-lifter RUN] [--dropout-model RUN]
                [--source {gt,detected,both}] [--split test] [--every 10] [--max-frames N] [--cameras A B ...]
                [--ks 1 5 10 20] [--kappa 0.1] [--candidates 100 | --exact]
                [--unseen-views] [--occlusion] [--uncertainty] [--alignment] [--probes]
                [--json OUT.json] [--report DIR]
    prpose eval --data DIR --window-model RUN7 [RUN ...] [--model RUN1] [--split test] [--every 10] ...

Without --model only the model-free rows run (oracle, random, 2D keypoints). Every row is computed by the same
protocol code on the same queries (prpose.protocol). `--source` picks the 2D keypoints of queries and index: the
projected ground truth, the dataset's detections (Human3.6M: Stacked Hourglass), or both (then on the frames
usable in both); the hit is always judged on the 3D poses. Ranking is two-stage by default (exact match
distance / NP-MPJPE on the `--candidates` entries nearest by a cheap distance; `--exact` ranks all entries) and
every method reports progress per camera pair with an estimate of the time left (prpose.progress: a bar on a
terminal, a plain line every 30 s in a log). `--json` records every number and
the settings that produced it (dataset, split, 2D source, cameras, frame subsampling and drops, kappa, ranking,
model fingerprints); `--report` writes markdown + PNGs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

BASELINES = ("oracle", "random", "2d", "expected-random")
DEFAULT_BASELINES = ("2d", "expected-random")
DEFAULT_CANDIDATES = 100  # prpose.eval.baselines.DEFAULT_CANDIDATES (not imported here: the parser stays light)
VIEW_PROFILE = "h36m17"  # the views keep every joint a 2D source may give (nose, head top); methods pick theirs


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared dataset directory (prpose prep ...)")
    parser.add_argument("--model", help="Pr-VIPE training run directory (rows: match probability, mean L2)")
    parser.add_argument("--l2vipe", help="L2-VIPE run directory (trained with --set loss.embedding=l2)")
    parser.add_argument("--lifter", help="3D-lifting baseline run directory (eval.lifting)")
    parser.add_argument("--train-lifter", metavar="RUN",
                        help="train the lifting baseline into RUN first (same data; --config/--set budget)")
    parser.add_argument("--config", default="cpu", help="preset for --train-lifter (tiny, cpu, paper)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for --train-lifter, e.g. train.steps=3000 (use the Pr-VIPE run's budget)")
    parser.add_argument("--dropout-model", help="a Pr-VIPE run trained with keypoint dropout (occlusion rows)")
    parser.add_argument("--window-model", nargs="+", metavar="RUN",
                        help="temporal Pr-VIPE runs (train.window > 1): instead of the rows above, cross-view Hit@k "
                             "of these and --model on the same frames, each embedded with its window over every frame "
                             "of the split; hits judged on the centre frame and on the window's 3D poses "
                             "(prpose.window_protocol)")
    parser.add_argument("--source", default="gt", choices=("gt", "detected", "both"),
                        help="2D keypoints of queries and index: projected ground truth, the dataset's detections, "
                             "or both (evaluated on the frames usable in both); hits are judged on the 3D poses")
    parser.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                        help="two-stage ranking: exact match distance / NP-MPJPE on this many entries per query, "
                             "nearest by L2 of embedding means / of pose-distance matrices")
    parser.add_argument("--exact", action="store_true",
                        help="rank every index entry exactly (all-pairs; ~N/candidates times slower)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=1, help="keep every n-th frame of the split")
    parser.add_argument("--max-frames", type=int, help="then keep at most this many frames, evenly spread")
    parser.add_argument("--cameras", nargs="+", help="camera names to use (default: all)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--kappa", type=float, default=0.1, help="NP-MPJPE threshold of a match")
    parser.add_argument("--baselines", nargs="*", default=list(DEFAULT_BASELINES), choices=BASELINES,
                        help="model-free rows to include (default: 2d and the exact random expectation; the oracle is "
                             "100%% by construction in the cross-view protocol and, like a random ranking, costs as "
                             "much as a method)")
    parser.add_argument("--unseen-views", action="store_true",
                        help="also evaluate on a rig of cameras at other azimuths and elevations")
    parser.add_argument("--elevations", type=float, nargs="+", default=[0.0, 30.0, 60.0])
    parser.add_argument("--azimuths", type=int, default=4, help="cameras per elevation ring")
    parser.add_argument("--unseen-frames", type=int, default=500,
                        help="frames for the unseen-view rig (its C(C-1) camera pairs make it costly)")
    parser.add_argument("--occlusion", action="store_true", help="Hit@k with occluded queries")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--occlusion-frames", type=int, default=600,
                        help="frames for the occlusion sweep (one protocol run per setting and method)")
    parser.add_argument("--patterns", nargs="+", default=["left_forearm", "right_lower_leg", "lower_legs"],
                        help="body parts hidden in the occluded queries (prpose.keypoints.BODY_PARTS, the vocabulary "
                             "of training's structured occlusion too), e.g. left_arm, left_forearm, lower_body")
    parser.add_argument("--uncertainty", action="store_true", help="Hit@1 binned by predicted sigma")
    parser.add_argument("--alignment", action="store_true", help="video alignment by DTW (every frame of the split)")
    parser.add_argument("--clip", type=int, default=60, help="alignment: clip length in frames")
    parser.add_argument("--offset", type=int, default=30, help="alignment: time offset of the clip in frames")
    parser.add_argument("--probes", action="store_true", help="linear probes on frozen features")
    parser.add_argument("--probe-frames", type=int, default=3000, help="train/test frames for the probes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", help="write every number and setting to this JSON file")
    parser.add_argument("--report", help="write a markdown report with PNG plots into this directory")


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _say(*args):
    print(*args, flush=True)


def _load_embedder(run, role):
    from prpose.inference import load_model

    try:
        return load_model(run)
    except (OSError, ValueError) as e:
        raise type(e)(f"--{role} {run}: {e}") from None


def _untrained_fn(config, seed):
    """Means of a randomly initialised network with the run's architecture (the probes' control)."""
    import numpy as np
    from flax import nnx

    from prpose.eval.baselines import normalized_2d_features
    from prpose.model import build_model

    model = build_model(config.model, 1, seed=seed + 12345)
    model.eval()
    forward = nnx.jit(lambda m, x: m(x, None)[0])

    def fn(keypoints, visible):
        x = normalized_2d_features(keypoints, visible).reshape(-1, 13, 2)
        return np.concatenate([np.asarray(forward(model, x[s:s + 4096])) for s in range(0, len(x), 4096)])

    return fn


def _run_windows(args, dataset, candidates, t0) -> dict:
    """`--window-model`: temporal runs beside --model on the same frames (prpose.window_protocol)."""
    from prpose.errors import PrposeError
    from prpose import window_protocol

    if args.report:
        raise PrposeError("--report: not available with --window-model (use --json)")
    models = {f"window-model {run}": _load_embedder(run, "window-model") for run in args.window_model}
    if args.model:
        models = {f"model {args.model}": _load_embedder(args.model, "model"), **models}
    window = max(m.window for m in models.values())
    tracks = window_protocol.track_views(dataset, args.split, window, args.every, args.max_frames)
    _say(f"eval: windows of {window} frames: {tracks.views.num_frames} frames of split {args.split!r} in "
         f"{len(tracks.bounds) - 1} tracks x {tracks.views.num_cameras} cameras, {tracks.evaluated.size} evaluated "
         f"(every {args.every}); window test: mean NP-MPJPE over the {window} frames < {args.kappa}")
    rows = window_protocol.compare(models, tracks, args.ks, args.kappa, candidates, say=_say)
    return {"windows": {"rows": rows, "window": window, "evaluated_frames": int(tracks.evaluated.size),
                        "settings": dict(tracks.views.settings)}, "seconds": round(time.perf_counter() - t0, 1)}


def run(args) -> dict:
    import numpy as np

    from prpose import protocol
    from prpose.camera import elevation_ring_cameras
    from prpose.eval import alignment, baselines, occlusion, probes, uncertainty
    from prpose.dataset import load_dataset
    from prpose.errors import PrposeError
    from prpose.progress import progress
    from prpose.views import common_frames, views_from_cameras, views_from_dataset

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    if args.candidates < 1:
        raise PrposeError(f"--candidates: got {args.candidates}, expected a positive integer (or pass --exact)")
    cand = None if args.exact else args.candidates
    if args.window_model:
        return _run_windows(args, dataset, cand, t0)
    sources = ("gt", "detected") if args.source == "both" else (args.source,)
    all_views = [views_from_dataset(dataset, args.split, args.every, args.max_frames, args.cameras, source=src,
                                    profile=VIEW_PROFILE) for src in sources]
    selected = all_views[0].settings["frames_selected"]
    for v in all_views:
        st = v.settings
        _say(f"eval: 2D source {st['source']!r}: {v.num_frames} of {selected} frames x {v.num_cameras} cameras of "
             f"split {args.split!r} usable in every camera (every {args.every}; {st['dropped_frames']} dropped; "
             f"frames unusable per camera: " + ", ".join(f"{n} {c}" for n, c in st["unusable_by_camera"].items())
             + (f"; joints the source lacks: {', '.join(st['absent_joints'])}" if st["absent_joints"] else "") + ")")
    if len(all_views) > 1:
        all_views = common_frames(*all_views)
        _say(f"eval: {all_views[0].num_frames} frames usable with both 2D sources (every row uses these)")
    views = all_views[0]
    ks = tuple(args.ks)
    out = {"prpose_eval": 1, "settings": {
        "dataset": str(pathlib.Path(args.data).resolve()), "split": args.split, "every": args.every,
        "max_frames": args.max_frames, "cameras": list(views.camera_names), "frames": views.num_frames,
        "dropped_frames": views.settings["dropped_frames"], "frames_selected": selected,
        "sources": {v.settings["source"]: {k: v.settings[k] for k in (
            "frames", "dropped_frames", "unusable_by_camera", "absent_joints")} for v in all_views},
        "ranking": "exact" if cand is None else f"two-stage, {cand} candidates", "ks": list(ks),
        "kappa": args.kappa, "seed": args.seed, "models": {}}}

    methods = []
    if "oracle" in args.baselines:
        methods.append(baselines.OracleMethod(candidates=cand))
    if "random" in args.baselines:
        methods.append(baselines.RandomMethod(args.seed))
    if "2d" in args.baselines:
        methods.append(baselines.Keypoints2DMethod())
    model = dropout_model = None
    if args.model:
        model = _load_embedder(args.model, "model")
        out["settings"]["models"]["pr-vipe"] = {"run": str(args.model), "fingerprint": model.fingerprint}
        methods += [protocol.EmbeddingMethod(model, "match", candidates=cand), protocol.EmbeddingMethod(model, "l2")]
    if args.l2vipe:
        l2 = _load_embedder(args.l2vipe, "l2vipe")
        out["settings"]["models"]["l2-vipe"] = {"run": str(args.l2vipe), "fingerprint": l2.fingerprint}
        methods.append(protocol.EmbeddingMethod(l2, "l2", name="L2-VIPE"))
    if args.train_lifter:
        from prpose.eval.lifting import train_lifter
        from prpose.config import from_overrides

        cfg = from_overrides(args.config, args.set)
        info = train_lifter(cfg, args.data, args.train_lifter, log=_say)
        out["settings"]["lifter_training"] = {k: v for k, v in info.items() if k != "losses"}
        args.lifter = args.lifter or args.train_lifter
    if args.lifter:
        from prpose.eval.lifting import Lifter

        lifter = Lifter(args.lifter)
        out["settings"]["models"]["lifter"] = {"run": str(args.lifter)}
        methods.append(baselines.LiftingMethod(lifter.lift, candidates=cand))
    if args.dropout_model:
        dropout_model = _load_embedder(args.dropout_model, "dropout-model")
        out["settings"]["models"]["pr-vipe-dropout"] = {"run": str(args.dropout_model),
                                                         "fingerprint": dropout_model.fingerprint}
        methods.append(protocol.EmbeddingMethod(dropout_model, "match", name="Pr-VIPE + keypoint dropout",
                                                 candidates=cand))

    # 1. The protocol, every row on the same queries (per 2D source).
    results, features, rows_out = [], {}, []
    for v in all_views:
        src = v.settings["source"]
        for m in methods:
            if src != "gt" and isinstance(m, (baselines.OracleMethod, baselines.RandomMethod)) and len(all_views) > 1:
                continue  # they ignore the 2D keypoints: one row is enough
            with progress(total=len(protocol.camera_pairs(v.num_cameras)), desc=f"eval [{src}] {m.name}",
                          unit="pair") as bar:
                def advance(done, total, pair, bar=bar):
                    bar.set_postfix(pair=f"{pair.query_camera}->{pair.index_camera}",
                                    hit1=f"{100 * pair.hit_rates[0]:.1f}%")
                    bar.update(1)

                f = protocol.compute_features(m, v)
                r = protocol.cross_view_hit_at_k(m, v, ks, args.kappa, index_features=f, progress=advance)
            if v is views:
                results.append(r)
                features[m.name] = f
            d = r.to_dict()
            d["source"] = src
            rows_out.append(d)
            _say(f"eval [{src}]: {m.name}: " + ", ".join(f"Hit@{k} {100 * x:.1f}" for k, x in zip(ks, r.mean))
                 + f" ({r.seconds:.1f} s)")
    out["crossview"] = rows_out
    if "expected-random" in args.baselines:
        out["expected_random"] = protocol.expected_random_result(views.subset(
            np.linspace(0, views.num_frames - 1, min(views.num_frames, 3000)).round().astype(int)), ks, args.kappa)
        out["expected_random"]["note"] = "exact expectation on up to 3000 of the frames"
    for v in all_views:
        src = v.settings["source"]
        table = [r for r in rows_out if r["source"] == src]
        _say("")
        _say(protocol.format_table(table + ([out["expected_random"]] if "expected_random" in out and v is views
                                            else []), ks,
                                   title=f"Cross-view Hit@k (%), 2D source {src!r}, {v.num_frames} frames, mean over "
                                         f"{len(table[0]['pairs']) if table else 0} ordered camera pairs, kappa "
                                         f"{args.kappa}, {out['settings']['ranking']} ranking"))
    main = next((r for r in results if "match" in r.method), results[0] if results else None)
    if main is not None:
        _say("")
        _say(protocol.format_pair_table(main, ks[0]))
    views13 = views.converted("input13")  # the analyses below work on the paper's 13 joints

    # 2. Views never seen in training.
    if args.unseen_views:
        cams = elevation_ring_cameras(args.azimuths, args.elevations, distance=5.0)
        sub = views.subset(np.linspace(0, views.num_frames - 1, min(views.num_frames, args.unseen_frames))
                           .round().astype(int))
        world = np.asarray(dataset.poses3d[sub.rows], np.float64)
        # Centre each pose under the rig's target (the test is about viewpoint, not where the person stands).
        world = world - np.concatenate([world[:, :1, :2], np.zeros((len(world), 1, 1))], axis=-1)
        unseen = views_from_cameras(world, cams, rows=sub.rows)
        rows = []
        for m in methods:
            r = protocol.cross_view_hit_at_k(m, unseen, ks, args.kappa)
            rows.append(r.to_dict())
        out["unseen_views"] = {"rig": f"{args.azimuths} azimuths x elevations {args.elevations} deg, 5 m, "
                                      "pelvis centred", "frames": unseen.num_frames, "results": rows}
        _say("")
        _say(protocol.format_table(rows, ks, title=f"Unseen views ({len(cams)} cameras: "
                                                   f"{out['unseen_views']['rig']}), Hit@k (%)"))

    # 3. Occlusion robustness.
    if args.occlusion:
        occ_methods = [m for m in methods if m.name in ("2D keypoints", "Pr-VIPE (match probability)",
                                                         "Pr-VIPE + keypoint dropout")]
        idx = np.linspace(0, views.num_frames - 1, min(views.num_frames, args.occlusion_frames)).round().astype(int)
        occ_views = views13.subset(idx)
        out["occlusion"] = [occlusion.occlusion_sweep(
            m, occ_views, args.rates, args.patterns, ks=(1, 10), kappa=args.kappa, seed=args.seed,
            index_features=[protocol.take(f, idx) for f in features[m.name]]) for m in occ_methods]
        for s in out["occlusion"]:
            s["frames"] = occ_views.num_frames
        _say("")
        for s in out["occlusion"]:
            _say(f"occlusion, {s['method']}: " + ", ".join(f"{r['setting']} {100 * r['mean']['hit@1']:.1f}"
                                                        for r in s["settings"]) + " (Hit@1 %)")

    # 4. Uncertainty.
    if args.uncertainty and model is not None:
        r = next(r for r in results if r.method == "Pr-VIPE (match probability)")
        out["uncertainty"] = uncertainty.sigma_calibration(r, features[r.method])
        _say("")
        _say("sigma bins (Hit@1 %): " + ", ".join(f"{b['sigma_low']:.3f}-{b['sigma_high']:.3f}: "
                                                  f"{100 * b['hit@1']:.1f}" for b in out["uncertainty"]["bins"])
             + f"; Spearman(sigma, top-1 NP-MPJPE) {out['uncertainty']['spearman_sigma_error']:.3f}")

    # 5. Video alignment (every frame of the split: consecutive rows are consecutive frames).
    if args.alignment:
        seq_views = views_from_dataset(dataset, args.split, 1, None, args.cameras, source=sources[0])
        # DTW needs every frame-to-frame distance: exact ranking here.
        ali_methods = [baselines.OracleMethod(candidates=None), baselines.Keypoints2DMethod()]
        if model is not None:
            ali_methods.append(protocol.EmbeddingMethod(model, "match"))
        out["alignment"] = {"offset": [], "cross_take": [], "content_retrieval": []}
        for m in ali_methods:
            f = protocol.compute_features(m, seq_views)
            out["alignment"]["offset"].append(alignment.offset_alignment(m, seq_views, f, 0, 1, args.clip,
                                                                                  args.offset))
            out["alignment"]["cross_take"].append(alignment.cross_take_alignment(m, seq_views, f, 0, 1, step=2))
            out["alignment"]["content_retrieval"].append(alignment.content_retrieval(m, seq_views, f, 0, 1))
            o, c, cr = (out["alignment"][k][-1] for k in ("offset", "cross_take", "content_retrieval"))
            _say(f"alignment, {m.name}: same take offset error {_fmt(o['mean_error_frames'])} frames "
                 f"({o['takes']} takes); cross-take error {_fmt(c['mean_error_frames'])} frames "
                 f"({c['pairs']} pairs); content retrieval accuracy {_fmt(cr['accuracy'])} "
                 f"(chance {_fmt(cr['chance'])}, {cr['queries']} queries)")

    # 6. Linear probes.
    if args.probes:
        train_views = views_from_dataset(dataset, "train", 1, args.probe_frames, args.cameras)
        test_views = views13.subset(np.linspace(0, views.num_frames - 1, min(views.num_frames, args.probe_frames))
                                  .round().astype(int))
        fns = {"normalised 2D keypoints": lambda k, v: baselines.normalized_2d_features(k, v)}
        if model is not None:
            fns["Pr-VIPE mean"] = lambda k, v: model.embed(k, "input13").mean
            fns["untrained network"] = _untrained_fn(model.config, args.seed)
        out["probes"] = probes.run_probes(fns, train_views, test_views, probes.dataset_viewpoints(dataset, train_views),
                                          probes.dataset_viewpoints(dataset, test_views), alignment.content_label)
        _say("")
        for name, p in out["probes"].items():
            vp, lab = p.get("viewpoint", {}), p.get("label", {})
            _say(f"probe, {name}: 3D pose R2 {p['pose']['r2']:.3f} MPJPE {p['pose']['mpjpe']:.3f}; azimuth error "
                 f"{vp.get('azimuth_error_deg', float('nan')):.1f} deg (constant guess "
                 f"{vp.get('azimuth_error_deg_constant', float('nan')):.1f}); elevation error "
                 f"{vp.get('elevation_error_deg', float('nan')):.1f} deg; label accuracy {lab.get('accuracy')}")
    out["settings"]["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(args) -> int:
    out = run(args)  # errors: one line and exit status 2 (prpose.errors.run_command)
    if args.json_out:
        path = pathlib.Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        _say(f"\nwrote {path}")
    if args.report:
        from prpose.eval.report import write_report

        _say(f"wrote {write_report(out, args.report)}")
    return 0
