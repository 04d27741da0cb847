"""Progress output: a bar on a terminal, plain periodic lines (no carriage returns) in logs (issue 9, item 15)."""

import io
import subprocess
import sys

import pytest

from prpose.progress import PlainProgress, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_a_tqdm_bar():
    from tqdm import tqdm

    bar = progress(total=3, desc="x", file=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()


def test_log_gets_periodic_plain_lines_and_a_final_one(monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 40.0, 70.0, 80.0])
    monkeypatch.setattr("prpose.progress.time.perf_counter", lambda: next(clock))
    log = io.StringIO()
    bar = progress(total=100, desc="train", unit="step", file=log, interval=30.0)  # t = 0
    assert isinstance(bar, PlainProgress)
    bar.update(10)  # t = 10: too soon, silent
    bar.set_postfix(loss="0.412")
    bar.update(20)  # t = 31: a line
    bar.update(10)  # t = 40: silent
    bar.update(60)  # t = 70: a line (39 s since the last)
    bar.close()  # t = 80: the final line
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines == ["train: 30/100 (30%), 31.0 s, 0.968 step/s, ETA 72 s, loss=0.412",
                     "train: 100/100 (100%), 70.0 s, 1.43 step/s, loss=0.412",
                     "train: 100/100 (100%), 80.0 s, 1.25 step/s, loss=0.412"]


def test_iteration_short_tasks_and_disabled():
    log = io.StringIO()
    assert list(progress(range(5), desc="files", file=log, interval=0.0)) == list(range(5))
    assert log.getvalue().splitlines()[-1].startswith("files: 5/5 (100%)")
    short = io.StringIO()
    assert list(progress(range(5), desc="files", file=short)) == list(range(5))
    assert short.getvalue() == ""  # done before the first report was due: nothing to say
    quiet = io.StringIO()
    assert list(progress(range(5), desc="files", file=quiet, enabled=False)) == list(range(5))
    assert quiet.getvalue() == ""


def test_every_progress_report_in_the_project_goes_through_the_helper():
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    users = [p.relative_to(root).as_posix() for d in ("prpose", "data_prep", "eval", "bench")
             for p in (root / d).rglob("*.py") if "tqdm" in p.read_text()]
    users += [p for p in ("train.py",) if "tqdm" in (root / p).read_text()]
    assert users == ["prpose/progress.py"]


def test_commands_write_plain_lines_to_a_log(tmp_path):
    """`prpose prep synthetic` and `prpose train` with stderr redirected to a file, as in a batch job."""
    import os

    log = tmp_path / "log.txt"
    env = dict(os.environ, PRPOSE_PROGRESS_INTERVAL="0")  # a report at every update: these runs are short
    with open(log, "w") as err:
        for argv in (["prep", "synthetic", "--out", str(tmp_path / "d"), "--sequences", "6", "--frames", "20"],
                     ["train", "--config", "tiny", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"),
                      "--fast-compile", "--set", "steps=3", "eval_every=0", "checkpoint_every=3"]):
            code = subprocess.run([sys.executable, "-c", "import sys; from prpose.cli import main; "
                                   "sys.exit(main(sys.argv[1:]))", *argv], stdout=subprocess.DEVNULL, stderr=err,
                                  env=env, timeout=300).returncode
            assert code == 0
    text = log.read_text()
    assert "\r" not in text
    assert "projecting: 6/6 (100%)" in text and "train: 3/3 (100%)" in text
