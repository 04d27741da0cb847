"""The library's error type, and the one place where the command line turns exceptions into messages.

Contract of every entry point (``prpose ...``, ``python train.py``, ``python -m data_prep.*``), all of which
run their command through :func:`run_command`:

- bad input (``PrposeError``/``ValueError``) or a file-system failure (``OSError``: missing file, a directory
  where a file is expected, disk full, ...): one line ``prpose <cmd>: error: ...`` on stderr naming the
  path and the cause, exit status 2;
- anything else is a bug in prpose: one line with the exception and a hint to rerun with ``PRPOSE_DEBUG=1``
  (or ``prpose --debug``) to see the traceback, exit status 1;
- stdout closed by the reader (``prpose query --json | head -1``): stop quietly with status 141 (128 +
  SIGPIPE), as the shell reports for other Unix tools;
- Ctrl-C: ``prpose <cmd>: interrupted``, status 130.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback

DEBUG_ENV = "PRPOSE_DEBUG"
EXIT_ERROR = 2  # bad input or a file-system failure
EXIT_BUG = 1  # an unexpected exception
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE
EXIT_INTERRUPTED = 130


class PrposeError(ValueError):
    """Bad input (file, array, argument) detected by prpose; the message is meant for the user."""


def describe_os_error(error: OSError) -> str:
    """``"<path>: <cause>"`` for a failed file operation (``"<cause>"`` when the OS names no path)."""
    cause = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.ENOSPC:
        cause += " (the disk is full: free space or choose another output folder)"
    paths = [os.fsdecode(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {cause}" if paths else cause


def describe(error: BaseException) -> tuple[str, int]:
    """(one-line message, exit status) for an exception that ends a command."""
    if isinstance(error, OSError):
        message, code = describe_os_error(error), EXIT_ERROR
    elif isinstance(error, ValueError):  # PrposeError included
        message, code = str(error), EXIT_ERROR
    else:
        message = (f"unexpected {type(error).__name__}: {error} (a bug in prpose; rerun with {DEBUG_ENV}=1 "
                   "or prpose --debug to see the traceback)")
        code = EXIT_BUG
    return " ".join(message.split()) or type(error).__name__, code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush cannot raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


def run_command(name: str, main, args, *, debug: bool = False) -> int:
    """Run ``main(args)`` under the contract above; return the exit status. ``name``: e.g. "prpose query"."""
    debug = debug or bool(os.environ.get(DEBUG_ENV))
    try:
        return int(main(args) or 0)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - this is the one place that reports them
        if debug:
            traceback.print_exc()
        message, code = describe(error)
        try:
            print(f"{name}: error: {message}", file=sys.stderr)
        except BrokenPipeError:
            pass
        return code


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """Refuse an output file path that cannot be written as a file (an existing directory), before any work."""
    if os.path.isdir(path):
        raise PrposeError(f"{flag} {os.fspath(path)}: is a directory; expected a file path")


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """Name ``path`` in an OSError raised while writing it: write() and flush() failures (a full disk) name no
    file, which would leave the user with "No space left on device" and no idea where."""
    try:
        yield
    except OSError as error:
        if error.filename is None and not isinstance(error, BrokenPipeError):
            raise OSError(error.errno, error.strerror or str(error), os.fspath(path)) from None
        raise


def check_output_image(path: str | os.PathLike, flag: str):
    """The image file an output flag names: a directory is refused, and a name without an extension gets
    ".png" (matplotlib would add it itself, and the command would print a path it did not write)."""
    import pathlib

    check_output_file(path, flag)
    path = pathlib.Path(path)
    return path if path.suffix else path.with_name(path.name + ".png")


def check_fraction(value: float, flag: str) -> float:
    """A command-line probability/threshold: finite and in [0, 1]."""
    if not 0.0 <= value <= 1.0:  # also False for NaN
        raise PrposeError(f"{flag} {value}: expected a number in [0, 1]")
    return value
