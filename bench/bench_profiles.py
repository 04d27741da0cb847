"""Does one model serve detectors with a nose and detectors with a head top? Cross-view Hit@k per query profile.

    .venv/bin/python bench/bench_profiles.py --data /work/data/mocap --model RUN_A RUN_B [--every 10]

The index side always holds the clean views (every joint the dataset has: h36m17, so the head top and the nose);
the query side is what a detector would give: every joint, no head top (COCO-17, OpenPose BODY_25, MediaPipe), or
no nose (Stacked Hourglass / MPII-16), or no nose with the head top given in its place. A hidden joint reaches each model as a zero-score keypoint does in
`prpose embed`: a model whose input profile lacks the joint never reads it, a model with a mask input sees it
masked, and one without a mask input sees it zeroed (`prpose embed` refuses to feed such a model a detector
profile that lacks one of its joints; here the zeroed input shows what that refusal avoids). Baseline in the same run: the 2D-keypoint nearest neighbour on all joints.
Protocol: prpose/protocol.py (all ordered camera pairs, NP-MPJPE < 0.1 is a hit), test split, every --every-th frame.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

# (name, joints hidden in the query, whether the head top is given in the nose's place: REFERENCE.md's first
# input joint is "nose (or head)", the stand-in an input13 model could be fed from a head-top detector)
QUERY_SETTINGS = (
    ("all joints", (), False),
    ("no head top (COCO / BODY_25 / MediaPipe)", ("head",), False),
    ("no nose (Stacked Hourglass / MPII-16)", ("nose",), False),
    ("no nose, head top given as the nose", (), True),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared dataset")
    parser.add_argument("--model", nargs="+", required=True, help="training run directories to compare")
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=10, help="keep every n-th frame of the split")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=100, help="two-stage ranking: re-rank this many by match")
    args = parser.parse_args(argv)

    from prpose import keypoints as kp
    from prpose.eval.baselines import Keypoints2DMethod
    from prpose.inference import load_model
    from prpose.protocol import EmbeddingMethod, compute_features, cross_view_hit_at_k
    from prpose.views import views_from_dataset

    views = views_from_dataset(args.data, args.split, args.every, args.max_frames, profile="h36m17")
    print(f"{args.data} {args.split}: {views.settings['frames']} frames x {views.num_cameras} cameras "
          f"(every {args.every}th; {views.settings['dropped_frames']} dropped)", flush=True)
    ks = (1, 10)
    rows = []
    start = time.time()
    base = cross_view_hit_at_k(Keypoints2DMethod(), views, ks=ks)
    rows.append(("2D keypoints (baseline)", QUERY_SETTINGS[0][0], base.mean))
    for run in args.model:
        model = load_model(run)
        m = model.config.model
        label = f"{run} ({m.input_profile}, mask {m.mask_mode})"
        method = EmbeddingMethod(model, candidates=args.candidates)
        index_features = compute_features(method, views)
        for setting, hidden, head_as_nose in QUERY_SETTINGS:
            visible = views.visible.copy()
            for joint in hidden:
                visible[..., kp.H36M17.index(joint)] = False
            keypoints = views.keypoints2d.copy()
            if head_as_nose:
                keypoints[..., kp.H36M17.index("nose"), :] = keypoints[..., kp.H36M17.index("head"), :]
            result = cross_view_hit_at_k(method, views, ks=ks, query_visible=visible, query_keypoints=keypoints,
                                         index_features=index_features)
            rows.append((label, setting, result.mean))
            print(f"  [{time.time() - start:6.0f} s] {label}: {setting} done", flush=True)

    print("\n| model | query keypoints | Hit@1 | Hit@10 |\n|---|---|---|---|")
    for label, setting, value in rows:
        print(f"| {label} | {setting} | {100 * value[0]:.1f} | {100 * value[1]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
