"""Installed import names: everything lives under ``prpose`` (no top-level ``eval``, ``data_prep`` or ``train``).

The repository keeps ``eval/``, ``data_prep/`` and ``train.py`` at its top level (the project's layout); the
package installs the first two as ``prpose.eval`` and ``prpose.data_prep``. Run from a directory outside the
repository so that the working directory cannot make the old names importable.
"""

import subprocess
import sys

_CHECK = """
import importlib, importlib.util, pkgutil
for name in ("eval", "data_prep", "train"):
    assert importlib.util.find_spec(name) is None, f"top-level module {name!r} is importable"
import prpose.eval, prpose.data_prep, prpose.commands
for package in (prpose.eval, prpose.data_prep, prpose.commands):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print("ok")
"""


def test_no_generic_top_level_import_names(tmp_path):
    result = subprocess.run([sys.executable, "-c", _CHECK], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
