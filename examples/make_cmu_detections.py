"""Write examples/cmu_detections_coco17.json: detector-style COCO-17 keypoints of held-out CMU motion capture.

Four poses, the middle frame of each of four takes of the CMU test split (never trained on, not in the
packaged pose library), seen by virtual cameras around the person (1280x720, focal 1000 px, 3.5-5 m away, 0.8-2.2 m high),
with detector-like errors: Gaussian pixel noise of standard deviation k_j / 2 times the person's scale
(sqrt of the box area; k_j the COCO keypoint sigmas, the spread of human annotators), confidences that fall
with the error, and one wrist reported with a low confidence (a missed detection). The motion capture skeleton
has no eyes or ears: they are written as missing (v = 0), as a detector that does not see them would.

    python examples/make_cmu_detections.py /work/scratch/pretrained/cmu examples/cmu_detections_coco17.json

The data: CMU Graphics Lab Motion Capture Database (mocap.cs.cmu.edu), prepared with
``prpose prep bvh ../shared/data/mocap/cmu ../shared/data/mocap/fair1 --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from prpose import keypoints as kp
from prpose.camera import Camera, look_at
from prpose.dataset import load_dataset

TAKES = ("martial/06.bvh", "indian/04.bvh", "01_01.bvh", "131_03.bvh")
# COCO keypoint sigmas k_j (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SIGMAS = np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                        .107, .107, .087, .087, .089, .089])
SEED = 11


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="prepared CMU dataset (prpose prep bvh)")
    parser.add_argument("out", help="output COCO keypoint-results JSON")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    rng = np.random.default_rng(SEED)
    test = dataset.indices(split="test")
    names = dataset.labels("sequence", test)
    results = []
    for q, take in enumerate(TAKES):
        rows = test[np.char.endswith(names.astype(str), take)]
        if rows.size == 0:
            raise SystemExit(f"{args.data}: no test frames of take {take}")
        rows = rows[np.argsort(np.asarray(dataset.frame[rows]), kind="stable")]
        row = int(rows[len(rows) // 2])
        pose = np.asarray(dataset.poses3d[row], np.float64)
        pelvis = pose[kp.H36M17.index("pelvis")]
        azimuth = np.deg2rad(35.0 + 90.0 * q + rng.uniform(-20, 20))
        distance, height = rng.uniform(3.5, 5.0), rng.uniform(0.8, 2.2)
        center = pelvis + np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), 0.0])
        center[2] = height
        camera = Camera(name=f"virtual{q}", rotation=look_at(center, pelvis), center=center, focal=(1000.0, 1000.0),
                        principal=(640.0, 360.0), width=1280, height=720)
        uv, _ = camera.project(pose)
        coco = np.zeros((17, 2))
        found = np.zeros(17, bool)
        for i, name in enumerate(kp.get_profile("coco17").joints):
            if name in kp.H36M17.joints:
                coco[i] = uv[kp.H36M17.index(name)]
                found[i] = True
        lo, hi = coco[found].min(0), coco[found].max(0)
        scale = float(np.sqrt(np.prod(hi - lo)))
        sigma = COCO_SIGMAS / 2 * scale
        noise = rng.normal(size=(17, 2)) * sigma[:, None]
        coco = np.where(found[:, None], coco + noise, 0.0)
        score = np.clip(0.97 - 0.5 * np.linalg.norm(noise, axis=-1) / scale / COCO_SIGMAS - rng.uniform(0, 0.1, 17),
                        0.35, 0.99)
        if q == 1:
            score[kp.get_profile("coco17").index("left_wrist")] = 0.12  # a missed wrist
        triples = [[round(float(x), 1), round(float(y), 1), round(float(s), 3) if f else 0]
                   for (x, y), s, f in zip(coco, score, found)]
        results.append({"image_id": q, "category_id": 1, "keypoints": [v for t in triples for v in t],
                        "score": round(float(score[found].mean()), 3),
                        "source": f"CMU mocap {take} frame {int(dataset.frame[row])}, virtual camera {q}"})
    lines = ",\n".join(" " + json.dumps(r) for r in results)
    pathlib.Path(args.out).write_text(f"[\n{lines}\n]\n")
    print(f"wrote {len(results)} poses -> {args.out}")


if __name__ == "__main__":
    main()
