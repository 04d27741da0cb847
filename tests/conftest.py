import os
import pathlib

import numpy as np
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


def realistic_poses(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 17, 3) float32 normalised h36m17 poses: random frames of the prepared shared mocap when present
    (PRPOSE_MOCAP, default /work/data/mocap: the training distribution), else of prpose.synthetic motions."""
    from prpose.normalize import normalize_3d

    path = pathlib.Path(os.environ.get("PRPOSE_MOCAP", "/work/data/mocap")) / "poses3d.npy"
    if path.exists():
        frames = np.load(path, mmap_mode="r")
        raw = np.asarray(frames[np.sort(rng.choice(len(frames), n, replace=False))], np.float32)
    else:
        from prpose.synthetic import generate_motions

        motions = np.concatenate(generate_motions(max(1, n // 50 + 1), 50, seed=int(rng.integers(1 << 30))))
        raw = motions[rng.choice(len(motions), n, replace=False)].astype(np.float32)
    return np.array(normalize_3d(raw)[0], np.float32)


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


def np_mpjpe_ref(pred, target):
    """Float64 NP-MPJPE of pred (J, 3) aligned onto target (J, 3): rotation without reflection, uniform scale,
    translation (SVD), then the mean joint distance. Independent of prpose.procrustes."""
    p = np.asarray(pred, np.float64) - np.mean(pred, axis=0)
    t = np.asarray(target, np.float64) - np.mean(target, axis=0)
    u, s, vt = np.linalg.svd(p.T @ t)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ fix @ vt
    scale = (s * np.diag(fix)).sum() / (p ** 2).sum()
    return np.linalg.norm(scale * p @ rot - t, axis=1).mean()


def reference_hit_rates(views, features, distance, ks, kappa=0.1, candidates=None, coarse=None):
    """The cross-view protocol written again in float64 NumPy, independently of prpose.protocol.

    views: a prpose.views.ViewSet. features: list over cameras of per-frame arrays (N, ...). distance(q (Q, ...),
    x (N, ...)) -> (Q, N). For every ordered pair of distinct cameras, each valid query ranks the valid index
    entries by distance (a stable sort: ties by index), or only the `candidates` nearest by coarse(q, x); it
    hits at k when one of its first k has np_mpjpe_ref < kappa onto the query's 3D pose.
    Returns (pairs, len(ks)) hit rates, pairs in the protocol's order.
    """
    out = []
    c = views.num_cameras
    for cq in range(c):
        for ci in range(c):
            if cq == ci:
                continue
            q_rows, x_rows = np.flatnonzero(views.valid[:, cq]), np.flatnonzero(views.valid[:, ci])
            d = np.asarray(distance(features[cq][q_rows], features[ci][x_rows]), np.float64)
            if candidates is not None:
                near = np.argsort(coarse(features[cq][q_rows], features[ci][x_rows]), axis=1, kind="stable")
                d = np.where(np.argsort(near, axis=1) < candidates, d, np.inf)  # rank among candidates only
            order = np.argsort(d, axis=1, kind="stable")[:, :max(ks)]
            hit = np.array([[np_mpjpe_ref(views.poses3d[x_rows[j]], views.poses3d[q]) < kappa for j in row]
                            for q, row in zip(q_rows, order)])
            first = np.cumsum(hit, axis=1) > 0
            out.append([first[:, min(k, first.shape[1]) - 1].mean() for k in ks])
    return np.array(out)
