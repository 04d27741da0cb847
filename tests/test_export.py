"""Weights-only export and the pose library: same fingerprint and embeddings as the run, checked files,
NumPy and JAX paths equal, a library that finds the poses it holds and lists each pose once."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from prpose import keypoints as kp
from prpose.cli import main as cli_main
from prpose.errors import PrposeError
from prpose.export import ExportedModel, export_model, flatten_tree, resolve
from prpose.inference import load_model
from prpose.library import PoseLibrary, build_library, distinct_frames, save_library
from prpose.procrustes import np_mpjpe
from prpose.normalize import normalize_3d

FAST = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from prpose.data_prep import synthetic
    from prpose.config import from_overrides
    from prpose.dataset import load_dataset
    from prpose.training import train_and_evaluate

    root = tmp_path_factory.mktemp("export")
    data = root / "synthetic"
    assert synthetic.main(argparse.Namespace(out=str(data), sequences=8, frames=30, seed=2, rig="h36m", cameras=4,
                                             overwrite=False)) == 0
    config = from_overrides("tiny", ["train.eval_every=0", "train.log_every=5", "train.checkpoint_every=10",
                                     "train.steps=20", "model.mask_mode=both"])
    train_and_evaluate(config, data, root / "run", progress=False, log=lambda *_: None, compiler_options=FAST)
    return root, load_dataset(data)


def test_export_keeps_fingerprint_and_embeddings(run, monkeypatch):
    root, dataset = run
    out = export_model(root / "run", root / "exported", info={"note": "test"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.json", "weights.npz"]
    source = load_model(root / "run")
    exported = load_model(out)
    assert exported.fingerprint == source.fingerprint and exported.step == source.step == 20
    assert exported.match_params == pytest.approx(source.match_params, rel=1e-7)
    assert exported.config == source.config  # parsed on demand
    k17 = np.asarray(dataset.keypoints2d[:50, 1], np.float32)
    scores = np.ones((50, 17), np.float32)
    scores[::3, 13] = 0.0  # a missing wrist in every third pose
    ref = source.embed(k17, profile="h36m17", scores=scores)
    fast = exported.embed(k17, profile="h36m17", scores=scores)  # NumPy path
    for got, want in zip(fast, ref):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr("prpose.inference.NUMPY_MAX_ROWS", 0)  # force the JAX path of the exported model
    slow = exported.embed(k17, profile="h36m17", scores=scores)
    for got, want in zip(slow, ref):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(PrposeError, match="exported model"):
        load_model(out, step=10)
    with pytest.raises(PrposeError, match="already holds a prpose model; pass overwrite"):
        export_model(root / "run", out)


def test_stored_pairs_give_the_run_fingerprint(run):
    from prpose.config import model_fingerprint_dict
    from prpose.fingerprint import fingerprint, named_leaves

    root, _ = run
    model = load_model(root / "run")
    params, _ = model.weights()
    flat = [(k, a) for _, k, a in flatten_tree("params", params)]
    assert fingerprint(model_fingerprint_dict(model.config), flat) == \
        fingerprint(model_fingerprint_dict(model.config), named_leaves(params)) == model.fingerprint


def test_exported_files_are_checked(run, tmp_path):
    root, _ = run
    out = export_model(root / "run", tmp_path / "m")
    weights = out / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PrposeError, match="SHA-256 differs"):
        ExportedModel(out)
    out = export_model(root / "run", tmp_path / "m", overwrite=True)
    manifest = json.loads((out / "model.json").read_text())
    manifest["fingerprint"] = "000000000000-000000000000"
    (out / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(PrposeError, match="do not match their fingerprint"):
        load_model(out)
    with pytest.raises(PrposeError, match="is not a directory"):
        load_model(tmp_path / "nothing-here")
    with pytest.raises(PrposeError, match="is not a directory"):
        resolve("no-such-packaged-model")


def test_export_command(run, capsys):
    root, _ = run
    out = root / "cli-export"
    assert cli_main(["export", "--model", str(root / "run"), "--out", str(out), "--info", '{"data": "synthetic"}']) == 0
    assert "fingerprint" in capsys.readouterr().out
    assert ExportedModel(out).manifest["info"] == {"data": "synthetic"}
    assert cli_main(["export", "--model", str(root / "run"), "--out", str(out), "--info", "[1]"]) == 2
    assert "expected an object" in capsys.readouterr().err


def _brute_cover_check(poses, kept, threshold):
    """Every frame has a kept frame at or before it within the threshold; kept frames are not covered earlier."""
    norm = np.asarray(normalize_3d(poses)[0], np.float64)
    kept_set = set(kept.tolist())
    for t in range(len(poses)):
        earlier = [k for k in kept if k < t]
        d = np.asarray(np_mpjpe(norm[earlier], np.broadcast_to(norm[t], norm[earlier].shape))) if earlier else []
        if t in kept_set:
            assert all(x >= threshold for x in d), t
        else:
            assert any(x < threshold for x in d), t


def test_distinct_frames_is_a_greedy_cover(run):
    _, dataset = run
    rows = dataset.indices(sequence=dataset.table("sequence")[0])
    poses = np.asarray(dataset.poses3d[rows])
    poses = np.concatenate([poses, poses[::-1]])  # the take played back: the second half is all duplicates
    kept = distinct_frames(poses, 0.05)
    assert kept[0] == 0 and kept.max() < len(rows) + 2 and 1 < len(kept) < len(rows)
    _brute_cover_check(poses, kept, 0.05)
    assert distinct_frames(poses[:1], 0.05).tolist() == [0] and distinct_frames(poses[:0], 0.05).size == 0


def test_library_round_trip_and_search(run, tmp_path):
    root, dataset = run
    model = load_model(export_model(root / "run", tmp_path / "model"))
    library = build_library(model, dataset, splits=("train", "val", "test"), min_distance=0.05, progress=False)
    path = save_library(library, tmp_path / "model" / "library")
    lib = PoseLibrary(path, expected_fingerprint=model.fingerprint)
    m = lib.manifest
    assert m["num_poses"] < m["num_frames"] and m["num_entries"] + m["skipped_views"] == 4 * m["num_poses"]
    # The regenerated samples are deterministic and follow mean + stddev * N(0, 1).
    np.testing.assert_array_equal(lib.index.samples(), PoseLibrary(path).index.samples())
    z = (lib.index.samples() - lib.arrays["mean"][:, None]) / lib.arrays["stddev"].astype(np.float32)[:, None]
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    # Projecting the stored (float16) 3D pose by the entry's camera gives the dataset's 2D keypoints.
    entries = np.arange(0, m["num_entries"], 7)
    points, visible, centers = lib.views(entries)
    rows = dataset.indices(split=("train", "val", "test"))
    pose_rows = np.sort(np.concatenate([rows]))  # library poses are a subset of these rows, in row order
    cams = lib.arrays["entry_camera"][entries]
    frames = lib.arrays["frame"][lib.arrays["entry_pose"][entries]]
    seqs = np.asarray(m["tables"]["sequence"])[lib.arrays["sequence"][lib.arrays["entry_pose"][entries]]]
    for i, (seq, frame, cam) in enumerate(zip(seqs, frames, cams)):
        row = pose_rows[(dataset.labels("sequence", pose_rows) == seq) & (np.asarray(dataset.frame[pose_rows]) == frame)]
        assert row.size == 1
        np.testing.assert_allclose(points[i], dataset.keypoints2d[row[0], cam], atol=2.0)
        np.testing.assert_array_equal(visible[i], dataset.visibility[row[0], cam])
    assert np.isfinite(centers).all() and (np.linalg.norm(centers, axis=-1) > 1.0).all()
    # Search = the exact match-distance ranking of all entries, keeping each pose's best view.
    queries = np.arange(0, m["num_entries"], max(1, m["num_entries"] // 12))
    points, visible, _ = lib.views(queries)
    emb = model.embed(points, profile="h36m17", scores=visible.astype(np.float32), score_threshold=0.5)
    hits = lib.search(emb.mean, emb.samples, k=5, fingerprint=model.fingerprint)
    exact = lib.index.search_exact(emb.mean, emb.samples, k=m["num_entries"], fingerprint=model.fingerprint)
    for q in range(len(queries)):
        poses = hits.metadata["pose"][q][hits.ids[q] >= 0]
        assert len(set(poses.tolist())) == len(poses) == 5
        best, seen = [], set()
        for entry, pose in zip(exact.ids[q], exact.metadata["pose"][q]):
            if pose not in seen:
                seen.add(pose)
                best.append(entry)
        np.testing.assert_array_equal(hits.ids[q], best[:5])
        np.testing.assert_allclose(hits.distances[q], exact.distances[q][np.isin(exact.ids[q], best[:5])], rtol=1e-5)
    with pytest.raises(PrposeError, match="built by model"):
        PoseLibrary(path, expected_fingerprint="x-y")


def test_query_and_embed_commands_use_the_model_library(run, tmp_path, capsys):
    root, dataset = run
    model_dir = export_model(root / "run", tmp_path / "model")
    model = load_model(model_dir)
    save_library(build_library(model, dataset, progress=False), model_dir / "library")
    rows = dataset.indices(split="test")[:3]
    coco = np.zeros((3, 17, 3), np.float32)  # eyes and ears missing (v = 0)
    for i, name in enumerate(kp.get_profile("coco17").joints):
        if name in kp.H36M17.joints:
            coco[:, i, :2] = dataset.keypoints2d[rows, 0, kp.H36M17.index(name)]
            coco[:, i, 2] = 0.9
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps([{"image_id": i, "category_id": 1, "score": 1.0, "keypoints": c.ravel().tolist()}
                                   for i, c in enumerate(coco)]))
    png = tmp_path / "q.png"
    assert cli_main(["query", "--model", str(model_dir), "--input", str(queries), "--k", "3", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.count("query ") == 3 and png.stat().st_size > 10_000
    assert cli_main(["embed", "--model", str(model_dir), "--input", str(queries), "--output", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz") as e:
        assert str(e["fingerprint"]) == model.fingerprint and e["samples"].shape == (3, 8, 8)
    assert cli_main(["query", "--model", str(root / "run"), "--input", str(queries)]) == 2
    assert "carries no pose library" in capsys.readouterr().err
