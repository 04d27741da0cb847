"""Does temporal context help? A temporal Pr-VIPE run against a per-frame run on the same frames.

    python bench/bench_temporal.py --frame-model RUN1 --window-model RUN7 [--data /work/data/mocap] [--split test]
        [--every 10] [--max-frames N] [--seed 0] [--json OUT.json]

The views are every frame of the split (prpose.window_protocol: tracks of consecutive frames usable in every camera;
each model embeds every frame, the temporal one with the window centred on it, edge-replicated at track ends);
queries and index are every --every-th frame, over every ordered camera pair. Rows (the corruption of
bench/bench_robustness.py, drawn independently per frame, the same draws for both models):

* clean: the dataset's cameras;
* detector noise: every view of every frame (queries and index) through the fitted detector model
  (prpose.detector_noise.corrupt_np);
* 2 missing limb joints: per query frame, 2 of the 8 limb joints hidden at random (index clean);
* occluded left forearm: the left elbow and wrist hidden in every query frame (eval.occlusion; index clean).

Hit@1 / Hit@10 under two hit tests (prpose.window_protocol): "frame" (the retrieved centre frame within kappa of the
query frame) and "window" (NP-MPJPE averaged over the 7 frames of the two windows within kappa).

Video alignment (eval.alignment.offset_alignment): a 60-frame clip of each take seen by camera A located inside
the whole take seen by camera B by subsequence DTW on the models' exact match distances; error in frames against
the truth (clean and detector-noise input), over the first two cameras' pair and the last two's.

Time order: for windows of the first camera whose motion is not symmetric in time (the reversed 3D window is
farther than kappa from the forward one), how often the reversed window is farther (match distance) from its
forward self than the same window seen by the second camera is.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from bench_robustness import missing_limb_mask
from prpose import protocol
from prpose import window_protocol
from prpose.eval import alignment, occlusion

KS = (1, 10)


def _say(*parts):
    print(*parts, flush=True)


def run(args) -> dict:
    from prpose import detector_noise as dn
    from prpose.dataset import load_dataset
    from prpose.inference import load_model

    t0 = time.perf_counter()
    models = {"per-frame": load_model(args.frame_model), "temporal": load_model(args.window_model)}
    if models["per-frame"].window != 1 or models["temporal"].window < 2:
        raise SystemExit(f"bench_temporal: --frame-model must be a window=1 run and --window-model a window > 1 run "
                         f"(got {models['per-frame'].window} and {models['temporal'].window})")
    window = models["temporal"].window
    dataset = load_dataset(args.data)
    tracks = window_protocol.track_views(dataset, args.split, window, args.every, args.max_frames)
    views = tracks.views
    rng = np.random.default_rng(args.seed)
    noisy = dn.corrupt_np(views.keypoints2d, rng, dn.load_noise_model(args.noise_model)).astype(np.float32)
    missing = missing_limb_mask(views.visible.shape[:2], 2, rng) & views.visible
    arm = occlusion.occluded_queries(views, "left_forearm")
    _say(f"data {args.data} split {args.split}: {views.num_frames} frames in {len(tracks.bounds) - 1} tracks x "
         f"{views.num_cameras} cameras, {tracks.evaluated.size} evaluated (every {args.every}); window {window}; "
         f"seed {args.seed}")
    rows, align, order = [], [], {}
    for label, embedder in models.items():
        method = window_protocol.TrackMethod(embedder, tracks.bounds, name=label, candidates=args.candidates)
        start = time.perf_counter()
        clean = window_protocol.features_of(method, tracks)
        noisy_feats = window_protocol.features_of(method, tracks, noisy)
        feats = {"clean": (clean, clean), "detector noise": (noisy_feats, noisy_feats),
                 "2 missing limb joints": (window_protocol.features_of(method, tracks, visible=missing), clean),
                 "occluded left forearm": (window_protocol.features_of(method, tracks, visible=arm), clean)}
        _say(f"{label}: step {embedder.step}, {embedder.fingerprint}, window {embedder.window}: features "
             f"{time.perf_counter() - start:.0f} s")
        for setting, (query, index) in feats.items():
            s = time.perf_counter()
            result = window_protocol.window_hit_at_k(method, tracks, query, index, KS)
            row = {"model": label, "setting": setting}
            for test in ("frame", "window"):
                r = getattr(result, test)
                row.update({f"{test} hit@{k}": float(v) for k, v in zip(KS, r.mean)})
            rows.append(row)
            _say(f"  {setting:<24} " + "  ".join(f"{k} {100 * v:5.1f}" for k, v in row.items() if "hit" in k)
                 + f"  ({time.perf_counter() - s:.0f} s)")
        method.candidates = None  # DTW needs every distance: exact match distances
        for setting in ("clean", "detector noise"):
            for cam_a, cam_b in ((0, 1), (views.num_cameras - 2, views.num_cameras - 1)):
                res = alignment.offset_alignment(method, views, feats[setting][0], cam_a, cam_b, args.clip,
                                                 args.offset, window=args.smooth)
                align.append({"model": label, "setting": setting, **{k: v for k, v in res.items() if k != "per_take"}})
                _say(f"  alignment {setting:<15} cameras {res.get('cameras')}: {res['takes']} takes, mean error "
                     f"{res['mean_error_frames']:.2f} frames, median {res['median_error_frames']:.2f}")
        if embedder.window > 1:
            order = time_order(embedder, tracks)
            _say(f"  time order: {order}")
    out = {"command": " ".join(sys.argv), "frame_model": args.frame_model, "window_model": args.window_model,
           "steps": {k: m.step for k, m in models.items()}, "data": args.data, "split": args.split,
           "every": args.every, "window": window, "seed": args.seed, "frames": int(views.num_frames),
           "evaluated": int(tracks.evaluated.size), "rows": rows, "alignment": align, "time_order": order,
           "seconds": round(time.perf_counter() - t0, 1)}
    _say("\n" + format_table(rows, align))
    return out


def time_order(embedder, tracks) -> dict:
    """Reversed windows against their forward selves (module docstring), camera 0 vs camera 1."""
    from prpose.index.kernels import match_distance_np
    from prpose.numpy_forward import normalize_2d

    views, win = tracks.views, tracks.windows
    rows = tracks.evaluated[views.valid[tracks.evaluated, 0] & views.valid[tracks.evaluated, 1]]
    poses = views.poses3d[win[rows]]  # (M, T, 17, 3)
    reversed_3d = np.mean([protocol.retrieved_np_mpjpe(poses[:, t], poses[:, -1 - t][:, None])[:, 0]
                           for t in range(win.shape[1])], axis=0)
    asymmetric = reversed_3d >= protocol.KAPPA
    emb = {}
    for cam in (0, 1):
        norm, _ = normalize_2d(views.keypoints2d[:, cam], views.visible[:, cam], views.profile)
        emb[cam] = norm[win[rows]]
    forward = embedder.embed_normalized(emb[0])
    backward = embedder.embed_normalized(emb[0][:, ::-1])
    other = embedder.embed_normalized(emb[1])
    a, b, s = embedder.match_params
    d_rev = match_distance_np(forward.samples, backward.samples, a, b, s)
    d_view = match_distance_np(forward.samples, other.samples, a, b, s)
    m = asymmetric
    return {"windows": int(rows.size), "asymmetric_windows": int(m.sum()),
            "reversed_farther_than_other_view": float(np.mean(d_rev[m] > d_view[m])) if m.any() else None,
            "median_match_distance_reversed": float(np.median(d_rev[m])) if m.any() else None,
            "median_match_distance_other_view": float(np.median(d_view[m])) if m.any() else None,
            "symmetric_windows_reversed_farther": float(np.mean(d_rev[~m] > d_view[~m])) if (~m).any() else None}


def format_table(rows, align) -> str:
    """Settings as rows; per model Hit@1/10 (frame test, window test); then alignment errors."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = [f"{t} hit@{k}" for t in ("frame", "window") for k in KS]
    head = f"{'setting':<24}" + "".join(f"{m[:9] + ' ' + k.replace(' hit', ''):>22}" for m in models for k in keys)
    lines = [head, "-" * len(head)]
    by = {(r["model"], r["setting"]): r for r in rows}
    for s in dict.fromkeys(r["setting"] for r in rows):
        lines.append(f"{s:<24}" + "".join(f"{100 * by[(m, s)][k]:22.1f}" for m in models for k in keys))
    lines.append("")
    lines.append("video alignment (60-frame clip located in the whole take, other camera): mean error in frames")
    for a in align:
        lines.append(f"  {a['model']:<10} {a['setting']:<15} {str(a.get('cameras')):<28} {a['takes']:>3} takes  "
                     f"{a['mean_error_frames']:7.2f} (median {a['median_error_frames']:.2f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame-model", required=True, help="per-frame (window=1) run or exported model")
    parser.add_argument("--window-model", required=True, help="temporal (window > 1) run or exported model")
    parser.add_argument("--data", default="/work/data/mocap")
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=10, help="evaluate every n-th frame (all frames are embedded)")
    parser.add_argument("--max-frames", type=int, help="then at most this many evaluated frames")
    parser.add_argument("--candidates", type=int, default=100, help="two-stage re-rank size (eval's default)")
    parser.add_argument("--clip", type=int, default=60, help="alignment clip length in frames")
    parser.add_argument("--offset", type=int, default=30, help="alignment: the clip's start in the take")
    parser.add_argument("--smooth", type=int, default=2, help="alignment: frame distance averaged over +-n frames")
    parser.add_argument("--noise-model", help="detector noise JSON (default: the packaged fit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)
    out = run(args)
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(out, indent=1))
        _say(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
