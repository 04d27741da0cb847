"""`prpose index build`: embed every (frame, camera) view of a prepared dataset into a searchable PoseIndex."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

_CHUNK = 8192


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="training run directory")
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--out", required=True, help="index directory to write")
    parser.add_argument("--split", nargs="*", default=None, help="splits to index (default: all)")
    parser.add_argument("--cameras", nargs="*", default=None, help="camera names or numbers (default: all)")
    parser.add_argument("--every", type=int, default=1, help="index every N-th frame (default: %(default)s)")
    parser.add_argument("--factory", default="auto",
                        help='FAISS candidate stage: "auto", "Flat", "HNSW32", "IVF1024,Flat", ...')
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing prpose index at --out (anything else there is refused)")


def _camera_columns(names: list[str], wanted: list[str] | None) -> list[int]:
    from prpose.errors import PrposeError

    if not wanted:
        return list(range(len(names)))
    columns = []
    for item in wanted:
        if item in names:
            columns.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            columns.append(int(item))
        else:
            raise PrposeError(f"--cameras: unknown camera {item!r}; the dataset has {names} (or 0..{len(names) - 1})")
    return columns


def main(args) -> int:
    from prpose import atomic
    from prpose.errors import PrposeError
    from prpose.index import is_index_dir

    out = pathlib.Path(args.out)
    if args.every < 1:
        raise PrposeError(f"--every {args.every}: expected a positive integer")
    # Hold --out's write lock for the whole build: a second build into the same --out fails now, not after
    # both have worked (and one silently replaced the other). Only a prpose index may be overwritten.
    with atomic.locked(out):
        atomic.recover(out, is_index_dir)
        atomic.check_target(out, args.overwrite, is_index_dir, "prpose index")
        return _build(args, out)


def _build(args, out: pathlib.Path) -> int:
    import jax

    from prpose.dataset import load_dataset
    from prpose.errors import PrposeError
    from prpose.index import PoseIndex
    from prpose.inference import load_model
    from prpose.progress import progress

    dataset = load_dataset(args.data)
    model = load_model(args.model)
    rows = dataset.indices(split=args.split)[:: args.every]
    if rows.size == 0:
        raise PrposeError(f"{args.data}: no frames in split {args.split}")
    columns = _camera_columns(list(dataset.camera_names), args.cameras)
    index = PoseIndex(model.embedding_dim, model.num_samples, model.match_params, model.fingerprint,
                      profile=model.input_profile, factory=args.factory)
    labels = {name: dataset.labels(name) for name in ("source", "subject", "sequence")}
    def add(emb, chunk, column, points, visible):
        index.add(emb.mean, emb.samples, {
            **{name: values[chunk] for name, values in labels.items()},
            "frame": np.asarray(dataset.frame[chunk]),
            "camera": np.full(chunk.size, dataset.camera_names[column]),
            "row": chunk,
            "pose3d": np.asarray(dataset.poses3d[chunk]),
            "keypoints2d": points,
            "visible": visible,
        })

    skipped = 0
    if model.window > 1:
        skipped = _add_windows(model, dataset, args, columns, add)
    else:
        with progress(total=rows.size * len(columns), desc="embedding views", unit="pose") as bar:
            for column in columns:
                for start in range(0, rows.size, _CHUNK):
                    chunk = rows[start:start + _CHUNK]
                    points = np.asarray(dataset.keypoints2d[chunk, column])
                    visible = np.asarray(dataset.visibility[chunk, column])
                    # A distinct sample key per chunk: entries must not share their noise draws. Views whose torso
                    # is hidden cannot be normalised: the embedder skips them; they are counted and reported.
                    key = jax.random.fold_in(jax.random.key(0), column * dataset.num_frames + start)
                    emb, usable, _ = model.embed_usable(points, profile="h36m17", visible=visible, key=key)
                    skipped += chunk.size - usable.size
                    if usable.size:
                        add(emb, chunk[usable], column, points[usable], visible[usable])
                    bar.update(len(points))
    if len(index) == 0:
        raise PrposeError(f"{args.data}: no view could be embedded ({skipped} skipped: torso not visible)")
    index.save(out, model_ref={"run_dir": str(pathlib.Path(args.model).resolve()), "fingerprint": model.fingerprint,
                               "dataset": str(pathlib.Path(args.data).resolve()), "window": model.window})
    what = f"windows of {model.window} frames centred on " if model.window > 1 else ""
    print(f"indexed {len(index)} views ({what}{rows.size} frames x {len(columns)} cameras"
          f"{f', {skipped} skipped: torso not visible' if skipped else ''}) -> {out}")
    return 0


def _add_windows(model, dataset, args, columns, add) -> int:
    """Index entries of a temporal model: per camera, the window centred on each kept frame (every --every-th
    frame of the splits; windows take their neighbours from every frame of the splits, edge-replicated at the ends
    of each take: prpose.windows). Returns the number of kept views skipped (their own torso is not visible)."""
    import jax

    from prpose.progress import progress
    from prpose.windows import embed_track

    rows = dataset.indices(split=args.split)
    keep = np.zeros(rows.size, bool)
    keep[:: args.every] = True
    sequence, frame = dataset.codes("sequence")[rows], np.asarray(dataset.frame[rows])
    skipped = 0
    for column in progress(columns, desc="embedding windows", unit="camera"):
        points = np.asarray(dataset.keypoints2d[rows, column])
        visible = np.asarray(dataset.visibility[rows, column])
        out = embed_track(model, points, "h36m17", key=jax.random.fold_in(jax.random.key(0), column),
                          visible=visible, sequence=sequence, frame=frame)
        skipped += int(keep[[row for row, _ in out.skipped]].sum())
        mine = keep[out.frames]
        pos = out.frames[mine]
        add(type(out.embeddings)(*(a[mine] for a in out.embeddings)), rows[pos], column, points[pos], visible[pos])
    return skipped
