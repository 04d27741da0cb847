"""`prpose query`: which indexed poses match these 2D poses in 3D? Ranked by the model's match probability."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

import numpy as np

MATCH_KAPPA = 0.1  # two poses match in 3D when their NP-MPJPE is below this (the protocol's kappa)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from prpose.commands.embed import INPUT_HELP, PROFILE_HELP
    from prpose.keypoints import PROFILES

    parser.add_argument("--index", required=True, help="index directory (written by `prpose index build`)")
    parser.add_argument("--input", required=True, help=INPUT_HELP)
    parser.add_argument("--k", type=int, default=10, help="matches per query (default: %(default)s)")
    parser.add_argument("--profile", default=None, help=PROFILE_HELP.format(", ".join(sorted(PROFILES))))
    parser.add_argument("--model", default=None, help="training run directory (default: the one that built the index)")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="keypoints below count as missing (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table: {\"queries\": [{query, "
                        "row, id, matches}], \"skipped\": [{row, id, reason}]}")
    parser.add_argument("--plot", default=None, metavar="PNG", help="draw each query beside its top matches")


def _model_dir(index_dir: pathlib.Path, override: str | None) -> str:
    from prpose import atomic
    from prpose.errors import PrposeError
    from prpose.index import MODEL_REF, is_index_dir

    atomic.recover(index_dir, is_index_dir)  # an index whose rebuild was interrupted is restored first
    if not index_dir.is_dir():
        what = "not a directory" if index_dir.exists() else "no such directory"
        raise PrposeError(f"--index {index_dir}: {what}; expected an index written by `prpose index build`")
    if override:
        return override
    ref = index_dir / MODEL_REF
    if not ref.is_file():
        raise PrposeError(f"{index_dir}: no {MODEL_REF} naming the model that built the index; pass --model")
    try:
        run_dir = json.loads(ref.read_text())["run_dir"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise PrposeError(f"{ref}: unreadable ({type(err).__name__}: {err}); pass --model") from None
    if not isinstance(run_dir, str):
        raise PrposeError(f"{ref}: run_dir {run_dir!r}, expected a path; pass --model")
    return run_dir


def _pose_errors(pose3d, result) -> np.ndarray | None:
    """NP-MPJPE (Q, k) of every hit's 3D pose to the query's true 3D pose, when both are known."""
    if pose3d is None or "pose3d" not in result.metadata:
        return None
    from prpose.normalize import normalize_3d
    from prpose.procrustes import np_mpjpe

    hits, _ = normalize_3d(result.metadata["pose3d"])
    truth, _ = normalize_3d(pose3d)
    errors = np.asarray(np_mpjpe(hits, np.asarray(truth)[:, None]))
    return np.where(result.ids >= 0, errors, np.nan)


def _table(ids, result, k, errors) -> str:
    lines = []
    for q, query_id in enumerate(ids):
        lines.append(f"query {q} ({query_id})")
        lines.append(f"  {'rank':>4}  {'P(match)':>8}  {'source':<10} {'sequence':<44} {'frame':>6}  "
                     f"{'camera':<10}" + ("  NP-MPJPE to truth" if errors is not None else ""))
        for rank, hit in enumerate(result.rows(q)[:k], start=1):
            line = (f"  {rank:>4}  {hit['probability']:8.4f}  {str(hit.get('source', '')):<10} "
                    f"{str(hit.get('sequence', ''))[-44:]:<44} {hit.get('frame', ''):>6}  {hit.get('camera', ''):<10}")
            if errors is not None:
                error = errors[q, rank - 1]
                line += f"  {error:.3f} {'(match)' if error < MATCH_KAPPA else ''}"
            lines.append(line)
    return "\n".join(lines)


def _plot(path, poses, result, k, errors) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prpose.plotting import draw_skeleton

    shown = min(k, 5)
    n = len(poses.keypoints)
    fig, axes = plt.subplots(n, shown + 1, figsize=(2.4 * (shown + 1), 2.6 * n), squeeze=False)
    for q in range(n):
        ax = axes[q, 0]
        draw_skeleton(ax, poses.keypoints[q], poses.profile, visible=poses.scores[q] > 0)
        ax.set_title(f"query {q}", fontsize=9, color="darkgreen")
        for j, hit in enumerate(result.rows(q)[:shown]):
            ax = axes[q, j + 1]
            if "keypoints2d" in hit:
                draw_skeleton(ax, np.asarray(hit["keypoints2d"]), "h36m17", visible=np.asarray(hit.get("visible")))
            truth = "" if errors is None else f"  3D err {errors[q, j]:.2f}"
            ax.set_title(f"#{j + 1} P={hit['probability']:.2f}{truth}\n{str(hit.get('sequence', ''))[-22:]} "
                         f"f{hit.get('frame', '')} {hit.get('camera', '')}", fontsize=7,
                         color="black" if errors is None or errors[q, j] < MATCH_KAPPA else "firebrick")
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("query (left) and its best matches in 3D (blue = left limbs, red = right"
                 + ("; red title = not a 3D match" if errors is not None else "") + ")", fontsize=10)
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args) -> int:
    from prpose.commands.embed import embed_poses
    from prpose.errors import PrposeError
    from prpose.index import PoseIndex
    from prpose.inference import load_model
    from prpose.keypoint_io import read_keypoints

    if args.k < 1:
        raise PrposeError(f"--k {args.k}: expected a positive integer")
    index_dir = pathlib.Path(args.index)
    poses = read_keypoints(args.input, args.profile)
    model = load_model(_model_dir(index_dir, args.model))
    index = PoseIndex.load(index_dir, expected_fingerprint=model.fingerprint)
    usable = embed_poses(model, poses, args.score_threshold, "query")
    emb, rows = usable.embeddings, usable.rows
    all_ids = poses.ids
    poses = dataclasses.replace(poses, keypoints=poses.keypoints[rows], scores=poses.scores[rows],
                                ids=tuple(poses.ids[r] for r in rows),
                                pose3d=None if poses.pose3d is None else poses.pose3d[rows])
    result = index.search(emb.mean, emb.samples, args.k, fingerprint=model.fingerprint)
    errors = _pose_errors(poses.pose3d, result)
    if args.json:
        queries = [{"query": q, "row": int(rows[q]), "id": poses.ids[q],
                    "matches": [{name: value for name, value in hit.items()
                                 if name not in ("pose3d", "keypoints2d", "visible")}
                                | ({} if errors is None else {"np_mpjpe_to_truth": float(errors[q, j])})
                                for j, hit in enumerate(result.rows(q))]}
                   for q in range(len(poses.ids))]
        skipped = [{"row": row, "id": all_ids[row], "reason": reason} for row, reason in usable.skipped]
        print(json.dumps({"queries": queries, "skipped": skipped}, indent=1,
                         default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    else:
        print(_table(poses.ids, result, args.k, errors))
    if args.plot:
        _plot(args.plot, poses, result, args.k, errors)
        print(f"wrote {args.plot}")
    return 0
