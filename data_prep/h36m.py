"""`prpose prep h36m`: your own copy of Human3.6M -> a prepared dataset (real cameras, optional detections).

Two common distributions of the same ground truth are read (the raw videos are not needed):

- ``videopose3d``: the VideoPose3D archive ``data_3d_h36m.npz``, key ``positions_3d`` holding a pickled dict
  ``positions_3d[subject][action] -> (T, 32, 3)`` world METRES. Unpickling can run arbitrary code, so it is
  refused unless ``--trust-pickle`` is passed. Cameras: the packaged Human3.6M table (``h36m_rig``).
- ``baseline``: the 3d-pose-baseline tree: ``<root>/cameras.h5`` (group ``subject<n>/camera<1..4>``: ``R``
  stored transposed, ``T`` camera centre in mm, ``f``, ``c``, ``k`` radial, ``p`` tangential, ``Name``),
  ``<root>/<subject>/MyPoses/3D_positions/<trial>.h5`` (dataset ``3D_positions`` (96, T) MILLIMETRES,
  joint-major) and, when present, ``<root>/<subject>/StackedHourglass/<trial with _ for space>.<camera>.h5``
  (dataset ``poses`` (T, 16, 2) pixels, profile ``mpii16``): the Stacked Hourglass detections, stored beside
  the projected ground truth as a second 2D source (prepared format version 2).

Trials keep the names the files spell ("Eating" and "Eating 1" are different trials). The 17 label joints are
kept (h36m32 -> h36m17 by name); each subject is projected with its own four cameras with lens distortion
(3d-pose-baseline's ``project_point_radial``). Splits: S9, S11 are ``test``; the trials of S1, S5, S6, S7, S8
are ``train`` except a deterministic ``--val-fraction`` of them (by a hash of "<subject>/<trial>", whole
trials) held out as ``val``. ``--subsample N`` keeps every N-th frame; ``--keep-frames FILE`` (the authors'
evaluation list) keeps exactly the listed frames for every subject the list names, and drops that subject's
unlisted trials. ``frame.npy`` holds the ORIGINAL 50 Hz frame number.

Any bad input (wrong shape, NaN in 3D, missing key, unknown subject, wrong units) stops the conversion with
one line naming the file and the problem, before anything is written. Missing detection files and
non-finite detections are counted, reported and stored as not visible.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import time
import zipfile

import numpy as np

from prpose.data_prep.common import ConversionReport, SequenceInput, hash_split, write_sequences
from prpose.camera import H36M_SUBJECTS, Camera, h36m_rig
from prpose.progress import progress
from prpose.dataset import check_target
from prpose.errors import PrposeError
from prpose.keypoints import H36M17, MPII16, convert, convert_partial

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
LAYOUTS = ("auto", "videopose3d", "baseline")
CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")  # camera1..4 of cameras.h5, the dataset's order
DETECTOR = {"detector": "stacked_hourglass", "profile": "mpii16"}
# A standing person's joints are within a few metres of the world origin in Human3.6M; a median absolute
# coordinate above this many metres means the file holds millimetres (or something else entirely).
_MAX_PLAUSIBLE_METRES = 20.0
_VAL_SALT = "prpose-h36m-val"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="data_3d_h36m.npz (VideoPose3D) or the 3d-pose-baseline root folder")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="input layout (default auto: .npz file -> videopose3d, folder -> baseline)")
    parser.add_argument("--subsample", type=int, default=1,
                        help="keep every N-th frame of subjects not named by --keep-frames (default 1 = all; "
                             "5 = 10 Hz)")
    parser.add_argument("--keep-frames", metavar="JSON",
                        help="frame list {\"frames\": {\"S9:Directions 1\": [30, 40, ...]}} (e.g. the authors' "
                             "h36m_eval_frames.json): keep exactly these frames for the subjects it names")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of training-subject trials held out as the val split, chosen by a hash "
                             "of the trial name (default 0.1; 0 = none)")
    parser.add_argument("--subjects", nargs="+", metavar="S",
                        help=f"only these subjects (default all found; known: {' '.join(H36M_SUBJECTS)})")
    parser.add_argument("--no-detections", action="store_true",
                        help="ignore the StackedHourglass detections of a 3d-pose-baseline tree")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow unpickling the VideoPose3D .npz (it stores a pickled dict). Unpickling runs "
                             "whatever code the file names, so a crafted file can take over your account: "
                             "pass this only for a file you trust")
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


_PICKLE_REFUSED = ("holds pickled Python objects, and unpickling runs whatever code the file names; pass "
                   "--trust-pickle if you trust this file (the original VideoPose3D data_3d_h36m.npz is pickled)")


def read_videopose3d(path: pathlib.Path, trust_pickle: bool = False) -> dict[tuple[str, str], np.ndarray]:
    """``data_3d_h36m.npz`` -> {(subject, action): (T, 32, 3) metres}.

    The archive stores a pickled dict; it is unpickled only with ``trust_pickle`` (otherwise PrposeError).
    """
    if not trust_pickle and not zipfile.is_zipfile(path):
        # np.load hands a non-zip file to pickle when allowed; say so instead of a generic read error.
        raise PrposeError(f"{path}: not a .npz (zip) archive; if it is a pickle, it {_PICKLE_REFUSED}")
    try:
        archive = np.load(path, allow_pickle=trust_pickle)
        if not hasattr(archive, "files"):
            raise PrposeError(f"{path}: a single .npy array, not an .npz archive with key 'positions_3d'")
        if "positions_3d" not in archive.files:
            raise PrposeError(f"{path}: missing key 'positions_3d' (keys: {archive.files}); expected the VideoPose3D archive")
        raw = archive["positions_3d"]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise PrposeError(f"{path}: 'positions_3d' {_PICKLE_REFUSED}") from None
        raise PrposeError(f"{path}: cannot read as a NumPy .npz archive ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise PrposeError(f"{path}: cannot read as a NumPy .npz archive ({e})") from None
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


def _read_h5(file: pathlib.Path, dataset: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(file, "r") as f:
            if dataset not in f:
                raise PrposeError(f"{file}: missing dataset {dataset!r} (has {list(f.keys())})")
            if not isinstance(f[dataset], h5py.Dataset):
                raise PrposeError(f"{file}: {dataset!r} is a {type(f[dataset]).__name__}; expected an HDF5 dataset")
            return np.asarray(f[dataset][()])
    except OSError as e:
        raise PrposeError(f"{file}: cannot read as HDF5 ({e})") from None


def read_baseline(root: pathlib.Path, subjects=None) -> dict[tuple[str, str], np.ndarray]:
    """3d-pose-baseline tree -> {(subject, trial): (T, 32, 3) metres} (files hold (96, T) millimetres).

    ``subjects``: read only these (default all folders found).
    """
    out = {}
    folders = sorted(p for p in root.glob("*/MyPoses/3D_positions") if p.is_dir())
    for folder in folders:
        subject = folder.parent.parent.name
        _check_subject(subject, f"{folder}")
        if subjects is not None and subject not in subjects:
            continue
        files = sorted(folder.glob("*.h5"))
        if not files:
            raise PrposeError(f"{folder}: no .h5 files")
        for file in files:
            raw = _read_h5(file, "3D_positions")
            if raw.ndim != 2 or raw.shape[0] != 96:
                raise PrposeError(f"{file}: '3D_positions' has shape {raw.shape}; expected (96, T) (32 joints x 3, mm)")
            # Column t is frame t, joint-major: (96, T) -> (T, 96) -> (T, 32, 3).
            positions = raw.T.reshape(raw.shape[1], 32, 3)
            out[(subject, file.stem)] = _check_positions(positions, f"{file}", "mm")
    return out


def read_cameras_h5(path: pathlib.Path) -> dict[str, list[Camera]]:
    """3d-pose-baseline ``cameras.h5`` -> {subject: [4 Camera]} in the order camera1..4 (= ``CAMERA_IDS``).

    The stored ``R`` is the transpose of the world->camera rotation (3d-pose-baseline's ``load_camera_params``
    transposes it); ``T`` is the camera centre in world millimetres. Distortion ``k`` (k1, k2, k3) and ``p``
    (p0, p1) keep that file's order, which is ``Camera.project``'s: tangential term ``p0 y + p1 x`` plus
    ``[p1, p0] r^2``. Image sizes (not in the file) come from the packaged Human3.6M table by camera id.
    """
    import h5py

    sizes = {cam.name: (cam.width, cam.height) for cam in h36m_rig("S1")}
    rigs: dict[str, list[Camera]] = {}
    try:
        with h5py.File(path, "r") as f:
            for group in f:
                m = re.fullmatch(r"subject(\d+)", group)
                if not m:
                    continue  # e.g. '3dtest'
                subject = _check_subject(f"S{m.group(1)}", f"{path}: group {group!r}")
                if not isinstance(f[group], h5py.Group):
                    raise PrposeError(f"{path}: {group!r} is a {type(f[group]).__name__}; expected a group of cameras")
                cams = []
                for i in range(1, 5):
                    where = f"{path}: {group}/camera{i}"
                    if not isinstance(f[group].get(f"camera{i}"), h5py.Group):
                        raise PrposeError(f"{where}: missing; expected cameras 1..4")
                    g = f[group][f"camera{i}"]
                    keys = ("R", "T", "f", "c", "k", "p", "Name")
                    missing = [k for k in keys if not isinstance(g.get(k), h5py.Dataset)]
                    if missing:
                        raise PrposeError(f"{where}: missing dataset(s) {missing}")
                    try:
                        v = {k: np.asarray(g[k][()], dtype=np.float64) for k in keys}
                    except (TypeError, ValueError) as e:
                        raise PrposeError(f"{where}: not numeric ({e})") from None
                    name = "".join(chr(int(x)) for x in v["Name"].ravel())
                    if name not in sizes:
                        raise PrposeError(f"{where}: camera name {name!r}; expected one of {list(sizes)}")
                    if v["R"].shape != (3, 3) or v["T"].size != 3 or v["f"].size != 2 or v["c"].size != 2 \
                            or v["k"].size != 3 or v["p"].size != 2:
                        raise PrposeError(f"{where}: shapes R {v['R'].shape}, T {v['T'].shape}, f {v['f'].shape}, "
                                          f"c {v['c'].shape}, k {v['k'].shape}, p {v['p'].shape}; expected (3, 3), "
                                          "3, 2, 2, 3, 2 values")
                    try:
                        cams.append(Camera(name=name, rotation=v["R"].T, center=v["T"].ravel() / 1000.0,
                                           focal=v["f"].ravel(), principal=v["c"].ravel(), radial=v["k"].ravel(),
                                           tangential=v["p"].ravel(), width=sizes[name][0], height=sizes[name][1]))
                    except PrposeError as e:
                        raise PrposeError(f"{where}: {e}") from None
                if tuple(c.name for c in cams) != CAMERA_IDS:
                    raise PrposeError(f"{path}: {group} cameras are {[c.name for c in cams]}; expected {list(CAMERA_IDS)}")
                rigs[subject] = cams
    except OSError as e:
        raise PrposeError(f"{path}: cannot read as HDF5 ({e})") from None
    if not rigs:
        raise PrposeError(f"{path}: no subject<n> groups; expected 3d-pose-baseline's cameras.h5")
    return rigs


def detection_file(root: pathlib.Path, subject: str, trial: str, camera: str) -> pathlib.Path:
    """Where 3d-pose-baseline keeps a trial's Stacked Hourglass detections (space in the trial name -> ``_``)."""
    return root / subject / "StackedHourglass" / f"{trial.replace(' ', '_')}.{camera}.h5"


def read_detections(root: pathlib.Path, subject: str, trial: str, num_frames: int, frames: np.ndarray):
    """One trial's detections in every camera, at ``frames``, converted mpii16 -> h36m17 by joint name.

    Returns:
      keypoints (F, 4, 17, 2) float32 pixels (0 where not visible), visible (F, 4, 17) bool (False for the
      nose and spine, which the detector lacks, for a camera without a file and for non-finite values), the list of
      missing files, and the number of non-finite joint values read.
    Raises:
      PrposeError naming the file when it is not (num_frames, 16, 2).
    """
    keypoints = np.zeros((len(frames), len(CAMERA_IDS), 17, 2), np.float32)
    visible = np.zeros((len(frames), len(CAMERA_IDS), 17), bool)
    missing, nonfinite = [], 0
    for c, camera in enumerate(CAMERA_IDS):
        file = detection_file(root, subject, trial, camera)
        if not file.is_file():
            missing.append(str(file.relative_to(root)))
            continue
        raw = _read_h5(file, "poses")
        if raw.shape != (num_frames, 16, 2) or raw.dtype.kind not in "fiu":
            raise PrposeError(f"{file}: 'poses' is {raw.dtype} {raw.shape}; expected numbers of shape ({num_frames}, 16, 2) "
                              f"(the 3D file's {num_frames} frames, 16 mpii16 joints, pixels)")
        sel = raw[frames].astype(np.float64)
        finite = np.isfinite(sel).all(-1)
        nonfinite += int((~finite).sum())
        kp, present = convert_partial(np.where(finite[..., None], sel, 0.0), DETECTOR["profile"], "h36m17")
        vis, _ = convert_partial(finite, DETECTOR["profile"], "h36m17", axis=-1)
        keypoints[:, c] = kp
        visible[:, c] = (vis != 0) & present
    return keypoints, visible, missing, nonfinite


def read_keep_frames(path: pathlib.Path) -> dict[tuple[str, str], np.ndarray]:
    """``{"frames": {"<subject>:<trial>": [frame, ...]}}`` -> {(subject, trial): sorted unique int64 frames}."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise PrposeError(f"--keep-frames {path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise PrposeError(f"--keep-frames {path}: not valid JSON ({e})") from None
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(frames, dict) or not frames:
        raise PrposeError(f"--keep-frames {path}: expected an object with a non-empty 'frames' object "
                          "\"<subject>:<trial>\" -> [frame numbers]")
    out = {}
    for key, values in frames.items():
        subject, sep, trial = str(key).partition(":")
        if not sep or not trial:
            raise PrposeError(f"--keep-frames {path}: key {key!r}; expected '<subject>:<trial>'")
        _check_subject(subject, f"--keep-frames {path}: key {key!r}")
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise PrposeError(f"--keep-frames {path}: {key!r} must list non-negative integer frame numbers")
        out[(subject, trial)] = np.unique(np.asarray(values, dtype=np.int64))
    return out


def _subject_order(subject: str) -> int:
    m = re.fullmatch(r"S(\d+)", subject)
    return int(m.group(1)) if m else 1 << 30


def split_of(subject: str, trial: str, val_fraction: float) -> str:
    """test for S9/S11; for training subjects, val for a deterministic hash-chosen ``val_fraction`` of trials."""
    if subject in TEST_SUBJECTS:
        return "test"
    return hash_split(f"{subject}/{trial}", (1.0 - val_fraction, val_fraction, 0.0), salt=_VAL_SALT)


def _keep_report(keep: dict, data: dict, lengths: dict) -> dict:
    """How many of the listed frames this copy provides, and which listed trials it lacks."""
    listed = sum(len(v) for v in keep.values())
    missing = sorted(f"{s}:{t}" for (s, t) in keep if (s, t) not in data)
    beyond = {f"{s}:{t}": int((v >= lengths[(s, t)]).sum()) for (s, t), v in keep.items() if (s, t) in data}
    beyond = {k: n for k, n in beyond.items() if n}
    provided = listed - sum(len(keep[tuple(k.split(":", 1))]) for k in missing) - sum(beyond.values())
    return {"listed_frames": int(listed), "provided_frames": int(provided), "listed_trials": len(keep),
            "missing_trials": missing, "frames_beyond_trial_end": beyond}


def main(args) -> int:
    start = time.perf_counter()
    source = pathlib.Path(args.source)
    if args.subsample < 1:
        raise PrposeError(f"--subsample must be >= 1; got {args.subsample}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise PrposeError(f"--val-fraction must be in [0, 1); got {args.val_fraction}")
    wanted = None
    if args.subjects:
        wanted = [_check_subject(s, "--subjects") for s in args.subjects]
    keep = read_keep_frames(pathlib.Path(args.keep_frames)) if args.keep_frames else {}
    keep_subjects = {s for s, _ in keep}
    check_target(args.out, args.overwrite)  # fail before reading gigabytes
    layout = detect_layout(source) if args.layout == "auto" else args.layout
    if not source.exists():
        raise PrposeError(f"{source}: no such file or folder")
    rigs_h5, detections = None, False
    if layout == "videopose3d":
        if not source.is_file():
            raise PrposeError(f"{source}: --layout videopose3d expects the data_3d_h36m.npz file")
        data = read_videopose3d(source, trust_pickle=args.trust_pickle)
    else:
        if not source.is_dir():
            raise PrposeError(f"{source}: --layout baseline expects the 3d-pose-baseline root folder")
        data = read_baseline(source)
        if (source / "cameras.h5").is_file():
            rigs_h5 = read_cameras_h5(source / "cameras.h5")
        detections = not args.no_detections and any(source.glob("*/StackedHourglass"))
    if not data:
        raise PrposeError(f"{source}: no sequences found")
    found = sorted({s for s, _ in data}, key=_subject_order)
    if wanted is not None:
        missing = [s for s in wanted if s not in found]
        if missing:
            raise PrposeError(f"{source}: subject(s) {missing} requested but not in the source (found {found})")
    if rigs_h5 is not None:
        lacking = [s for s in found if s not in rigs_h5]
        if lacking:
            raise PrposeError(f"{source / 'cameras.h5'}: no calibration for subject(s) {lacking}")
    lengths = {k: len(v) for k, v in data.items()}
    report = ConversionReport()
    sequences, missing_files, nonfinite, files_read = [], [], 0, 0
    keys = sorted(data, key=lambda k: (_subject_order(k[0]), k[1]))
    for subject, trial in progress(keys, desc="reading", unit="trial", enabled=bool(detections)):
        positions = data[(subject, trial)]
        name = f"{subject}/{trial}"
        if wanted is not None and subject not in wanted:
            report.skipped(name, "subject not selected (--subjects)", len(positions))
            continue
        note = ""
        if subject in keep_subjects:
            if (subject, trial) not in keep:
                report.skipped(name, "trial not listed in --keep-frames", len(positions))
                continue
            listed = keep[(subject, trial)]
            frames = listed[listed < len(positions)]
            if frames.size < listed.size:
                note = f"{listed.size - frames.size} listed frame(s) beyond the trial's end"
            if frames.size == 0:
                report.skipped(name, "no listed frame within the trial", len(positions))
                continue
        else:
            frames = np.arange(0, len(positions), args.subsample)
        poses17 = convert(positions[frames], "h36m32", "h36m17")
        det = vis = None
        if detections:
            det, vis, miss, bad = read_detections(source, subject, trial, len(positions), frames)
            files_read += len(CAMERA_IDS) - len(miss)
            missing_files += miss
            nonfinite += bad
            if miss:
                note = "; ".join(filter(None, [note, f"no detections for camera(s) {', '.join(m.rsplit('.', 2)[1] for m in miss)}"]))
        sequences.append(SequenceInput(name=name, subject=subject, source="h36m", poses3d=poses17, frames=frames,
                                       detections2d=det, detections_visible=vis))
        report.converted(name, len(positions), len(frames), note)
    if detections:  # detection files without a 3D file cannot be used: say so
        trials = {(s, t.replace(" ", "_")) for s, t in data}
        for file in sorted(source.glob("*/StackedHourglass/*.h5")):
            subject, trial = file.parent.parent.name, file.name.split(".")[0]
            if (subject, trial) not in trials and (wanted is None or subject in wanted):
                report.skipped(str(file.relative_to(source)), "detections without a 3D_positions file")
    if not sequences:
        raise PrposeError(f"{source}: no frames selected (check --subjects and --keep-frames)")
    subjects = sorted({s.subject for s in sequences}, key=_subject_order)
    rigs = {s: (rigs_h5[s] if rigs_h5 is not None else h36m_rig(s)) for s in subjects}
    split = {s.name: split_of(s.subject, s.name.split("/", 1)[1], args.val_fraction) for s in sequences}
    info = {
        "converter": "prpose prep h36m",
        "source": str(source.resolve()),
        "layout": layout,
        "subsample": args.subsample,
        "frame": "original 50 Hz frame number",
        "subjects": subjects,
        "split": f"test S9 S11; train S1 S5 S6 S7 S8 except val: whole trials whose SHA-256 hash of "
                 f"'<subject>/<trial>' (salt {_VAL_SALT!r}) falls in the last {args.val_fraction:g}",
        "val_trials": sorted(n for n, v in split.items() if v == "val"),
        "cameras": ("cameras.h5 of the source (3d-pose-baseline calibration), with lens distortion"
                    if rigs_h5 is not None else "packaged Human3.6M table, per subject, with lens distortion"),
    }
    if keep:
        info["keep_frames"] = {"file": str(pathlib.Path(args.keep_frames).resolve()),
                               **_keep_report({k: v for k, v in keep.items() if wanted is None or k[0] in wanted},
                                              data, lengths)}
    entry = None
    if detections:
        entry = {**DETECTOR, "source": "3d-pose-baseline <subject>/StackedHourglass/<trial>.<camera>.h5, "
                                       "dataset 'poses' (T, 16, 2) px",
                 "files_read": files_read, "missing_files": missing_files, "nonfinite_joints": nonfinite,
                 "absent_joints": [j for j in H36M17.joints if j not in MPII16.joints]}
    print(report.table(max_rows=60))
    if keep:
        k = info["keep_frames"]
        print(f"--keep-frames: {k['provided_frames']:,d} of {k['listed_frames']:,d} listed frames provided; "
              f"missing trials: {', '.join(k['missing_trials']) or 'none'}"
              + (f"; frames beyond a trial's end: {k['frames_beyond_trial_end']}" if k["frames_beyond_trial_end"] else ""))
    if detections:
        print(f"detections: {files_read} Stacked Hourglass file(s) read, {len(missing_files)} missing "
              f"({', '.join(missing_files) or 'none'}), {nonfinite} non-finite joint(s) marked not visible")
    dataset = write_sequences(args.out, sequences, rigs, split, info=info, overwrite=args.overwrite,
                              progress=True, detections=entry)
    print(dataset.summary())
    print(f"wrote {len(dataset):,d} frames to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m prpose.data_prep.h36m
    from prpose.cli import run_script

    sys.exit(run_script("prpose prep h36m", configure_parser, main))
