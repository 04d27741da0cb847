"""BVH parser and forward kinematics: closed-form cases, error messages with line numbers, real files."""

import numpy as np
import pytest

from prpose.bvh import forward_kinematics, parse_bvh, parse_bvh_text, rotation_matrices
from prpose.errors import PrposeError


def chain_bvh(root_channels="Xposition Yposition Zposition Zrotation Xrotation Yrotation",
              child_channels="Zrotation Xrotation Yrotation", frames=("0 0 0 0 0 0 0 0 0",),
              end_offset="0 1 0"):
    """A 2-bone chain: root at origin, child 1 unit up (Y), End Site 1 unit further along ``end_offset``."""
    n_root = len(root_channels.split())
    n_child = len(child_channels.split())
    return (
        "HIERARCHY\n"
        "ROOT root\n{\n"
        "  OFFSET 0 0 0\n"
        f"  CHANNELS {n_root} {root_channels}\n"
        "  JOINT child\n  {\n"
        "    OFFSET 0 1 0\n"
        f"    CHANNELS {n_child} {child_channels}\n"
        "    End Site\n    {\n"
        f"      OFFSET {end_offset}\n"
        "    }\n  }\n}\n"
        "MOTION\n"
        f"Frames: {len(frames)}\n"
        "Frame Time: 0.0333333\n" + "".join(f + "\n" for f in frames)
    )


def test_parse_layout_of_two_bone_chain():
    m = parse_bvh_text(chain_bvh(frames=("1 2 3 0 0 0 0 0 0", "4 5 6 0 0 0 0 0 0")), path="chain.bvh")
    assert m.joint_names == ("root", "child")
    assert m.parents.tolist() == [-1, 0]
    np.testing.assert_array_equal(m.offsets, [[0, 0, 0], [0, 1, 0]])
    assert m.channels[0][:3] == ("Xposition", "Yposition", "Zposition")
    assert m.channel_start.tolist() == [0, 6]
    assert m.end_site_parents.tolist() == [1]
    assert m.end_site_names == ("child.end",)
    assert m.point_names == ("root", "child", "child.end")
    assert m.motion.shape == (2, 9) and m.motion.dtype == np.float64
    assert m.num_frames == 2 and m.fps == pytest.approx(30.0, rel=1e-5)


def test_fk_90_degree_z_rotation_on_two_bone_chain():
    # Root rotated +90 deg about Z: the child's +Y offset goes to -X (Rz(90) @ (0,1,0) = (-1,0,0)).
    # The child also rotates +90 deg about Z, so the End Site's +Y offset is rotated by 180 deg: (0,-1,0)... in
    # world: Rz(90) @ Rz(90) @ (0,1,0) = (0,-1,0).
    m = parse_bvh_text(chain_bvh(frames=("0 0 0 90 0 0 90 0 0",)))
    p = forward_kinematics(m, end_sites=True)[0]
    np.testing.assert_allclose(p[0], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(p[1], [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(p[2], [-1, -1, 0], atol=1e-12)
    assert forward_kinematics(m).shape == (1, 2, 3)


def test_rotation_matrices_follow_right_hand_rule():
    np.testing.assert_allclose(rotation_matrices("Z", 90.0) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rotation_matrices("X", 90.0) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rotation_matrices("Y", 90.0) @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    assert rotation_matrices("X", np.zeros((4, 2))).shape == (4, 2, 3, 3)


def _rz(d):
    a = np.deg2rad(d)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _rx(d):
    a = np.deg2rad(d)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _ry(d):
    a = np.deg2rad(d)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@pytest.mark.parametrize("order", ["ZXY", "XYZ", "YZX"])
def test_rotation_order_follows_channels_line(order):
    # Non-commuting angles: the listed order must give R = R_first @ R_second @ R_third (intrinsic).
    angles = {"X": 30.0, "Y": -50.0, "Z": 70.0}
    channels = " ".join(f"{a}rotation" for a in order)
    values = " ".join(str(angles[a]) for a in order)
    m = parse_bvh_text(chain_bvh(root_channels="Xposition Yposition Zposition " + channels,
                                 frames=(f"0 0 0 {values} 0 0 0",), end_offset="0 0 1"))
    mats = {"X": _rx(angles["X"]), "Y": _ry(angles["Y"]), "Z": _rz(angles["Z"])}
    r = mats[order[0]] @ mats[order[1]] @ mats[order[2]]
    p = forward_kinematics(m, end_sites=True)[0]
    np.testing.assert_allclose(p[1], r @ [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(p[2], r @ [0, 1, 0] + r @ [0, 0, 1], atol=1e-12)


def test_zxy_and_xyz_orders_differ():
    frames = ("0 0 0 40 60 0 0 0 0",)
    zxy = parse_bvh_text(chain_bvh(root_channels="Xposition Yposition Zposition Zrotation Xrotation Yrotation",
                                   frames=frames, end_offset="0 0 1"))
    zyx = parse_bvh_text(chain_bvh(root_channels="Xposition Yposition Zposition Zrotation Yrotation Xrotation",
                                   frames=frames, end_offset="0 0 1"))
    a = forward_kinematics(zxy, end_sites=True)[0, 2]
    b = forward_kinematics(zyx, end_sites=True)[0, 2]
    assert np.linalg.norm(a - b) > 0.1


def test_position_channels_replace_offset():
    # Child with position channels (as in the Bandai files): its translation is the channels, not OFFSET.
    m = parse_bvh_text(chain_bvh(child_channels="Xposition Yposition Zposition Zrotation Xrotation Yrotation",
                                 frames=("10 0 0 0 0 0 2 3 4 0 0 0",)))
    p = forward_kinematics(m)[0]
    np.testing.assert_allclose(p[0], [10, 0, 0])
    np.testing.assert_allclose(p[1], [12, 3, 4])
    # Root rotation applies to the child's channel translation too.
    m = parse_bvh_text(chain_bvh(child_channels="Xposition Yposition Zposition Zrotation Xrotation Yrotation",
                                 frames=("0 0 0 90 0 0 2 0 0 0 0 0",)))
    np.testing.assert_allclose(forward_kinematics(m)[0, 1], [0, 2, 0], atol=1e-12)


def test_fk_matches_independent_per_frame_reference():
    rng = np.random.default_rng(0)
    frames = [" ".join(f"{v:.6f}" for v in np.r_[rng.normal(size=3), rng.uniform(-180, 180, size=6)])
              for _ in range(5)]
    m = parse_bvh_text(chain_bvh(frames=tuple(frames), end_offset="0.3 0.5 -0.2"))
    p = forward_kinematics(m, end_sites=True)
    for t in range(5):
        v = m.motion[t]
        r0 = _rz(v[3]) @ _rx(v[4]) @ _ry(v[5])
        r1 = r0 @ _rz(v[6]) @ _rx(v[7]) @ _ry(v[8])
        child = v[:3] + r0 @ [0, 1, 0]
        np.testing.assert_allclose(p[t, 0], v[:3], atol=1e-12)
        np.testing.assert_allclose(p[t, 1], child, atol=1e-12)
        np.testing.assert_allclose(p[t, 2], child + r1 @ [0.3, 0.5, -0.2], atol=1e-12)


def test_whitespace_crlf_tabs_and_braces_on_name_lines(tmp_path):
    text = chain_bvh(frames=("1 2 3 0 0 0 0 0 0",))
    text = text.replace("ROOT root\n{", "ROOT root {").replace("  ", "\t").replace("Frames: ", "Frames:\t")
    text = text.replace("\n", "\r\n") + "\r\n\r\n"
    path = tmp_path / "crlf.bvh"
    path.write_bytes(text.encode())
    m = parse_bvh(path)
    np.testing.assert_allclose(forward_kinematics(m)[0, 1], [1, 3, 3])


def _error(text, match):
    with pytest.raises(PrposeError, match=match) as info:
        parse_bvh_text(text, path="bad.bvh")
    assert "bad.bvh" in str(info.value)
    return str(info.value)


def test_missing_motion_section_names_file():
    text = chain_bvh().split("MOTION")[0]
    _error(text, "no MOTION section")


def test_wrong_value_count_names_line():
    text = chain_bvh(frames=("0 0 0 0 0 0 0 0 0", "0 0 0 0 0 0 0 0"))
    line = text.splitlines().index("0 0 0 0 0 0 0 0") + 1
    _error(text, rf"line {line}: frame 1 has 8 values, expected 9")


def test_non_numeric_value_names_line_and_column():
    text = chain_bvh(frames=("0 0 0 0 0 0 0 0 0", "0 0 0 0 abc 0 0 0 0"))
    line = len(text.splitlines())
    _error(text, rf"line {line}: frame 1, column 5: 'abc' is not a number")


def test_truncated_file_reports_frame_count_mismatch():
    text = chain_bvh(frames=("0 0 0 0 0 0 0 0 0",) * 3)
    truncated = "\n".join(text.splitlines()[:-1])
    _error(truncated, r"line \d+: file ends after 2 frame line\(s\) but the header says Frames: 3")
    extra = text + "0 0 0 0 0 0 0 0 0\n"
    _error(extra, rf"line {len(extra.splitlines())}: more frame lines")


def test_unbalanced_braces_name_line():
    text = chain_bvh()
    # Drop the brace closing the child joint: the root's '}' then closes the child, and the root never closes.
    lines = text.splitlines()
    del lines[lines.index("  }")]
    _error("\n".join(lines), r"line \d+: file ends early: expected '\}' closing joint 'root' opened on line 2")
    extra = text.replace("}\nMOTION", "}\n}\nMOTION")
    _error(extra, r"line 16: expected ROOT, found '\}'")


def test_bad_channels_and_header():
    _error(chain_bvh().replace("CHANNELS 3 Zrotation", "CHANNELS 3 Wrotation"), r"line 9: unknown channel 'Wrotation'")
    _error(chain_bvh().replace("Frame Time: 0.0333333", "Frame Time: fast"), r"line \d+: expected a number")
    _error(chain_bvh().replace("Frame Time: 0.0333333", "Frame Time: 0"), "Frame Time must be a positive")
    _error(chain_bvh().replace("HIERARCHY", "HIERARCHX"), "line 1: expected 'HIERARCHY'")


def test_with_frames_drops_frames():
    m = parse_bvh_text(chain_bvh(frames=("1 0 0 0 0 0 0 0 0", "2 0 0 0 0 0 0 0 0")))
    assert m.with_frames(slice(1, None)).motion[:, 0].tolist() == [2.0]


def test_real_files_parse_and_bones_stay_rigid(shared_data):
    # Two small shared files of different flavours (3dsMax CMU: 3 channels per joint; Bandai: 6 per joint).
    for rel in ("mocap/cmu/facebookresearch__AnimatedDrawings/examples/bvh/cmu1/jumping_jacks.bvh",
                "mocap/bandai1/data/dataset-1_bow_active_001.bvh"):
        m = parse_bvh(shared_data / rel)
        p = forward_kinematics(m, end_sites=True)
        assert np.isfinite(p).all() and p.shape[0] == m.num_frames > 100
        parents = np.r_[m.parents, m.end_site_parents]
        lengths = np.linalg.norm(p[:, 1:] - p[:, parents[1:]], axis=-1)
        # Bones of rotation-only joints keep their length in every frame (FK is rigid).
        rigid = [i - 1 for i in range(1, len(parents)) if i >= m.num_joints or "Xposition" not in m.channels[i]]
        assert np.ptp(lengths[:, rigid], axis=0).max() < 1e-9
