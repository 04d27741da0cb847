"""Sharded indexes: shards built by separate processes, merged, and searched as one equal a single build."""

import json
import os
import shutil

import numpy as np
import pytest

from prpose.cli import main
from prpose.dataset import load_dataset
from prpose.errors import PrposeError
from prpose.index import PoseIndex, ShardedIndex, load_index
from prpose.index import shards as shards_mod
from prpose.inference import load_model

D, K = 16, 20
MATCH = (2.3568, 9.1975, 0.1)


def entries(n, seed=0):
    rng = np.random.default_rng(seed)
    means = (rng.normal(size=(8, D))[rng.integers(8, size=n)] + rng.normal(scale=0.4, size=(n, D))).astype(np.float32)
    std = rng.uniform(0.1, 0.5, size=(n, D)).astype(np.float16)
    meta = {"source": np.array(["s"] * n), "subject": np.array([f"S{i % 3}" for i in range(n)]),
            "sequence": np.zeros(n, np.int16), "frame": np.arange(n, dtype=np.int32),
            "camera": np.array([f"c{i % 4}" for i in range(n)])}
    return means, std, meta


def make_index(means, std, meta, fingerprint="m", factory="Flat"):
    index = PoseIndex(D, K, MATCH, fingerprint, factory=factory)
    index.add(means, stddevs=std, metadata=meta)
    return index


def queries(q, seed=1):
    means, std, _ = entries(q, seed)
    eps = np.random.default_rng(seed + 100).standard_normal((q, K, D)).astype(np.float32)
    return means, means[:, None] + std.astype(np.float32)[:, None] * eps


def write_shards(root, means, std, meta, bounds, **kw):
    n = len(bounds) - 1
    for i in range(n):
        part = slice(bounds[i], bounds[i + 1])
        make_index(means[part], std[part], {k: v[part] for k, v in meta.items()}, **kw).save(
            root / shards_mod.shard_name(i, n))


def assert_same_hits(a, b):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.distances, b.distances)
    for name in b.metadata:
        np.testing.assert_array_equal(a.metadata[name], b.metadata[name])


def test_merged_shards_search_like_one_index(tmp_path):
    means, std, meta = entries(900)
    single = make_index(means, std, meta)
    write_shards(tmp_path / "ix", means, std, meta, [0, 300, 650, 900])
    merged = shards_mod.merge_shards(tmp_path / "ix")
    assert merged["num_shards"] == 3 and merged["count"] == 900
    sharded = load_index(tmp_path / "ix", expected_fingerprint="m")
    assert isinstance(sharded, ShardedIndex) and sharded.ntotal == 900
    np.testing.assert_array_equal(sharded.offsets, [0, 300, 650])
    qm, qs = queries(12)
    # The exact ranking over all shards is the single index's, ids and metadata included.
    assert_same_hits(sharded.search_exact(qm, qs, 15, fingerprint="m"),
                     single.search_exact(qm, qs, 15, fingerprint="m"))
    # Two-stage: each shard re-ranks its own candidates; with every entry a candidate it is the same search.
    assert_same_hits(sharded.search(qm, qs, 15, candidates=900, fingerprint="m"),
                     single.search(qm, qs, 15, candidates=900, fingerprint="m"))
    # With the default candidates, the shards' candidates include the single index's (exact Flat stage).
    found = sharded.search(qm, qs, 15, fingerprint="m").ids
    exact = single.search_exact(qm, qs, 15, fingerprint="m").ids
    assert np.mean(found == exact) >= np.mean(single.search(qm, qs, 15, fingerprint="m").ids == exact)
    # Threads: set on every shard, same hits.
    sharded.threads = 2
    assert [s.threads for s in sharded.shards] == [2, 2, 2] and sharded.threads == 2
    two = sharded.search(qm, qs, 15, fingerprint="m")
    sharded.threads = 1
    assert_same_hits(sharded.search(qm, qs, 15, fingerprint="m"), two)
    # Fewer entries than k: padded like a single index.
    small = sharded.search(qm[:2], qs[:2], 1000, fingerprint="m")
    assert (small.ids[:, :900] >= 0).all() and (small.ids[:, 900:] == -1).all()
    with pytest.raises(PrposeError, match="embeddings from model 'other'"):
        sharded.search(qm, qs, 5, fingerprint="other")


def test_merge_refuses_incomplete_or_mixed_shards(tmp_path):
    means, std, meta = entries(200)
    root = tmp_path / "ix"
    write_shards(root, means, std, meta, [0, 100, 200])
    shutil.rmtree(root / shards_mod.shard_name(1, 2))
    with pytest.raises(PrposeError, match="shard-00001-of-00002 missing"):
        shards_mod.merge_shards(root)
    make_index(means[100:], std[100:], {k: v[100:] for k, v in meta.items()}, fingerprint="other").save(
        root / shards_mod.shard_name(1, 2))
    with pytest.raises(PrposeError, match="shard-00001-of-00002: fingerprint 'other' differs"):
        shards_mod.merge_shards(root)
    make_index(means[:50], std[:50], {k: v[:50] for k, v in meta.items()}).save(root / shards_mod.shard_name(0, 3))
    with pytest.raises(PrposeError, match="different shard counts"):
        shards_mod.merge_shards(root)
    with pytest.raises(PrposeError, match="holds shards of a 2-shard build"):
        shards_mod.check_shards_target(root, 3)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("x")
    with pytest.raises(PrposeError, match="not a directory of index shards"):
        shards_mod.check_shards_target(tmp_path / "notes", 2)
    with pytest.raises(PrposeError, match="expected I/N"):
        shards_mod.parse_shard("2/2")


def test_a_shard_rebuilt_after_the_merge_is_refused_until_merged_again(tmp_path):
    means, std, meta = entries(200)
    root = tmp_path / "ix"
    write_shards(root, means, std, meta, [0, 100, 200])
    with pytest.raises(PrposeError, match="no shards.json.*prpose index merge"):
        load_index(root)
    shards_mod.merge_shards(root)
    make_index(means[:90], std[:90], {k: v[:90] for k, v in meta.items()}).save(root / shards_mod.shard_name(0, 2))
    with pytest.raises(PrposeError, match="rebuilt after the shards were merged; run `prpose index merge"):
        load_index(root)
    shards_mod.merge_shards(root)
    assert load_index(root).ntotal == 190


def test_shard_rows_cover_the_rows_in_whole_blocks():
    for count in (1, 8192, 8193, 50_000):
        for n in (1, 2, 3, 7):
            parts = [shards_mod.shard_rows(count, 8192, i, n) for i in range(n)]
            assert parts[0].start == 0 and parts[-1].stop == count
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
            assert all(p.start % 8192 == 0 for p in parts)


@pytest.fixture(scope="module")
def big_setup(tmp_path_factory):
    """A synthetic dataset of 8,400 frames: more than one 8,192-row block, so two shards both hold views."""
    root = tmp_path_factory.mktemp("shards_cli")
    data, run = root / "data", root / "run"
    assert main(["prep", "synthetic", "--out", str(data), "--sequences", "42", "--frames", "200"]) == 0
    assert main(["train", "--config", "tiny", "--data", str(data), "--out", str(run), "--no-progress",
                 "--fast-compile", "--set", "steps=2", "eval_every=2", "checkpoint_every=2"]) == 0
    return root


def test_two_worker_processes_build_what_one_process_builds(big_setup, capsys):
    data, run = big_setup / "data", big_setup / "run"
    common = ["index", "build", "--model", str(run), "--data", str(data), "--cameras", "0"]
    assert main([*common, "--out", str(big_setup / "single")]) == 0
    assert main([*common, "--out", str(big_setup / "sharded"), "--workers", "2"]) == 0
    assert "merged 2 shards" in capsys.readouterr().out
    single = PoseIndex.load(big_setup / "single")
    sharded = load_index(big_setup / "sharded", expected_fingerprint=single.fingerprint)
    assert [len(s) for s in sharded.shards] == [8192, 208] and sharded.ntotal == len(single) == 8400
    # Same entries in the same order: concatenated shards are the single build.
    np.testing.assert_array_equal(np.concatenate([s.means() for s in sharded.shards]), single.means())
    np.testing.assert_array_equal(np.concatenate([s.stored() for s in sharded.shards]), single.stored())
    for name, values in single.metadata().items():
        np.testing.assert_array_equal(np.concatenate([s.metadata()[name] for s in sharded.shards]), values)
    # Queries: views of camera 2 of frames from both halves; the same hits from both.
    picked = np.array([5, 4000, 8191, 8192, 8300])
    model, dataset = load_model(run), load_dataset(data)
    emb = model.embed(np.asarray(dataset.keypoints2d[picked, 2]), profile="h36m17")
    assert_same_hits(sharded.search_exact(emb.mean, emb.samples, 10, fingerprint=model.fingerprint),
                     single.search_exact(emb.mean, emb.samples, 10, fingerprint=model.fingerprint))
    assert_same_hits(sharded.search(emb.mean, emb.samples, 10, candidates=8400, fingerprint=model.fingerprint),
                     single.search(emb.mean, emb.samples, 10, candidates=8400, fingerprint=model.fingerprint))
    # The CLI searches the shards as one.
    queries = big_setup / "queries.npz"
    np.savez(queries, keypoints=np.asarray(dataset.keypoints2d[picked, 2]), profile="h36m17")
    outputs = []
    for index in ("single", "sharded"):
        capsys.readouterr()
        assert main(["query", "--index", str(big_setup / index), "--input", str(queries), "--k", "3", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    # The CLI's default two-stage search: each shard re-ranks its own 64 candidates, a superset of the single
    # index's, so every rank's distance is the same or better (smaller).
    assert len(outputs[1]["queries"]) == 5
    for single_q, sharded_q in zip(outputs[0]["queries"], outputs[1]["queries"]):
        single_d = [m["distance"] for m in single_q["matches"]]
        sharded_d = [m["distance"] for m in sharded_q["matches"]]
        assert len(sharded_d) == 3 and all(b <= a + 1e-6 for a, b in zip(single_d, sharded_d))


def test_shard_processes_run_separately_then_merge(big_setup, capsys):
    """`--shard I/N` by hand (as on two machines): each refuses a wrong --out, then `index merge` joins them."""
    data, run, out = big_setup / "data", big_setup / "run", big_setup / "by_hand"
    common = ["index", "build", "--model", str(run), "--data", str(data), "--cameras", "0", "--out", str(out)]
    assert main([*common, "--shard", "1/2"]) == 0
    assert "prpose index merge" in capsys.readouterr().out
    assert main(["query", "--index", str(out), "--model", str(run), "--input", str(big_setup / "queries.npz")]) == 2
    assert "no shards.json" in capsys.readouterr().err
    assert main([*common, "--shard", "0/3"]) == 2
    assert "holds shards of a 2-shard build" in capsys.readouterr().err
    assert main([*common, "--shard", "1/2"]) == 2  # already built: --overwrite replaces it
    assert "--overwrite" in capsys.readouterr().err
    assert main([*common, "--shard", "0/2"]) == 0
    assert main(["index", "merge", str(out)]) == 0
    assert "merged 2 shards (8400 views: 8192, 208)" in capsys.readouterr().out
    assert load_index(out).ntotal == 8400
    assert sorted(os.listdir(out)) == ["model.json", "shard-00000-of-00002", "shard-00001-of-00002", "shards.json"]
