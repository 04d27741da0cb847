"""Input profiles as data: a model's input joints come from its config; any detector profile feeds it by name."""

import argparse
import json

import numpy as np
import pytest

from prpose import keypoints as kp
from prpose.config import from_overrides, load_config, model_fingerprint_dict
from prpose.errors import PrposeError
from prpose.inference import load_model
from prpose.training import train_and_evaluate

FAST = {"xla_backend_optimization_level": 0}

# A detector with a head top and no nose, in its own joint order (as the Stacked Hourglass / MPII models).
HEADTOP = kp.KeypointProfile("toy_headtop", (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "head",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from prpose.data_prep import synthetic

    from prpose.dataset import load_dataset

    root = tmp_path_factory.mktemp("profiles")
    assert synthetic.main(argparse.Namespace(out=str(root / "data"), sequences=8, frames=20, seed=2, rig="h36m",
                                             cameras=4, overwrite=False)) == 0
    return root, load_dataset(root / "data")


def _train(root, name, overrides):
    config = from_overrides("tiny", ["train.eval_every=0", "train.log_every=5", "train.checkpoint_every=4",
                                     "train.steps=4", *overrides])
    train_and_evaluate(config, root / "data", root / name, progress=False, log=lambda *_: None,
                       compiler_options=FAST)
    return root / name


@pytest.fixture(scope="module")
def run14(data):
    root, _ = data
    return _train(root, "run14", ["model.input_profile=input14", "model.mask_mode=channel",
                                  "augment.dropout_p_apply=0.5", "augment.emit_visibility=true"])


@pytest.fixture(scope="module")
def run13(data):
    root, _ = data
    return _train(root, "run13", [])


def _h36m_views(dataset, n=24):
    return np.array(dataset.keypoints2d[:n, 0], np.float32)  # (n, 17, 2) pixels, all joints visible


def test_input14_model_serves_detectors_with_a_nose_and_with_a_head_top(run14, data):
    _, dataset = data
    model = load_model(run14)
    assert model.input_profile == "input14" and model.config.model.input_dim == 42
    k17 = _h36m_views(dataset)
    k14 = kp.convert(k17, "h36m17", "input14")
    full = model.embed(k14)  # default profile: the model's own
    np.testing.assert_allclose(model.embed(k17, profile="h36m17").mean, full.mean, rtol=1e-5, atol=1e-6)

    # COCO-17: no head top. Eyes and ears do not exist in h36m17: reported missing (score 0).
    coco, available = kp.convert_partial(k17, "h36m17", "coco17")
    coco_scores = np.broadcast_to(available.astype(np.float32), coco.shape[:2])
    from_coco = model.embed(coco, profile="coco17", scores=coco_scores)
    no_head = np.ones((len(k14), 14), np.float32)
    no_head[:, kp.INPUT14.index("head")] = 0
    np.testing.assert_allclose(from_coco.mean, model.embed(k14, scores=no_head).mean, rtol=1e-5, atol=1e-6)

    # A head-top detector in its own (shuffled) order: no nose. Registered as one table entry, nothing else.
    kp.register_profile(HEADTOP)
    try:
        headtop = kp.convert(k17, "h36m17", HEADTOP.name)
        from_headtop = model.embed(headtop, profile=HEADTOP.name)
    finally:
        del kp.PROFILES[HEADTOP.name]
    no_nose = np.ones((len(k14), 14), np.float32)
    no_nose[:, kp.INPUT14.index("nose")] = 0
    np.testing.assert_allclose(from_headtop.mean, model.embed(k14, scores=no_nose).mean, rtol=1e-5, atol=1e-6)
    # Stacked Hourglass / MPII-16 (the table's own entry): no nose either (its upper neck, which h36m17 lacks and
    # input14 does not read, stays zero).
    from_mpii = model.embed(kp.convert_partial(k17, "h36m17", "mpii16")[0], profile="mpii16")
    np.testing.assert_allclose(from_mpii.mean, from_headtop.mean, rtol=1e-5, atol=1e-6)
    # The masked joints matter: each masked input differs from the full one.
    assert not np.allclose(from_coco.mean, full.mean, atol=1e-4)
    assert not np.allclose(from_headtop.mean, full.mean, atol=1e-4)


def test_a_model_without_mask_input_refuses_a_detector_lacking_its_joints(run13, data):
    _, dataset = data
    model = load_model(run13)
    kp.register_profile(HEADTOP)
    try:
        with pytest.raises(PrposeError, match=r"reads 'input13', whose joint\(s\) nose profile 'toy_headtop' "
                                              r"lacks.*model.mask_mode"):
            model.embed(kp.convert(_h36m_views(dataset), "h36m17", HEADTOP.name), profile=HEADTOP.name)
    finally:
        del kp.PROFILES[HEADTOP.name]


def test_input13_runs_keep_their_config_and_fingerprint(run13, run14, tmp_path):
    config = load_config(run13)
    assert config.model.input_profile == "input13"
    assert "input_profile" not in model_fingerprint_dict(config)["model"]  # fingerprints from before still hold
    assert model_fingerprint_dict(load_config(run14))["model"]["input_profile"] == "input14"
    fingerprint = load_model(run13).fingerprint
    # A run saved before input_profile existed: its config.json lacks the key. It loads, same fingerprint.
    saved = json.loads((run13 / "config.json").read_text())
    del saved["model"]["input_profile"]
    (run13 / "config.json").write_text(json.dumps(saved))
    old = load_model(run13)
    assert old.config.model.input_profile == "input13" and old.fingerprint == fingerprint


def test_embed_usable_skips_unusable_rows_and_says_why(run14, data):
    _, dataset = data
    model = load_model(run14)
    k17 = _h36m_views(dataset, 6)
    scores = np.ones((6, 17), np.float32)
    k17[1, kp.H36M17.index("left_wrist")] = np.nan  # used (score 1) but NaN
    for joint in ("left_shoulder", "right_shoulder", "left_hip"):
        scores[2, kp.H36M17.index(joint)] = 0.05  # one torso joint left
    k17[3] = 100.0  # collapsed: every joint at one point
    out = model.embed_usable(k17, profile="h36m17", scores=scores)
    assert out.rows.tolist() == [0, 4, 5]
    assert [row for row, _ in out.skipped] == [1, 2, 3]
    reasons = dict(out.skipped)
    assert "non-finite" in reasons[1] and "left_wrist" in reasons[1]
    assert reasons[2].startswith("1 visible torso joint")
    assert "degenerate torso" in reasons[3]
    whole = model.embed(k17[[0, 4, 5]], profile="h36m17")
    np.testing.assert_allclose(out.embeddings.mean, whole.mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(PrposeError, match=r"3 pose\(s\) cannot be embedded: rows \[1, 2, 3\]"):
        model.embed(k17, profile="h36m17", scores=scores)


def test_embed_rejects_non_numeric_keypoints(run13):
    with pytest.raises(PrposeError, match="keypoints have dtype <U1; expected numbers"):
        load_model(run13).embed(np.full((1, 13, 2), "a"))


def test_embed_command_reads_openpose_and_mediapipe_files_by_name(run13, data, tmp_path):
    """The same poses written as an OpenPose folder and as MediaPipe landmarks embed like the h36m17 originals."""
    from prpose.cli import main

    _, dataset = data
    k17 = _h36m_views(dataset, 5)
    reference = load_model(run13).embed(k17, profile="h36m17")

    body25, present = kp.convert_partial(k17, "h36m17", "body25")  # eyes, ears, toes, heels, neck: absent
    folder = tmp_path / "openpose"
    folder.mkdir()
    for i in range(5):
        triples = np.concatenate([body25[i], np.where(present, 0.9, 0.0)[:, None]], 1)
        (folder / f"clip_{i:012d}_keypoints.json").write_text(json.dumps(
            {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": triples.ravel().tolist()}]}))

    width, height = 1000.0, 1002.0
    mp, present = kp.convert_partial(k17, "h36m17", "mediapipe33")
    landmarks = [[{"x": float(x / width), "y": float(y / height), "z": 0.0, "visibility": 0.95 if ok else 0.01}
                  for (x, y), ok in zip(pose, present)] for pose in mp]
    mediapipe = tmp_path / "landmarks.json"
    mediapipe.write_text(json.dumps({"format": "mediapipe33", "image_width": width, "image_height": height,
                                     "poses": [{"id": f"f{i}", "landmarks": m} for i, m in enumerate(landmarks)]}))

    for source in (folder, mediapipe):
        out = tmp_path / f"{source.stem}.npz"
        assert main(["embed", "--model", str(run13), "--input", str(source), "--output", str(out)]) == 0
        with np.load(out) as emb:
            np.testing.assert_allclose(emb["mean"], reference.mean, rtol=1e-4, atol=1e-4)
            assert emb["skipped"].size == 0
