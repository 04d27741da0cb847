"""`prpose embed`: 2D keypoints in, probabilistic embeddings out (.npz)."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="training run directory (written by `prpose train`)")
    parser.add_argument(
        "--input", required=True,
        help=".npz with `keypoints` (N, J, 2), optional `scores` (N, J) and `profile`; or COCO keypoint-results JSON",
    )
    parser.add_argument("--output", required=True, help="output .npz: mean (N, D), stddev (N, D), samples (N, K, D), "
                        "a, b, smoothing (match probability), fingerprint")
    parser.add_argument("--profile", default=None, help="keypoint profile of the input (coco17, h36m17, input13); "
                        "default: the file's own, or coco17 for JSON")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keypoints scoring below this count as missing (default: %(default)s)")


def main(args) -> int:
    from prpose.inference import load_model
    from prpose.keypoint_io import read_keypoints

    poses = read_keypoints(args.input, args.profile)
    model = load_model(args.model)
    out = model.embed(poses.keypoints, profile=poses.profile, scores=poses.scores,
                      score_threshold=args.score_threshold)
    a, b, smoothing = model.match_params
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp.npz")
    np.savez(tmp, mean=out.mean, stddev=out.stddev, samples=out.samples, a=np.float32(a), b=np.float32(b),
             smoothing=np.float32(smoothing), fingerprint=model.fingerprint, ids=np.array(poses.ids))
    tmp.replace(output)  # never leave a half-written output under the final name
    print(f"embedded {len(out.mean)} poses ({poses.profile}) -> {output}  "
          f"[D={out.mean.shape[1]}, K={out.samples.shape[1]}, model {model.fingerprint}]")
    return 0
