"""Skeleton drawings: 2D keypoints on matplotlib axes, and one prepared frame in every camera plus 3D.

Left limbs are drawn in one colour and right limbs in another (centre-line bones in a third), so a
mirrored pose is visible at a glance. Figures are built with ``matplotlib.figure.Figure`` and the Agg
canvas directly (no pyplot, no global backend state), so plotting works headless and in threads.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from prpose.errors import PrposeError
from prpose.keypoints import KeypointProfile, get_profile

LEFT_COLOR = "tab:blue"
RIGHT_COLOR = "tab:red"
CENTER_COLOR = "0.35"


def _side(profile: KeypointProfile, a: int, b: int) -> str:
    names = (profile.joints[a], profile.joints[b])
    left = any(n.startswith("left_") for n in names)
    right = any(n.startswith("right_") for n in names)
    return "center" if left == right else ("left" if left else "right")


def limb_colors(profile, left_color=LEFT_COLOR, right_color=RIGHT_COLOR, center_color=CENTER_COLOR):
    """One colour per edge of ``profile``: left limbs, right limbs, and centre/crossing bones."""
    profile = get_profile(profile)
    table = {"left": left_color, "right": right_color, "center": center_color}
    return [table[_side(profile, a, b)] for a, b in profile.edge_indices]


def draw_skeleton(ax, keypoints, profile, *, visible=None, image_coords: bool = True,
                  left_color=LEFT_COLOR, right_color=RIGHT_COLOR, center_color=CENTER_COLOR,
                  linewidth: float = 2.0, marker_size: float = 12.0, show_hidden: bool = True,
                  label: str | None = None):
    """Draw a 2D skeleton on matplotlib axes.

    Args:
      ax: matplotlib Axes.
      keypoints: (J, 2) pixel (or normalised) coordinates in ``profile`` order.
      profile: keypoint profile name or object (edges and left/right names come from it).
      visible: (J,) bool or None (all visible). Bones with a hidden end are drawn dashed and faint when
        ``show_hidden`` (the position is still known), otherwise omitted; hidden joints are drawn hollow.
      image_coords: y grows downward (pixels): invert the y axis (once) and use equal aspect.
      left_color, right_color, center_color: colours of left limbs, right limbs and centre bones.
      linewidth, marker_size: line width and joint marker area.
      label: optional legend label attached to the first centre bone.
    Returns:
      the list of artists drawn.
    """
    profile = get_profile(profile)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (profile.num_joints, 2):
        raise PrposeError(
            f"draw_skeleton: keypoints have shape {kp.shape}; expected ({profile.num_joints}, 2) for profile {profile.name!r}"
        )
    vis = np.ones(profile.num_joints, bool) if visible is None else np.asarray(visible, dtype=bool)
    if vis.shape != (profile.num_joints,):
        raise PrposeError(f"draw_skeleton: visible has shape {vis.shape}; expected ({profile.num_joints},)")
    colors = limb_colors(profile, left_color, right_color, center_color)
    artists = []
    for (a, b), color in zip(profile.edge_indices, colors):
        both = vis[a] and vis[b]
        if not both and not show_hidden:
            continue
        (line,) = ax.plot(kp[[a, b], 0], kp[[a, b], 1], color=color, linewidth=linewidth,
                          linestyle="-" if both else "--", alpha=1.0 if both else 0.35,
                          label=label if (label and color == center_color) else None)
        label = None if line.get_label() == label else label
        artists.append(line)
    joint_colors = [left_color if n.startswith("left_") else right_color if n.startswith("right_") else center_color
                    for n in profile.joints]
    shown = vis if not show_hidden else np.ones_like(vis)
    idx = np.flatnonzero(shown)
    if idx.size:
        face = [joint_colors[i] if vis[i] else "none" for i in idx]
        artists.append(ax.scatter(kp[idx, 0], kp[idx, 1], s=marker_size, c=face,
                                  edgecolors=[joint_colors[i] for i in idx], linewidths=1.0, zorder=3))
    if image_coords:
        if not ax.yaxis_inverted():
            ax.invert_yaxis()
        ax.set_aspect("equal", adjustable="datalim")
    return artists


def draw_skeleton_3d(ax, pose, profile, *, camera_center=None, labels: bool = True, floor: bool = True,
                     bare: bool = False):
    """Draw a 3D skeleton (world metres, Z up) on matplotlib 3D axes, left limbs blue and right limbs red.

    Args:
      ax: Axes3D (``fig.add_subplot(..., projection="3d")``).
      pose: (J, 3) joints in ``profile`` order.
      profile: keypoint profile name or object.
      camera_center: optional (3,) world position to look from (e.g. the camera that saw the pose), so the 3D
        view faces the pose as that camera did; matplotlib's default view otherwise.
      labels: axis labels in metres (off for small panels).
      floor: start the z axis at the floor (z = 0) when the pose stands near it, so heights read correctly.
      bare: no axes, panes or ticks (several times faster to draw); the pose's shadow on the floor plane
        (z = its lowest joint) gives the depth cue instead.
    """
    profile = get_profile(profile)
    pose = np.asarray(pose, np.float64)
    for (a, b), color in zip(profile.edge_indices, limb_colors(profile)):
        ax.plot(pose[[a, b], 0], pose[[a, b], 1], pose[[a, b], 2], color=color, linewidth=2.0)
    ax.scatter(pose[:, 0], pose[:, 1], pose[:, 2], s=6, c="k", depthshade=False)
    center = 0.5 * (pose.min(0) + pose.max(0))
    half = 0.55 * max(float(np.ptp(pose, axis=0).max()), 0.5)
    ax.set_xlim(center[0] - half, center[0] + half)
    ax.set_ylim(center[1] - half, center[1] + half)
    low = center[2] - half
    ax.set_zlim(max(low, min(0.0, pose[:, 2].min())) if floor else low, center[2] + half)
    ax.set_box_aspect((1, 1, 1), zoom=1.4 if bare else 1.0)
    if bare:
        ax.set_axis_off()
        ground = np.full(len(pose), pose[:, 2].min())
        for a, b in profile.edge_indices:
            ax.plot(pose[[a, b], 0], pose[[a, b], 1], ground[[a, b]], color="0.8", linewidth=1.5, zorder=0)
    if camera_center is not None:
        d = np.asarray(camera_center, np.float64) - center
        ax.view_init(elev=float(np.degrees(np.arctan2(d[2], np.hypot(d[0], d[1])))),
                     azim=float(np.degrees(np.arctan2(d[1], d[0]))))
    if labels and not bare:
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.set_zlabel("z (m)")


def plot_dataset_frame(dataset, index: int, path: str | os.PathLike, *, crop: bool = False, dpi: int = 80) -> pathlib.Path:
    """Draw frame ``index`` of a prepared dataset in every camera side by side, plus a 3D view, into a PNG.

    Each camera panel shows the full image area (0..width, 0..height pixels, y down) so that framing and
    out-of-image joints are visible; hidden keypoints are hollow, bones touching them dashed. Left limbs
    blue, right limbs red. Returns the written path.

    Args:
      dataset: a ``prpose.dataset.PreparedDataset``.
      index: frame row, 0 <= index < len(dataset) (negative counts from the end).
      path: output PNG path (parent directories are created).
      crop: zoom each camera panel onto the person instead of the full image.
      dpi: resolution.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    n = len(dataset)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise PrposeError(f"frame index {index!r} is out of range for {dataset.path} ({n} frames; expected 0..{n - 1})")
    index = int(index) % n
    profile = dataset.manifest.get("profile", "h36m17")
    cams = dataset.cameras(index)
    c = dataset.num_cameras
    fig = Figure(figsize=(4.0 * (c + 1), 4.4), dpi=dpi)
    FigureCanvasAgg(fig)
    for i in range(c):
        ax = fig.add_subplot(1, c + 1, i + 1)
        kp = np.asarray(dataset.keypoints2d[index, i])
        vis = np.asarray(dataset.visibility[index, i])
        draw_skeleton(ax, kp, profile, visible=vis, image_coords=False)
        cam = cams[i]
        if crop and vis.any():
            lo, hi = kp[vis].min(0), kp[vis].max(0)
            pad = 0.15 * max(float((hi - lo).max()), 50.0)
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(hi[1] + pad, lo[1] - pad)
        else:
            ax.set_xlim(0, cam.width)
            ax.set_ylim(cam.height, 0)  # pixels: v grows downward
        ax.set_aspect("equal")
        ax.set_title(f"{dataset.camera_names[i]}  ({int(vis.sum())}/{vis.size} visible)", fontsize=9)
        ax.tick_params(labelsize=7)
    ax3 = fig.add_subplot(1, c + 1, c + 1, projection="3d")
    draw_skeleton_3d(ax3, np.asarray(dataset.poses3d[index], dtype=np.float64), profile)
    ax3.set_title("3D (world, Z up)", fontsize=9)
    labels = {name: dataset.labels(name, index) for name in ("sequence", "subject", "split")}
    fig.suptitle(
        f"{dataset.path.name}  row {index}: sequence {labels['sequence']}, subject {labels['subject']}, "
        f"frame {int(dataset.frame[index])}, split {labels['split']}", fontsize=10,
    )
    fig.legend(handles=[Line2D([], [], color=LEFT_COLOR, lw=2, label="left"),
                        Line2D([], [], color=RIGHT_COLOR, lw=2, label="right")],
               loc="upper right", fontsize=8)
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def show_main(dataset_dir, frame: int, out) -> int:
    """CLI glue for ``prpose show DATASET --frame I --out PNG``: draw the frame, print where it went."""
    from prpose.dataset import load_dataset

    written = plot_dataset_frame(load_dataset(dataset_dir), frame, out)
    print(f"wrote {written}")
    return 0
