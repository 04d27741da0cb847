"""Fit the detector-error model (prpose.detector_noise) to Stacked Hourglass detections on Human3.6M.

    PRPOSE_H36M=/work/h36m python bench/fit_detector_noise.py [--root DIR] [--every 5] [--out JSON]

Reads the raw 3d-pose-baseline tree of the TRAINING subjects only (S1, S5, S6, S7, S8; never S9/S11): each
``S*/StackedHourglass/<Action>[_N].<camera>.h5`` (``poses`` (T, 16, 2) px) beside the 3D file
``S*/MyPoses/3D_positions/<Action>[ N].h5`` (``3D_positions`` (96, T) mm), projects the 3D joints through that
subject's camera from ``cameras.h5`` (stored R transposed, camera coordinates R (X - T), distortion as
3d-pose-baseline's ``project_point_radial``), fits the model on every ``--every``-th frame, prints the fitted
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

from prpose import detector_noise as dn
from prpose import keypoints as kp

TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
# Stacked Hourglass joint order in the 3d-pose-baseline tree (REFERENCE.md) and the matching raw H36M joints.
SH_JOINTS = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "spine",
             "thorax", "head", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
             "left_wrist")
SH_TO_H36M32 = (3, 2, 1, 6, 7, 8, 0, 12, 13, 15, 27, 26, 25, 17, 18, 19)
# The joints fitted: the model input's limbs and torso, and the head top (the detector has no nose).
FIT_PROFILE = kp.KeypointProfile("stacked_hourglass_fit", joints=kp.get_profile("input13").joints[1:] + ("head",))


def read_cameras(path: pathlib.Path, subjects=TRAIN_SUBJECTS) -> dict:
    """{(subject, camera name): dict R (3,3) world->camera, T (3,) mm, f, c, k (3,), p (2,)}."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for subject in subjects:
            for i in range(1, 5):
                g = f[f"subject{subject}/camera{i}"]
                name = "".join(chr(int(c)) for c in np.asarray(g["Name"]).ravel())
                out[subject, name] = {"R": np.asarray(g["R"]).T, "T": np.asarray(g["T"]).ravel(),
                                      "f": np.asarray(g["f"]).ravel(), "c": np.asarray(g["c"]).ravel(),
                                      "k": np.asarray(g["k"]).ravel(), "p": np.asarray(g["p"]).ravel()}
    return out


def project_point_radial(points, cam) -> np.ndarray:
    """3d-pose-baseline's projection: points (N, 3) world mm -> (N, 2) px with radial + tangential distortion."""
    x = (cam["R"] @ (points - cam["T"]).T).T
    xx = x[:, :2] / x[:, 2:]
    r2 = np.sum(xx ** 2, axis=1)
    k, p = cam["k"], cam["p"]
    radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    tangential = p[0] * xx[:, 1] + p[1] * xx[:, 0]
    xxx = xx * (radial + tangential)[:, None] + np.outer(r2, [p[1], p[0]])
    return xxx * cam["f"] + cam["c"]


def read_pairs(root: pathlib.Path, every: int, subjects=TRAIN_SUBJECTS):
    """(detected (N, 16, 2), truth (N, 16, 2)) px in Stacked Hourglass order, and a per-file report."""
    import h5py

    if not set(subjects) <= set(TRAIN_SUBJECTS):
        raise SystemExit(f"fit_detector_noise: subjects {subjects}: only training subjects {TRAIN_SUBJECTS} allowed")
    cams = read_cameras(root / "cameras.h5", subjects)
    detected, truth, report = [], [], {"files": 0, "skipped": []}
    for subject in subjects:
        folder = root / f"S{subject}" / "StackedHourglass"
        files = sorted(folder.glob("*.h5"))
        if not files:
            raise SystemExit(f"fit_detector_noise: no Stacked Hourglass files in {folder}")
        for path in files:
            action, camera, _ = path.name.rsplit(".", 2)
            pose_file = root / f"S{subject}" / "MyPoses" / "3D_positions" / f"{action.replace('_', ' ')}.h5"
            if not pose_file.is_file() or (subject, camera) not in cams:
                report["skipped"].append(f"{path} (no {pose_file.name} or camera {camera})")
                continue
            with h5py.File(pose_file, "r") as f:
                poses = np.asarray(f["3D_positions"]).T.reshape(-1, 32, 3)
            with h5py.File(path, "r") as f:
                det = np.asarray(f["poses"], np.float64)
            if det.shape[0] != poses.shape[0] or det.shape[1:] != (16, 2):
                report["skipped"].append(f"{path} (shape {det.shape} vs {poses.shape[0]} 3D frames)")
                continue
            poses, det = poses[::every], det[::every]
            uv = project_point_radial(poses[:, SH_TO_H36M32].reshape(-1, 3), cams[subject, camera])
            detected.append(det)
            truth.append(uv.reshape(-1, 16, 2))
            report["files"] += 1
    return np.concatenate(detected), np.concatenate(truth), report


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
    sh_detected, sh_truth, report = read_pairs(root, args.every)
    order = [SH_JOINTS.index(j) for j in FIT_PROFILE.joints]
    detected, truth = sh_detected[:, order], sh_truth[:, order]
    print(f"read {report['files']} detection files of S{', S'.join(map(str, TRAIN_SUBJECTS))} "
          f"({len(detected)} views, every {args.every}th frame) in {time.perf_counter() - start:.1f} s; "
          f"skipped {len(report['skipped'])}: {report['skipped']}")
    info = {"detector": "Stacked Hourglass (3d-pose-baseline tree)", "data": "Human3.6M",
            "subjects": [f"S{s}" for s in TRAIN_SUBJECTS], "every": args.every, "views": int(len(detected)),
            "files": report["files"], "fitted_on": datetime.date.today().isoformat(),
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
