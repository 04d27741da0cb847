import json
import pathlib

import numpy as np
import pytest

from prpose import index as index_mod
from prpose.index import candidates, core, kernels, storage
from prpose.errors import PrposeError
from prpose.index import PoseIndex

D, K = 8, 5
PARAMS = (1.3, -0.4, 0.1)


def reference_distance(q, x, a, b, s):
    """Independent float64 reference: q (K1, D), x (N, K2, D) -> (N,) d = -log mean_{ij} P, in log space."""
    q = np.asarray(q, np.float64)
    x = np.asarray(x, np.float64)
    r = np.sqrt(((x[:, None, :, :] - q[None, :, None, :]) ** 2).sum(-1)).reshape(len(x), -1)
    log_p = np.logaddexp(np.log1p(-s) - np.logaddexp(0.0, a * r - b), np.log(s / 2) if s > 0 else -np.inf)
    peak = log_p.max(axis=1, keepdims=True)
    return -(np.log(np.exp(log_p - peak).mean(axis=1)) + peak[:, 0])


def make_data(n, seed=0, clusters=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(clusters, D))
    means = centres[rng.integers(clusters, size=n)] + rng.normal(scale=0.5, size=(n, D))
    std = rng.uniform(0.1, 0.5, size=(n, D))
    samples = means[:, None] + std[:, None] * rng.normal(size=(n, K, D))
    meta = {
        "source": np.array(["synth"] * n),
        "subject": np.array([f"S{i % 3}" for i in range(n)]),
        "sequence": rng.integers(0, 4, size=n).astype(np.int16),
        "frame": np.arange(n, dtype=np.int32),
        "camera": np.array([f"cam{i % 4}" for i in range(n)], dtype=object),
        "pose3d": rng.normal(size=(n, 17, 3)).astype(np.float32),
    }
    return means.astype(np.float32), samples.astype(np.float32), meta


def build(n=300, factory="auto", seed=0, **kw):
    means, samples, meta = make_data(n, seed)
    idx = PoseIndex(D, K, PARAMS, "model-abc", factory=factory, **kw)
    idx.add(means, samples, meta)
    return idx, means, samples, meta


def queries(q=7, seed=1):
    m, s, _ = make_data(q, seed)
    return m, s


# -- numerics ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [0.1, 0.0])
def test_rerank_kernel_matches_float64_reference(s):
    rng = np.random.default_rng(3)
    q = rng.normal(size=(3, K, D)).astype(np.float32)
    x = (q[:, None] + rng.normal(scale=0.7, size=(3, 4, K, D))).astype(np.float32)
    got = kernels.rerank_distances(q, x, *PARAMS[:2], s)
    want = np.stack([reference_distance(q[i], x[i], *PARAMS[:2], s) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_rerank_kernel_far_apart_stays_finite_and_ordered():
    # Every sigmoid underflows in float32 (a r - b ~ 1e3): the float64 log-space fallback must keep the order.
    q = np.zeros((1, K, D), np.float32)
    x = np.zeros((1, 3, K, D), np.float32)
    x[0, :, :, 0] = np.array([300.0, 400.0, 500.0])[:, None]
    got = kernels.rerank_distances(q, x, 2.0, 0.0, 0.0)
    want = reference_distance(q[0], x[0], 2.0, 0.0, 0.0)
    assert np.all(np.isfinite(got)) and np.all(np.diff(got[0]) > 0)
    np.testing.assert_allclose(got[0], want, rtol=1e-9)


def test_identical_single_samples_give_maximal_probability():
    # K = 1 and query == entry: r = 0, so P = (1 - s) sigmoid(b) + s / 2 exactly.
    a, b, s = PARAMS
    idx = PoseIndex(D, 1, PARAMS, "m")
    z = np.ones((1, D), np.float32)
    idx.add(z, z[:, None], None)
    res = idx.search(z, z[:, None], k=1, fingerprint=idx.fingerprint)
    expected = (1 - s) / (1 + np.exp(-b)) + s / 2
    np.testing.assert_allclose(res.probabilities[0, 0], expected, rtol=1e-6)


def test_exact_search_matches_float64_brute_force():
    idx, means, samples, _ = build(n=120)
    qm, qs = queries(4)
    res = idx.search_exact(qm, qs, k=10, fingerprint=idx.fingerprint)
    for i in range(4):
        d = reference_distance(qs[i], samples, *PARAMS)
        order = np.argsort(d, kind="stable")[:10]
        np.testing.assert_array_equal(res.ids[i], order)
        np.testing.assert_allclose(res.distances[i], d[order], rtol=1e-5)
        np.testing.assert_allclose(res.probabilities[i], np.exp(-d[order]), rtol=1e-5)


def test_exact_search_matches_the_float64_kernel():
    idx, _, samples, _ = build(n=50)
    qm, qs = queries(2)
    res = idx.search_exact(qm, qs, k=5, fingerprint=idx.fingerprint)
    want = kernels.match_distance_np(qs[0][None], samples[res.ids[0]], *PARAMS)
    np.testing.assert_allclose(res.distances[0], want, rtol=1e-5)


# -- search behaviour --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat"])
def test_entry_queried_with_its_own_samples_comes_first(factory):
    idx, means, samples, meta = build(n=400, factory=factory)
    picks = np.array([0, 17, 123, 399])
    res = idx.search(means[picks], samples[picks], k=5, fingerprint=idx.fingerprint)
    np.testing.assert_array_equal(res.ids[:, 0], picks)
    np.testing.assert_array_equal(res.metadata["frame"][:, 0], meta["frame"][picks])
    np.testing.assert_array_equal(res.metadata["camera"][:, 0], meta["camera"][picks].astype(str))
    np.testing.assert_array_equal(res.metadata["pose3d"][:, 0], meta["pose3d"][picks])
    assert res.rows(1)[0]["id"] == 17 and res.rows(1)[0]["subject"] == "S2"


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat"])
def test_batch_and_single_queries_give_identical_results(factory):
    idx, *_ = build(n=500, factory=factory)
    qm, qs = queries(40)  # > 20 queries: FAISS switches to BLAS distances for batches
    batch = idx.search(qm, qs, k=6, candidates=24, fingerprint=idx.fingerprint)
    for i in range(0, 40, 3):
        single = idx.search(qm[i : i + 1], qs[i : i + 1], k=6, candidates=24, fingerprint=idx.fingerprint)
        np.testing.assert_array_equal(single.ids[0], batch.ids[i])
        np.testing.assert_array_equal(single.distances[0], batch.distances[i])


def test_two_stage_agrees_with_exact_on_small_data():
    idx, *_ = build(n=300)
    qm, qs = queries(20)
    exact = idx.search_exact(qm, qs, k=10, fingerprint=idx.fingerprint)
    # Every entry is a candidate: must equal the reference.
    full = idx.search(qm, qs, k=10, candidates=300, fingerprint=idx.fingerprint)
    np.testing.assert_array_equal(full.ids, exact.ids)
    np.testing.assert_allclose(full.distances, exact.distances, rtol=1e-5)
    # 64 candidates of 300, clustered data: top-1 must still agree.
    default = idx.search(qm, qs, k=10, fingerprint=idx.fingerprint)
    np.testing.assert_array_equal(default.ids[:, 0], exact.ids[:, 0])
    assert np.all(np.diff(default.distances, axis=1) >= 0)


def test_fewer_entries_than_k_pads_with_minus_one():
    idx, *_ = build(n=3)
    qm, qs = queries(2)
    res = idx.search(qm, qs, k=5, fingerprint=idx.fingerprint)
    assert res.ids.shape == (2, 5)
    assert np.all(res.ids[:, 3:] == -1) and np.all(np.isinf(res.distances[:, 3:]))
    assert np.all(res.probabilities[:, 3:] == 0) and np.all(res.metadata["subject"][:, 3:] == "")
    assert sorted(res.ids[0, :3]) == [0, 1, 2] and len(res.rows(0)) == 3
    exact = idx.search_exact(qm, qs, k=5, fingerprint=idx.fingerprint)
    np.testing.assert_array_equal(exact.ids, res.ids)


def test_incremental_add_and_auto_switch_to_ivf(monkeypatch, tmp_path):
    monkeypatch.setattr(candidates, "AUTO_IVF_THRESHOLD", 250)
    monkeypatch.setattr(candidates, "AUTO_IVF_LIST_SIZE", 40)
    means, samples, meta = make_data(400)
    idx = PoseIndex(D, K, PARAMS, "m")
    ids = idx.add(means[:200], samples[:200], {k: v[:200] for k, v in meta.items()})
    qm, qs = queries(5)
    idx.search(qm, qs, k=3, fingerprint=idx.fingerprint)
    assert idx.faiss_factory == "Flat" and ids[-1] == 199
    ids = idx.add(means[200:300], samples[200:300], {k: v[200:300] for k, v in meta.items()})
    assert ids[0] == 200 and idx.faiss_factory == "IVF8,Flat"  # 300 / 40 = 7.5 lists -> 8
    res = idx.search(means[[250]], samples[[250]], k=3, fingerprint=idx.fingerprint)
    assert res.ids[0, 0] == 250 and idx._faiss.ntotal == 300
    # An index saved with another "auto" choice (as HNSW32 was before) keeps it when loaded, until entries are added.
    old = PoseIndex(D, K, PARAMS, "m", factory="HNSW32")
    old.add(means[:300], samples[:300], {k: v[:300] for k, v in meta.items()})
    old.search(qm, qs, k=3, fingerprint="m")  # builds the HNSW32 stage
    old.factory = "auto"  # what an index saved by "auto" before this change records
    old.save(tmp_path / "old")
    loaded = PoseIndex.load(tmp_path / "old")
    assert loaded.faiss_factory == "HNSW32"
    np.testing.assert_array_equal(loaded.search(qm, qs, k=3, fingerprint="m").ids,
                                  old.search(qm, qs, k=3, fingerprint="m").ids)
    assert loaded.faiss_factory == "HNSW32" and loaded._faiss_factory == "HNSW32"
    loaded.add(means[300:], samples[300:], {k: v[300:] for k, v in meta.items()})
    loaded.search(qm, qs, k=3, fingerprint="m")
    assert loaded.faiss_factory == "IVF8,Flat" and loaded._faiss.ntotal == 400  # 400 / 40 = 10 -> 8


def test_float16_storage_keeps_rankings_close():
    idx32, *_ = build(n=300)
    idx16, *_ = build(n=300, sample_storage="float16")
    qm, qs = queries(20)
    r32 = idx32.search_exact(qm, qs, k=5, fingerprint=idx32.fingerprint)
    r16 = idx16.search_exact(qm, qs, k=5, fingerprint=idx16.fingerprint)
    np.testing.assert_allclose(r16.distances, r32.distances, rtol=2e-3)
    assert np.mean(r16.ids[:, 0] == r32.ids[:, 0]) >= 0.9
    assert idx16.stored().dtype == np.float16 and idx16.samples().dtype == np.float16


# -- persistence ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat"])
def test_save_load_round_trip_gives_identical_results(tmp_path, factory):
    idx, *_ = build(n=300, factory=factory)
    idx.ef_search = 40
    qm, qs = queries(9)
    before = idx.search(qm, qs, k=5, fingerprint=idx.fingerprint)
    idx.save(tmp_path / "ix")
    loaded = PoseIndex.load(tmp_path / "ix", expected_fingerprint="model-abc")
    after = loaded.search(qm, qs, k=5, fingerprint=loaded.fingerprint)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.distances, before.distances)
    for name in before.metadata:
        np.testing.assert_array_equal(after.metadata[name], before.metadata[name])
    assert loaded.ef_search == 40 and loaded.match_params == idx.match_params and loaded.ntotal == 300
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["format"] == "prpose-index" and manifest["version"] == storage.FORMAT_VERSION
    assert manifest["candidate_vectors"] == "moments"
    assert manifest["faiss_factory"] == ("Flat" if factory == "Flat" else factory)
    assert set(manifest["files"]) >= {"means.npy", "samples.npy", "faiss.index", "meta_frame.npy"}


def test_load_refuses_other_model_fingerprint(tmp_path):
    idx, *_ = build(n=20)
    idx.save(tmp_path / "ix")
    with pytest.raises(PrposeError, match="fingerprint 'model-abc'.*'model-xyz'"):
        PoseIndex.load(tmp_path / "ix", expected_fingerprint="model-xyz")


def test_load_refuses_truncated_npy(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    data = (path / "samples.npy").read_bytes()
    (path / "samples.npy").write_bytes(data[:-40])
    with pytest.raises(PrposeError, match=r"samples\.npy.*truncated"):
        PoseIndex.load(path)


def test_load_refuses_corrupt_file_same_size(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    data = bytearray((path / "means.npy").read_bytes())
    data[-1] ^= 0xFF
    (path / "means.npy").write_bytes(bytes(data))
    with pytest.raises(PrposeError, match=r"means\.npy.*SHA-256"):
        PoseIndex.load(path)


def test_load_refuses_newer_format_version(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = storage.FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrposeError, match=f"version {storage.FORMAT_VERSION + 1}.*upgrade prpose"):
        PoseIndex.load(path)


def test_interrupted_save_never_loads_as_complete(tmp_path, monkeypatch):
    idx, *_ = build(n=20)
    old = idx.save(tmp_path / "ix")
    bigger, *_ = build(n=40, seed=5)

    def crash(path, manifest):
        raise KeyboardInterrupt("simulated crash before the manifest")

    monkeypatch.setattr(storage, "_write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(tmp_path / "ix")
    with pytest.raises(KeyboardInterrupt):
        bigger.save(tmp_path / "fresh")
    # The old complete index is untouched; the new target never appears; no temp debris is left behind.
    assert PoseIndex.load(old).ntotal == 20
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    # A directory a crash left behind without a manifest is refused, not half-loaded.
    (tmp_path / "partial").mkdir()
    np.save(tmp_path / "partial" / "means.npy", np.zeros((2, D), np.float32))
    with pytest.raises(PrposeError, match="no manifest.json"):
        PoseIndex.load(tmp_path / "partial")


# -- bad input ---------------------------------------------------------------------------------------------------


def test_nan_query_is_refused_with_row_numbers():
    idx, *_ = build(n=20)
    qm, qs = queries(3)
    qs[2, 1, 0] = np.nan
    with pytest.raises(PrposeError, match=r"query_samples has 1 row\(s\) with NaN.*\[2\]"):
        idx.search(qm, qs, k=2, fingerprint=idx.fingerprint)
    with pytest.raises(PrposeError, match="query_samples"):
        idx.search_exact(qm, qs, k=2, fingerprint=idx.fingerprint)


@pytest.mark.parametrize(
    "qm_shape, qs_shape, pattern",
    [((3, D + 1), (3, K, D), r"query_means has shape \(3, 9\), expected \(N, 8\)"),
     ((3, D), (3, K + 1, D), r"query_samples has shape \(3, 6, 8\), expected \(3, 5, 8\)"),
     ((3, D), (2, K, D), r"query_samples has shape \(2, 5, 8\), expected \(3, 5, 8\)")],
)
def test_bad_query_shapes_are_refused(qm_shape, qs_shape, pattern):
    idx, *_ = build(n=20)
    with pytest.raises(PrposeError, match=pattern):
        idx.search(np.zeros(qm_shape, np.float32), np.zeros(qs_shape, np.float32), k=2,
                   fingerprint=idx.fingerprint)


def test_bad_arguments_are_refused():
    idx, means, samples, meta = build(n=20)
    qm, qs = queries(2)
    with pytest.raises(PrposeError, match="k=0"):
        idx.search(qm, qs, k=0, fingerprint=idx.fingerprint)
    with pytest.raises(PrposeError, match="candidates=3, expected an integer >= k=5"):
        idx.search(qm, qs, k=5, candidates=3, fingerprint=idx.fingerprint)
    with pytest.raises(PrposeError, match=r"lacks fields \['camera'\]"):
        idx.add(means, samples, {k: v for k, v in meta.items() if k != "camera"})
    with pytest.raises(PrposeError, match=r"pose3d'\] has shape \(20, 16, 3\)"):
        idx.add(means, samples, {**meta, "pose3d": np.zeros((20, 16, 3))})
    with pytest.raises(PrposeError, match=r"metadata\['frame'\] has shape \(19,\)"):
        idx.add(means, samples, {**meta, "frame": np.arange(19)})
    with pytest.raises(PrposeError, match="metadata=None"):
        idx.add(means, samples, None)
    with pytest.raises(PrposeError, match="smoothing=1.5"):
        PoseIndex(D, K, (1.0, 0.0, 1.5), "m")
    with pytest.raises(PrposeError, match="factory 'NotAThing'"):
        PoseIndex(D, K, PARAMS, "m", factory="NotAThing")
    with pytest.raises(PrposeError, match="empty"):
        PoseIndex(D, K, PARAMS, "m").search(qm, qs, k=1, fingerprint="m")
    ivf = PoseIndex(D, K, PARAMS, "m", factory="IVF64,Flat")
    ivf.add(means, samples, meta)
    with pytest.raises(PrposeError, match="64 inverted lists.*holds 20"):
        ivf.search(qm, qs, k=1, fingerprint=ivf.fingerprint)


def test_structured_array_metadata_is_accepted():
    means, samples, _ = make_data(4)
    meta = np.zeros(4, dtype=[("source", "U8"), ("subject", "U4"), ("sequence", "i2"), ("frame", "i4"),
                              ("camera", "U6")])
    meta["frame"] = [5, 6, 7, 8]
    idx = PoseIndex(D, K, PARAMS, "m")
    idx.add(means, samples, meta)
    res = idx.search(means[[2]], samples[[2]], k=1, fingerprint=idx.fingerprint)
    assert res.metadata["frame"][0, 0] == 7 and set(idx.metadata_fields) == set(meta.dtype.names)


# -- reliability (issue 9) ---------------------------------------------------------------------------------------


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _reseal(path, manifest):
    """Write `manifest` with a matching manifest_sha256: what a careful forger would do (independent of prpose)."""
    import hashlib

    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    (path / "manifest.json").write_text(json.dumps({**body, "manifest_sha256": hashlib.sha256(canonical).hexdigest()}))


def test_save_replaces_only_a_prpose_index(tmp_path):
    from prpose import dataset as ds

    idx, *_ = build(n=20)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("keep me")
    (thesis / "manifest.json").write_text(json.dumps({"format": "prpose-index", "version": 1}))
    with pytest.raises(PrposeError, match="thesis exists, is not empty and is not a prpose index"):
        idx.save(thesis)
    assert (thesis / "thesis.tex").read_text() == "keep me"
    data = tmp_path / "data"
    (data).mkdir()
    (data / "manifest.json").write_text(json.dumps({"format": ds.FORMAT, "version": 1}))
    (data / "poses3d.npy").write_bytes(b"x")
    with pytest.raises(PrposeError, match="data exists.*not a prpose index.*'prpose-dataset'"):
        idx.save(data)
    assert (data / "poses3d.npy").read_bytes() == b"x"
    idx.save(tmp_path / "ix")
    (tmp_path / "ix" / "model.json").write_text("{}")  # what `prpose index build` writes beside the index
    idx.save(tmp_path / "ix")  # an index is replaced
    assert index_mod.is_index_dir(tmp_path / "ix") and not index_mod.is_index_dir(thesis)


CRASH_CHILD = """
import os, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_index import build
target = sys.argv[1]
build(n=20)[0].save(target)
real_rename, calls = os.rename, []
def rename(a, b):
    calls.append(b)
    if len(calls) == 2:
        os._exit(17)  # killed between the two renames of the swap
    real_rename(a, b)
os.rename = rename
build(n=40, seed=5)[0].save(target)
"""


def test_crash_between_the_renames_of_a_save_is_recovered_by_the_next_load(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "ix"
    done = subprocess.run([sys.executable, "-c", CRASH_CHILD, str(target), str(pathlib.Path(__file__).parent)],
                          capture_output=True, text=True)
    assert done.returncode == 17, done.stderr
    assert not target.exists()
    assert PoseIndex.load(target).ntotal == 40  # the new copy was complete: the swap is finished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


@pytest.mark.parametrize("edit, pattern", [
    (lambda m: m["files"].update({"../secret.bin": {"size": 1, "sha256": "0" * 64}}), r"'\.\./secret\.bin'"),
    (lambda m: m["files"].update({"/etc/hostname": {"size": 1, "sha256": "0" * 64}}), r"'/etc/hostname'"),
    (lambda m: m["metadata_fields"].update({"../../secret": {"dtype": "<i4", "shape": []}}), r"'\.\./\.\./secret'"),
    (lambda m: m.update({"faiss_file": "../secret.bin"}), r"faiss_file '\.\./secret\.bin'"),
])
def test_manifest_cannot_name_files_outside_the_index(tmp_path, edit, pattern):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 12345)
    manifest = _manifest(path)
    edit(manifest)
    _reseal(path, manifest)
    with pytest.raises(PrposeError, match=pattern) as err:
        PoseIndex.load(path)
    assert "12345" not in str(err.value) and "\n" not in str(err.value)


def test_symlinked_index_file_is_refused(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    outside = tmp_path / "means-elsewhere.npy"
    (path / "means.npy").rename(outside)
    (path / "means.npy").symlink_to(outside)
    with pytest.raises(PrposeError, match=r"means\.npy.*symbolic link"):
        PoseIndex.load(path)


def test_faiss_file_is_hashed(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    other, *_ = build(n=20, seed=9)
    other.save(tmp_path / "other")
    (path / "faiss.index").write_bytes((tmp_path / "other" / "faiss.index").read_bytes())
    with pytest.raises(PrposeError, match=r"faiss\.index.*SHA-256"):
        PoseIndex.load(path)


def test_one_byte_edit_of_match_params_is_refused(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    text = (path / "manifest.json").read_text()
    assert '"a": 1.3' in text
    (path / "manifest.json").write_text(text.replace('"a": 1.3', '"a": 1.4'))
    with pytest.raises(PrposeError, match=r"manifest\.json.*manifest_sha256"):
        PoseIndex.load(path)


def test_malformed_manifest_types_are_one_line_errors(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    original = _manifest(path)
    for key, value in [("files", []), ("metadata_fields", "frame"), ("count", "many"), ("match_params", 3)]:
        manifest = dict(original)
        manifest[key] = value
        _reseal(path, manifest)
        with pytest.raises(PrposeError, match=rf"manifest\.json.*{key}"):
            PoseIndex.load(path)


REBUILD_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_index import build
target, until = sys.argv[1], time.time() + float(sys.argv[3])
a, b = build(n=200, seed=1)[0], build(n=300, seed=2)[0]
a.fingerprint, b.fingerprint = "model-A", "model-B"
while time.time() < until:
    a.save(target)
    b.save(target)
"""


def test_load_during_rebuild_in_place_never_mixes_two_builds(tmp_path):
    """One process rebuilds the index in place in a loop (two different models), this one loads meanwhile."""
    import subprocess
    import sys
    import time

    target = tmp_path / "ix"
    expected = {"model-A": build(n=200, seed=1)[1], "model-B": build(n=300, seed=2)[1]}
    first = build(n=200, seed=1)[0]
    first.fingerprint = "model-A"
    first.save(target)
    writer = subprocess.Popen([sys.executable, "-c", REBUILD_CHILD, str(target), str(pathlib.Path(__file__).parent),
                               "5"], stderr=subprocess.PIPE, text=True)
    loads, seen = 0, set()
    try:
        while writer.poll() is None:
            loaded = PoseIndex.load(target)
            means = expected.get(loaded.fingerprint)
            assert means is not None, loaded.fingerprint
            np.testing.assert_array_equal(loaded.means(), means)  # manifest and arrays of one build
            loads += 1
            seen.add(loaded.fingerprint)
            time.sleep(0.001)
    finally:
        writer.wait(30)
    assert writer.returncode == 0, writer.stderr.read()
    assert loads > 20 and seen == set(expected)


def test_search_checks_the_embeddings_model(tmp_path):
    idx, means, samples, _ = build(n=50)
    with pytest.raises(TypeError, match="fingerprint"):
        idx.search(means[:2], samples[:2], k=3)
    with pytest.raises(PrposeError, match="'model-xyz'.*'model-abc'"):
        idx.search(means[:2], samples[:2], k=3, fingerprint="model-xyz")
    with pytest.raises(PrposeError, match="'model-xyz'.*'model-abc'"):
        idx.search_exact(means[:2], samples[:2], k=3, fingerprint="model-xyz")
    checked = idx.search(means[:2], samples[:2], k=3, fingerprint="model-abc")
    unchecked = idx.search(means[:2], samples[:2], k=3, fingerprint=None)  # the explicit opt-out
    np.testing.assert_array_equal(checked.ids, unchecked.ids)


def _tight_index(n, seed):
    """A Flat index of n random entries (K = 20, D = 16) with tight samples (sd 0.1); returns (index, means)."""
    rng = np.random.default_rng(seed)
    idx = PoseIndex(16, 20, PARAMS, "m", factory="Flat")
    means = rng.normal(size=(n, 16)).astype(np.float32)
    idx.add(means, (means[:, None] + 0.1 * rng.normal(size=(n, 20, 16))).astype(np.float32))
    return idx, means


def test_search_memory_is_bounded_for_large_k():
    import tracemalloc

    idx, means = _tight_index(10_000, seed=0)
    qm, qs = means[:8], idx.samples()[:8]
    idx.search(qm[:1], qs[:1], k=1, fingerprint="m")  # build the FAISS stage outside the measurement
    tracemalloc.start()
    res = idx.search(qm, qs, k=1000, fingerprint="m")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Unbounded (before), the re-rank held 8 queries x 8,000 candidates x K x D floats several times: 279 MB.
    assert peak < 80e6, f"peak {peak / 1e6:.0f} MB"
    np.testing.assert_array_equal(res.ids[:, 0], np.arange(8))


def test_chunked_search_equals_one_block(monkeypatch):
    idx, *_ = build(n=300)
    qm, qs = queries(9)
    whole = idx.search(qm, qs, k=20, fingerprint="model-abc")
    monkeypatch.setattr(core, "_PAIR_BUDGET", 7)
    monkeypatch.setattr(core, "_CANDIDATE_BUDGET", 50)
    chunked = idx.search(qm, qs, k=20, fingerprint="model-abc")
    np.testing.assert_array_equal(chunked.ids, whole.ids)
    np.testing.assert_array_equal(chunked.distances, whole.distances)


WRONG_VALUES = [None, True, -1, 0, 1.5, "x", "../x", [], [1], {}, {"a": 1}]


def _load_error(path, **kw):
    """Load must fail with exactly one PrposeError line naming a path inside the index, nothing else."""
    try:
        PoseIndex.load(path, **kw)
    except PrposeError as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        return message
    return None


def test_fuzzed_manifest_values_give_one_line_errors(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    original = _manifest(path)
    accepted = []
    for key in sorted(set(original) - {"manifest_sha256"}):  # _reseal recomputes it; see the one-byte test
        for value in WRONG_VALUES:
            if value == original[key]:
                continue
            _reseal(path, {**original, key: value})
            if _load_error(path) is None:
                accepted.append((key, value))
    for name in original["files"]:
        for value in WRONG_VALUES:
            _reseal(path, {**original, "files": {**original["files"], name: value}})
            assert _load_error(path) is not None, (name, value)
    for field in original["metadata_fields"]:
        for part in ("dtype", "shape"):
            for value in WRONG_VALUES:
                if value == original["metadata_fields"][field][part]:
                    continue
                info = {**original["metadata_fields"][field], part: value}
                _reseal(path, {**original, "metadata_fields": {**original["metadata_fields"], field: info}})
                assert _load_error(path) is not None, (field, part, value)
    # Only the search knobs and the free-form names (strings) may take other values.
    assert all(key == "search" or (key in ("fingerprint", "profile") and isinstance(value, str))
               for key, value in accepted), accepted


def test_truncated_and_byte_flipped_files_give_one_line_errors(tmp_path):
    idx, *_ = build(n=20)
    path = idx.save(tmp_path / "ix")
    rng = np.random.default_rng(0)
    for name in sorted(p.name for p in path.iterdir()):
        data = (path / name).read_bytes()
        cuts = [0, 1, len(data) // 2, len(data) - 1]
        flips = rng.integers(0, len(data), size=12).tolist() + list(range(min(len(data), 16)))
        for cut in cuts:
            (path / name).write_bytes(data[:cut])
            assert _load_error(path) is not None, (name, "cut", cut)
        for at in flips:
            flipped = bytearray(data)
            flipped[at] ^= 0x5A
            (path / name).write_bytes(bytes(flipped))
            if name.endswith(".npy"):  # verify=False: the .npy parser itself sees the damage (a clean error or a load)
                _load_error(path, verify=False)
            assert _load_error(path) is not None, (name, "flip", at)
        (path / name).write_bytes(data)
    assert PoseIndex.load(path).ntotal == 20


# -- candidate vectors, streaming re-rank (issue 12) --------------------------------------------------------------


def test_moment_vectors_give_the_mean_squared_sample_pair_distance():
    from prpose.index.candidates import entry_vectors, query_vectors

    _, samples, _ = make_data(30, seed=4)
    qm, qs = queries(3, seed=5)
    ev = entry_vectors(None, samples, "moments").astype(np.float64)
    qv = query_vectors(qm, qs, "moments").astype(np.float64)
    got = ((ev[None] - qv[:, None]) ** 2).sum(-1)  # (Q, N): what FAISS ranks by
    pair_sq = ((qs[:, None, :, None].astype(np.float64) - samples[None, :, None]) ** 2).sum(-1).mean(axis=(2, 3))
    own = ((qs - qs.mean(axis=1, keepdims=True)).astype(np.float64) ** 2).sum(-1).mean(-1)
    np.testing.assert_allclose(got, pair_sq - own[:, None], rtol=1e-4)
    np.testing.assert_array_equal(query_vectors(qm, qs, "means"), qm)


def _spread_data(n, seed):
    """Entries whose spreads differ a lot (0.05 to 1.0): the case where the means alone mislead stage 1."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.0, size=(n, D)).astype(np.float32)
    std = rng.uniform(0.05, 1.0, size=(n, 1, 1)).astype(np.float32)
    return means, (means[:, None] + std * rng.normal(size=(n, K, D))).astype(np.float32)


def test_moment_candidates_find_the_exact_top_k_with_fewer_candidates():
    means, samples = _spread_data(3000, seed=6)
    qm, qs = _spread_data(40, seed=7)
    recalls = {}
    for kind in ("means", "moments"):
        idx = PoseIndex(D, K, (0.52, -0.5, 0.1), "m", factory="Flat", candidate_vectors=kind)
        idx.add(means, samples)
        exact = idx.search_exact(qm, qs, k=10, fingerprint="m").ids
        found = idx.search(qm, qs, k=10, candidates=30, fingerprint="m")
        recalls[kind] = np.mean([len(np.intersect1d(f, e)) / 10 for f, e in zip(found.ids, exact)])
        top1 = np.mean(found.ids[:, 0] == exact[:, 0])
        if kind == "moments":
            assert recalls[kind] >= 0.98 and top1 >= 0.975, (recalls, top1)
            # The distances reported are the exact ones.
            ref = idx.search_exact(qm, qs, k=10, fingerprint="m")
            same = found.ids == ref.ids
            np.testing.assert_allclose(found.distances[same], ref.distances[same], rtol=1e-5)
    assert recalls["moments"] > recalls["means"] + 0.05, recalls


def test_version_2_index_loads_and_searches_over_its_means(tmp_path):
    idx, *_ = build(n=300, factory="HNSW32", candidate_vectors="means")
    qm, qs = queries(6)
    before = idx.search(qm, qs, k=8, fingerprint="model-abc")
    path = idx.save(tmp_path / "ix")
    manifest = _manifest(path)
    manifest["version"] = 2  # what prpose wrote before candidate vectors existed: no field, FAISS over the means
    del manifest["candidate_vectors"], manifest["noise_seed"]  # and samples.npy described by sample_dtype
    manifest["sample_dtype"] = manifest.pop("sample_storage")
    _reseal(path, manifest)
    loaded = PoseIndex.load(path)
    assert loaded.candidate_vectors == "means" and loaded._faiss.d == D
    after = loaded.search(qm, qs, k=8, fingerprint="model-abc")
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.distances, before.distances)
    manifest["version"] = 3
    manifest["candidate_vectors"] = "medians"
    _reseal(path, manifest)
    with pytest.raises(PrposeError, match="candidate_vectors 'medians', expected one of"):
        PoseIndex.load(path)


def test_rerank_streams_in_blocks_bounded_by_the_pair_budget(monkeypatch):
    idx, *_ = build(n=600)
    qm, qs = queries(5)
    whole = idx.search(qm, qs, k=40, candidates=600, fingerprint="model-abc")
    shapes, widths = [], []
    kernel, best = core.rerank_distances, core._best
    monkeypatch.setattr(core, "_PAIR_BUDGET", 64)
    monkeypatch.setattr(core, "rerank_distances", lambda q, x, *a: shapes.append(x.shape[:2]) or kernel(q, x, *a))
    monkeypatch.setattr(core, "_best", lambda d, i, k: widths.append(d.shape[1]) or best(d, i, k))
    streamed = idx.search(qm, qs, k=40, candidates=600, fingerprint="model-abc")
    np.testing.assert_array_equal(streamed.ids, whole.ids)
    np.testing.assert_array_equal(streamed.distances, whole.distances)
    # Every kernel call scores at most 64 (query, candidate) pairs and every merge holds at most k + 64 of them,
    # although each query has 600 candidates: the working memory does not grow with the candidates (or k).
    assert sum(q * c for q, c in shapes) == 5 * 600 and max(q * c for q, c in shapes) <= 64
    assert max(widths[:-1]) <= 40 + 64


def test_search_memory_does_not_grow_with_k_beyond_the_result(monkeypatch):
    import tracemalloc

    idx, means = _tight_index(60_000, seed=1)
    qm, qs = means[:1], idx.samples()[:1]
    idx.search(qm, qs, k=1, fingerprint="m")  # build the FAISS stage outside the measurement
    # Small budgets, so that what does not follow them shows: k = 500 and 5,000 re-rank 4,000 and 40,000
    # candidates. Streamed, only their ids and distances grow (~0.5 MB); gathering all their vectors at once (the
    # code before issue 12) grew by 4.5 MB here.
    monkeypatch.setattr(core, "_PAIR_BUDGET", 512)
    monkeypatch.setattr(candidates, "_RECOMPUTE_BUDGET", 4096)
    peaks = {}
    for k in (500, 5000):
        tracemalloc.start()
        idx.search(qm, qs, k=k, fingerprint="m")
        peaks[k] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[5000] - peaks[500] < 1.5e6, peaks


# -- threads -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat"])
def test_threads_give_identical_results(monkeypatch, factory):
    import threading

    idx, *_ = build(n=600, factory=factory)
    qm, qs = queries(90)
    monkeypatch.setattr(core, "_MIN_THREAD_BLOCK", 4)  # 90 queries -> ~12 blocks per search
    seen = set()
    real = candidates.nearest_candidates
    barrier = None

    def recording(*args):
        if threading.get_ident() not in seen:
            seen.add(threading.get_ident())
            barrier.wait()  # every thread takes a block before any goes on, however the machine schedules them
        return real(*args)

    monkeypatch.setattr(candidates, "nearest_candidates", recording)
    results = {}
    for threads in (1, 2, 3):
        idx.threads = threads
        seen.clear()
        barrier = threading.Barrier(threads, timeout=30)
        results[threads] = idx.search(qm, qs, k=8, candidates=30, fingerprint=idx.fingerprint)
        assert len(seen) == threads, (threads, len(seen))
    for threads in (2, 3):
        np.testing.assert_array_equal(results[threads].ids, results[1].ids)
        np.testing.assert_array_equal(results[threads].distances, results[1].distances)
    for name in results[1].metadata:
        np.testing.assert_array_equal(results[2].metadata[name], results[1].metadata[name])


def test_threads_setting_is_checked_and_faiss_threads_restored():
    import faiss

    from prpose.index import parallel

    idx, *_ = build(n=100)
    qm, qs = queries(3)
    for bad in (0, -1, 1.5, "2", True):
        idx.threads = bad
        with pytest.raises(PrposeError, match="threads="):
            idx.search(qm, qs, k=3, fingerprint=idx.fingerprint)
    idx.threads = None
    assert parallel.resolve_threads(None, "x") == parallel.available_cores() >= 1
    before = faiss.omp_get_max_threads()
    idx.search(qm, qs, k=3, fingerprint=idx.fingerprint)
    assert faiss.omp_get_max_threads() == before


def test_run_blocks_runs_every_block_once_and_reraises_errors():
    from prpose.index import parallel

    done = []
    parallel.run_blocks(done.append, 50, 2)
    assert sorted(done) == list(range(50))

    def fail(i):
        if i == 3:
            raise ValueError("block 3")

    with pytest.raises(ValueError, match="block 3"):
        parallel.run_blocks(fail, 20, 2)


def test_auto_factory_keeps_about_256_entries_per_inverted_list():
    assert candidates.resolve_factory("auto", 199_999) == "Flat"
    assert candidates.resolve_factory("auto", 200_000) == "IVF1024,Flat"
    assert candidates.resolve_factory("auto", 1_000_000) == "IVF4096,Flat"
    assert candidates.resolve_factory("auto", 2_000_000) == "IVF8192,Flat"
    assert candidates.resolve_factory("auto", 10**9) == "IVF16384,Flat"  # capped: the coarse search grows with it
    assert candidates.resolve_factory("HNSW32", 10) == "HNSW32"
    assert candidates.saved_factories("auto", 1_000_000) == ("IVF4096,Flat", "HNSW32")
    assert candidates.saved_factories("auto", 1000) == ("Flat",)
