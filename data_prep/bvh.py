"""``prpose prep bvh``: BVH motion capture -> prepared dataset (h36m17 in metres, projected into a camera rig).

For each ``*.bvh`` under the inputs: parse (``prpose.bvh``), map to h36m17 with a skeleton preset
(``prpose.skeletons``; auto-detected or ``--mapping``), drop an added rest/T-pose frame 0, resample to
``--fps``, centre the take in the capture volume with the feet on the floor, then project every frame into the
rig's cameras and write the dataset atomically (``prpose.data_prep.common``).

Splits are by take, from a hash of the take's relative path (salsa partners N and N+15 share one take key), so
they do not change when files are added or the order of the inputs changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import time

import numpy as np

from prpose.bvh import parse_bvh
from prpose.errors import PrposeError
from prpose.keypoints import H36M17
from prpose.skeletons import DEFAULT_STATURE, SkeletonPreset, load_mapping, to_h36m17

# Files known to carry an added rest/T-pose as frame 0 (shared data README / MANIFEST); matched on the
# posix relative path. "auto" also detects such a frame by its pose jump (``first_frame_is_added``).
KNOWN_ADDED_FIRST_FRAME = (
    re.compile(r"(^|/)facebookresearch__fairmotion/tests/data/01_01\.bvh$"),
    re.compile(r"(^|/)papagina__Auto_Conditioned_RNN_motion/train_data_bvh/(salsa|indian|martial)/[^/]+\.bvh$"),
)
# Headers that lie about the frame rate: the salsa files say 120 fps but are 60 fps (source repo readme).
FPS_OVERRIDES = ((re.compile(r"(^|/)papagina__Auto_Conditioned_RNN_motion/train_data_bvh/salsa/[^/]+\.bvh$"), 60.0),)

MIN_FRAMES = 10          # fewer frames (after dropping frame 0) = a reference skeleton, not motion
MAX_EXTENT = 1e4         # metres: a joint farther than this from the origin is a corrupt value, not motion
ANKLE_HEIGHT = 0.08      # metres: where "feet on the floor" puts the lowest ankles
_JUMP_MIN = 0.05         # metres: mean joint jump frame 0 -> 1 that marks an added first frame ...
_JUMP_RATIO = 20.0       # ... when it is also this many times the take's typical frame-to-frame motion
_RATE_TOLERANCE = 0.005  # relative: frame rates this close count as equal / as an integer ratio


@dataclasses.dataclass
class Take:
    """One converted BVH file."""

    relpath: str
    source: str
    subject: str
    take_key: str
    poses: np.ndarray        # (T, 17, 3) metres, Z-up, centred
    frames: np.ndarray       # (T,) frame index after resampling
    preset: str
    frames_read: int
    dropped_first: bool
    fps_in: float
    fps_out: float
    split: str = ""


def first_frame_is_added(poses: np.ndarray) -> bool:
    """Whether frame 0 is an added rest/T-pose: a root-relative jump to frame 1 far above the take's usual motion.

    Args:
      poses: (T, 17, 3) metres.
    """
    if len(poses) < 4:
        return False
    rel = poses - poses[:, :1]
    steps = np.linalg.norm(rel[1:] - rel[:-1], axis=-1).mean(axis=-1)  # (T-1,) mean joint motion per frame
    typical = float(np.median(steps[1:]))
    return bool(steps[0] > _JUMP_MIN and steps[0] > _JUMP_RATIO * typical)


def resample(poses: np.ndarray, fps_in: float, fps_out: float) -> tuple[np.ndarray, float]:
    """Resample (T, J, 3) poses from ``fps_in`` to ``fps_out`` by linear interpolation in time.

    Never upsamples (interpolated poses are not data): if ``fps_in <= fps_out`` the poses come back unchanged.
    Returns (poses (T', J, 3), the rate actually produced).
    """
    if fps_in <= fps_out * (1 + _RATE_TOLERANCE) or len(poses) < 2:
        return poses, fps_in
    ratio = fps_in / fps_out
    if abs(ratio - round(ratio)) < _RATE_TOLERANCE * ratio:
        # Headers round the frame time (0.008333 s = 120.005 fps): treat near-integer ratios as exact strides
        # instead of blending neighbouring frames by a drifting fraction.
        return poses[:: int(round(ratio))], fps_out
    duration = (len(poses) - 1) / fps_in
    t = np.arange(0.0, duration + 1e-9, 1.0 / fps_out) * fps_in  # positions in source frames
    i0 = np.minimum(np.floor(t + 1e-9).astype(np.int64), len(poses) - 1)
    i1 = np.minimum(i0 + 1, len(poses) - 1)
    w = np.clip(t - i0, 0.0, 1.0)[:, None, None]
    return (1 - w) * poses[i0] + w * poses[i1], fps_out


def centre_take(poses: np.ndarray) -> np.ndarray:
    """Move a take so its mean pelvis xy is at the origin and its lowest ankles at ``ANKLE_HEIGHT``.

    The floor is the 5th percentile over frames of the lower ankle (robust to a jump or a dropped foot).
    (T, 17, 3) -> (T, 17, 3).
    """
    pelvis = poses[:, H36M17.index("pelvis")]
    ankles = poses[:, [H36M17.index("left_ankle"), H36M17.index("right_ankle")], 2].min(axis=1)
    shift = np.array([-pelvis[:, 0].mean(), -pelvis[:, 1].mean(), ANKLE_HEIGHT - np.percentile(ankles, 5)])
    return poses + shift


def take_key(relpath: str) -> str:
    """The key that decides a take's split: the relative path, with salsa partner N+15 folded onto N."""
    p = pathlib.PurePosixPath(relpath)
    if p.parent.name == "salsa" and p.stem.isdigit() and int(p.stem) > 15:
        return str(p.parent / f"{int(p.stem) - 15:0{len(p.stem)}d}{p.suffix}")
    return relpath


def assign_split(key: str, seed: int, test_fraction: float, val_fraction: float) -> str:
    """Deterministic split of a take key (SHA-256 of seed and key, via ``prpose.data_prep.common.hash_split``)."""
    from prpose.data_prep.common import hash_split

    return hash_split(key, (1.0 - test_fraction - val_fraction, val_fraction, test_fraction), salt=str(seed))


def subject_label(relpath: str) -> str:
    """Who is moving, where the folder layout or file name says so; else the file's folder."""
    p = pathlib.PurePosixPath(relpath)
    m = re.fullmatch(r"(\d+)_\d+", p.stem)
    if m and "cmu" in p.parts:
        return f"cmu/{int(m.group(1)):02d}"  # CMU trial names are <subject>_<trial>
    if p.parent.name == "salsa" and p.stem.isdigit():
        # Files 01-05 and 16-20 are the two partners of the same takes.
        return "cmu/salsa-" + ("b" if int(p.stem) > 15 else "a")
    if p.parent.name in ("indian", "martial"):
        return f"cmu/{p.parent.name}"
    if p.parent.name == "cmu1":
        return "cmu/" + p.stem
    # Otherwise the top folder (e.g. "bandai1", "fair1": their performers are not named per file).
    return p.parts[0] if len(p.parts) > 1 else p.stem


def find_bvh_files(inputs: list[str]) -> list[tuple[pathlib.Path, str, str]]:
    """(path, relative path used as sequence label, source label) for every ``*.bvh`` under ``inputs``.

    A folder contributes its files relative to itself (source = first sub-folder, or the folder's name for
    files directly inside); a file stands for itself. Missing inputs raise PrposeError.
    """
    found = []
    for raw in inputs:
        path = pathlib.Path(raw)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix.lower() == ".bvh":
                    rel = f.relative_to(path).as_posix()
                    parts = rel.split("/")
                    found.append((f, rel, parts[0] if len(parts) > 1 else path.name))
        elif path.is_file():
            found.append((path, path.name, path.parent.name or "bvh"))
        else:
            raise PrposeError(f"prep bvh: input {raw!r} does not exist (expected a .bvh file or a folder)")
    return found


def convert_file(path: pathlib.Path, relpath: str, source: str, *, preset: SkeletonPreset | None, fps: float,
                 drop_first_frame: str, stature: float = DEFAULT_STATURE) -> Take:
    """Parse and convert one file. Raises PrposeError (malformed) or _Skip (a reason to leave it out)."""
    motion = parse_bvh(path)
    with np.errstate(over="ignore", invalid="ignore"):  # extreme values are reported below, by frame
        poses, used, _ = to_h36m17(motion, preset, stature=stature)
    frames_read = len(poses)
    check_extent(poses, relpath)
    known = any(p.search(relpath) for p in KNOWN_ADDED_FIRST_FRAME)
    if drop_first_frame == "yes":
        drop = frames_read > 0
    elif drop_first_frame == "no":
        drop = False
    else:
        drop = known or first_frame_is_added(poses)
    if drop:
        poses = poses[1:]
    if len(poses) < MIN_FRAMES:
        raise _Skip(f"only {len(poses)} frame(s) (< {MIN_FRAMES}): a reference skeleton, not motion", frames_read)
    fps_in = next((v for p, v in FPS_OVERRIDES if p.search(relpath)), motion.fps)
    poses, fps_out = resample(poses, fps_in, fps)
    poses = centre_take(poses)
    return Take(relpath=relpath, source=source, subject=subject_label(relpath), take_key=take_key(relpath),
                poses=poses, frames=np.arange(len(poses)), preset=used.name, frames_read=frames_read,
                dropped_first=drop, fps_in=fps_in, fps_out=fps_out)


def check_extent(poses: np.ndarray, where: str) -> None:
    """PrposeError naming ``where`` and the first bad frame if any joint position (T, 17, 3) is non-finite or
    farther than ``MAX_EXTENT`` metres from the origin (one such value would overflow the whole take once it
    is centred and stored as float32)."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(poses) <= MAX_EXTENT).all(axis=(1, 2))  # NaN compares False: caught too
    if bad.any():
        frames = np.flatnonzero(bad)
        worst = float(np.nanmax(np.abs(poses[frames[0]]))) if not np.isnan(poses[frames[0]]).all() else float("nan")
        raise PrposeError(f"{where}: {frames.size} frame(s) with non-finite or extreme joint positions (first: frame "
                          f"{int(frames[0])}, |coordinate| up to {worst:.3g} m); expected positions within "
                          f"{MAX_EXTENT:g} m of the origin")


class _Skip(Exception):
    """A file deliberately left out (not an error)."""

    def __init__(self, reason: str, frames_read: int = 0):
        super().__init__(reason)
        self.frames_read = frames_read


def build_rig(args) -> list:
    from prpose.camera import h36m_rig, ring_rig

    if args.rig == "h36m":
        return h36m_rig(args.h36m_subject)
    return ring_rig(args.cameras, args.distance, args.height)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help=".bvh files or folders (searched recursively)")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--rig", choices=("h36m", "ring"), default="h36m",
                        help="cameras: the 4 Human3.6M cameras, or a ring of identical cameras")
    parser.add_argument("--h36m-subject", default="S1", help="whose Human3.6M camera extrinsics (--rig h36m)")
    parser.add_argument("--cameras", type=int, default=4, help="ring: number of cameras")
    parser.add_argument("--distance", type=float, default=4.5, help="ring: horizontal distance in metres")
    parser.add_argument("--height", type=float, default=1.6, help="ring: camera height in metres")
    parser.add_argument("--fps", type=float, default=30.0, help="target frame rate (never upsampled)")
    parser.add_argument("--drop-first-frame", choices=("auto", "yes", "no"), default="auto",
                        help="drop an added rest/T-pose frame 0 (auto: known files, or a detected pose jump)")
    parser.add_argument("--mapping", help="JSON mapping BVH joints to h36m17 (for skeletons without a preset)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="fraction of takes in the test split")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="fraction of takes in the val split")
    parser.add_argument("--seed", type=int, default=0, help="changes the split assignment")
    parser.add_argument("--strict", action="store_true", help="stop at the first malformed file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def _check_args(args) -> None:
    if not args.fps > 0:
        raise PrposeError(f"prep bvh: --fps must be positive, got {args.fps}")
    for name in ("test_fraction", "val_fraction"):
        value = getattr(args, name)
        if not 0 <= value <= 1:
            raise PrposeError(f"prep bvh: --{name.replace('_', '-')} must be in [0, 1], got {value}")
    if args.test_fraction + args.val_fraction > 1:
        raise PrposeError(
            f"prep bvh: --test-fraction + --val-fraction = {args.test_fraction + args.val_fraction} > 1")


def main(args) -> int:
    """Convert, print the per-file table and totals, write the dataset. Returns 0, or 1 if any file failed."""
    _check_args(args)
    start = time.perf_counter()
    preset = load_mapping(args.mapping) if args.mapping else None
    rig = build_rig(args)  # fail early on bad rig arguments, before the slow part
    files = find_bvh_files(args.inputs)
    if not files:
        raise PrposeError(f"prep bvh: no .bvh files found under {', '.join(args.inputs)}")

    from prpose.data_prep.common import ConversionReport

    takes: list[Take] = []
    report = ConversionReport()
    failed_files = []
    skipped = 0
    for path, rel, source in _progress(files):
        try:
            take = convert_file(path, rel, source, preset=preset, fps=args.fps, drop_first_frame=args.drop_first_frame)
        except _Skip as reason:
            skipped += 1
            report.skipped(rel, str(reason), frames_read=reason.frames_read)
            continue
        except (PrposeError, OSError, UnicodeError) as error:
            if args.strict:
                raise PrposeError(f"{error} (--strict: stopping, nothing written)") from None
            failed_files.append(rel)
            report.failed(rel, str(error))
            continue
        take.split = assign_split(take.take_key, args.seed, args.test_fraction, args.val_fraction)
        takes.append(take)
        note = "dropped frame 0; " if take.dropped_first else ""
        report.converted(rel, take.frames_read, len(take.poses),
                         f"{take.preset}; {note}{take.fps_in:.6g}->{take.fps_out:.6g} fps; {take.split}")

    print(report.table())
    if not takes:
        first = next((f"; first: {name}: {status}" for name, _, _, status in report.rows), "")
        raise PrposeError(f"prep bvh: no file could be converted ({len(failed_files)} failed, {skipped} skipped)"
                          f"{first}; nothing written")
    _write(args, takes, rig, failed_files)
    _print_totals(takes, time.perf_counter() - start, args.out)
    return 1 if failed_files else 0


def _write(args, takes: list[Take], rig: list, failed_files: list[str]) -> None:
    """Project into the rig and write the dataset atomically with the shared converter helper."""
    from prpose.data_prep import common

    info = {
        "converter": "prpose prep bvh",
        "inputs": [os.path.abspath(i) for i in args.inputs],
        "rig": args.rig, "fps": args.fps, "drop_first_frame": args.drop_first_frame,
        "mapping": args.mapping, "seed": args.seed, "test_fraction": args.test_fraction,
        "val_fraction": args.val_fraction, "failed_files": failed_files,
        "presets": {name: sum(t.preset == name for t in takes) for name in sorted({t.preset for t in takes})},
        "units": "metres, Z-up; scale-free skeletons scaled to a stature of %.2f m" % DEFAULT_STATURE,
    }
    sequences = [common.SequenceInput(name=t.relpath, subject=t.subject, source=t.source, poses3d=t.poses,
                                      frames=t.frames) for t in takes]
    splits = {t.relpath: t.split for t in takes}
    common.write_sequences(args.out, sequences, rig, splits, info=info, overwrite=args.overwrite)


def _progress(items):
    from prpose.progress import progress

    return progress(items, desc="prep bvh", unit="file")


def _print_totals(takes: list[Take], seconds: float, out: str) -> None:
    by_source: dict[str, list[int]] = {}
    by_split: dict[str, list[int]] = {}
    for t in takes:
        by_source.setdefault(t.source, [0, 0])
        by_source[t.source][0] += 1
        by_source[t.source][1] += len(t.poses)
        by_split.setdefault(t.split, [0, 0])
        by_split[t.split][0] += 1
        by_split[t.split][1] += len(t.poses)
    total = sum(len(t.poses) for t in takes)
    print(f"\nwrote {len(takes)} take(s), {total} frames in {seconds:.1f} s -> {out}")
    for name, (n, frames) in sorted(by_source.items()):
        print(f"  source {name}: {n} take(s), {frames} frames")
    for name in ("train", "val", "test"):
        n, frames = by_split.get(name, (0, 0))
        print(f"  split {name}: {n} take(s), {frames} frames")
