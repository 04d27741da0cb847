"""`prpose index build` / `prpose query` on bad targets: nothing but a prpose index is ever replaced, one build
per --out at a time, and every refusal is one line naming the path."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from prpose.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexcli")
    data, run = root / "data", root / "run"
    assert main(["prep", "synthetic", "--out", str(data), "--sequences", "4", "--frames", "12"]) == 0
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(run), "--no-progress",
                 "--fast-compile", "--set", "steps=2", "eval_every=2", "checkpoint_every=2"]) == 0
    return root


def _tree(path):
    """Every file under path -> its SHA-256 (what must survive a refused command unchanged)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def _build(setup, out, *extra):
    return main(["index", "build", "--model", str(setup / "run"), "--data", str(setup / "data"),
                 "--out", str(out), "--cameras", "0", *extra])


def test_overwrite_refuses_the_dataset_being_read(setup, capsys):
    data = setup / "data"
    before = _tree(data)
    capsys.readouterr()
    assert _build(setup, data, "--overwrite") == 2
    _one_line_error(capsys, str(data), "not a prpose index", "prpose-dataset")
    assert _tree(data) == before


def test_overwrite_refuses_a_folder_that_merely_holds_a_manifest(setup, tmp_path, capsys):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.tex").write_text("\\chapter{Results}\n")
    (folder / "manifest.json").write_text(json.dumps({"format": "prpose-index", "version": 1}))
    before = _tree(folder)
    capsys.readouterr()
    assert _build(setup, folder, "--overwrite") == 2
    _one_line_error(capsys, str(folder), "not a prpose index")
    assert _tree(folder) == before


def test_overwrite_replaces_an_index_and_only_with_the_flag(setup, tmp_path, capsys):
    out = tmp_path / "ix"
    assert _build(setup, out) == 0
    first = json.loads((out / "manifest.json").read_text())["count"]
    capsys.readouterr()
    assert _build(setup, out, "--every", "2") == 2
    _one_line_error(capsys, str(out), "--overwrite")
    assert _build(setup, out, "--every", "2", "--overwrite") == 0
    assert json.loads((out / "manifest.json").read_text())["count"] < first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no lock, temp or old copy left beside it


def test_two_builds_into_one_new_out_cannot_both_succeed(setup, tmp_path):
    out = tmp_path / "ix"
    command = [sys.executable, "-m", "prpose.cli", "index", "build", "--model", str(setup / "run"),
               "--data", str(setup / "data"), "--out", str(out), "--cameras", "0"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2).strip().splitlines()
    assert len(err) == 1 and str(out) in err[0], err


def test_build_refuses_while_another_writer_holds_the_target(setup, tmp_path, capsys):
    import threading

    from prpose import atomic

    out = tmp_path / "ix"
    held, release = threading.Event(), threading.Event()

    def writer():
        with atomic.locked(out):
            held.set()
            release.wait(60)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        held.wait(60)
        capsys.readouterr()
        assert _build(setup, out) == 2
        _one_line_error(capsys, str(out), "another process is writing")
    finally:
        release.set()
        thread.join()
    assert not out.exists()


def test_query_names_a_missing_index(setup, tmp_path, capsys):
    queries = tmp_path / "q.npz"
    np.savez(queries, keypoints=np.zeros((1, 17, 2)), profile="h36m17")
    missing = tmp_path / "no-such-index"
    capsys.readouterr()
    assert main(["query", "--index", str(missing), "--input", str(queries)]) == 2
    line = _one_line_error(capsys, str(missing), "--index")
    assert "--model" not in line


def test_model_reference_is_part_of_the_atomic_replace(setup, tmp_path, monkeypatch):
    """model.json lands with the index in one swap: a crash right after the swap cannot leave an index without it."""
    from prpose import atomic

    out = tmp_path / "ix"
    real_swap = atomic._swap

    def swap_then_crash(tmp, target):
        real_swap(tmp, target)
        raise KeyboardInterrupt("killed right after the swap")

    monkeypatch.setattr(atomic, "_swap", swap_then_crash)
    assert _build(setup, out) == 130  # the CLI reports the interruption
    reference = json.loads((out / "model.json").read_text())
    assert reference["fingerprint"] == json.loads((out / "manifest.json").read_text())["fingerprint"]


def test_every_storage_indexes_the_same_regenerated_samples(setup, tmp_path):
    """`index build --storage float32/float16/gaussian`: the entries' samples are regenerated from the model's
    mean and stddev (not the embedder's keyed draws) in every storage, so the storages differ only by rounding
    and rank queries alike; a second build is bit-identical."""
    from prpose.dataset import load_dataset
    from prpose.index import PoseIndex
    from prpose.index.storage import regenerate_samples
    from prpose.inference import load_model

    built = {}
    for name in ("float32", "float16", "gaussian", "gaussian again"):
        assert _build(setup, tmp_path / name, "--storage", name.split()[0], "--factory", "Flat") == 0
        built[name] = PoseIndex.load(tmp_path / name)
    np.testing.assert_array_equal(built["gaussian again"].stored(), built["gaussian"].stored())
    model, dataset = load_model(setup / "run"), load_dataset(setup / "data")
    rows = built["float32"].metadata()["row"]
    emb = model.embed(np.asarray(dataset.keypoints2d[rows, 0]), profile="h36m17",
                      visible=np.asarray(dataset.visibility[rows, 0]))
    want = regenerate_samples(emb.mean, emb.stddev, model.num_samples)
    assert not np.allclose(want, emb.samples)  # not the embedder's own draws
    np.testing.assert_allclose(built["float32"].samples(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(built["float16"].stored(), built["float32"].stored().astype(np.float16))
    rounding = float(emb.stddev.max()) * 2.0**-11 * 6  # the float16 stddev's error times |noise| < 6
    np.testing.assert_allclose(built["gaussian"].samples(), want, rtol=0, atol=rounding)
    queries = emb.samples[:6]
    hits = {name: index.search_exact(emb.mean[:6], queries, 5, fingerprint=model.fingerprint).ids
            for name, index in built.items()}
    np.testing.assert_array_equal(hits["float16"], hits["float32"])
    np.testing.assert_array_equal(hits["gaussian"], hits["float32"])
