"""`prpose index build`: embed every (frame, camera) view of a prepared dataset into a searchable PoseIndex.

Past one process: `--shard I/N` builds part I of N (a contiguous run of the dataset's rows) into
`OUT/shard-I-of-N/`, an ordinary index; N such processes may run on one machine or on N machines sharing OUT, and
`prpose index merge OUT` then joins them (`prpose.index.shards`: searched as one, with the ids a single build
gives). `--workers N` does all of it locally: N processes, one per shard, then the merge.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

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
    parser.add_argument("--storage", default="gaussian", choices=("gaussian", "float16", "float32"),
                        help="how entries keep their samples, which are a fixed function of each entry's mean and "
                        "stddev (prpose.index.storage.regenerate_samples) whatever the storage: gaussian = mean + "
                        "float16 stddev, samples regenerated when needed (96 B/entry with the mean; default), or the "
                        "samples stored in float16 (704 B) / float32 (1,344 B)")
    parser.add_argument("--shard", metavar="I/N", default=None,
                        help="build only part I of N (from 0) into OUT/shard-I-of-N; run the N parts (processes "
                        "or machines), then `prpose index merge OUT`")
    parser.add_argument("--workers", type=int, default=1,
                        help="build in this many local processes (shards of OUT, merged at the end and searched "
                        "as one; default: %(default)s)")
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
    from prpose.index import is_index_dir, shards

    out = pathlib.Path(args.out)
    if args.every < 1:
        raise PrposeError(f"--every {args.every}: expected a positive integer")
    if args.workers < 1:
        raise PrposeError(f"--workers {args.workers}: expected a positive integer")
    if args.workers > 1 and args.shard is not None:
        raise PrposeError(f"--workers {args.workers} with --shard {args.shard}: give one of them (--workers runs "
                          "every shard itself)")
    shard = (0, 1)
    if args.workers > 1 or args.shard is not None:
        shard = (0, args.workers) if args.workers > 1 else shards.parse_shard(args.shard)
        shards.check_shards_target(out, shard[1])
        if args.workers > 1:
            return _build_with_workers(args, out)
        out.mkdir(parents=True, exist_ok=True)
        out = out / shards.shard_name(*shard)
    # Hold --out's write lock for the whole build: a second build into the same --out fails now, not after
    # both have worked (and one silently replaced the other). Only a prpose index may be overwritten.
    with atomic.locked(out):
        atomic.recover(out, is_index_dir)
        atomic.check_target(out, args.overwrite, is_index_dir, "prpose index")
        return _build(args, out, shard)


def _build_with_workers(args, out: pathlib.Path) -> int:
    """Run `index build --shard I/N` for every I in its own process, then merge the shards."""
    from prpose.errors import PrposeError
    from prpose.index import shards

    n = args.workers
    common = ["--model", args.model, "--data", args.data, "--out", str(out), "--every", str(args.every),
              "--factory", args.factory, "--storage", args.storage]
    common += ["--split", *args.split] if args.split is not None else []
    common += ["--cameras", *args.cameras] if args.cameras else []
    common += ["--overwrite"] if args.overwrite else []
    print(f"building {n} shards of {out} in {n} processes", file=sys.stderr)
    workers = [subprocess.Popen([sys.executable, "-m", "prpose.cli", "index", "build", *common, "--shard", f"{i}/{n}"])
               for i in range(n)]
    codes = [worker.wait() for worker in workers]
    failed = [f"{i}/{n} (exit {code})" for i, code in enumerate(codes) if code != 0]
    if failed:
        raise PrposeError(f"--workers {n}: shard(s) {', '.join(failed)} failed (their errors are above); rerun "
                          f"them with --shard I/{n} --overwrite, then `prpose index merge {out}`")
    merged = shards.merge_shards(out)
    print(f"merged {n} shards ({merged['count']} views) -> {out}")
    return 0


def _build(args, out: pathlib.Path, shard: tuple[int, int]) -> int:
    from prpose.dataset import load_dataset
    from prpose.errors import PrposeError
    from prpose.index import PoseIndex, shards
    from prpose.inference import load_model
    from prpose.progress import progress

    dataset = load_dataset(args.data)
    model = load_model(args.model)
    rows = dataset.indices(split=args.split)[:: args.every]
    if rows.size == 0:
        raise PrposeError(f"{args.data}: no frames in split {args.split}")
    if model.window > 1 and shard[1] > 1:
        raise PrposeError(f"--shard/--workers: {args.model} is a temporal model (windows of {model.window} frames): "
                          "its windows span whole takes; build its index in one process")
    part = shards.shard_rows(rows.size, _CHUNK, *shard)
    columns = _camera_columns(list(dataset.camera_names), args.cameras)
    index = PoseIndex(model.embedding_dim, model.num_samples, model.match_params, model.fingerprint,
                      profile=model.input_profile, factory=args.factory, sample_storage=args.storage)
    labels = {name: dataset.labels(name) for name in ("source", "subject", "sequence")}

    def add(emb, chunk, column, points, visible):
        # The entries' samples come from their mean and stddev (PoseIndex.add), not from the embedder's draws.
        index.add(emb.mean, stddevs=emb.stddev, metadata={
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
        # Entries in (row block, camera) order: the shards of a sharded build, concatenated, are a single build.
        with progress(total=(part.stop - part.start) * len(columns), desc="embedding views", unit="pose") as bar:
            for start in range(part.start, part.stop, _CHUNK):
                for column in columns:
                    chunk = rows[start:min(start + _CHUNK, part.stop)]
                    points = np.asarray(dataset.keypoints2d[chunk, column])
                    visible = np.asarray(dataset.visibility[chunk, column])
                    # Views whose torso is hidden cannot be normalised: the embedder skips them; they are counted
                    # and reported.
                    emb, usable, _ = model.embed_usable(points, profile="h36m17", visible=visible)
                    skipped += chunk.size - usable.size
                    if usable.size:
                        add(emb, chunk[usable], column, points[usable], visible[usable])
                    bar.update(len(points))
    if len(index) == 0:
        raise PrposeError(f"{args.data}: no view could be embedded ({skipped} skipped: torso not visible)")
    index.save(out, model_ref={"run_dir": str(pathlib.Path(args.model).resolve()), "fingerprint": model.fingerprint,
                               "dataset": str(pathlib.Path(args.data).resolve()), "window": model.window})
    what = f"windows of {model.window} frames centred on " if model.window > 1 else ""
    where = f"shard {shard[0]}/{shard[1]}: " if shard[1] > 1 else ""
    print(f"{where}indexed {len(index)} views ({what}{part.stop - part.start} frames x {len(columns)} cameras"
          f"{f', {skipped} skipped: torso not visible' if skipped else ''}) -> {out}")
    if shard[1] > 1 and args.workers == 1:
        print(f"when all {shard[1]} shards are built: prpose index merge {out.parent}")
    return 0


def _add_windows(model, dataset, args, columns, add) -> int:
    """Index entries of a temporal model: per camera, the window centred on each kept frame (every --every-th
    frame of the splits; windows take their neighbours from every frame of the splits, edge-replicated at the ends
    of each take: prpose.windows). Returns the number of kept views skipped (their own torso is not visible)."""
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
        out = embed_track(model, points, "h36m17", visible=visible, sequence=sequence, frame=frame)
        skipped += int(keep[[row for row, _ in out.skipped]].sum())
        mine = keep[out.frames]
        pos = out.frames[mine]
        add(type(out.embeddings)(*(a[mine] for a in out.embeddings)), rows[pos], column, points[pos], visible[pos])
    return skipped
