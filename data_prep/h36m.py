"""`prpose prep h36m`: your own copy of the Human3.6M 3D poses -> a prepared dataset (real cameras).

Two common distributions of the same ground truth are read (the raw videos are not needed):

- ``videopose3d``: the VideoPose3D archive ``data_3d_h36m.npz``, key ``positions_3d`` holding a pickled dict
  ``positions_3d[subject][action] -> (T, 32, 3)`` world METRES. Loading it unpickles Python objects
  (``allow_pickle=True``): only convert archives you trust.
- ``baseline``: the 3d-pose-baseline HDF5 tree ``<root>/<subject>/MyPoses/3D_positions/<action>.h5``, dataset
  ``3D_positions`` of shape (96, T) in MILLIMETRES, joint-major (column t reshaped to (32, 3)).

The 17 label joints are kept (h36m32 -> h36m17 by name), each subject is projected with its own four real
cameras (``prpose.camera.h36m_rig``, with lens distortion), subjects S1, S5, S6, S7, S8 form the train split
and S9, S11 the test split (the evaluation protocol, REFERENCE.md). ``--subsample N`` keeps every N-th frame
(the same frames in all cameras); ``frame.npy`` holds the ORIGINAL 50 Hz frame number.

Any bad input (wrong shape, NaN, missing key, unknown subject, wrong units) stops the conversion with one
line naming the file and the problem, before anything is written.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import time

import numpy as np

from data_prep.common import ConversionReport, SequenceInput, write_sequences
from prpose.camera import H36M_SUBJECTS, h36m_rig
from prpose.dataset import check_target
from prpose.errors import PrposeError
from prpose.keypoints import convert

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
LAYOUTS = ("auto", "videopose3d", "baseline")
# A standing person's joints are within a few metres of the world origin in Human3.6M; a median absolute
# coordinate above this many metres means the file holds millimetres (or something else entirely).
_MAX_PLAUSIBLE_METRES = 20.0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="data_3d_h36m.npz (VideoPose3D) or the 3d-pose-baseline root folder")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="input layout (default auto: .npz file -> videopose3d, folder -> baseline)")
    parser.add_argument("--subsample", type=int, default=1,
                        help="keep every N-th frame (the evaluation protocol uses 10; default 1 = all)")
    parser.add_argument("--subjects", nargs="+", metavar="S",
                        help=f"only these subjects (default all found; known: {' '.join(H36M_SUBJECTS)})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def detect_layout(source: pathlib.Path) -> str:
    """'videopose3d' for an .npz file, 'baseline' for a folder with <S>/MyPoses/3D_positions."""
    if source.is_file():
        if source.suffix == ".npz":
            return "videopose3d"
        raise PrposeError(f"{source}: cannot tell the layout of a {source.suffix or 'suffix-less'} file; "
                          "expected data_3d_h36m.npz or a 3d-pose-baseline folder (or pass --layout)")
    if source.is_dir():
        if any(source.glob("*/MyPoses/3D_positions")):
            return "baseline"
        raise PrposeError(f"{source}: folder has no <subject>/MyPoses/3D_positions; not a 3d-pose-baseline tree")
    raise PrposeError(f"{source}: no such file or folder")


def _check_subject(subject: str, where: str) -> str:
    if subject not in H36M_SUBJECTS:
        raise PrposeError(f"{where}: unknown subject {subject!r}; expected one of {', '.join(H36M_SUBJECTS)}")
    return subject


def _check_positions(x, where: str, unit: str) -> np.ndarray:
    """(T, 32, 3) finite positions in ``unit`` -> float64 metres."""
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PrposeError(f"{where}: not a numeric array ({e})") from None
    if x.ndim != 3 or x.shape[1:] != (32, 3) or x.shape[0] == 0:
        raise PrposeError(f"{where}: positions have shape {x.shape}; expected (T, 32, 3) with T >= 1")
    bad = ~np.isfinite(x)
    if bad.any():
        frames = np.unique(np.nonzero(bad)[0])
        raise PrposeError(f"{where}: {int(bad.sum())} non-finite value(s) in {frames.size} frame(s), first at frame "
                          f"{int(frames[0])}; expected finite positions")
    metres = x / 1000.0 if unit == "mm" else x
    scale = float(np.median(np.abs(metres)))
    if scale > _MAX_PLAUSIBLE_METRES or scale < 1e-3:
        raise PrposeError(f"{where}: median |coordinate| is {scale:.4g} m after reading as {unit}; expected "
                          f"metres-scale human poses (wrong units or wrong --layout?)")
    return metres


def read_videopose3d(path: pathlib.Path) -> dict[tuple[str, str], np.ndarray]:
    """``data_3d_h36m.npz`` -> {(subject, action): (T, 32, 3) metres}. Unpickles: trusted files only."""
    try:
        archive = np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError) as e:
        raise PrposeError(f"{path}: cannot read as a NumPy .npz archive ({e})") from None
    if not hasattr(archive, "files"):
        raise PrposeError(f"{path}: a single .npy array, not an .npz archive with key 'positions_3d'")
    if "positions_3d" not in archive.files:
        raise PrposeError(f"{path}: missing key 'positions_3d' (keys: {archive.files}); expected the VideoPose3D archive")
    raw = archive["positions_3d"]
    data = raw.item() if raw.dtype == object and raw.shape == () else None
    if not isinstance(data, dict):
        raise PrposeError(f"{path}: 'positions_3d' holds {raw.dtype} {raw.shape}; expected a pickled dict "
                          "subject -> action -> (T, 32, 3)")
    out = {}
    for subject, actions in data.items():
        _check_subject(str(subject), f"{path}: positions_3d")
        if not isinstance(actions, dict):
            raise PrposeError(f"{path}: positions_3d[{subject!r}] is {type(actions).__name__}; expected a dict action -> array")
        for action, positions in actions.items():
            out[(str(subject), str(action))] = _check_positions(
                positions, f"{path}: positions_3d[{subject!r}][{action!r}]", "m")
    return out


def read_baseline(root: pathlib.Path) -> dict[tuple[str, str], np.ndarray]:
    """3d-pose-baseline tree -> {(subject, action): (T, 32, 3) metres} (files hold (96, T) millimetres)."""
    import h5py

    out = {}
    folders = sorted(p for p in root.glob("*/MyPoses/3D_positions") if p.is_dir())
    for folder in folders:
        subject = folder.parent.parent.name
        _check_subject(subject, f"{folder}")
        files = sorted(folder.glob("*.h5"))
        if not files:
            raise PrposeError(f"{folder}: no .h5 files")
        for file in files:
            try:
                with h5py.File(file, "r") as f:
                    if "3D_positions" not in f:
                        raise PrposeError(f"{file}: missing dataset '3D_positions' (has {list(f.keys())})")
                    raw = f["3D_positions"][()]
            except OSError as e:
                raise PrposeError(f"{file}: cannot read as HDF5 ({e})") from None
            raw = np.asarray(raw)
            if raw.ndim != 2 or raw.shape[0] != 96:
                raise PrposeError(f"{file}: '3D_positions' has shape {raw.shape}; expected (96, T) (32 joints x 3, mm)")
            # Column t is frame t, joint-major: (96, T) -> (T, 96) -> (T, 32, 3).
            positions = raw.T.reshape(raw.shape[1], 32, 3)
            out[(subject, file.stem)] = _check_positions(positions, f"{file}", "mm")
    return out


def _subject_order(subject: str) -> int:
    m = re.fullmatch(r"S(\d+)", subject)
    return int(m.group(1)) if m else 1 << 30


def main(args) -> int:
    try:
        start = time.perf_counter()
        source = pathlib.Path(args.source)
        if args.subsample < 1:
            raise PrposeError(f"--subsample must be >= 1; got {args.subsample}")
        wanted = None
        if args.subjects:
            wanted = [_check_subject(s, "--subjects") for s in args.subjects]
        check_target(args.out, args.overwrite)  # fail before reading gigabytes
        layout = detect_layout(source) if args.layout == "auto" else args.layout
        if not source.exists():
            raise PrposeError(f"{source}: no such file or folder")
        if layout == "videopose3d":
            if not source.is_file():
                raise PrposeError(f"{source}: --layout videopose3d expects the data_3d_h36m.npz file")
            data = read_videopose3d(source)
        else:
            if not source.is_dir():
                raise PrposeError(f"{source}: --layout baseline expects the 3d-pose-baseline root folder")
            data = read_baseline(source)
        if not data:
            raise PrposeError(f"{source}: no sequences found")
        found = sorted({s for s, _ in data}, key=_subject_order)
        if wanted is not None:
            missing = [s for s in wanted if s not in found]
            if missing:
                raise PrposeError(f"{source}: subject(s) {missing} requested but not in the source (found {found})")
        report = ConversionReport()
        sequences = []
        for subject, action in sorted(data, key=lambda k: (_subject_order(k[0]), k[1])):
            positions = data[(subject, action)]
            name = f"{subject}/{action}"
            if wanted is not None and subject not in wanted:
                report.skipped(name, "subject not selected (--subjects)", len(positions))
                continue
            frames = np.arange(0, len(positions), args.subsample)
            poses17 = convert(positions[frames], "h36m32", "h36m17")
            sequences.append(SequenceInput(name=name, subject=subject, source="h36m", poses3d=poses17, frames=frames))
            report.converted(name, len(positions), len(frames))
        subjects = sorted({s.subject for s in sequences}, key=_subject_order)
        rigs = {s: h36m_rig(s) for s in subjects}
        info = {
            "converter": "prpose prep h36m",
            "source": str(source.resolve()),
            "layout": layout,
            "subsample": args.subsample,
            "frame": "original 50 Hz frame number",
            "subjects": subjects,
            "split": "train S1 S5 S6 S7 S8, test S9 S11",
            "cameras": "Human3.6M calibration, per subject, with lens distortion",
        }
        split = {s.name: ("train" if s.subject in TRAIN_SUBJECTS else "test") for s in sequences}
        print(report.table(max_rows=40))
        dataset = write_sequences(args.out, sequences, rigs, split, info=info, overwrite=args.overwrite, progress=True)
    except (PrposeError, ValueError, OSError) as e:
        print(f"prpose prep h36m: error: {e}", file=sys.stderr)
        return 2
    print(dataset.summary())
    print(f"wrote {len(dataset):,d} frames to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m data_prep.h36m
    _parser = argparse.ArgumentParser(prog="prpose prep h36m", description=__doc__)
    configure_parser(_parser)
    sys.exit(main(_parser.parse_args()))
