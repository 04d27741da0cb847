"""BVH (Biovision hierarchy) motion capture: a strict parser and vectorised forward kinematics.

Conventions (those of every BVH in ``../shared/data/mocap``; see its README):
  * rotation channels are in degrees and compose as intrinsic rotations in the order the CHANNELS line lists
    them: ``Zrotation Xrotation Yrotation`` gives ``R_local = Rz @ Rx @ Ry``;
  * a joint's local translation is its OFFSET, except for the components that have position channels, which
    replace the OFFSET component (every root; every joint in the Bandai Namco files);
  * ``world_pos[j] = world_pos[parent] + world_rot[parent] @ local_translation[j]`` and
    ``world_rot[j] = world_rot[parent] @ R_local[j]``; ``End Site`` entries are extra leaf points (offset only).

Positions come out in the file's own units and axes (most BVH are Y-up); ``prpose.skeletons`` converts to
metres, Z-up and the h36m17 joints.

Errors in a file raise ``PrposeError`` naming the file and the 1-based line number.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from prpose.errors import PrposeError

__all__ = ["BvhMotion", "parse_bvh", "parse_bvh_text", "forward_kinematics", "rotation_matrices"]

_CHANNEL_NAMES = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")
_CHANNEL_LOOKUP = {name.lower(): name for name in _CHANNEL_NAMES}


@dataclasses.dataclass(frozen=True, eq=False)
class BvhMotion:
    """A parsed BVH file.

    Attributes:
      path: the file the motion came from (for messages).
      joint_names: (J,) names in hierarchy (depth-first) order; every parent precedes its children.
      parents: (J,) int parent index, -1 for the root(s).
      offsets: (J, 3) float64 OFFSET of each joint relative to its parent, file units.
      channels: per joint, the channel names in file order (e.g. ``("Zrotation", "Xrotation", "Yrotation")``).
      channel_start: (J,) int column of each joint's first channel in ``motion``.
      end_site_parents: (E,) int joint index that carries each ``End Site``.
      end_site_offsets: (E, 3) float64 End Site offsets relative to that joint.
      frame_time: seconds per frame from the header.
      motion: (T, C) float64 channel values per frame, C = sum of the joints' channel counts.
    """

    path: str
    joint_names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    channel_start: np.ndarray
    end_site_parents: np.ndarray
    end_site_offsets: np.ndarray
    frame_time: float
    motion: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_channels(self) -> int:
        return int(self.motion.shape[1])

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def end_site_names(self) -> tuple[str, ...]:
        """A name per End Site: ``"<joint>.end"`` (``"<joint>.end2"``... if a joint has several)."""
        names, seen = [], {}
        for p in self.end_site_parents:
            base = self.joint_names[int(p)] + ".end"
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}{seen[base]}")
        return tuple(names)

    @property
    def point_names(self) -> tuple[str, ...]:
        """Names of the rows of ``forward_kinematics(..., end_sites=True)``: joints, then end sites."""
        return self.joint_names + self.end_site_names

    def index(self, joint: str) -> int:
        """Index of ``joint`` in ``joint_names``; PrposeError naming the file if absent."""
        try:
            return self.joint_names.index(joint)
        except ValueError:
            raise PrposeError(f"{self.path}: no joint named {joint!r}") from None

    def with_frames(self, frames) -> "BvhMotion":
        """The same skeleton with ``motion[frames]`` (a slice or index array), e.g. to drop a T-pose frame."""
        return dataclasses.replace(self, motion=np.ascontiguousarray(self.motion[frames]))


class _Tokens:
    """Whitespace tokens of the HIERARCHY section with their 1-based line numbers."""

    def __init__(self, path: str, lines: list[str]):
        self.path = path
        self.items: list[tuple[str, int]] = []
        for number, line in enumerate(lines, start=1):
            for token in line.split():
                self.items.append((token, number))
        self.pos = 0
        self.last_line = len(lines)

    def error(self, message: str, line: int | None = None) -> PrposeError:
        if line is None:
            line = self.items[self.pos][1] if self.pos < len(self.items) else self.last_line
        return PrposeError(f"{self.path}, line {line}: {message}")

    def next(self, what: str) -> tuple[str, int]:
        if self.pos >= len(self.items):
            raise self.error(f"file ends early: expected {what}")
        item = self.items[self.pos]
        self.pos += 1
        return item

    def expect(self, literal: str) -> int:
        token, line = self.next(repr(literal))
        if token != literal:
            raise self.error(f"expected {literal!r}, found {token!r}", line)
        return line

    def number(self, what: str) -> float:
        token, line = self.next(what)
        try:
            return float(token)
        except ValueError:
            raise self.error(f"expected a number for {what}, found {token!r}", line) from None


def _split_lines(text: str) -> list[str]:
    # str.splitlines handles LF, CRLF, lone CR and mixtures (some shared files mix CRLF and LF).
    return text.splitlines()


def parse_bvh(path: str | os.PathLike) -> BvhMotion:
    """Parse a BVH file.

    Args:
      path: a ``.bvh`` file (plain text; any mix of spaces/tabs, LF/CRLF line ends).
    Returns:
      BvhMotion with ``motion`` of shape (T, C) float64.
    Raises:
      PrposeError naming the file (and the line for syntax errors): missing HIERARCHY/MOTION, unbalanced braces,
      unknown channels, a frame with the wrong number of values, a non-numeric value, or a frame count that
      disagrees with ``Frames:``. OSError if the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Old exporters write Latin-1 joint names; the numbers are ASCII either way.
        text = raw.decode("latin-1")
    return parse_bvh_text(text, path=path)


def parse_bvh_text(text: str, path: str = "<string>") -> BvhMotion:
    """Parse BVH content given as a string; ``path`` is used in error messages. See ``parse_bvh``."""
    lines = _split_lines(text)
    motion_line = None
    for i, line in enumerate(lines):
        if line.split()[:1] == ["MOTION"]:
            motion_line = i
            break
    if motion_line is None:
        raise PrposeError(f"{path}, line {len(lines)}: no MOTION section found (file truncated or not a BVH?)")

    names, parents, offsets, channels, ends_p, ends_o = _parse_hierarchy(path, lines[:motion_line])
    frame_time, motion = _parse_motion(path, lines, motion_line, sum(len(c) for c in channels))
    starts = np.cumsum([0] + [len(c) for c in channels[:-1]]).astype(np.int64)
    return BvhMotion(
        path=path,
        joint_names=tuple(names),
        parents=np.asarray(parents, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.float64).reshape(-1, 3),
        channels=tuple(tuple(c) for c in channels),
        channel_start=starts,
        end_site_parents=np.asarray(ends_p, dtype=np.int64),
        end_site_offsets=np.asarray(ends_o, dtype=np.float64).reshape(-1, 3),
        frame_time=frame_time,
        motion=motion,
    )


def _parse_hierarchy(path: str, lines: list[str]):
    tok = _Tokens(path, lines)
    token, line = tok.next("'HIERARCHY'")
    if token != "HIERARCHY":
        raise tok.error(f"expected 'HIERARCHY' at the start of the file, found {token!r}", line)

    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    ends_p: list[int] = []
    ends_o: list[list[float]] = []

    def read_offset() -> list[float]:
        tok.expect("OFFSET")
        return [tok.number("OFFSET x"), tok.number("OFFSET y"), tok.number("OFFSET z")]

    def read_channels() -> list[str]:
        count_token, line = tok.next("channel count")
        try:
            count = int(count_token)
        except ValueError:
            raise tok.error(f"expected an integer channel count after CHANNELS, found {count_token!r}", line) from None
        if count < 0 or count > 6:
            raise tok.error(f"CHANNELS count {count} is outside 0..6", line)
        result = []
        for _ in range(count):
            name, line = tok.next("a channel name")
            canonical = _CHANNEL_LOOKUP.get(name.lower())
            if canonical is None:
                raise tok.error(
                    f"unknown channel {name!r}; expected one of {', '.join(_CHANNEL_NAMES)} "
                    f"(CHANNELS {count} lists fewer names than announced?)", line)
            if canonical in result:
                raise tok.error(f"channel {canonical} listed twice", line)
            result.append(canonical)
        return result

    def read_joint(name: str, parent: int, open_line: int) -> None:
        index = len(names)
        names.append(name)
        parents.append(parent)
        tok.expect("{")
        offsets.append(read_offset())
        token, line = tok.next("CHANNELS")
        if token != "CHANNELS":
            raise tok.error(f"joint {name!r}: expected CHANNELS after OFFSET, found {token!r}", line)
        channels.append(read_channels())
        while True:
            token, line = tok.next(f"'}}' closing joint {name!r} opened on line {open_line}")
            if token == "}":
                return
            if token == "JOINT":
                child, child_line = tok.next("a joint name")
                read_joint(child, index, child_line)
            elif token == "End":
                site, site_line = tok.next("'Site'")
                if site != "Site":
                    raise tok.error(f"expected 'End Site', found 'End {site}'", site_line)
                tok.expect("{")
                ends_p.append(index)
                ends_o.append(read_offset())
                closing, closing_line = tok.next(f"'}}' closing the End Site of {name!r}")
                if closing != "}":
                    raise tok.error(f"End Site of {name!r}: expected '}}', found {closing!r}", closing_line)
            else:
                raise tok.error(f"inside joint {name!r}: expected JOINT, End Site or '}}', found {token!r}", line)

    token, line = tok.next("ROOT")
    while True:
        if token != "ROOT":
            raise tok.error(f"expected ROOT, found {token!r}", line)
        root_name, root_line = tok.next("the root joint's name")
        if root_name in ("{", "}"):
            raise tok.error(f"expected the root joint's name after ROOT, found {root_name!r}", root_line)
        read_joint(root_name, -1, root_line)
        if tok.pos >= len(tok.items):
            break
        token, line = tok.next("ROOT")  # a few exporters write several ROOTs (one per character)

    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PrposeError(f"{path}: duplicate joint name(s) {', '.join(duplicates)}")
    return names, parents, offsets, channels, ends_p, ends_o


def _header_value(path: str, lines: list[str], index: int, key: str) -> tuple[float, int]:
    """Value of a ``Key: value`` line at ``lines[index]`` (tabs/spaces, optional space before the colon)."""
    if index >= len(lines):
        raise PrposeError(f"{path}, line {len(lines)}: file ends early: expected '{key}: <value>'")
    line = lines[index]
    parts = line.replace(":", " : ", 1).split()
    key_parts = key.split()
    if parts[: len(key_parts)] != key_parts or len(parts) != len(key_parts) + 2 or parts[len(key_parts)] != ":":
        raise PrposeError(f"{path}, line {index + 1}: expected '{key}: <value>', found {line.strip()!r}")
    try:
        return float(parts[-1]), index + 1
    except ValueError:
        raise PrposeError(
            f"{path}, line {index + 1}: expected a number after '{key}:', found {parts[-1]!r}") from None


def _parse_motion(path: str, lines: list[str], motion_line: int, num_channels: int):
    i = motion_line + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    frames_value, i = _header_value(path, lines, i, "Frames")
    if frames_value != int(frames_value) or frames_value < 0:
        raise PrposeError(f"{path}, line {i}: Frames must be a non-negative integer, found {frames_value}")
    num_frames = int(frames_value)
    frame_time, i = _header_value(path, lines, i, "Frame Time")
    if not frame_time > 0 or not np.isfinite(frame_time):
        raise PrposeError(f"{path}, line {i}: Frame Time must be a positive number of seconds, found {frame_time}")

    data_lines: list[int] = []
    for j in range(i, len(lines)):
        if lines[j].strip():
            data_lines.append(j)
    if len(data_lines) != num_frames:
        if len(data_lines) > num_frames:
            where = data_lines[num_frames] + 1
            problem = f"more frame lines than the header's Frames: {num_frames} (extra data starts here)"
        else:
            where = len(lines)
            problem = f"file ends after {len(data_lines)} frame line(s) but the header says Frames: {num_frames}"
        raise PrposeError(f"{path}, line {where}: {problem}")

    rows = []
    for j in data_lines:
        values = lines[j].split()
        if len(values) != num_channels:
            raise PrposeError(
                f"{path}, line {j + 1}: frame {len(rows)} has {len(values)} values, expected {num_channels} "
                f"(one per channel in the HIERARCHY)")
        rows.append(values)
    if not rows:
        return frame_time, np.zeros((0, num_channels), dtype=np.float64)
    try:
        motion = np.array(rows, dtype=np.float64)
    except ValueError:
        # Find the culprit only on failure: converting per value is slow for the common, valid case.
        for frame, (j, values) in enumerate(zip(data_lines, rows)):
            for column, value in enumerate(values):
                try:
                    float(value)
                except ValueError:
                    raise PrposeError(
                        f"{path}, line {j + 1}: frame {frame}, column {column + 1}: {value!r} is not a number"
                    ) from None
        raise
    if not np.all(np.isfinite(motion)):
        bad = int(np.argwhere(~np.isfinite(motion))[0, 0])
        raise PrposeError(f"{path}, line {data_lines[bad] + 1}: frame {bad} holds a non-finite value (nan/inf)")
    return frame_time, motion


def rotation_matrices(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Rotation matrices about a coordinate axis.

    Args:
      axis: "X", "Y" or "Z".
      degrees: (...,) angles in degrees (right-hand rule, counter-clockwise seen from the positive axis).
    Returns:
      (..., 3, 3) float64.
    """
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    if axis == "X":
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == "Y":
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    elif axis == "Z":
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    else:
        raise PrposeError(f"rotation axis must be 'X', 'Y' or 'Z', got {axis!r}")
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _local_transforms(motion: BvhMotion, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Local rotation (T, 3, 3) and translation (T, 3) of joint ``j`` over all frames."""
    T = motion.num_frames
    rot = None
    trans = np.broadcast_to(motion.offsets[j], (T, 3)).copy()
    start = int(motion.channel_start[j])
    for k, name in enumerate(motion.channels[j]):
        values = motion.motion[:, start + k]
        axis = "XYZ".index(name[0])
        if name.endswith("position"):
            trans[:, axis] = values
        else:
            # Intrinsic rotations in listed order: R = R_first @ R_second @ R_third.
            r = rotation_matrices(name[0], values)
            rot = r if rot is None else rot @ r
    if rot is None:
        rot = np.broadcast_to(np.eye(3), (T, 3, 3))
    return rot, trans


def forward_kinematics(motion: BvhMotion, end_sites: bool = False) -> np.ndarray:
    """World positions of every joint in every frame (file units and axes).

    Vectorised over frames; loops over joints only.

    Args:
      motion: a parsed BVH.
      end_sites: also return the End Site points after the joints (names: ``motion.point_names``).
    Returns:
      (T, J, 3) float64, or (T, J + E, 3) with ``end_sites=True``.
    """
    T, J = motion.num_frames, motion.num_joints
    world_pos = np.zeros((T, J, 3))
    world_rot = np.zeros((T, J, 3, 3))
    for j in range(J):
        rot, trans = _local_transforms(motion, j)
        p = int(motion.parents[j])
        if p < 0:
            world_pos[:, j] = trans
            world_rot[:, j] = rot
        else:
            world_pos[:, j] = world_pos[:, p] + np.einsum("tab,tb->ta", world_rot[:, p], trans)
            world_rot[:, j] = world_rot[:, p] @ rot
    if not end_sites:
        return world_pos
    parents = motion.end_site_parents
    ends = world_pos[:, parents] + np.einsum("teab,eb->tea", world_rot[:, parents], motion.end_site_offsets)
    return np.concatenate([world_pos, ends], axis=1)
