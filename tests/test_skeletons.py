"""Skeleton presets: detection, mapping to h36m17, units/up axis, user mappings, left stays left."""

import json

import numpy as np
import pytest

from prpose.bvh import forward_kinematics, parse_bvh, parse_bvh_text
from prpose.errors import PrposeError
from prpose.keypoints import H36M17
from prpose.skeletons import (
    PRESETS, detect_preset, estimate_stature, get_preset, load_mapping, mapping_matrix, to_h36m17, y_up_to_z_up,
)

# A Bandai-style skeleton (Y-up, cm, facing +Z so the subject's left is +X), rest pose offsets.
BANDAI_JOINTS = [
    ("Hips", None, (0, 95, 0)),
    ("Spine", "Hips", (0, 15, 0)), ("Chest", "Spine", (0, 10, 0)), ("Neck", "Chest", (0, 15, 0)),
    ("Head", "Neck", (0, 6, 0)),
    ("Shoulder_L", "Chest", (5, 12, 0)), ("UpperArm_L", "Shoulder_L", (12, 0, 0)),
    ("LowerArm_L", "UpperArm_L", (25, 0, 0)), ("Hand_L", "LowerArm_L", (22, 0, 0)),
    ("Shoulder_R", "Chest", (-5, 12, 0)), ("UpperArm_R", "Shoulder_R", (-12, 0, 0)),
    ("LowerArm_R", "UpperArm_R", (-25, 0, 0)), ("Hand_R", "LowerArm_R", (-22, 0, 0)),
    ("UpperLeg_L", "Hips", (9, -5, 0)), ("LowerLeg_L", "UpperLeg_L", (0, -40, 0)),
    ("Foot_L", "LowerLeg_L", (0, -42, 0)), ("Toes_L", "Foot_L", (0, -8, 12)),
    ("UpperLeg_R", "Hips", (-9, -5, 0)), ("LowerLeg_R", "UpperLeg_R", (0, -40, 0)),
    ("Foot_R", "LowerLeg_R", (0, -42, 0)), ("Toes_R", "Foot_R", (0, -8, 12)),
]


def make_bvh(joints, frames=1, root_pos=(0, 0, 0), end_sites=None):
    """BVH text for ``joints`` [(name, parent, offset)], zero rotations; End Sites {joint: offset}."""
    end_sites = end_sites or {}
    children = {}
    for name, parent, _ in joints:
        children.setdefault(parent, []).append(name)
    offsets = {name: off for name, _, off in joints}
    lines = ["HIERARCHY"]

    def emit(name, depth, root=False):
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if root else 'JOINT'} {name}")
        lines.append(pad + "{")
        off = (0, 0, 0) if root else offsets[name]
        lines.append(f"{pad}  OFFSET {off[0]} {off[1]} {off[2]}")
        ch = "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" if root else "3 Zrotation Xrotation Yrotation"
        lines.append(f"{pad}  CHANNELS {ch}")
        for child in children.get(name, []):
            emit(child, depth + 1)
        if name in end_sites:
            e = end_sites[name]
            lines.extend([f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET {e[0]} {e[1]} {e[2]}", pad + "  }"])
        lines.append(pad + "}")

    emit(joints[0][0], 0, root=True)
    root = [offsets[joints[0][0]][i] + root_pos[i] for i in range(3)]
    n = 6 + 3 * (len(joints) - 1)
    values = " ".join(str(v) for v in root) + " 0" * (n - 3)
    lines += ["MOTION", f"Frames: {frames}", "Frame Time: 0.0333333"] + [values] * frames
    return "\n".join(lines) + "\n"


def test_bandai_style_mapping_units_and_up_axis():
    m = parse_bvh_text(make_bvh(BANDAI_JOINTS, end_sites={"Head": (0, 0, 0)}), path="bandai.bvh")
    assert detect_preset(m).name == "bandai22"
    poses, preset, scale = to_h36m17(m)
    assert poses.shape == (1, 17, 3) and scale == 0.01
    p = {n: poses[0, i] for i, n in enumerate(H36M17.joints)}
    # Y-up cm -> Z-up m: (x, y, z) -> (x, -z, y) / 100. Left hip: Hips (0,95,0) + (9,-5,0) -> (0.09, 0, 0.90).
    np.testing.assert_allclose(p["left_hip"], [0.09, 0, 0.90], atol=1e-12)
    np.testing.assert_allclose(p["right_hip"], [-0.09, 0, 0.90], atol=1e-12)
    np.testing.assert_allclose(p["pelvis"], [0, 0, 0.90], atol=1e-12)
    np.testing.assert_allclose(p["left_ankle"], [0.09, 0, 0.08], atol=1e-12)
    np.testing.assert_allclose(p["thorax"], [0, 0, 1.35], atol=1e-12)
    np.testing.assert_allclose(p["spine"], [0, 0, 1.125], atol=1e-12)
    # Zero-length head End Site -> head extrapolated 3 neck lengths above the head joint (1.41 + 0.18).
    np.testing.assert_allclose(p["head"], [0, 0, 1.59], atol=1e-12)
    np.testing.assert_allclose(p["nose"], [0, 0, 1.50], atol=1e-12)
    np.testing.assert_allclose(p["left_shoulder"], [0.17, 0, 1.32], atol=1e-12)
    np.testing.assert_allclose(p["right_wrist"], [-0.64, 0, 1.32], atol=1e-12)


def test_y_up_to_z_up_is_a_proper_rotation():
    basis = y_up_to_z_up(np.eye(3))
    assert np.linalg.det(basis) == pytest.approx(1.0)
    np.testing.assert_array_equal(y_up_to_z_up(np.array([0.0, 1.0, 0.0])), [0, 0, 1])  # up stays up


def test_end_site_used_when_it_has_length():
    m = parse_bvh_text(make_bvh(BANDAI_JOINTS, end_sites={"Head": (0, 20, 0)}))
    poses, _, _ = to_h36m17(m)
    np.testing.assert_allclose(poses[0, H36M17.index("head")], [0, 0, 1.61], atol=1e-12)


def test_weights_matrix_rows_sum_to_one():
    m = parse_bvh_text(make_bvh(BANDAI_JOINTS))
    w = mapping_matrix(m, get_preset("bandai22"))
    assert w.shape == (17, m.num_joints + 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_unknown_skeleton_names_file_and_missing_joints():
    joints = [(n.replace("UpperLeg", "Thigh"), p and p.replace("UpperLeg", "Thigh"), o) for n, p, o in BANDAI_JOINTS]
    m = parse_bvh_text(make_bvh(joints), path="odd.bvh")
    with pytest.raises(PrposeError, match=r"odd\.bvh: unknown skeleton.*'bandai22' lacks UpperLeg_L, UpperLeg_R.*--mapping"):
        detect_preset(m)


def _user_mapping():
    mapping = {j: "Hips" for j in H36M17.joints}
    mapping.update(left_hip="UpperLeg_L", right_hip="UpperLeg_R", head={"Head": 2.0, "Neck": -1.0})
    return mapping


def test_user_mapping_json(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({**_user_mapping(), "units_to_metres": 0.5, "up_axis": "y"}))
    preset = load_mapping(path)
    m = parse_bvh_text(make_bvh(BANDAI_JOINTS))
    poses, _, scale = to_h36m17(m, preset)
    assert scale == 0.5
    np.testing.assert_allclose(poses[0, H36M17.index("head")], [0, 0, 0.5 * 147], atol=1e-12)
    np.testing.assert_allclose(poses[0, H36M17.index("left_hip")], [4.5, 0, 45], atol=1e-12)


def test_user_mapping_errors(tmp_path):
    path = tmp_path / "map.json"
    partial = _user_mapping()
    del partial["nose"]
    path.write_text(json.dumps(partial))
    with pytest.raises(PrposeError, match=r"map\.json: mapping must give every h36m17 joint; missing: nose"):
        load_mapping(path)
    path.write_text(json.dumps({**_user_mapping(), "head": {"Head": 1.0, "Neck": 1.0}}))
    with pytest.raises(PrposeError, match=r"map\.json.*sum to 2"):
        load_mapping(path)
    path.write_text(json.dumps({**_user_mapping(), "pelvis": "NoSuchJoint"}))
    preset = load_mapping(path)
    m = parse_bvh_text(make_bvh(BANDAI_JOINTS), path="take.bvh")
    with pytest.raises(PrposeError, match=r"take\.bvh: .*cannot place h36m17 joint\(s\): pelvis \(needs NoSuchJoint\)"):
        to_h36m17(m, preset)
    path.write_text("{not json")
    with pytest.raises(PrposeError, match="not valid JSON"):
        load_mapping(path)


def test_scale_free_preset_scaled_to_stature(tmp_path):
    path = tmp_path / "map.json"
    mapping = {j: "Hips" for j in H36M17.joints}
    mapping.update(left_hip="UpperLeg_L", right_hip="UpperLeg_R", left_knee="LowerLeg_L",
                   right_knee="LowerLeg_R", left_ankle="Foot_L", right_ankle="Foot_R", thorax="Neck",
                   head={"Head": 4.0, "Neck": -3.0})
    path.write_text(json.dumps({**mapping, "units_to_metres": None}))
    m = parse_bvh_text(make_bvh(BANDAI_JOINTS))
    poses, _, _ = to_h36m17(m, load_mapping(path), stature=1.8)
    assert estimate_stature(poses) == pytest.approx(1.8)


def test_estimate_stature_closed_form():
    # Straight legs 0.4 + 0.4, pelvis->thorax 0.5, thorax->head 0.3: (0.8 + 0.8) * 1.05.
    pose = np.zeros((1, 17, 3))
    z = {"pelvis": 0.9, "left_hip": 0.9, "right_hip": 0.9, "left_knee": 0.5, "right_knee": 0.5,
         "left_ankle": 0.1, "right_ankle": 0.1, "spine": 1.15, "thorax": 1.4, "nose": 1.55, "head": 1.7}
    for name, value in z.items():
        pose[0, H36M17.index(name), 2] = value
    assert estimate_stature(pose) == pytest.approx(1.6 * 1.05)


def test_presets_cover_h36m17_and_known_names():
    assert set(PRESETS) == {"cmu31_motionbuilder", "cmu31_3dsmax", "cmu43_daz", "bandai22", "animated_drawings27"}
    with pytest.raises(PrposeError, match="unknown skeleton preset 'x'"):
        get_preset("x")


# Real files: one small file per flavour, with the BVH points giving the direction the feet point.
REAL = [
    ("mocap/cmu/TMoCo__InverseKinematics/bvh/02_01.bvh", "cmu31_motionbuilder",
     [("LeftFoot", "LeftToeBase"), ("RightFoot", "RightToeBase")]),
    ("mocap/cmu/facebookresearch__AnimatedDrawings/examples/bvh/cmu1/jumping_jacks.bvh", "cmu31_3dsmax",
     [("LeftAnkle", "LeftToe"), ("RightAnkle", "RightToe")]),
    ("mocap/cmu/papagina__Auto_Conditioned_RNN_motion/train_data_bvh/standard.bvh", "cmu43_daz",
     [("lFoot", "lFoot.end"), ("rFoot", "rFoot.end")]),
    ("mocap/bandai1/data/dataset-1_bow_active_001.bvh", "bandai22", [("Foot_L", "Toes_L"), ("Foot_R", "Toes_R")]),
    ("mocap/fair1/examples/bvh/fair1/dab.bvh", "animated_drawings27",
     [("LeftFoot", "LeftToeBase"), ("RightFoot", "RightToeBase")]),
]


@pytest.mark.parametrize("rel, preset_name, feet", REAL, ids=[r[1] for r in REAL])
def test_left_hip_is_on_the_subjects_left(shared_data, rel, preset_name, feet):
    m = parse_bvh(shared_data / rel)
    poses, preset, scale = to_h36m17(m)
    assert preset.name == preset_name
    points = forward_kinematics(m, end_sites=True)
    if preset.up_axis == "y":
        points = y_up_to_z_up(points)
    names = m.point_names
    # Facing direction: where the feet point (ankle -> toe, both feet, horizontal part).
    forward = sum(points[:, names.index(t)] - points[:, names.index(a)] for a, t in feet)
    forward[:, 2] = 0
    up = np.array([0.0, 0.0, 1.0])
    left_dir = np.cross(up, forward)  # with Z up and facing f, the subject's left is up x f
    hip_vec = poses[:, H36M17.index("left_hip")] - poses[:, H36M17.index("right_hip")]
    shoulder_vec = poses[:, H36M17.index("left_shoulder")] - poses[:, H36M17.index("right_shoulder")]
    # In most frames (people turn their feet out, cross legs in dance), left points to the subject's left.
    assert np.mean(np.sum(hip_vec * left_dir, axis=-1) > 0) > 0.9
    assert np.mean(np.sum(shoulder_vec * left_dir, axis=-1) > 0) > 0.8
    # People are upright-sized: pelvis above ankles, head above pelvis, stature 1.4-1.8 m.
    assert 1.4 < estimate_stature(poses) < 1.8
    assert np.median(poses[:, H36M17.index("head"), 2] - poses[:, H36M17.index("pelvis"), 2]) > 0.5
