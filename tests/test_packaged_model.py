"""The model and pose library shipped in the package: load by name, match their fingerprint, reproduce a
stored embedding, answer the README's example query without JAX, and stay small."""

import json
import subprocess
import sys

import numpy as np
import pytest

from prpose.export import DEFAULT_MODEL, MODELS_ROOT, ExportedModel, packaged_models
from prpose.inference import load_model
from prpose.library import LIBRARY_DIR, PoseLibrary

from conftest import REPO_ROOT

MODEL_DIR = MODELS_ROOT / DEFAULT_MODEL
EXAMPLE = REPO_ROOT / "examples" / "cmu_detections_coco17.json"


def test_default_and_named_model_are_the_packaged_weights():
    assert DEFAULT_MODEL in packaged_models()
    stored = ExportedModel(MODEL_DIR)  # checks sizes, SHA-256 and the fingerprint of the weights
    default, named = load_model(), load_model(DEFAULT_MODEL)
    assert default.fingerprint == named.fingerprint == stored.fingerprint == stored.manifest["fingerprint"]
    assert stored.manifest["name"] == DEFAULT_MODEL
    # Trained only on data whose licence allows redistributing a derived model.
    info = stored.manifest["info"]
    assert set(info["training_data"]["sources"]) <= {"cmu", "fair1", "synthetic"}
    data = json.dumps(info["training_data"]).lower() + info["training_command"].lower()
    assert not any(word in data for word in ("bandai", "h36m", "human3.6m"))
    # Its detector-noise augmentation is not the Stacked Hourglass fit measured on Human3.6M.
    assert stored.config.augment.detector_noise_probability == 0 or \
        stored.config.augment.detector_noise_model.endswith("detector_noise_coco.json")


@pytest.mark.parametrize("path", ["numpy", "jax"])
def test_packaged_model_reproduces_its_reference_embedding(path, monkeypatch):
    ref = json.loads((MODEL_DIR / "reference.json").read_text())
    if path == "jax":
        monkeypatch.setattr("prpose.inference.NUMPY_MAX_ROWS", 0)
    model = load_model()
    assert ref["fingerprint"] == model.fingerprint
    emb = model.embed(np.asarray(ref["keypoints"], np.float32), profile=ref["profile"],
                      scores=np.asarray(ref["scores"], np.float32), score_threshold=ref["score_threshold"])
    np.testing.assert_allclose(emb.mean, ref["mean"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(emb.stddev, ref["stddev"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(emb.samples[:, :3], ref["samples"], rtol=0, atol=1e-5)


def test_packaged_library_matches_the_model_and_is_small():
    model = load_model()
    library = PoseLibrary(MODEL_DIR / LIBRARY_DIR, expected_fingerprint=model.fingerprint)
    m = library.manifest
    assert m["num_poses"] >= 1000 and m["num_entries"] >= 3 * m["num_poses"]
    assert "test" not in m["splits"]  # held-out takes stay out of the library
    size = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert size < 8_000_000, f"packaged model + library take {size} bytes"


def test_readme_query_answers_without_jax(tmp_path):
    code = ("import sys; from prpose.cli import main; rc = main(['query', '--input', sys.argv[1], '--k', '3']); "
            "print('JAX LOADED' if 'jax' in sys.modules else 'NO JAX'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("query ") == 4 and "NO JAX" in done.stdout
    assert "P(match)" in done.stdout


def test_readme_query_picture(tmp_path):
    from prpose.cli import main

    png = tmp_path / "matches.png"
    assert main(["query", "--input", str(EXAMPLE), "--k", "3", "--plot", str(png)]) == 0
    assert png.stat().st_size > 50_000
