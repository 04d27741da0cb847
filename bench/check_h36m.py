"""Check the real Human3.6M conventions: projected ground truth vs. Stacked Hourglass detections.

    PRPOSE_H36M=/work/h36m .venv/bin/python bench/check_h36m.py [ROOT] [--subjects S9 S11] [--every 20]

Reads the 3d-pose-baseline tree with the converter's own readers (``prpose.data_prep.h36m``): calibration from
``cameras.h5``, 3D from ``MyPoses/3D_positions``, detections from ``StackedHourglass`` (mpii16 -> h36m17 by
name), every ``--every``-th frame. Prints, per subject and camera, the median / p90 pixel distance between the
detections and the projected ground truth over the 12 limb joints (shoulders, elbows, wrists, hips, knees,
ankles), the per-joint median / p90 (all joints the mpii16 profile maps into h36m17), the raw torso/head slots
against every h36m17 torso joint (which joint each slot really is), and a left/right check: the fraction of (frame, left/right joint pair) where
the detection's left joint is nearer the projected left joint than the projected right one (and vice versa).

Baselines in the same run, each replacing one convention by its plausible alternative: the stored ``R`` used
without transposing, the detection's left and right labels exchanged, and no lens distortion. The correct
convention must give clearly smaller errors than the first two (distortion is a small effect).
REFERENCE.md: over S9+S11 every 20th frame, limb joints: median 8.9 px, p90 24 px.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys

import numpy as np

from prpose.data_prep.common import project_to_rig
from prpose.data_prep.h36m import CAMERA_IDS, _read_h5, detection_file, read_baseline, read_cameras_h5, read_detections
from prpose.camera import Camera
from prpose.keypoints import H36M17, MPII16, convert

LIMBS = [f"{side}_{j}" for j in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle") for side in ("left", "right")]
LIMB_IDX = np.array([H36M17.index(j) for j in LIMBS])
# The detector's torso and head slots (3d-pose-baseline's names) and the h36m17 joints they could stand for.
TORSO_SLOTS = {6: "Hip", 7: "Spine", 8: "Thorax", 9: "Head"}
TORSO_JOINTS = ("pelvis", "spine", "thorax", "nose", "head")
PAIRS = [(H36M17.index(f"left_{j}"), H36M17.index(f"right_{j}")) for j in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")]


def limb_errors(det, vis, gt):
    """(F, 17, 2) detections, (F, 17) visible, (F, 17, 2) projection -> 1-D limb-joint pixel errors."""
    err = np.linalg.norm(det - gt, axis=-1)[:, LIMB_IDX]
    return err[vis[:, LIMB_IDX]]


def left_right(det, vis, gt):
    """Fraction of (frame, pair) where detected left is nearer projected left than projected right, both sides."""
    ok = []
    for l, r in PAIRS:
        both = vis[:, l] & vis[:, r]
        d = lambda a, b: np.linalg.norm(det[both, a] - gt[both, b], axis=-1)  # noqa: E731
        ok.append((d(l, l) < d(l, r)) & (d(r, r) < d(r, l)))
    ok = np.concatenate(ok)
    return float(ok.mean()) if ok.size else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", nargs="?", default=os.environ.get("PRPOSE_H36M"), help="3d-pose-baseline tree (default $PRPOSE_H36M)")
    p.add_argument("--subjects", nargs="+", default=["S9", "S11"])
    p.add_argument("--every", type=int, default=20, help="use every N-th frame (default 20)")
    args = p.parse_args()
    if not args.root:
        print("check_h36m: pass the 3d-pose-baseline root or set PRPOSE_H36M", file=sys.stderr)
        return 2
    root = pathlib.Path(args.root)
    rigs = read_cameras_h5(root / "cameras.h5")
    data = read_baseline(root, subjects=set(args.subjects))
    variants = {
        "chosen (R transposed, distortion)": lambda cams: cams,
        "baseline: R not transposed": lambda cams: [dataclasses.replace(c, rotation=c.rotation.T) for c in cams],
        "baseline: no distortion": lambda cams: [dataclasses.replace(c, radial=(0, 0, 0), tangential=(0, 0)) for c in cams],
    }
    flip = H36M17.flip_permutation
    per_cam = {}  # (subject, camera) -> list of errors (chosen)
    per_joint = {j: [] for j in H36M17.joints if j in MPII16.joints}  # every joint the detector has
    totals = {name: [] for name in [*variants, "baseline: detections' left/right exchanged"]}
    lr = {name: [] for name in totals}
    missing = []
    torso = {(slot, j): [] for slot in TORSO_SLOTS for j in TORSO_JOINTS}
    for (subject, trial), positions in sorted(data.items()):
        frames = np.arange(0, len(positions), args.every)
        poses = convert(positions[frames], "h36m32", "h36m17")
        det, vis, miss, _ = read_detections(root, subject, trial, len(positions), frames)
        missing += miss
        gt_chosen, _ = project_to_rig(poses, rigs[subject])
        for c, cam in enumerate(CAMERA_IDS):  # raw slots, before any naming
            file = detection_file(root, subject, trial, cam)
            if file.is_file():
                raw = _read_h5(file, "poses")[frames]
                for (slot, j), parts in torso.items():
                    parts.append(np.linalg.norm(raw[:, slot] - gt_chosen[:, c, H36M17.index(j)], axis=-1))
        for name, make in variants.items():
            gt, _ = project_to_rig(poses, make(rigs[subject]))
            for c, cam in enumerate(CAMERA_IDS):
                e = limb_errors(det[:, c], vis[:, c], gt[:, c])
                totals[name].append(e)
                lr[name].append(np.full(1, left_right(det[:, c], vis[:, c], gt[:, c])) if vis[:, c].any() else np.empty(0))
                if name.startswith("chosen"):
                    per_cam.setdefault((subject, cam), []).append(e)
                    for j in per_joint:
                        idx = H36M17.index(j)
                        per_joint[j].append(np.linalg.norm(det[:, c, idx] - gt[:, c, idx], axis=-1)[vis[:, c, idx]])
                    swapped = "baseline: detections' left/right exchanged"
                    totals[swapped].append(limb_errors(det[:, c][:, flip], vis[:, c][:, flip], gt[:, c]))
                    lr[swapped].append(np.full(1, left_right(det[:, c][:, flip], vis[:, c][:, flip], gt[:, c]))
                                       if vis[:, c].any() else np.empty(0))
    print(f"Human3.6M {' '.join(args.subjects)}, every {args.every}th frame, limb joints ({len(LIMBS)}), "
          f"detections vs projected ground truth (px)")
    print(f"missing detection files: {', '.join(missing) or 'none'}")
    print(f"{'subject':<8} {'camera':<9} {'joints':>8} {'median':>7} {'p90':>7}")
    for (subject, cam), parts in sorted(per_cam.items(), key=lambda kv: (int(kv[0][0][1:]), kv[0][1])):
        e = np.concatenate(parts)
        if e.size:
            print(f"{subject:<8} {cam:<9} {e.size:>8,d} {np.median(e):7.1f} {np.percentile(e, 90):7.1f}")
    print("per joint (all subjects, cameras): median / p90 px")
    for j, parts in per_joint.items():
        e = np.concatenate(parts)
        print(f"  {j:<15} {np.median(e):6.1f} {np.percentile(e, 90):6.1f}")
    print("detector torso/head slots (3d-pose-baseline's name) vs projected h36m17 joints: median px")
    print(f"  {'slot':<12}" + "".join(f"{j:>8}" for j in TORSO_JOINTS))
    for slot, name in TORSO_SLOTS.items():
        print(f"  {slot} {name:<10}" + "".join(f"{np.median(np.concatenate(torso[(slot, j)])):8.1f}" for j in TORSO_JOINTS))
    print(f"{'convention':<45} {'median':>7} {'p90':>7} {'left/right kept':>16}")
    for name, parts in totals.items():
        e = np.concatenate(parts)
        kept = np.concatenate(lr[name])
        print(f"{name:<45} {np.median(e):7.1f} {np.percentile(e, 90):7.1f} {np.nanmean(kept):16.3f}")
    print("REFERENCE.md: median 8.9 px, p90 24 px (S9+S11, every 20th frame, limb joints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
