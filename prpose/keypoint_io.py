"""Reading the 2D keypoints that users bring, in the layouts detectors write.

Every reader returns a `KeypointFile`: keypoints (N, J, 2) float32 pixels, scores (N, J) float32 in [0, 1]
(0 = missing; 1 where the file has no scores), the profile name (a `prpose.keypoints` profile), one identifier
per pose (for printing results), and an optional true 3D pose.

Layouts (`read_keypoints` tells them apart by suffix and content):
  * COCO keypoint results JSON (`coco17`): a list of ``{"image_id", "keypoints": [x, y, v] * 17, "score"}``
    (or a COCO annotation file's ``annotations``). ``v = 0`` marks a missing keypoint; a value in (0, 1] is
    the detector's score; the ground-truth flags ``v in {1, 2}`` read as score 1.
  * OpenPose BODY_25 JSON (`body25`): per-image files ``{"people": [{"pose_keypoints_2d": [x, y, c] * 25}]}``
    as ``--write_json`` writes them; a single file or a folder of them (every ``*.json``, sorted by name).
    ``c = 0`` (OpenPose writes 0, 0, 0) marks a missing keypoint.
  * MediaPipe Pose landmarks (`mediapipe33`), JSON:
    ``{"format": "mediapipe33", "image_width": W, "image_height": H, "poses": [{"id": "frame 0",
    "landmarks": [{"x": .., "y": .., "z": .., "visibility": ..} * 33]}, ...]}`` with x, y normalised to
    [0, 1] by the image size as MediaPipe reports them (``z`` is ignored, ``visibility`` is the score, 1 when
    absent; ``id``, and per pose ``image_width`` / ``image_height``, are optional). Or `.npz` with
    ``landmarks`` (N, 33, 2) normalised x, y, ``image_size`` (2,) = (W, H), optional ``visibility`` (N, 33).
    Pixels are x W, y H (non-square images keep their aspect ratio).
  * `.npz` arrays of any profile: ``keypoints`` (N, J, 2) pixels, ``profile`` (a profile name), optional
    ``scores`` (N, J) and ``pose3d`` (N, 17, 3) (h36m17, the query's true 3D pose). Stacked Hourglass / MPII
    detections are such a file with ``profile="mpii16"``.

Profiles are never guessed: a file's own profile wins, ``profile`` (``--profile``) that contradicts it is an
error naming both, and a bare ``keypoints`` array without ``profile`` needs ``--profile`` (whose joint count must
match). Rows are not judged here: a detector file's unusable people (too few torso joints, NaN) are skipped and
reported by the embedding step (`prpose.inference.PoseEmbedder.embed_usable`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import zipfile

import numpy as np

from prpose import keypoints as kp
from prpose.errors import PrposeError

MEDIAPIPE_FORMAT = "mediapipe33"


@dataclasses.dataclass(frozen=True)
class KeypointFile:
    keypoints: np.ndarray  # (N, J, 2) float32
    scores: np.ndarray  # (N, J) float32; 0 means missing
    profile: str
    ids: tuple[str, ...]  # (N,) a label per pose, e.g. "image 42 #0" or "row 3"
    pose3d: np.ndarray | None = None  # (N, 17, 3) h36m17 ground truth when the file has it (.npz `pose3d`)


def read_keypoints(path: str | pathlib.Path, profile: str | None = None) -> KeypointFile:
    """Read a keypoint file or an OpenPose folder (layouts: module docstring).

    Args:
      path: `.npz`, `.json` (COCO results, OpenPose or MediaPipe, told apart by content) or a folder of
        OpenPose JSON files.
      profile: the profile the user says the file holds (``--profile``); required for a bare ``keypoints``
        array, an error when it contradicts the file's own profile.
    Raises:
      PrposeError: one line naming the file, what is wrong and what was expected.
    """
    path = pathlib.Path(path)
    if profile is not None:
        kp.get_profile(profile)  # an unknown name is an error before anything is read
    try:
        if path.is_dir():
            result = _read_openpose(path, sorted(path.glob("*.json")), profile)
        elif not path.is_file():
            raise PrposeError(f"{path}: no such keypoint file or folder")
        elif path.suffix.lower() == ".npz":
            result = _read_npz(path, profile)
        elif path.suffix.lower() == ".json":
            data = _load_json(path)
            if isinstance(data, dict) and "people" in data:
                result = _read_openpose(path, [path], profile, {path: data})
            elif isinstance(data, dict) and (data.get("format") == MEDIAPIPE_FORMAT or "poses" in data):
                result = _read_mediapipe_json(path, data, profile)
            elif isinstance(data, list) or (isinstance(data, dict) and "annotations" in data):
                result = _read_coco(path, data, profile)
            else:
                raise PrposeError(
                    f"{path}: unrecognised JSON layout (a {type(data).__name__}"
                    f"{' with keys ' + ', '.join(sorted(map(str, data))[:8]) if isinstance(data, dict) else ''}); "
                    f"expected COCO keypoint results (a list), OpenPose ({{'people': ...}}) or MediaPipe "
                    f"({{'format': '{MEDIAPIPE_FORMAT}', 'poses': ...}})")
        else:
            raise PrposeError(f"{path}: unsupported keypoint file type {path.suffix!r}; expected .npz, .json "
                              f"(COCO, OpenPose, MediaPipe) or a folder of OpenPose .json files")
    except (TypeError, ValueError) as error:  # e.g. strings where numbers belong; PrposeError passes as is
        if isinstance(error, PrposeError):
            raise
        raise PrposeError(f"{path}: malformed keypoint file ({error}); expected numbers where the format "
                          "has keypoints and scores") from None
    _validate(result, path)
    return result


def _resolve_profile(path, declared: str | None, requested: str | None, what: str, num_joints: int) -> str:
    """The file's own profile wins; a contradicting request is an error; no profile at all needs one."""
    if declared is not None:
        if requested is not None and requested != declared:
            raise PrposeError(f"{path}: the file holds {what} (profile {declared!r}) but --profile {requested!r} "
                              f"was given; drop --profile or pass {declared!r}")
        return declared
    if requested is None:
        fits = [p.name for p in kp.PROFILES.values() if p.num_joints == num_joints]
        hint = f" ({num_joints} joints fit: {', '.join(fits)})" if fits else ""
        raise PrposeError(f"{path}: the file does not say which keypoint profile its {num_joints} joints follow; "
                          f"pass --profile{hint} or store a 'profile' array in the .npz")
    return requested


def _load_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise PrposeError(f"{path}: not valid JSON ({error})") from None


def _triples(path, values, num_joints: int, where: str, what: str) -> np.ndarray:
    """A flat [x, y, c] * J list -> (J, 3) float32, or a one-line error."""
    if not isinstance(values, list) or len(values) != 3 * num_joints:
        got = f"{len(values)} values" if isinstance(values, list) else f"a {type(values).__name__}"
        raise PrposeError(f"{path}: {where} has {got}; expected {3 * num_joints} (x, y, score for the "
                          f"{num_joints} joints of {what})")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        bad = next(v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool))
        raise PrposeError(f"{path}: {where} holds a non-number {bad!r}; expected numbers")
    return np.asarray(values, np.float64).reshape(num_joints, 3).astype(np.float32)


def _read_coco(path: pathlib.Path, data, profile: str | None) -> KeypointFile:
    records = data["annotations"] if isinstance(data, dict) else data  # a COCO annotation file works too
    if not isinstance(records, list):
        raise PrposeError(f"{path}: 'annotations' is a {type(records).__name__}; expected a list of records")
    name = _resolve_profile(path, "coco17", profile, "COCO keypoint results", 17)
    keypoints, scores, ids = [], [], []
    per_image: dict = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "keypoints" not in record:
            raise PrposeError(f"{path}: record {i} has no 'keypoints'; expected COCO keypoint results")
        triples = _triples(path, record["keypoints"], 17, f"record {i}", "coco17")
        v = triples[:, 2]
        keypoints.append(triples[:, :2])
        scores.append(np.where(v <= 0, 0.0, np.minimum(v, 1.0)).astype(np.float32))
        image = record.get("image_id", i)
        if not isinstance(image, (int, str)) or isinstance(image, bool):
            raise PrposeError(f"{path}: record {i} has image_id {image!r}; expected a number or a string")
        n = per_image.get(image, 0)
        per_image[image] = n + 1
        ids.append(f"image {image} #{n}")
    if not keypoints:
        raise PrposeError(f"{path}: the file holds no keypoint records")
    return KeypointFile(np.stack(keypoints), np.stack(scores), name, tuple(ids))


def _read_openpose(where: pathlib.Path, files, profile: str | None, loaded=None) -> KeypointFile:
    if not files:
        raise PrposeError(f"{where}: the folder holds no .json files (expected OpenPose --write_json output)")
    name = _resolve_profile(where, "body25", profile, "OpenPose BODY_25 keypoints", 25)
    keypoints, scores, ids = [], [], []
    for file in files:
        data = (loaded or {}).get(file) or _load_json(file)
        people = data.get("people") if isinstance(data, dict) else None
        if not isinstance(people, list):
            raise PrposeError(f"{file}: expected an OpenPose JSON object with a 'people' list")
        for i, person in enumerate(people):
            values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
            triples = _triples(file, values, 25, f"person {i}'s 'pose_keypoints_2d'", "OpenPose BODY_25")
            keypoints.append(triples[:, :2])
            scores.append(np.clip(triples[:, 2], 0.0, 1.0))
            ids.append(f"{file.stem} #{i}")
    if not keypoints:
        raise PrposeError(f"{where}: no person in {len(files)} OpenPose file(s)")
    return KeypointFile(np.stack(keypoints), np.stack(scores), name, tuple(ids))


def _image_size(path, source: dict, where: str, default=None) -> tuple[float, float]:
    w, h = source.get("image_width", default and default[0]), source.get("image_height", default and default[1])
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in (w, h))
    if not ok:
        raise PrposeError(f"{path}: {where} needs positive 'image_width' and 'image_height' (got {w!r}, {h!r}): "
                          f"MediaPipe landmarks are normalised to the image size")
    return float(w), float(h)


def _read_mediapipe_json(path: pathlib.Path, data: dict, profile: str | None) -> KeypointFile:
    name = _resolve_profile(path, "mediapipe33", profile, "MediaPipe Pose landmarks", 33)
    poses = data.get("poses")
    if not isinstance(poses, list):
        raise PrposeError(f"{path}: 'poses' is a {type(poses).__name__}; expected a list of "
                          f"{{'landmarks': [33 x {{'x', 'y', 'visibility'}}]}}")
    size = _image_size(path, data, "the file") if "image_width" in data or "image_height" in data else None
    keypoints, scores, ids = [], [], []
    for i, pose in enumerate(poses):
        landmarks = pose.get("landmarks") if isinstance(pose, dict) else None
        if not isinstance(landmarks, list) or len(landmarks) != 33:
            got = f"{len(landmarks)} landmarks" if isinstance(landmarks, list) else "no 'landmarks' list"
            raise PrposeError(f"{path}: pose {i} has {got}; expected 33 (MediaPipe Pose)")
        w, h = _image_size(path, pose, f"pose {i}", size)
        values = []
        for j, mark in enumerate(landmarks):
            item = [mark.get("x"), mark.get("y"), mark.get("visibility", 1.0)] if isinstance(mark, dict) else [None]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item):
                raise PrposeError(f"{path}: pose {i} landmark {j} is {mark!r}; expected {{'x': number, "
                                  f"'y': number, 'visibility': number (optional)}}")
            values.append(item)
        xyv = np.asarray(values, np.float64)
        keypoints.append((xyv[:, :2] * (w, h)).astype(np.float32))
        scores.append(np.clip(xyv[:, 2], 0.0, 1.0).astype(np.float32))
        ids.append(str(pose.get("id", f"pose {i}")))
    if not keypoints:
        raise PrposeError(f"{path}: the file holds no poses")
    return KeypointFile(np.stack(keypoints), np.stack(scores), name, tuple(ids))


def _read_npz(path: pathlib.Path, profile: str | None) -> KeypointFile:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PrposeError(f"{path}: not a readable .npz file ({error})") from None
    declared = None
    if "profile" in arrays:
        if arrays["profile"].shape != () or arrays["profile"].dtype.kind not in "US":
            raise PrposeError(f"{path}: 'profile' is {arrays['profile'].dtype} {arrays['profile'].shape}; "
                              f"expected one string naming a keypoint profile")
        declared = str(arrays["profile"])
        kp.get_profile(declared)
    if "landmarks" in arrays and "keypoints" not in arrays:
        return _read_mediapipe_npz(path, arrays, declared, profile)
    if "keypoints" not in arrays:
        raise PrposeError(f"{path}: missing array 'keypoints' (found: {', '.join(sorted(arrays)) or 'nothing'})")
    keypoints = _numeric(path, arrays, "keypoints")
    if keypoints.ndim == 2 and keypoints.shape[-1] == 2:
        keypoints = keypoints[None]
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise PrposeError(f"{path}: 'keypoints' has shape {arrays['keypoints'].shape}; expected (N, J, 2)")
    name = _resolve_profile(path, declared, profile, "keypoints", keypoints.shape[1])
    scores = _scores(path, arrays, "scores", keypoints.shape[:2])
    ids = tuple(f"row {i}" for i in range(keypoints.shape[0]))
    pose3d = None
    if "pose3d" in arrays:
        pose3d = _numeric(path, arrays, "pose3d")
        if pose3d.shape != (keypoints.shape[0], 17, 3) or not np.isfinite(pose3d).all():
            raise PrposeError(
                f"{path}: 'pose3d' has shape {arrays['pose3d'].shape} or non-finite values; "
                f"expected finite ({keypoints.shape[0]}, 17, 3) h36m17 poses"
            )
    return KeypointFile(keypoints, scores, name, ids, pose3d)


def _read_mediapipe_npz(path, arrays, declared, profile) -> KeypointFile:
    name = _resolve_profile(path, declared or "mediapipe33", profile, "MediaPipe landmarks", 33)
    if name != "mediapipe33":
        raise PrposeError(f"{path}: 'landmarks' are MediaPipe Pose landmarks, but 'profile' says {name!r}")
    landmarks = _numeric(path, arrays, "landmarks")
    if landmarks.ndim != 3 or landmarks.shape[1:] != (33, 2):
        raise PrposeError(f"{path}: 'landmarks' has shape {landmarks.shape}; expected (N, 33, 2) normalised x, y")
    size = _numeric(path, arrays, "image_size") if "image_size" in arrays else None
    if size is None or size.shape != (2,) or not (np.isfinite(size).all() and (size > 0).all()):
        raise PrposeError(f"{path}: needs 'image_size' = (width, height) > 0 to turn normalised MediaPipe "
                          f"landmarks into pixels (got {None if size is None else size.tolist()})")
    scores = _scores(path, arrays, "visibility", landmarks.shape[:2])
    keypoints = (landmarks * size).astype(np.float32)
    return KeypointFile(keypoints, scores, name, tuple(f"row {i}" for i in range(len(keypoints))))


def _numeric(path, arrays, key) -> np.ndarray:
    value = arrays[key]
    if value.dtype.kind not in "fiub":
        raise PrposeError(f"{path}: '{key}' has dtype {value.dtype}; expected numbers")
    return np.asarray(value, np.float32)


def _scores(path, arrays, key, shape) -> np.ndarray:
    if key not in arrays:
        return np.ones(shape, np.float32)
    scores = _numeric(path, arrays, key)
    if scores.ndim == 1 and shape[0] == 1:
        scores = scores[None]
    if scores.shape != tuple(shape):
        raise PrposeError(f"{path}: '{key}' has shape {arrays[key].shape}; expected {tuple(shape)} (N, J)")
    return scores


def _validate(result: KeypointFile, path: pathlib.Path) -> None:
    profile = kp.get_profile(result.profile)
    n, joints = result.keypoints.shape[:2]
    if n == 0:
        raise PrposeError(f"{path}: the file holds no poses")
    if joints != profile.num_joints:
        raise PrposeError(
            f"{path}: poses have {joints} joints but profile {profile.name!r} has {profile.num_joints}"
        )
    if np.isnan(result.scores).any():
        raise PrposeError(f"{path}: scores hold NaN; expected numbers in [0, 1] (0 = missing)")
