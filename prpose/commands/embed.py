"""`prpose embed`: 2D keypoints in, probabilistic embeddings out (.npz)."""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np


INPUT_HELP = ("keypoints: COCO keypoint-results JSON, OpenPose BODY_25 JSON (a file or a folder of them), MediaPipe "
              "landmarks JSON/.npz, or .npz with `keypoints` (N, J, 2), `profile` and optional `scores` (N, J) "
              "(README: Input files)")
PROFILE_HELP = ("keypoint profile of the input, for a bare .npz without a `profile` array; it must agree with the "
                "file's own profile when the file has one (known: {})")
MAX_SKIP_LINES = 20  # rows named on stderr; the output holds every one


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from prpose.keypoints import PROFILES

    parser.add_argument("--model", default=None, help="packaged model name, exported model or training run "
                        "directory (default: the packaged model prpose-cmu-v1)")
    parser.add_argument("--input", required=True, help=INPUT_HELP)
    parser.add_argument("--output", required=True, help="output .npz: mean (M, D), stddev (M, D), samples (M, K, D) "
                        "of the M usable poses, ids and rows (their input rows), a, b, smoothing (match "
                        "probability), fingerprint, window (frames per embedding: a temporal model embeds the "
                        "window centred on each row of a track); skipped, skipped_ids, skipped_reasons for the others")
    parser.add_argument("--profile", default=None, help=PROFILE_HELP.format(", ".join(sorted(PROFILES))))
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keypoints scoring below this count as missing, in [0, 1] (default: %(default)s)")


def embed_poses(model, poses, score_threshold: float, command: str):
    """Embed every usable pose of a KeypointFile; name each skipped one on stderr (at most MAX_SKIP_LINES).

    A temporal model (window T > 1) reads the file as one track, rows in time order (a COCO file sorted by image
    id with one pose per image, an .npz whose first axis is time): each usable frame gets the embedding of the
    window of T frames centred on it, edge-replicated at both ends (prpose.windows.embed_track).
    Returns prpose.inference.UsableEmbeddings (rows: the input rows the embeddings belong to). Raises
    PrposeError when no pose is usable, or for a temporal model when an image holds more than one pose.
    """
    import re

    from prpose.errors import PrposeError
    from prpose.inference import UsableEmbeddings
    from prpose.windows import embed_track

    if model.window > 1:
        second = next((i for i in poses.ids if re.search(r" #[1-9]\d*$", i)), None)
        if second is not None:
            raise PrposeError(f"{second}: a second pose of one image; a temporal model (window {model.window}) reads "
                              "one person's track, one pose per frame in time order: keep one pose per image")
        numbers = [re.fullmatch(r"image (\d+) #0", i) for i in poses.ids]
        if all(numbers) and any(int(b[1]) <= int(a[1]) for a, b in zip(numbers, numbers[1:])):
            a, b = next((a, b) for a, b in zip(numbers, numbers[1:]) if int(b[1]) <= int(a[1]))
            raise PrposeError(f"{b[0]} follows {a[0]}: a temporal model (window {model.window}) reads the rows as a "
                              "track in time order; sort the records by image id")
    track = embed_track(model, poses.keypoints, poses.profile, poses.scores, score_threshold)
    result = UsableEmbeddings(track.embeddings, track.frames, track.skipped)
    n = len(poses.ids)
    if not result.rows.size:
        row, reason = result.skipped[0]
        raise PrposeError(f"none of the {n} pose(s) in the input can be embedded (row {row} ({poses.ids[row]}): "
                          f"{reason})")
    if result.skipped:
        print(f"prpose {command}: skipped {len(result.skipped)} of {n} poses that cannot be embedded:",
              file=sys.stderr)
        for row, reason in result.skipped[:MAX_SKIP_LINES]:
            print(f"  row {row} ({poses.ids[row]}): {reason}", file=sys.stderr)
        if len(result.skipped) > MAX_SKIP_LINES:
            print(f"  ... and {len(result.skipped) - MAX_SKIP_LINES} more (all are listed in the output)",
                  file=sys.stderr)
    return result


def main(args) -> int:
    from prpose.errors import check_fraction, check_output_file, writing
    from prpose.inference import load_model
    from prpose.keypoint_io import read_keypoints

    check_fraction(args.score_threshold, "--score-threshold")
    check_output_file(args.output, "--output")
    poses = read_keypoints(args.input, args.profile)
    model = load_model(args.model)
    result = embed_poses(model, poses, args.score_threshold, "embed")
    out = result.embeddings
    skipped = [row for row, _ in result.skipped]
    a, b, smoothing = model.match_params
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp.npz")
    try:
        with writing(output):
            np.savez(tmp, mean=out.mean, stddev=out.stddev, samples=out.samples, a=np.float32(a), b=np.float32(b),
                     smoothing=np.float32(smoothing), fingerprint=model.fingerprint, window=np.int64(model.window),
                     ids=np.array([poses.ids[r] for r in result.rows]), rows=result.rows.astype(np.int64),
                     skipped=np.array(skipped, np.int64),
                     skipped_ids=np.array([poses.ids[r] for r in skipped], dtype=str),
                     skipped_reasons=np.array([reason for _, reason in result.skipped], dtype=str))
            tmp.replace(output)  # never leave a half-written output under the final name
    finally:
        tmp.unlink(missing_ok=True)
    what = f"windows of {model.window} frames centred on " if model.window > 1 else ""
    print(f"embedded {what}{len(out.mean)} of {len(poses.ids)} poses ({poses.profile} -> {model.input_profile}"
          f"{f', {len(skipped)} skipped' if skipped else ''}) -> {output}  "
          f"[D={out.mean.shape[1]}, K={out.samples.shape[1]}, model {model.fingerprint}]")
    return 0
