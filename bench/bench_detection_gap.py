"""Where the detected-2D gap comes from: one model's cross-view Hit@k on Human3.6M S9/S11 with the 2D input taken
part from the projected ground truth and part from the real detections.

Each row changes one thing between the two sources (queries and index alike, the same frames in every row):

- ``gt`` / ``detected``: the two ends (as in bench/bench_h36m_table.py).
- ``gt, nose hidden``: what the detector's missing joint alone costs (Stacked Hourglass has no nose).
- ``gt, limbs detected``: ground-truth torso (shoulders, hips), nose hidden, the detector's elbows, wrists, knees
  and ankles: what the limb keypoints' errors cost.
- ``detected, true hips`` / ``detected, true torso``: the detector's joints with the projected hips (shoulders and
  hips): what a different hip definition (MPII vs Human3.6M) costs through the 2D normalisation.
- ``detected, fitted bias removed``: the per-joint body-relative bias of prpose/data/detector_noise.json inverted
  (the torso frame solved from the detection itself): whether a fixed correction of joint definitions helps.
- ``detected, swaps undone (oracle)``: left/right exchanges found against the truth
  (prpose.detector_noise.detect_swaps) undone.
- ``detected, head top as nose``: the head top fed in the nose's input (prpose.views.input13_views).
- ``gt + fitted noise``: simulated detections (prpose.detector_noise.corrupt_np, seed 0), to compare the error
  model's effect with the real one.
- ``detected queries, gt index``: detector output searched in a clean index (a library built from motion capture,
  as ``prpose query`` does): the detector's errors on one side only.

Usage: ``python bench/bench_detection_gap.py --data /work/data/h36m --model RUN [--every 4] [--json out.json]``
(the dataset prepared with detections: ``prpose prep h36m``; see README.md). Prints a progress line per row and
the table (Hit@1 / @10 / @20 %, two-stage ranking with --candidates).

Measured (robust cpu preset trained on S1/S5/S6/S7/S8 without detection views, 20k steps; every 4th of the
authors' frames, 2,602 frames x 4 cameras), Hit@1 / @10 / @20:
gt 83.3 / 98.1 / 99.1; gt, nose hidden 76.1 / 96.6 / 98.3; gt, limbs detected 43.1 / 78.8 / 85.1; detected, true
hips 42.8 / 78.8 / 84.9; detected, true torso 43.1 / 78.8 / 85.1; detected, fitted bias removed 39.0 / 76.6 / 83.8;
detected, swaps undone 39.9 / 77.3 / 84.4; detected, head top as nose 39.2 / 75.9 / 82.8; detected 39.5 / 77.0 /
84.1; detected queries, gt index 43.8 / 77.6 / 83.7; gt + fitted noise 30.8 / 73.4 / 82.6.
So the limb keypoints' errors cost about 33 points, the missing nose 7, the torso's joint definitions about 3; a
fixed bias correction, undoing swaps and the head top in the nose's place do nothing measurable, and a clean index
recovers only 4 points.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

KS = (1, 10, 20)
TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
LIMBS = ("left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_knee", "right_knee", "left_ankle",
         "right_ankle")


def remove_bias(detected: np.ndarray, params: np.ndarray, torso: np.ndarray) -> np.ndarray:
    """Invert the noise model's bias step (prpose.detector_noise, step 1) on detections (..., J, 2).

    params: (2, J) bias_up, bias_lateral per joint; torso: (4,) indices of l/r shoulder, l/r hip. The biased torso
    joints are a linear map of the true ones (4 x 4, the same for x and y), solved exactly; every joint then loses
    its bias along the solved up and lateral vectors.
    """
    d = np.asarray(detected, np.float64)
    bias_up, bias_lat = params
    up_w = np.array([0.5, 0.5, -0.5, -0.5])  # up = shoulder mid - hip mid
    lat_w = np.array([0.0, 0.0, 1.0, -1.0])  # lateral = left hip - right hip
    mix = np.eye(4) + np.outer(bias_up[torso], up_w) + np.outer(bias_lat[torso], lat_w)
    true_torso = np.einsum("ij,...jd->...id", np.linalg.inv(mix), d[..., torso, :])
    up = np.einsum("j,...jd->...d", up_w, true_torso)
    lateral = np.einsum("j,...jd->...d", lat_w, true_torso)
    return d - bias_up[:, None] * up[..., None, :] - bias_lat[:, None] * lateral[..., None, :]


def variants(gt, det, seed: int = 0) -> tuple[dict, float]:
    """({name: (ViewSet, head_as_nose, queries)}, fraction of detected views with a left/right swap) for the rows of
    the table; gt and det: ViewSets of the same frames (h36m17); queries: None (the ViewSet's own views) or a
    ViewSet whose keypoints and visibility replace the queries' (the index keeps the ViewSet's)."""
    from prpose import detector_noise as dn
    from prpose import keypoints as kp

    prof = kp.get_profile(gt.profile)
    idx = lambda names: [prof.index(n) for n in names]  # noqa: E731
    torso, limbs, hips = idx(TORSO), idx(LIMBS), idx(("left_hip", "right_hip"))

    def views(base, keypoints=None, visible=None):
        return dataclasses.replace(base, keypoints2d=np.asarray(base.keypoints2d if keypoints is None else keypoints,
                                                                 np.float32),
                                   visible=base.visible if visible is None else visible)

    def mixed(base, other, joints):
        k = base.keypoints2d.copy()
        k[..., joints, :] = other.keypoints2d[..., joints, :]
        return k

    no_nose = gt.visible & det.visible.any(axis=(0, 1))  # the joints the detector ever gives
    model = dn.load_noise_model()
    arrays = dn.noise_arrays(model, prof)
    flat_det = det.keypoints2d.reshape(-1, prof.num_joints, 2).astype(np.float64)
    flat_gt = gt.keypoints2d.reshape(-1, prof.num_joints, 2).astype(np.float64)
    scale, _, _ = dn.torso_frame(np, flat_gt, arrays.torso)
    swaps = dn.detect_swaps(flat_det, flat_gt, prof.left_right_pairs, scale)
    return {
        "gt": (gt, False, None),
        "gt, nose hidden": (views(gt, visible=no_nose), False, None),
        "gt, limbs detected": (views(gt, mixed(gt, det, limbs), no_nose), False, None),
        "detected, true hips": (views(det, mixed(det, gt, hips)), False, None),
        "detected, true torso": (views(det, mixed(det, gt, torso)), False, None),
        "detected, fitted bias removed": (views(det, remove_bias(det.keypoints2d, arrays.params[:2], arrays.torso)),
                                          False, None),
        "detected, swaps undone (oracle)": (
            views(det, dn.unswap(flat_det, swaps, prof.left_right_pairs).reshape(det.keypoints2d.shape)), False, None),
        "detected, head top as nose": (det, True, None),
        "detected": (det, False, None),
        "detected queries, gt index": (gt, False, det),
        "gt + fitted noise": (views(gt, dn.corrupt_np(gt.keypoints2d, np.random.default_rng(seed), model, prof)),
                              False, None),
    }, float(swaps.any(axis=1).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared Human3.6M with detections (format v2)")
    p.add_argument("--model", required=True, help="run directory or exported model")
    p.add_argument("--every", type=int, default=4, help="keep every n-th test frame (default 4)")
    p.add_argument("--candidates", type=int, default=100, help="two-stage ranking width (0: exact)")
    p.add_argument("--rows", nargs="+", help="only the rows whose name contains one of these strings")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)

    from prpose import protocol
    from prpose.dataset import load_dataset
    from prpose.inference import load_model
    from prpose.views import common_frames, views_from_dataset

    t0 = time.perf_counter()
    dataset = load_dataset(args.data)
    gt, det = common_frames(*[views_from_dataset(dataset, "test", args.every, source=s, profile="h36m17")
                              for s in ("gt", "detected")])
    rows, swapped = variants(gt, det)
    print(f"{gt.num_frames} frames x {gt.num_cameras} cameras (test split, every {args.every}); views with a "
          f"left/right swap: {100 * swapped:.1f} %", flush=True)
    embedder = load_model(args.model)
    results = []
    for name, (views, head_as_nose, queries) in rows.items():
        if args.rows and not any(r in name for r in args.rows):
            continue
        method = protocol.EmbeddingMethod(embedder, "match", candidates=args.candidates or None,
                                          head_as_nose=head_as_nose)
        replace = {} if queries is None else {"query_keypoints": queries.keypoints2d, "query_visible": queries.visible}
        r = protocol.cross_view_hit_at_k(method, views, KS, **replace)
        results.append({"row": name, "mean": r.mean.tolist(), "seconds": round(r.seconds, 1)})
        print(f"{name:34s}" + " / ".join(f"{100 * x:5.1f}" for x in r.mean) + f"  ({r.seconds:.0f} s)", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "data": str(args.data), "model": str(args.model), "fingerprint": embedder.fingerprint,
            "every": args.every, "frames": gt.num_frames, "swapped_views": swapped, "ks": list(KS),
            "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
