import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from prpose.data_prep import common
from prpose import plotting, synthetic
from prpose.camera import ring_rig
from prpose.errors import PrposeError
from prpose.keypoints import H36M17, INPUT13

matplotlib.use("Agg")


def _lines_by_color(ax):
    out = {}
    for line in ax.lines:
        out.setdefault(to_rgba(line.get_color()), []).append(line)
    return out


def test_left_and_right_limbs_get_their_own_colours():
    fig = Figure()
    ax = fig.add_subplot()
    kp = np.random.default_rng(0).uniform(0, 100, (17, 2))
    plotting.draw_skeleton(ax, kp, "h36m17")
    by_color = _lines_by_color(ax)
    left, right = by_color[to_rgba(plotting.LEFT_COLOR)], by_color[to_rgba(plotting.RIGHT_COLOR)]
    assert len(left) == 6 and len(right) == 6 and len(by_color[to_rgba(plotting.CENTER_COLOR)]) == 4
    # The left shin line really joins the left knee and the left ankle.
    k, a = H36M17.index("left_knee"), H36M17.index("left_ankle")
    assert any(np.allclose(line.get_xydata(), kp[[k, a]]) for line in left)
    assert not any(np.allclose(line.get_xydata(), kp[[k, a]]) for line in right)


def test_input13_shoulder_and_hip_bars_are_centre_colour():
    fig = Figure()
    ax = fig.add_subplot()
    plotting.draw_skeleton(ax, np.zeros((13, 2)), INPUT13)
    colors = plotting.limb_colors(INPUT13)
    for (a, b), color in zip(INPUT13.edges, colors):
        if {a, b} in ({"left_shoulder", "right_shoulder"}, {"left_hip", "right_hip"}):
            assert color == plotting.CENTER_COLOR


def test_image_coords_invert_y_once_and_hidden_bones_dashed():
    fig = Figure()
    ax = fig.add_subplot()
    kp = np.random.default_rng(1).uniform(0, 100, (17, 2))
    vis = np.ones(17, bool)
    vis[H36M17.index("right_wrist")] = False
    plotting.draw_skeleton(ax, kp, "h36m17", visible=vis)
    plotting.draw_skeleton(ax, kp, "h36m17", visible=vis)  # drawing twice must not flip y back
    assert ax.yaxis_inverted()
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 2  # the right forearm, in each of the two drawings
    fig2 = Figure()
    ax2 = fig2.add_subplot()
    plotting.draw_skeleton(ax2, kp, "h36m17", visible=vis, show_hidden=False, image_coords=False)
    assert len(ax2.lines) == 15 and not ax2.yaxis_inverted()


def test_draw_skeleton_rejects_wrong_shapes():
    ax = Figure().add_subplot()
    with pytest.raises(PrposeError, match=r"keypoints have shape \(13, 2\); expected \(17, 2\) for profile 'h36m17'"):
        plotting.draw_skeleton(ax, np.zeros((13, 2)), "h36m17")
    with pytest.raises(PrposeError, match=r"visible has shape \(13,\); expected \(17,\)"):
        plotting.draw_skeleton(ax, np.zeros((17, 2)), "h36m17", visible=np.ones(13, bool))


@pytest.fixture
def tiny_dataset(tmp_path):
    poses = synthetic.generate_motions(2, 4, seed=0)
    seqs = [common.SequenceInput(f"s{i}", "synthetic", "synthetic", p) for i, p in enumerate(poses)]
    return common.write_sequences(tmp_path / "d", seqs, ring_rig(3, 5.0, 1.5), "train", progress=False)


def test_plot_dataset_frame_writes_png(tiny_dataset, tmp_path):
    out = plotting.plot_dataset_frame(tiny_dataset, 5, tmp_path / "plots" / "f.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    plotting.plot_dataset_frame(tiny_dataset, -1, tmp_path / "last.png", crop=True)
    assert (tmp_path / "last.png").stat().st_size > 10_000
    with pytest.raises(PrposeError, match=r"frame index 8 is out of range .*\(8 frames; expected 0..7\)"):
        plotting.plot_dataset_frame(tiny_dataset, 8, tmp_path / "x.png")


def test_show_main(tiny_dataset, tmp_path, capsys):
    assert plotting.show_main(tiny_dataset.path, 0, tmp_path / "s.png") == 0
    assert (tmp_path / "s.png").is_file()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["body25", "mediapipe33", "mpii16", "input14"])
def test_every_detector_profile_draws_by_name(name):
    """Edges and left/right colours come from the profile table: the left shin is drawn in the left colour."""
    from prpose.keypoints import get_profile

    profile = get_profile(name)
    fig = Figure()
    ax = fig.add_subplot()
    kp = np.random.default_rng(1).uniform(0, 100, (profile.num_joints, 2))
    plotting.draw_skeleton(ax, kp, name)
    left = _lines_by_color(ax)[to_rgba(plotting.LEFT_COLOR)]
    k, a = profile.index("left_knee"), profile.index("left_ankle")
    assert any(np.allclose(line.get_xydata(), kp[[k, a]]) or np.allclose(line.get_xydata(), kp[[a, k]])
               for line in left)
    assert len(ax.lines) == len(profile.edges)
