"""Robustness table: cross-view Hit@k of a trained model when the input looks like real input.

    python bench/bench_robustness.py --model RUN [--data /work/data/mocap] [--split test] [--every 10]
        [--max-frames N] [--h36m DIR] [--json OUT.json]

Rows, each for the Pr-VIPE model (match probability ranking) and the 2D-keypoint baseline on the same queries,
with each row's ratio to the clean row (the target: >= 0.85 of clean for detector noise, two missing limb joints
and 45 degree cameras):

* clean: the dataset's own cameras (prpose.views.views_from_dataset);
* detector noise: every view (queries and index) replaced by simulated detections from the fitted model
  (prpose.detector_noise.corrupt_np, the same model the training augmentation uses);
* 1 / 2 / 3 missing limb joints: per query, that many of the 8 limb joints (elbows, wrists, knees, ankles) chosen
  at random are reported missing (score 0); the index stays clean (eval.occlusion's convention);
* occluded parts: the left forearm, the right lower leg, both lower legs (body parts of
  prpose.keypoints.BODY_PARTS: elbow-wrist, knee-ankle, knees and ankles; eval.occlusion.DEFAULT_PATTERNS);
* unseen rigs: the same frames (pelvis centred) seen by 4 cameras on a ring at 0, 30, 45 or 60 degrees elevation,
  5 m away, 90 degrees apart (prpose.camera.elevation_ring_cameras, prpose.views.views_from_cameras);
* with --h36m DIR (a prepared Human3.6M dataset with detections, format v2): its test split (S9/S11) with
  ground-truth 2D and with the detector's 2D (queries and index; prpose.views.views_from_dataset's source),
  every --h36m-every-th frame (the two rows may keep different frames: each drops its unusable views). With
  ``--data none`` only these rows run, and ratios are relative to the GT-2D row.

Hit@k and the hit test are prpose.protocol's, the frame rule prpose.views'. Random draws are seeded (--seed):
every method sees the same corrupted / occluded queries.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

from prpose import keypoints as kp
from prpose import protocol
from prpose.camera import elevation_ring_cameras
from prpose.eval import baselines, occlusion
from prpose.views import views_from_cameras, views_from_dataset

LIMB_JOINTS = ("left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_knee", "right_knee", "left_ankle",
               "right_ankle")
ELEVATIONS = (0.0, 30.0, 45.0, 60.0)


def missing_limb_mask(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """Visibility (..., 13): ``count`` of the 8 limb joints hidden per view, chosen uniformly without repeats."""
    vis = np.ones(tuple(shape) + (13,), bool)
    limb = np.array([kp.INPUT13.index(j) for j in LIMB_JOINTS])
    order = np.argsort(rng.random(tuple(shape) + (limb.size,)), axis=-1)[..., :count]
    np.put_along_axis(vis, limb[order], False, axis=-1)
    return vis


def pelvis_centred(poses_world: np.ndarray) -> np.ndarray:
    """Move each pose horizontally so that its pelvis stands over the origin (the rigs look at (0, 0, 1 m))."""
    offset = np.concatenate([poses_world[:, :1, :2], np.zeros((len(poses_world), 1, 1))], axis=-1)
    return poses_world - offset


def run(args) -> dict:
    from prpose.inference import load_model

    t0 = time.perf_counter()
    ks = tuple(args.ks)
    embedder = load_model(args.model)
    methods = [protocol.EmbeddingMethod(embedder, "match", name="Pr-VIPE"), baselines.Keypoints2DMethod()]
    settings = mocap_settings(args, ks) if args.data != "none" else []
    if args.h36m:
        for source, label in (("gt", "GT 2D"), ("detected", "detected 2D")):
            h36m = views_from_dataset(args.h36m, "test", args.h36m_every, source=source)
            print(f"H36M {args.h36m} test every {args.h36m_every}, {label}: {h36m.num_frames} frames "
                  f"({h36m.settings['dropped_frames']} dropped)", flush=True)
            settings.append((f"H36M S9/S11 {label}", lambda m, f, v=h36m: protocol.cross_view_hit_at_k(m, v, ks), None))
    if not settings:
        raise SystemExit("bench_robustness: nothing to run (--data none and no --h36m)")
    print(f"bench_robustness: model {args.model} (step {embedder.step}, {embedder.fingerprint}); ratios relative "
          f"to the row {settings[0][0]!r}", flush=True)

    rows = []
    for method in methods:
        features = protocol.compute_features(method, settings[0][2]) if settings[0][2] is not None else None
        clean = None
        for name, fn, _ in settings:
            start = time.perf_counter()
            result = fn(method, features)
            hits = {f"hit@{k}": float(v) for k, v in zip(result.ks, result.mean)}
            clean = clean or hits
            row = {"method": method.name, "setting": name, **hits, "frames": int(result.pairs[0].hits.shape[0]),
                   "pairs": len(result.pairs), "ratio_to_clean": hits["hit@1"] / max(clean["hit@1"], 1e-12),
                   "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(f"  {method.name:<14} {name:<26} " + "  ".join(f"Hit@{k} {100 * hits[f'hit@{k}']:5.1f}" for k in ks)
                  + f"  ratio {row['ratio_to_clean']:.2f}  ({row['seconds']} s)", flush=True)
    out = {"command": " ".join(sys.argv), "model": str(args.model), "fingerprint": embedder.fingerprint,
           "step": embedder.step, "data": str(args.data), "split": args.split, "every": args.every,
           "h36m": args.h36m, "h36m_every": args.h36m_every, "seed": args.seed, "ks": list(ks), "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1)}
    print("\n" + format_table(rows, ks))
    return out


def mocap_settings(args, ks) -> list:
    """The held-out mocap rows: (name, fn(method, clean index features) -> CrossViewResult, views or None)."""
    from prpose import detector_noise as dn
    from prpose.dataset import load_dataset

    dataset = load_dataset(args.data)
    views = views_from_dataset(dataset, args.split, args.every, args.max_frames)
    rng = np.random.default_rng(args.seed)
    noise_model = dn.load_noise_model(args.noise_model)
    print(f"data {args.data} split {args.split} every {args.every} -> {views.num_frames} frames x "
          f"{views.num_cameras} cameras; noise model {args.noise_model or dn.DEFAULT_MODEL_PATH}; seed {args.seed}",
          flush=True)
    noisy = dataclasses.replace(views, keypoints2d=dn.corrupt_np(views.keypoints2d, rng, noise_model).astype(
        np.float32))
    settings = [("clean", lambda m, f: protocol.cross_view_hit_at_k(m, views, ks, index_features=f), views),
                ("detector noise", lambda m, f: protocol.cross_view_hit_at_k(m, noisy, ks), None)]
    for count in (1, 2, 3):
        mask = missing_limb_mask(views.visible.shape[:2], count, rng) & views.visible
        settings.append((f"{count} missing limb joint{'s' if count > 1 else ''}",
                         lambda m, f, mask=mask: protocol.cross_view_hit_at_k(m, views, ks, query_visible=mask,
                                                                               index_features=f), None))
    for pattern in occlusion.DEFAULT_PATTERNS:
        mask = occlusion.occluded_queries(views, pattern)
        settings.append((f"occluded {pattern}", lambda m, f, mask=mask: protocol.cross_view_hit_at_k(
            m, views, ks, query_visible=mask, index_features=f), None))
    world = pelvis_centred(np.asarray(dataset.poses3d[views.rows], np.float64))
    for elevation in ELEVATIONS:
        cams = elevation_ring_cameras(4, (elevation,), distance=5.0)
        rig = views_from_cameras(world, cams, rows=views.rows)
        settings.append((f"ring at {elevation:g} deg", lambda m, f, rig=rig: protocol.cross_view_hit_at_k(m, rig, ks),
                         None))
    return settings


def format_table(rows, ks) -> str:
    """Settings as rows, methods as column groups: Hit@k (%) and the Hit@1 ratio to clean."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    by = {(r["method"], r["setting"]): r for r in rows}
    head = f"{'setting':<26}" + "".join(
        "".join(f"{m[:10] + ' @' + str(k):>15}" for k in ks) + f"{'ratio':>7}" for m in methods)
    lines = [head, "-" * len(head)]
    for s in settings:
        line = f"{s:<26}"
        for m in methods:
            r = by.get((m, s))
            line += "".join(f"{100 * r[f'hit@{k}']:15.1f}" for k in ks) + f"{r['ratio_to_clean']:7.2f}" if r else ""
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="training run directory")
    parser.add_argument("--data", default="/work/data/mocap",
                        help="prepared dataset (held-out split) for the mocap rows; 'none' = only the --h36m rows")
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=10, help="keep every n-th frame of the split")
    parser.add_argument("--max-frames", type=int, help="then at most this many frames")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--noise-model", help="detector noise JSON (default: the packaged fit)")
    parser.add_argument("--h36m", help="prepared Human3.6M dataset with detections (S9/S11 rows)")
    parser.add_argument("--h36m-every", type=int, default=20, help="H36M test frames: every n-th")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", help="write the rows and settings here")
    args = parser.parse_args(argv)
    out = run(args)
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
