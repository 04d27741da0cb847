"""Config: presets, typed dotted overrides, clear errors, JSON round trip."""
import dataclasses
import json

import pytest

from prpose.config import (PRESETS, TrainConfig, from_overrides, get_preset, load_config, model_fingerprint_dict,
                           save_config)
from prpose.errors import PrposeError


def test_paper_preset_is_the_authors_schedule():
    c = get_preset("paper")
    assert (c.model.width, c.model.num_blocks, c.model.embedding_dim, c.model.num_samples) == (1024, 2, 16, 20)
    assert (c.batch_size, c.optimizer, c.learning_rate, c.steps, c.ema_decay) == (256, "adagrad", 0.02, 5_000_000, 0.9999)
    assert c.schedule == "constant"
    assert (c.loss.beta, c.loss.smoothing, c.loss.kappa, c.loss.positive_weight, c.loss.kl_weight) == (
        2.0, 0.1, 0.1, 0.005, 0.001)
    assert c.model.dropout == 0.3 and c.model.norm == "batch"
    assert c.augment.projection_probability == 0.5


def test_presets_differ_where_intended():
    cpu, tiny = get_preset("cpu"), get_preset("tiny")
    assert cpu.model.width < 1024 and cpu.steps < 5_000_000
    assert tiny.steps <= 200 and tiny.model.width <= 64
    h36m = get_preset("h36m")
    # The rig tuning and the width are its only differences.
    assert dataclasses.replace(h36m, augment=cpu.augment, model=dataclasses.replace(h36m.model, width=512)) == cpu
    assert h36m.model.width == 1024
    assert (h36m.augment.detection_probability, h36m.augment.projection_probability) == (0.7, 0.2)
    assert h36m.augment.elevation_range == (-30.0, 30.0) and h36m.augment.structured_probability == 0.0
    with pytest.raises(PrposeError, match="unknown config preset 'gpu'.*cpu.*h36m.*paper.*tiny"):
        get_preset("gpu")


def test_overrides_are_typed_by_the_field():
    c = from_overrides("cpu", ["train.batch_size=64", "model.width=256", "learning_rate=3e-4", "loss.mining=hardest",
                               "augment.elevation_range=-10,15", "augment.emit_visibility=true",
                               "augment.structured_patterns=arm,leg", "train.steps=1_000"])
    assert c.batch_size == 64 and isinstance(c.batch_size, int)
    assert c.model.width == 256
    assert c.learning_rate == 3e-4
    assert c.loss.mining == "hardest"
    assert c.augment.elevation_range == (-10.0, 15.0)
    assert c.augment.emit_visibility is True
    assert c.augment.structured_patterns == ("arm", "leg")
    assert c.steps == 1000
    # JSON list syntax works too; an int is accepted for a float field.
    c = from_overrides(c, ["augment.roll_range=[-5, 5]", "train.ema_decay=0"])
    assert c.augment.roll_range == (-5.0, 5.0) and c.ema_decay == 0.0


@pytest.mark.parametrize("override, message", [
    ("model.widht=256", "ModelConfig has no field 'widht'"),
    ("train.batchsize=3", "unknown key 'train.batchsize'"),
    ("optim.lr=3", "unknown key 'optim.lr'"),
    ("train.batch_size=big", "cannot parse 'big' as int"),
    ("train.batch_size=2.5", "cannot parse '2.5' as int"),
    ("augment.emit_visibility=maybe", "cannot parse 'maybe' as bool"),
    ("train.batch_size", "expected key=value"),
    ("train.optimizer=rmsprop", "train.optimizer='rmsprop' is invalid; expected one of"),
    ("model.norm=instance", "ModelConfig.norm"),
    ("train.batch_size=1", "train.batch_size=1 is invalid"),
    ("model", "expected key=value"),
    ("model=3", "unknown key 'model'"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(PrposeError, match=message):
        from_overrides("tiny", [override])


def test_json_round_trip_and_files(tmp_path):
    c = from_overrides("cpu", ["model.width=128", "augment.elevation_range=-5,5", "loss.kappa=0.2"])
    assert TrainConfig.from_json(c.to_json()) == c
    path = save_config(c, tmp_path)
    assert path.name == "config.json" and load_config(tmp_path) == c and load_config(path) == c
    assert not list(tmp_path.glob(".config-*"))  # the temp file was renamed
    data = json.loads(path.read_text())
    assert data["model"]["width"] == 128 and data["augment"]["elevation_range"] == [-5.0, 5.0]
    # Older files without newer fields load with defaults; unknown keys are refused with the file name.
    del data["keep_checkpoints"]
    assert TrainConfig.from_dict(data).keep_checkpoints == TrainConfig().keep_checkpoints
    data["model"]["colour"] = "red"
    path.write_text(json.dumps(data))
    with pytest.raises(PrposeError, match=r"config.json: model: unknown key 'colour'"):
        load_config(tmp_path)
    path.write_text("{not json")
    with pytest.raises(PrposeError, match="not valid JSON"):
        load_config(tmp_path)
    with pytest.raises(PrposeError, match="no such config file"):
        load_config(tmp_path / "elsewhere")
    with pytest.raises(PrposeError, match=r"train.batch_size: value '64' has the wrong type"):
        TrainConfig.from_dict({"batch_size": "64"})


def test_every_preset_round_trips():
    for name in PRESETS:
        c = get_preset(name)
        assert TrainConfig.from_json(c.to_json()) == c


def test_model_fingerprint_dict_ignores_schedule():
    a = get_preset("cpu")
    assert model_fingerprint_dict(a) == model_fingerprint_dict(from_overrides(a, ["train.steps=10", "train.seed=3"]))
    assert model_fingerprint_dict(a) != model_fingerprint_dict(from_overrides(a, ["model.mask_mode=channel"]))
    assert model_fingerprint_dict(a) != model_fingerprint_dict(from_overrides(a, ["loss.smoothing=0.2"]))


def test_input_profile_round_trips_and_is_checked(monkeypatch):
    from prpose import keypoints

    config = from_overrides("cpu", ["model.input_profile=input14", "model.mask_mode=channel"])
    assert config.model.input_profile == "input14" and config.model.input_dim == 42
    assert TrainConfig.from_json(config.to_json()) == config
    assert get_preset("cpu").model.input_profile == "input13"
    with pytest.raises(PrposeError, match="ModelConfig.input_profile: got 'coco18'"):
        from_overrides("cpu", ["model.input_profile=coco18"])
    monkeypatch.setattr(keypoints, "PROFILES", dict(keypoints.PROFILES))
    keypoints.register_profile(keypoints.KeypointProfile("upper5", ("nose", "left_shoulder", "right_shoulder",
                                                                     "left_elbow", "right_elbow")))
    with pytest.raises(PrposeError, match="'upper5' cannot be normalised: it lacks the torso joint.*left_hip"):
        from_overrides("cpu", ["model.input_profile=upper5"])
