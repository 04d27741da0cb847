"""`prpose query`: which stored poses match these 2D poses in 3D? Ranked by the model's match probability.

Without ``--index`` the query runs against the pose library packaged with the model (by default the packaged
model ``prpose-cmu-v1`` and its CMU motion library), one hit per distinct 3D pose.
"""

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

    parser.add_argument("--index", default=None, help="index directory (written by `prpose index build`; "
                        "default: the pose library packaged with the model)")
    parser.add_argument("--input", required=True, help=INPUT_HELP)
    parser.add_argument("--k", type=int, default=10, help="matches per query (default: %(default)s)")
    parser.add_argument("--profile", default=None, help=PROFILE_HELP.format(", ".join(sorted(PROFILES))))
    parser.add_argument("--model", default=None, help="model: packaged name, exported model or training run "
                        "(default: the one that built --index, else the packaged default model)")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keypoints scoring below this count as missing, in [0, 1] (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table: {\"queries\": [{query, "
                        "row, id, matches}], \"skipped\": [{row, id, reason}]}")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads the search runs its query blocks on (default: every core; the matches do not "
                             "depend on it)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="draw each query beside its top matches, in 2D and (with their 3D poses) in 3D, into "
                             "this image file (.png added when the name has no extension)")


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
            line = (f"  {rank:>4}  {hit['probability']:8.4f}  {str(hit.get('source', ''))[:10]:<10} "
                    f"{str(hit.get('sequence', ''))[-44:]:<44} {hit.get('frame', ''):>6}  {hit.get('camera', ''):<10}")
            if errors is not None:
                error = errors[q, rank - 1]
                line += f"  {error:.3f} {'(match)' if error < MATCH_KAPPA else ''}"
            lines.append(line)
    return "\n".join(lines)


def _plot(path, poses, result, k, errors, cameras=None, score_threshold: float = 0.3) -> None:
    """Each query (2D) beside its top matches (2D as their camera saw them) and, when the hits carry 3D poses,
    a second row with the matches in 3D (facing the pose as their camera did: ``cameras`` (Q, k, 3) centres)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from prpose.plotting import draw_skeleton, draw_skeleton_3d

    shown = min(k, 5)
    n = len(poses.keypoints)
    with_3d = "pose3d" in result.metadata
    rows = 2 if with_3d else 1
    cols = shown + 1
    fig = Figure(figsize=(2.5 * cols, 2.7 * rows * n))
    FigureCanvasAgg(fig)
    for q in range(n):
        top = q * rows * cols
        ax = fig.add_subplot(rows * n, cols, top + 1)
        # Keypoints the file marks missing have no position: left out; low-confidence ones drawn hollow/dashed.
        points = np.where(poses.scores[q][:, None] > 0, poses.keypoints[q], np.nan)
        draw_skeleton(ax, points, poses.profile, visible=poses.scores[q] >= score_threshold)
        ax.set_title(f"query {q}", fontsize=9, color="darkgreen")
        ax.set_xticks([]), ax.set_yticks([])
        if with_3d:
            ax3 = fig.add_subplot(rows * n, cols, top + cols + 1, projection="3d")
            if poses.pose3d is not None:
                draw_skeleton_3d(ax3, poses.pose3d[q], "h36m17", bare=True)
                ax3.set_title("query 3D (truth)", fontsize=8, color="darkgreen")
            else:
                ax3.set_axis_off()
                ax3.text2D(0.5, 0.5, "2D input:\n3D unknown", ha="center", va="center", fontsize=8,
                           transform=ax3.transAxes)
        for j, hit in enumerate(result.rows(q)[:shown]):
            ax = fig.add_subplot(rows * n, cols, top + j + 2)
            if "keypoints2d" in hit:
                draw_skeleton(ax, np.asarray(hit["keypoints2d"]), "h36m17", visible=np.asarray(hit.get("visible")))
            truth = "" if errors is None else f"  3D err {errors[q, j]:.2f}"
            ax.set_title(f"#{j + 1} P={hit['probability']:.2f}{truth}\n{str(hit.get('sequence', ''))[-22:]} "
                         f"f{hit.get('frame', '')} {hit.get('camera', '')}", fontsize=7,
                         color="black" if errors is None or errors[q, j] < MATCH_KAPPA else "firebrick")
            ax.set_xticks([]), ax.set_yticks([])
            if with_3d:
                ax3 = fig.add_subplot(rows * n, cols, top + cols + j + 2, projection="3d")
                draw_skeleton_3d(ax3, np.asarray(hit["pose3d"]), "h36m17", bare=True,
                                 camera_center=None if cameras is None else cameras[q, j])
                ax3.set_title(f"#{j + 1} in 3D", fontsize=7)
    fig.suptitle("query (left) and its best matches (blue = left limbs, red = right"
                 + ("; red title = not a 3D match" if errors is not None else "")
                 + ("; lower row: the matches in 3D, seen from their camera" if with_3d else "") + ")", fontsize=9,
                 y=1 - 0.2 / fig.get_figheight())
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 1.0 / fig.get_figheight(),
                        wspace=0.08, hspace=0.4)
    from prpose.errors import writing

    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        fig.savefig(path, dpi=90)


def _packaged_library(model_arg):
    """(model, PoseLibrary) of a model that carries a library (default: the packaged default model)."""
    from prpose.errors import PrposeError
    from prpose.export import resolve
    from prpose.inference import load_model
    from prpose.library import MANIFEST, PoseLibrary, library_dir

    directory = resolve(model_arg)
    where = library_dir(directory)
    if not (where / MANIFEST).is_file():
        raise PrposeError(f"{directory} carries no pose library ({where}); pass --index (see `prpose index build`) "
                          "or build one with `prpose library build`")
    model = load_model(directory)
    return model, PoseLibrary(where, expected_fingerprint=model.fingerprint)


def main(args) -> int:
    from prpose.commands.embed import embed_poses
    from prpose.errors import PrposeError, check_fraction, check_output_image
    from prpose.inference import load_model
    from prpose.keypoint_io import read_keypoints

    if args.k < 1:
        raise PrposeError(f"--k {args.k}: expected a positive integer")
    check_fraction(args.score_threshold, "--score-threshold")
    if args.threads is not None:
        from prpose.index.parallel import resolve_threads

        resolve_threads(args.threads, "query --threads")
    plot = check_output_image(args.plot, "--plot") if args.plot else None
    poses = read_keypoints(args.input, args.profile)
    library = None
    if args.index:
        from prpose.index import load_index

        index_dir = pathlib.Path(args.index)
        model = load_model(_model_dir(index_dir, args.model))
        index = load_index(index_dir, expected_fingerprint=model.fingerprint)  # one index, or merged shards
    else:
        model, library = _packaged_library(args.model)
        index = library
    if args.threads is not None:
        (index.index if index is library else index).threads = args.threads
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
    if plot:
        cameras = None
        if library is not None:  # the library stores 3D poses and cameras: project the hits for the picture
            points, visible, cameras = library.views(result.ids.clip(min=0))
            result.metadata["keypoints2d"] = points.reshape(*result.ids.shape, *points.shape[1:])
            result.metadata["visible"] = visible.reshape(*result.ids.shape, *visible.shape[1:])
            cameras = cameras.reshape(*result.ids.shape, 3)
        _plot(plot, poses, result, args.k, errors, cameras, args.score_threshold)
        print(f"wrote {plot}")
    return 0
