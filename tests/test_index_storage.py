"""How the index keeps its entries: every storage holds the same samples, regenerated from each entry's mean and
stddev ("gaussian": mean + float16 stddev, regenerated when needed; float32/float16: stored), a user's own samples
kept as given, the ranking quality of each storage against the float32 exact ranking, and the on-disk formats."""

import json
import math

import numpy as np
import pytest

from prpose.errors import PrposeError
from prpose.index import PoseIndex, storage
from prpose.index.kernels import pairwise_match_distance_np

D, K = 16, 20
#: The packaged model's trained match parameters (a, b, smoothing): a sharp ranking.
TRAINED = (2.3568, 9.1975, 0.1)


def gaussians(n, seed=0, clusters=50, dtype=np.float16):
    """Clustered means (n, D) float32, stddevs (n, D) `dtype` in [0.1, 0.5] (as bench/bench_index.py draws)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, D))
    means = centres[rng.integers(clusters, size=n)] + rng.normal(scale=0.3, size=(n, D))
    std = rng.uniform(0.1, 0.5, size=(n, 1)) * rng.uniform(0.8, 1.2, size=(n, D))
    return means.astype(np.float32), std.astype(dtype)


def draw(means, stddevs, k, seed):
    eps = np.random.default_rng(seed).standard_normal((len(means), k, D))
    return (means[:, None] + stddevs.astype(np.float32)[:, None] * eps).astype(np.float32)


def recall(found, exact):
    top1 = np.mean(found[:, 0] == exact[:, 0])
    return top1, np.mean([len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact)])


# -- regenerated samples --------------------------------------------------------------------------------------


def _splitmix64_reference(counter: int, seed: int) -> int:
    """SplitMix64's finaliser on Python integers (independent of the NumPy uint64 code)."""
    mask = (1 << 64) - 1

    def mix(x):
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & mask
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    return mix((counter + mix((seed * 0x9E3779B97F4A7C15) & mask)) & mask)


def test_noise_table_is_box_muller_on_splitmix64():
    table = storage.noise_table(K, D, 3).reshape(-1)
    half = (len(table) + 1) // 2
    for i in (0, 1, 777, half - 1):
        bits = _splitmix64_reference(i, 3)
        radius = math.sqrt(-2.0 * math.log(((bits >> 32) + 1) / 2.0**32))
        angle = (bits & 0xFFFFFFFF) * 2.0 * math.pi / 2.0**32
        assert table[i] == np.float32(radius * math.cos(angle))
        if i + half < len(table):
            assert table[i + half] == np.float32(radius * math.sin(angle))
    assert not table.flags.writeable


def test_regenerated_samples_depend_only_on_the_entry_and_are_normal_draws():
    means, std = gaussians(5000)
    x = storage.regenerate_samples(means, std, K)
    assert x.shape == (5000, K, D) and x.dtype == np.float32
    # The same entries in another order, batch or subset get the same samples (no dependence on ids or shards).
    perm = np.random.default_rng(1).permutation(5000)[:500]
    np.testing.assert_array_equal(storage.regenerate_samples(means[perm], std[perm], K), x[perm])
    # Standardised, they are N(0, 1) (moments over 1.6M values), and entries' noises are nearly uncorrelated:
    # independent draws of K x D = 320 values would give |corr| ~ 0.045 on average; two entries that hash to
    # the same table row (1 pair in NOISE_ROWS) still differ by their D random signs.
    z = (x - means[:, None]) / std.astype(np.float32)[:, None]
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z**4) - 3) < 0.05  # normal kurtosis
    flat = z.reshape(len(z), -1)
    corr = np.corrcoef(flat[:200])[np.triu_indices(200, 1)]
    assert np.abs(corr).mean() < 0.05 and np.quantile(np.abs(corr), 0.999) < 0.3 and abs(corr.mean()) < 0.01
    # Another seed gives other samples.
    assert not np.array_equal(storage.regenerate_samples(means[:5], std[:5], K, seed=1), x[:5])


# -- ranking quality -------------------------------------------------------------------------------------------


def test_gaussian_index_search_and_exact_use_the_regenerated_samples():
    means, std = gaussians(300, seed=2)
    qm, qstd = gaussians(6, seed=3)
    qs = draw(qm, qstd, K, seed=4)
    index = PoseIndex(D, K, TRAINED, "m", factory="Flat")
    index.add(means, stddevs=std)
    assert index.sample_storage == "gaussian" and index.stored().dtype == np.float16
    ref = pairwise_match_distance_np(qs, storage.regenerate_samples(means, std, K), *TRAINED)  # float64
    exact = index.search_exact(qm, qs, 10, fingerprint="m")
    np.testing.assert_array_equal(exact.ids, np.argsort(ref, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(exact.distances, np.sort(ref, axis=1)[:, :10], rtol=1e-5)
    two_stage = index.search(qm, qs, 10, candidates=300, fingerprint="m")
    np.testing.assert_array_equal(two_stage.ids, exact.ids)


def test_every_storage_holds_the_entries_regenerated_samples():
    """Given stddevs, float32 storage keeps exactly `regenerate_samples(mean, stddev)` (from the float32 stddev),
    float16 storage those rounded, and gaussian storage regenerates them from the float16 stddev: the same
    draws, whatever the batches the entries come in."""
    means, std = gaussians(700, seed=21, dtype=np.float32)
    want = storage.regenerate_samples(means, std, K, seed=3)
    for name in ("float32", "float16", "gaussian"):
        one = PoseIndex(D, K, TRAINED, "m", factory="Flat", sample_storage=name, noise_seed=3)
        one.add(means, stddevs=std)
        parts = PoseIndex(D, K, TRAINED, "m", factory="Flat", sample_storage=name, noise_seed=3)
        for lo, hi in ((0, 1), (1, 450), (450, 700)):
            parts.add(means[lo:hi], stddevs=std[lo:hi])
        np.testing.assert_array_equal(parts.stored(), one.stored())
        got = one.samples().astype(np.float32)
        if name == "float32":
            np.testing.assert_array_equal(got, want)
        elif name == "float16":
            np.testing.assert_array_equal(one.stored(), want.astype(np.float16))
        else:  # only the stddev's float16 rounding (relative 2^-11) moves the samples off float32's
            np.testing.assert_array_equal(got, storage.regenerate_samples(means, std.astype(np.float16), K, seed=3))
            spread = np.abs(want - means[:, None])
            assert np.all(np.abs(got - want) <= spread * 2.0**-10 + 1e-6) and not np.array_equal(got, want)


def test_storages_rank_like_the_float32_exact_ranking():
    """Recall against the exact ranking of float32 storage of the same entries (1,500 synthetic entries, 40
    queries, the packaged model's sharp match parameters): float16 samples and the gaussian storage's float16
    stddev change the ranking only where two entries are nearly tied. Another draw of the same Gaussians (what
    the embedder's randomly keyed samples are) is far from it: that Monte Carlo noise is why the index keeps
    regenerated samples. The gaussian storage's two-stage search (HNSW candidates) matches its exact ranking."""
    n, q, k = 1500, 40, 20
    means, std = gaussians(n, seed=5, dtype=np.float32)
    qm, qstd = gaussians(q, seed=6)
    qs = draw(qm, qstd, K, seed=7)
    exact, indexes = {}, {}
    for name in ("float32", "float16", "gaussian", "another draw"):
        index = PoseIndex(D, K, TRAINED, "m", factory="HNSW32",
                          sample_storage="float32" if name == "another draw" else name)
        if name == "another draw":
            index.add(means, draw(means, std, K, 8))
        else:
            index.add(means, stddevs=std)
        exact[name], indexes[name] = index.search_exact(qm, qs, k, fingerprint="m").ids, index
    assert recall(exact["float16"], exact["float32"]) >= (0.975, 0.99)
    assert recall(exact["gaussian"], exact["float32"]) >= (0.975, 0.99)
    assert recall(exact["another draw"], exact["float32"])[0] < 0.9
    two_stage = indexes["gaussian"].search(qm, qs, k, fingerprint="m").ids
    assert recall(two_stage, exact["gaussian"]) >= (0.99, 0.98)


# -- adding ----------------------------------------------------------------------------------------------------


def test_add_needs_exactly_what_the_storage_keeps():
    means, std = gaussians(10)
    samples = draw(means, std, K, 0)
    with pytest.raises(PrposeError, match="either samples .* or stddevs"):
        PoseIndex(D, K, TRAINED, "m").add(means, samples, stddevs=std)
    with pytest.raises(PrposeError, match="either samples .* or stddevs"):
        PoseIndex(D, K, TRAINED, "m").add(means)
    with pytest.raises(PrposeError, match="'gaussian' storage .* needs stddevs= .*sample_storage='float32'"):
        PoseIndex(D, K, TRAINED, "m", sample_storage="gaussian").add(means, samples)
    with pytest.raises(PrposeError, match="stddevs has shape"):
        PoseIndex(D, K, TRAINED, "m").add(means, stddevs=std[:, :3])
    with pytest.raises(PrposeError, match="negative"):
        PoseIndex(D, K, TRAINED, "m").add(means, stddevs=-std)
    with pytest.raises(PrposeError, match="sample_storage='bfloat16'"):
        PoseIndex(D, K, TRAINED, "m", sample_storage="bfloat16")
    with pytest.raises(PrposeError, match="regenerated samples reach .* beyond float16 range"):
        PoseIndex(D, K, TRAINED, "m", sample_storage="float16").add(means * 1e5, stddevs=std)
    with pytest.raises(PrposeError, match="samples reach .* beyond float16 range"):
        PoseIndex(D, K, TRAINED, "m", sample_storage="float16").add(means, samples * 1e5)


def test_own_samples_are_kept_as_given():
    """A user's samples are the entries' samples (float16 storage rounds them); they mix with stddev entries."""
    means, std = gaussians(40, seed=22)
    samples = draw(means, std, K, 23)
    for name, dtype in (("auto", np.float32), ("float32", np.float32), ("float16", np.float16)):
        index = PoseIndex(D, K, TRAINED, "m", factory="Flat", sample_storage=name)
        index.add(means[:30], samples[:30])
        index.add(means[30:], stddevs=std[30:])
        assert index.sample_storage == ("float32" if name == "auto" else name)
        np.testing.assert_array_equal(index.stored()[:30], samples[:30].astype(dtype))
        np.testing.assert_array_equal(index.stored()[30:],
                                      storage.regenerate_samples(means[30:], std[30:], K).astype(dtype))


# -- on disk ---------------------------------------------------------------------------------------------------


def test_gaussian_index_round_trip_keeps_96_bytes_per_entry(tmp_path):
    means, std = gaussians(500, seed=11)
    qm, qstd = gaussians(5, seed=12)
    qs = draw(qm, qstd, K, seed=13)
    index = PoseIndex(D, K, TRAINED, "m", factory="Flat", noise_seed=4)
    index.add(means, stddevs=std, metadata={"source": np.array(["s"] * 500), "subject": np.zeros(500, int),
                                            "sequence": np.zeros(500, int), "frame": np.arange(500),
                                            "camera": np.array(["c"] * 500)})
    before = index.search(qm, qs, 7, fingerprint="m")
    path = index.save(tmp_path / "ix")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["version"] == 4 and manifest["sample_storage"] == "gaussian" and manifest["noise_seed"] == 4
    assert not (path / "samples.npy").exists()
    entry_bytes = (path / "means.npy").stat().st_size + (path / "stddevs.npy").stat().st_size
    assert entry_bytes < 500 * (4 * D + 2 * D) + 300  # + the two .npy headers
    loaded = PoseIndex.load(path, expected_fingerprint="m")
    assert loaded.sample_storage == "gaussian" and loaded.noise_seed == 4
    # The load rebuilt the candidate vectors (not saved), so the first search does not regenerate every entry.
    np.testing.assert_array_equal(loaded._vectors, index._vectors)
    after = loaded.search(qm, qs, 7, fingerprint="m")
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.distances, before.distances)


def _as_version_3(path):
    """Rewrite a saved float32/float16 index's manifest as format version 3 wrote it (sample_dtype, no seed)."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 3
    manifest["sample_dtype"] = manifest.pop("sample_storage")
    del manifest["noise_seed"], manifest["manifest_sha256"]
    manifest["manifest_sha256"] = storage._manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_version_3_index_still_loads_and_saves_in_the_current_version(tmp_path, dtype):
    means, std = gaussians(300, seed=14)
    qm, qstd = gaussians(4, seed=15)
    qs = draw(qm, qstd, K, seed=16)
    index = PoseIndex(D, K, TRAINED, "m", factory="Flat", sample_storage=dtype)
    index.add(means, draw(means, std, K, 17))
    before = index.search(qm, qs, 5, fingerprint="m")
    _as_version_3(index.save(tmp_path / "v3"))
    old = PoseIndex.load(tmp_path / "v3")
    assert old.sample_storage == dtype
    after = old.search(qm, qs, 5, fingerprint="m")
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.distances, before.distances)
    old.save(tmp_path / "v3", model_ref=None)  # rewritten in the current format
    assert json.loads((tmp_path / "v3" / "manifest.json").read_text())["version"] == storage.FORMAT_VERSION


def test_version_1_index_is_refused_with_rebuild(tmp_path):
    index = PoseIndex(D, K, TRAINED, "m", factory="Flat")
    means, std = gaussians(30)
    index.add(means, stddevs=std)
    path = index.save(tmp_path / "v1")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrposeError, match="version 1 .*rebuild it with `prpose index build`"):
        PoseIndex.load(path)
