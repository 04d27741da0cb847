"""Reading 2D keypoints that users bring: `.npz` arrays or COCO keypoint-results JSON.

Both readers return a `KeypointFile`: keypoints (N, J, 2) float32 pixels, scores (N, J) float32 in [0, 1]
(1 where the file has none), the profile name, and one identifier per pose (for printing results).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import zipfile

import numpy as np

from prpose import keypoints as kp
from prpose.errors import PrposeError


@dataclasses.dataclass(frozen=True)
class KeypointFile:
    keypoints: np.ndarray  # (N, J, 2) float32
    scores: np.ndarray  # (N, J) float32; 0 means missing
    profile: str
    ids: tuple[str, ...]  # (N,) a label per pose, e.g. "image 42 #0" or "row 3"
    pose3d: np.ndarray | None = None  # (N, 17, 3) h36m17 ground truth when the file has it (.npz `pose3d`)


def read_keypoints(path: str | pathlib.Path, profile: str | None = None) -> KeypointFile:
    """Read `.npz` (`keypoints` (N, J, 2), optional `scores` (N, J), `profile`, `pose3d`) or COCO results JSON.

    An optional `pose3d` (N, 17, 3) (h36m17) is the query's true 3D pose, for checking what a search returns.

    COCO results are a list of ``{"image_id", "keypoints": [x, y, v, ...], "score"}``; ``v = 0`` marks a
    missing keypoint (score 0); otherwise the per-keypoint value is used as the score when it lies in
    (0, 1], and 1 for the ground-truth convention ``v in {1, 2}``. ``profile`` overrides the file's own.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise PrposeError(f"{path}: no such keypoint file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        result = _read_npz(path, profile)
    elif suffix == ".json":
        result = _read_coco_json(path, profile)
    else:
        raise PrposeError(f"{path}: unsupported keypoint file type {suffix!r}; expected .npz or COCO .json")
    _validate(result, path)
    return result


def _read_npz(path: pathlib.Path, profile: str | None) -> KeypointFile:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PrposeError(f"{path}: not a readable .npz file ({error})") from None
    if "keypoints" not in arrays:
        raise PrposeError(f"{path}: missing array 'keypoints' (found: {', '.join(sorted(arrays)) or 'nothing'})")
    keypoints = np.asarray(arrays["keypoints"], dtype=np.float32)
    if keypoints.ndim == 2 and keypoints.shape[-1] == 2:
        keypoints = keypoints[None]
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise PrposeError(f"{path}: 'keypoints' has shape {arrays['keypoints'].shape}; expected (N, J, 2)")
    if "scores" in arrays:
        scores = np.asarray(arrays["scores"], dtype=np.float32)
        if scores.ndim == 1 and keypoints.shape[0] == 1:
            scores = scores[None]
        if scores.shape != keypoints.shape[:2]:
            raise PrposeError(
                f"{path}: 'scores' has shape {arrays['scores'].shape}; expected {keypoints.shape[:2]} (N, J)"
            )
    else:
        scores = np.ones(keypoints.shape[:2], np.float32)
    if profile is None:
        profile = str(arrays["profile"]) if "profile" in arrays else _guess_profile(keypoints.shape[1], path)
    ids = tuple(f"row {i}" for i in range(keypoints.shape[0]))
    pose3d = None
    if "pose3d" in arrays:
        pose3d = np.asarray(arrays["pose3d"], dtype=np.float32)
        if pose3d.shape != (keypoints.shape[0], 17, 3) or not np.isfinite(pose3d).all():
            raise PrposeError(
                f"{path}: 'pose3d' has shape {arrays['pose3d'].shape} or non-finite values; "
                f"expected finite ({keypoints.shape[0]}, 17, 3) h36m17 poses"
            )
    return KeypointFile(keypoints, scores, profile, ids, pose3d)


def _read_coco_json(path: pathlib.Path, profile: str | None) -> KeypointFile:
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PrposeError(f"{path}: not valid JSON ({error})") from None
    if isinstance(records, dict) and "annotations" in records:
        records = records["annotations"]  # a COCO annotation file works too
    if not isinstance(records, list):
        raise PrposeError(f"{path}: expected a list of COCO keypoint results, found {type(records).__name__}")
    profile = profile or "coco17"
    num_joints = kp.get_profile(profile).num_joints
    keypoints, scores, ids = [], [], []
    per_image: dict = {}
    for i, record in enumerate(records):
        values = record.get("keypoints") if isinstance(record, dict) else None
        if values is None or len(values) != 3 * num_joints:
            got = "no 'keypoints'" if values is None else f"{len(values)} values"
            raise PrposeError(
                f"{path}: record {i} has {got}; expected {3 * num_joints} (x, y, v for the {num_joints} "
                f"joints of {profile!r})"
            )
        triples = np.asarray(values, dtype=np.float32).reshape(num_joints, 3)
        v = triples[:, 2]
        score = np.where(v <= 0, 0.0, np.where(v <= 1.0, v, 1.0)).astype(np.float32)
        keypoints.append(triples[:, :2])
        scores.append(score)
        image = record.get("image_id", i)
        n = per_image.get(image, 0)
        per_image[image] = n + 1
        ids.append(f"image {image} #{n}")
    if not keypoints:
        raise PrposeError(f"{path}: the file holds no keypoint records")
    return KeypointFile(np.stack(keypoints), np.stack(scores), profile, tuple(ids))


def _guess_profile(num_joints: int, path: pathlib.Path) -> str:
    matches = [p.name for p in kp.PROFILES.values() if p.num_joints == num_joints]
    if len(matches) != 1:
        raise PrposeError(
            f"{path}: cannot tell the keypoint profile of {num_joints} joints; pass --profile "
            f"(known: {', '.join(f'{p.name} ({p.num_joints})' for p in kp.PROFILES.values())})"
        )
    return matches[0]


def _validate(result: KeypointFile, path: pathlib.Path) -> None:
    profile = kp.get_profile(result.profile)
    n, joints = result.keypoints.shape[:2]
    if n == 0:
        raise PrposeError(f"{path}: the file holds no poses")
    if joints != profile.num_joints:
        raise PrposeError(
            f"{path}: poses have {joints} joints but profile {profile.name!r} has {profile.num_joints}"
        )
    present = result.scores > 0
    bad = ~np.isfinite(result.keypoints).all(axis=-1) & present
    if bad.any():
        pose, joint = np.argwhere(bad)[0]
        raise PrposeError(
            f"{path}: {int(bad.sum())} keypoint(s) are NaN or infinite but not marked missing "
            f"(first: pose {pose}, joint {profile.joints[joint]!r}); set their score to 0 to mark them missing"
        )
