"""Atomic replacement of an output directory (prepared datasets, indexes), its write lock, and crash recovery.

A writer of ``DIR`` (`replacing`):

1. takes the exclusive lock ``.DIR.lock`` beside it (fcntl.flock, released by the kernel if the process dies),
   so two writers of one target cannot both succeed: the second gets a one-line PrposeError;
2. re-checks under the lock that ``DIR`` may be written (`check_target`: missing, empty, or - with overwrite -
   a directory of the same format, recognised by the caller's ``is_ours``);
3. fills a fresh temporary sibling ``.DIR.tmp-PID-XXXX`` (the format writes its manifest last);
4. swaps it in with two renames: ``DIR`` -> ``.DIR.old-PID-XXXX``, temporary -> ``DIR``; then deletes the old.

A crash between the two renames leaves ``DIR`` missing. `recover`, which every write and every load runs, puts
that right under the lock: it finishes the swap when the new copy is complete (``is_ours``), restores the old
copy otherwise, and deletes leftover temporaries and old copies. It only touches siblings named by this
module's pattern whose owner process (the PID in the name) is dead, and only while holding the lock.

Readers never lock: they open the directory once (`open_dir`) and read every file relative to that descriptor,
so a concurrent swap cannot mix two versions; `same_dir` tells whether the path was replaced meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import errno
import fcntl
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable, Iterator

from prpose.errors import PrposeError

#: How long `open_dir` waits for a live writer that is between its two renames.
SWAP_WAIT_S = 2.0

class LockHeld(PrposeError):
    """Another process (or thread) holds the write lock of the target."""


_held: dict[tuple[str, int], list] = {}  # (lock path, thread) -> [fd, depth]: the lock is re-entrant per thread


def lock_path(target: pathlib.Path) -> pathlib.Path:
    return target.parent / f".{target.name}.lock"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _try_lock(path: pathlib.Path) -> int | None:
    """Open and flock `path` exclusively without waiting; the fd, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the previous holder unlinked the file after we opened it: lock the new one


def _stale_lock(target: pathlib.Path) -> bool:
    """A lock file left by a writer that died (taking and releasing the lock removes it)."""
    try:
        pid = lock_path(target).read_text().strip()
    except OSError:
        return False
    return pid.isdigit() and not _pid_alive(int(pid))


def _holder(path: pathlib.Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" by process {pid}" if pid.isdigit() else ""


@contextlib.contextmanager
def locked(target) -> Iterator[None]:
    """Hold the exclusive write lock of `target` for the block (re-entrant within one thread).

    Raises PrposeError (one line naming `target` and the lock file) when another process or thread holds it.
    """
    target = pathlib.Path(target)
    lock = lock_path(target)
    key = (os.path.abspath(lock), threading.get_ident())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(lock)
    except OSError as err:
        raise PrposeError(f"{target}: cannot create its lock file {lock} ({err.strerror or err})") from None
    if fd is None:
        raise LockHeld(
            f"{target}: another process is writing it (lock {lock} is held{_holder(lock)}); "
            "wait for it to finish, then run again"
        )
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # still holding the lock: a waiting opener re-checks the inode (see _try_lock)
        os.close(fd)


def check_target(path, overwrite: bool, is_ours: Callable[[pathlib.Path], bool], kind: str) -> None:
    """Raise PrposeError unless a `kind` may be written at `path`.

    Allowed: a missing path, an empty directory, or (with `overwrite`) a directory for which ``is_ours(path)``
    holds, i.e. an existing `kind`. Anything else is refused, so a typo cannot wipe unrelated files.
    """
    path = pathlib.Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_dir():
        raise PrposeError(f"output {path} exists and is not a directory; refusing to replace it")
    if is_ours(path):
        if not overwrite:
            raise PrposeError(f"output {path} already holds a {kind}; pass overwrite=True (--overwrite) to replace it")
    elif any(path.iterdir()):
        found = _manifest_format(path)
        what = f"manifest.json format {found!r}" if found else "no readable manifest.json"
        what = f"checked by format and file names: {what}"
        raise PrposeError(
            f"output {path} exists, is not empty and is not a {kind} ({what}); refusing to replace it"
        )


def _manifest_format(path: pathlib.Path):
    """The "format" named by path/manifest.json (every prpose directory format has one), or None."""
    try:
        with open(path / "manifest.json") as fh:
            found = json.load(fh).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _siblings(target: pathlib.Path) -> list[tuple[str, int, pathlib.Path]]:
    """This module's leftovers beside `target`: (kind 'tmp'|'old', owner pid, path)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-(\d+)-[A-Za-z0-9_]+")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and os.path.isdir(target.parent / name) and not os.path.islink(target.parent / name):
            found.append((match.group(1), int(match.group(2)), target.parent / name))
    return sorted(found)


def recover(target, is_ours: Callable[[pathlib.Path], bool]) -> list[str]:
    """Repair what an interrupted `replacing` of `target` left behind; returns what was done (also printed).

    Only siblings whose owner process is dead are touched, and only under the lock. If `target` is missing and
    an old copy exists: a complete new copy of the same writer is moved in (the swap is finished), else the old
    copy is restored. Remaining leftovers are deleted. Without write access nothing is changed; a missing
    `target` with an old copy then raises PrposeError saying where the copy is.
    """
    target = pathlib.Path(target)
    stale = [s for s in _siblings(target) if not _pid_alive(s[1])]
    if not stale and not _stale_lock(target):
        return []
    done = []
    try:
        with locked(target):
            stale = [s for s in _siblings(target) if not _pid_alive(s[1])]  # re-read under the lock
            if not (target.exists() or target.is_symlink()):
                olds = [s for s in stale if s[0] == "old"]
                if olds:
                    _, pid, old = olds[-1]
                    new = [p for kind, owner, p in stale if kind == "tmp" and owner == pid and is_ours(p)]
                    if new:
                        os.rename(new[0], target)
                        done.append(f"finished an interrupted replace of {target} (moved in {new[0].name})")
                    else:
                        os.rename(old, target)
                        done.append(f"restored {target} from {old.name} after an interrupted replace")
                    _fsync_dir(target.parent)
            for _, _, path in stale:
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
                    done.append(f"removed {path.name}, left by an interrupted write")
    except LockHeld:
        return []  # a live writer holds the lock: it is not ours to repair
    except (OSError, PrposeError) as err:  # e.g. a read-only location: leave everything, say what is missing
        olds = [p for kind, _, p in stale if kind == "old"]
        if olds and not target.exists():
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise PrposeError(
                f"{target}: missing; an interrupted replace left the previous copy at {olds[-1]} and it could "
                f"not be restored ({reason}); rename it back to {target.name}"
            ) from None
        return []
    for line in done:
        print(f"prpose: {line}", file=sys.stderr)
    return done


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(tmp: pathlib.Path, target: pathlib.Path) -> None:
    """Move the finished `tmp` to `target`; an existing `target` is moved aside first and deleted after."""
    if target.exists() or target.is_symlink():
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.rename(target, old)  # replaces the empty placeholder directory
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)
        _fsync_dir(target.parent)


@contextlib.contextmanager
def replacing(target, *, is_ours: Callable[[pathlib.Path], bool], kind: str,
              overwrite: bool = True) -> Iterator[pathlib.Path]:
    """Write a new `target` directory atomically: yields an empty temporary directory to fill.

    When the block ends normally the temporary replaces `target` (see the module docstring); when it raises,
    the temporary is deleted and `target` is untouched. The lock is held throughout and `check_target` is
    re-run under it, so of two concurrent writers of a new target only one succeeds.
    """
    target = pathlib.Path(target)
    with locked(target):
        recover(target, is_ours)
        check_target(target, overwrite, is_ours, kind)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        try:
            yield tmp
            _swap(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def open_dir(target, what: str) -> int:
    """Open directory `target` for reading (an fd for ``dir_fd=``), waiting out a live writer's swap.

    Raises PrposeError naming `target` when it is missing or not a directory (`what` names the expectation).
    """
    target = pathlib.Path(target)
    deadline = time.monotonic() + SWAP_WAIT_S
    while True:
        try:
            return os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            olds = [(pid, path) for kind, pid, path in _siblings(target) if kind == "old"]
            if any(_pid_alive(pid) for pid, _ in olds) and time.monotonic() < deadline:
                time.sleep(0.005)  # a live writer is between its two renames
                continue
            if olds:
                pid, path = olds[-1]
                raise PrposeError(
                    f"{target}: no such directory; the copy replaced by process {pid} is at {path} (that process "
                    f"still runs or its PID was reused); once it has exited, reading {target} again restores it"
                ) from None
            raise PrposeError(f"{target}: no such directory; expected {what}") from None
        except NotADirectoryError:
            raise PrposeError(f"{target}: not a directory; expected {what}") from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise PrposeError(f"{target}: a symbolic link loop; expected {what}") from None
            raise PrposeError(f"{target}: cannot open ({err.strerror}); expected {what}") from None


def same_dir(fd: int, target) -> bool:
    """Whether `target` still is the directory open as `fd` (False once a writer swapped in a new one)."""
    try:
        now = os.stat(target)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (the checksum every prpose directory format records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
