"""Fit the detector-error model (prpose.detector_noise) to Stacked Hourglass detections on Human3.6M.

    PRPOSE_H36M=/work/h36m python bench/fit_detector_noise.py [--root DIR] [--every 5] [--out JSON]

Reads the raw 3d-pose-baseline tree of the TRAINING subjects only (S1, S5, S6, S7, S8; never S9/S11) with the
library's reader (data_prep.h36m): each ``S*/StackedHourglass/<Action>[_N].<camera>.h5`` (``poses`` (T, 16, 2)
px) beside the 3D file ``S*/MyPoses/3D_positions/<Action>[ N].h5`` (``3D_positions`` (96, T) mm), projects the
3D joints through that subject's camera from ``cameras.h5`` (stored R transposed, camera coordinates R (X - T),
distortion as 3d-pose-baseline's ``project_point_radial``), fits the model on every ``--every``-th frame, prints the fitted
numbers, then checks the fit: simulated detections of the same projected truth must reproduce the measured
per-joint median / p90 error and the swap rates (both printed side by side). ``--out`` writes the model JSON
(summary statistics with provenance; the default is the packaged file prpose/data/detector_noise.json).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

import numpy as np

from prpose.data_prep.h36m import TRAIN_SUBJECTS, read_baseline, read_cameras_h5, read_detections
from prpose import detector_noise as dn
from prpose import keypoints as kp
from prpose.errors import PrposeError

# The joints fitted, h36m17 names: the model input's limbs and torso, and the head top (the detector has no nose).
FIT_PROFILE = kp.KeypointProfile("stacked_hourglass_fit", joints=kp.get_profile("input13").joints[1:] + ("head",))


def read_pairs(root: pathlib.Path, every: int, subjects=TRAIN_SUBJECTS):
    """(detected (N, J, 2), truth (N, J, 2)) px of FIT_PROFILE's joints, and a report.

    Uses the library's reader (data_prep.h36m: cameras.h5 with the stored R transposed, 3d-pose-baseline's
    distortion, detections converted to h36m17 by joint name). Views where the detector missed a fitted joint
    are left out and counted.
    """
    if not set(subjects) <= set(TRAIN_SUBJECTS):
        raise PrposeError(f"fit_detector_noise: subjects {subjects}: only the training subjects {TRAIN_SUBJECTS}")
    poses = read_baseline(root, subjects)
    rigs = read_cameras_h5(root / "cameras.h5")
    joints = kp.conversion_indices("h36m17", FIT_PROFILE)
    detected, truth = [], []
    report = {"trials": 0, "views": 0, "missing_files": [], "views_without_all_joints": 0}
    for (subject, trial), positions in sorted(poses.items()):
        frames = np.arange(0, len(positions), every)
        det, vis, missing, _ = read_detections(root, subject, trial, len(positions), frames)
        report["missing_files"] += missing
        true17 = kp.convert(positions[frames], "h36m32", "h36m17")
        for c, camera in enumerate(rigs[subject]):
            ok = vis[:, c][:, joints].all(axis=-1)
            report["views_without_all_joints"] += int((~ok).sum()) if vis[:, c].any() else 0
            if not ok.any():
                continue
            uv, _ = camera.project(true17[ok], distort=True)
            detected.append(np.asarray(det[ok, c][:, joints], np.float64))
            truth.append(np.asarray(uv, np.float64)[:, joints])
        report["trials"] += 1
    detected, truth = np.concatenate(detected), np.concatenate(truth)
    report["views"] = len(detected)
    return detected, truth, report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("PRPOSE_H36M"), help="3d-pose-baseline tree ($PRPOSE_H36M)")
    parser.add_argument("--every", type=int, default=5, help="use every n-th frame (50 Hz data)")
    parser.add_argument("--out", help="write the fitted model JSON here (the packaged one is "
                        f"{dn.DEFAULT_MODEL_PATH})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.root:
        parser.error("pass --root or set PRPOSE_H36M to the 3d-pose-baseline tree")
    root = pathlib.Path(args.root)
    start = time.perf_counter()
    try:
        detected, truth, report = read_pairs(root, args.every)
    except PrposeError as e:
        print(f"fit_detector_noise: error: {e}", file=sys.stderr)
        return 2
    print(f"read {report['trials']} trials of {', '.join(TRAIN_SUBJECTS)}: {report['views']} views (every "
          f"{args.every}th frame) in {time.perf_counter() - start:.1f} s; {report['views_without_all_joints']} views "
          f"without every fitted joint left out; missing detection files: {report['missing_files']}")
    info = {"detector": "Stacked Hourglass (3d-pose-baseline tree)", "data": "Human3.6M",
            "subjects": list(TRAIN_SUBJECTS), "every": args.every, "views": int(len(detected)),
            "trials": report["trials"], "fitted_on": datetime.date.today().isoformat(),
            "script": "bench/fit_detector_noise.py", "units": "torso scale of the true 2D view (normalize_2d "
            "reference distance); bias as multiples of the true up (shoulder mid - hip mid) and lateral (left hip - "
            "right hip) vectors", "nose": "no nose in this detector: the head top's spread without its bias"}
    model = dn.fit_noise_model(detected, truth, FIT_PROFILE, seed=args.seed, info=info)
    data = model.to_dict()
    data["joints"]["nose"] = {"proxy_of": "head"}
    model = dn.NoiseModel.from_dict(data)

    print(f"\n{'joint':<16} {'bias up':>8} {'bias lat':>8} {'sigma':>7} {'gross':>7} {'gross med':>9} {'log sd':>6}")
    for name, j in model.joints.items():
        print(f"{name:<16} {j.bias_up:+8.3f} {j.bias_lateral:+8.3f} {j.sigma:7.3f} {j.gross_rate:7.3f} "
              f"{np.exp(j.gross_log_mean):9.3f} {j.gross_log_std:6.2f}")
    print("swap rates (fitted):", {k: round(v, 4) for k, v in model.swap_rates.items()})

    measured = dn.measure(detected, truth, FIT_PROFILE)
    simulated = dn.measure(dn.corrupt_np(truth, np.random.default_rng(args.seed + 1), model, FIT_PROFILE), truth,
                           FIT_PROFILE)
    print("\nfit check (torso units; real = Stacked Hourglass vs projected truth, sim = the model applied to the "
          "same projected truth):")
    print(dn.compare(measured, simulated))
    data = model.to_dict()
    data["joints"]["nose"] = {"proxy_of": "head"}
    data["info"]["check"] = {"real": measured, "simulated": simulated}
    if args.out:
        import json

        pathlib.Path(args.out).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {args.out}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
