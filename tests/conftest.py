import os
import pathlib

import pytest

# Cache XLA compilations across test runs and processes (CI re-runs compile the same steps).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parent.parent / ".jax_cache")
)

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_bench(name: str):
    """A script of bench/ (bench/<name>.py) imported as a module, for tests of its functions and main()."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PRPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
    """The shared real data folder; the test is skipped when it is absent."""
    path = shared_data_dir()
    if not (path / "mocap").is_dir():
        pytest.skip(f"shared data not found at {path} (set PRPOSE_SHARED_DATA)")
    return path


@pytest.fixture(scope="module")
def embedder():
    """An untrained (random) tiny-preset embedder: enough to check that two implementations rank identically."""
    from flax import nnx

    from prpose.config import get_preset
    from prpose.inference import PoseEmbedder
    from prpose.model import build_model

    config = get_preset("tiny")
    model = build_model(config.model)
    _, params, stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    return PoseEmbedder.from_state(config, params, stats, fingerprint="test")
