"""Cameras: real rigs (Human3.6M), synthetic rigs, projection, and virtual views for augmentation.

Conventions (docs/ARCHITECTURE.md): world coordinates are metres, Z-up, right-handed. Camera coordinates are
OpenCV-style: x right, y down, z forward (optical axis). A world point X has camera coordinates
``R @ (X - C)`` with R the world->camera rotation and C the camera centre. Pixels: u right, v down.

The ``Camera`` class and rigs are NumPy float64 (data preparation). ``view_rotation`` and
``project_normalized_pose`` are ``jax.numpy`` (camera augmentation inside the jitted training step); JAX is
imported by those two only, so projecting with a ``Camera`` (e.g. ``prpose query --plot``) does not load it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
from typing import Sequence

import numpy as np

from prpose.errors import PrposeError

H36M_SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")

# Camera-z below this (metres) counts as "at or behind the camera" in ``Camera.project``; the perspective
# divide uses this value instead so that the output stays finite (callers must test ``depth > 0``).
_MIN_DIVIDE_DEPTH = 1e-9


def _frozen_array(value, shape, field: str, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PrposeError(f"Camera {name!r}: field {field!r} is not numeric ({value!r}): {e}") from None
    if arr.shape != shape:
        raise PrposeError(f"Camera {name!r}: field {field!r} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise PrposeError(f"Camera {name!r}: field {field!r} holds non-finite values: {arr.tolist()}")
    arr.setflags(write=False)
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated pinhole camera with optional Human3.6M-style lens distortion.

    Attributes:
      name: label (Human3.6M: the camera id, e.g. "54138969").
      rotation: (3, 3) world->camera rotation (proper: det +1).
      center: (3,) camera centre in world metres.
      focal: (2,) focal lengths (fx, fy) in pixels.
      principal: (2,) principal point (cx, cy) in pixels.
      radial: (3,) radial distortion k1, k2, k3.
      tangential: (2,) tangential distortion p1, p2.
      width, height: image size in pixels.

    Arrays are stored as read-only float64 NumPy arrays; equality and hashing compare values, so cameras
    can be dict keys and compared after a JSON round trip (``to_dict``/``from_dict``).
    """

    name: str
    rotation: np.ndarray
    center: np.ndarray
    focal: np.ndarray
    principal: np.ndarray
    radial: np.ndarray = (0.0, 0.0, 0.0)
    tangential: np.ndarray = (0.0, 0.0)
    width: int = 1000
    height: int = 1000

    def __post_init__(self):
        name = str(self.name)
        object.__setattr__(self, "name", name)
        for field, shape in (("rotation", (3, 3)), ("center", (3,)), ("focal", (2,)), ("principal", (2,)),
                             ("radial", (3,)), ("tangential", (2,))):
            object.__setattr__(self, field, _frozen_array(getattr(self, field), shape, field, name))
        r = self.rotation
        err = np.abs(r @ r.T - np.eye(3)).max()
        det = np.linalg.det(r)
        if err > 1e-5 or abs(det - 1.0) > 1e-5:
            raise PrposeError(
                f"Camera {name!r}: field 'rotation' must be a proper rotation (orthonormal, det +1); "
                f"got max |R R^T - I| = {err:.3g}, det = {det:.6f}"
            )
        if np.any(self.focal <= 0):
            raise PrposeError(f"Camera {name!r}: field 'focal' must be positive, got {self.focal.tolist()}")
        for field in ("width", "height"):
            value = getattr(self, field)
            if isinstance(value, bool) or int(value) != value or int(value) <= 0:
                raise PrposeError(f"Camera {name!r}: field {field!r} must be a positive integer, got {value!r}")
            object.__setattr__(self, field, int(value))

    def _key(self):
        return (self.name, *(tuple(getattr(self, f).ravel().tolist()) for f in
                             ("rotation", "center", "focal", "principal", "radial", "tangential")),
                self.width, self.height)

    def __eq__(self, other):
        if not isinstance(other, Camera):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-JSON dict (lists of floats); ``Camera.from_dict(c.to_dict()) == c`` exactly."""
        return {
            "name": self.name,
            "rotation": self.rotation.tolist(),
            "center": self.center.tolist(),
            "focal": self.focal.tolist(),
            "principal": self.principal.tolist(),
            "radial": self.radial.tolist(),
            "tangential": self.tangential.tolist(),
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        """Inverse of ``to_dict``; a missing or unknown key raises PrposeError naming it."""
        if not isinstance(d, dict):
            raise PrposeError(f"Camera.from_dict: expected a dict, got {type(d).__name__}")
        fields = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        unknown = [k for k in d if k not in fields]
        if missing or unknown:
            raise PrposeError(
                f"Camera.from_dict: camera {d.get('name', '?')!r}: missing keys {missing}, unknown keys "
                f"{unknown}; expected keys {fields}"
            )
        return cls(**d)

    # -- geometry ------------------------------------------------------------------------------------------
    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.radial != 0) or np.any(self.tangential != 0))

    def world_to_camera(self, points) -> np.ndarray:
        """Camera coordinates ``R (X - C)`` of world points.

        Args:
          points: (..., 3) world metres.
        Returns:
          (..., 3) float64 camera coordinates (x right, y down, z forward).
        """
        x = _points(points, "Camera.world_to_camera")
        return (x - self.center) @ self.rotation.T

    def camera_to_world(self, points) -> np.ndarray:
        """Inverse of ``world_to_camera``: (..., 3) camera coordinates -> (..., 3) world metres."""
        x = _points(points, "Camera.camera_to_world")
        return x @ self.rotation + self.center

    def project(self, points, distort: bool = True):
        """Project world points to pixels.

        Distortion follows the Human3.6M release's ``ProjectPointRadial`` on the normalised image point
        (x, y) = (X/Z, Y/Z), r2 = x^2 + y^2:
            radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3,   tan = p1 y + p2 x
            x' = x (radial + tan) + p2 r2,             y' = y (radial + tan) + p1 r2
            u = fx x' + cx,                            v = fy y' + cy
        The polynomial is only meaningful inside the field of view: far outside it (r2 >~ 1) it folds
        back, so test visibility on the undistorted point or the image bounds with care.

        Args:
          points: (..., 3) world metres.
          distort: apply lens distortion (if the camera has any).
        Returns:
          uv: (..., 2) float64 pixels. Finite even for points at or behind the camera (their divide uses a
            tiny positive depth); use ``depth > 0`` to tell them apart.
          depth: (...) float64 camera-z in metres (positive in front of the camera).
        """
        xc = self.world_to_camera(points)
        depth = xc[..., 2]
        z = np.where(depth > _MIN_DIVIDE_DEPTH, depth, _MIN_DIVIDE_DEPTH)
        xy = xc[..., :2] / z[..., None]
        if distort and self.has_distortion:
            xy = distort_normalized(xy, self.radial, self.tangential)
        return xy * self.focal + self.principal, depth

    def in_image(self, uv) -> np.ndarray:
        """(..., 2) pixels -> (...) bool: inside [0, width) x [0, height)."""
        uv = np.asarray(uv)
        return (uv[..., 0] >= 0) & (uv[..., 0] < self.width) & (uv[..., 1] >= 0) & (uv[..., 1] < self.height)


def distort_normalized(xy, radial, tangential) -> np.ndarray:
    """Human3.6M radial + tangential distortion of normalised image points (see ``Camera.project``).

    Args:
      xy: (..., 2) normalised image coordinates (X/Z, Y/Z).
      radial: (3,) k1, k2, k3.  tangential: (2,) p1, p2.
    Returns:
      (..., 2) distorted normalised coordinates.
    """
    xy = np.asarray(xy, dtype=np.float64)
    k1, k2, k3 = np.asarray(radial, dtype=np.float64)
    p1, p2 = np.asarray(tangential, dtype=np.float64)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial_f = 1.0 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    tan = p1 * y + p2 * x
    return np.stack([x * (radial_f + tan) + p2 * r2, y * (radial_f + tan) + p1 * r2], axis=-1)


def _points(points, fn: str) -> np.ndarray:
    x = np.asarray(points, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise PrposeError(f"{fn}: points have shape {x.shape}, expected (..., 3)")
    return x


# -- rotations ---------------------------------------------------------------------------------------------
def quaternion_to_matrix(q) -> np.ndarray:
    """(w, x, y, z) quaternion (normalised here) -> (3, 3) rotation matrix acting on column vectors."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if q.shape != (4,) or not np.isfinite(n) or n < 1e-12:
        raise PrposeError(f"quaternion_to_matrix: expected a nonzero (w, x, y, z) quaternion, got {q.tolist()}")
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def look_at(center, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World->camera rotation of a camera at ``center`` looking at ``target`` with world ``up`` above.

    Camera z points from center to target, x = z cross up (image right), y = z cross x (image down).

    Args:
      center, target, up: (3,) world vectors.
    Returns:
      (3, 3) rotation whose rows are the camera axes in world coordinates.
    Raises:
      PrposeError: center == target, or the viewing direction is parallel to ``up``.
    """
    c, t, u = (np.asarray(v, dtype=np.float64) for v in (center, target, up))
    for name, v in (("center", c), ("target", t), ("up", u)):
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            raise PrposeError(f"look_at: argument {name!r} must be a finite (3,) vector, got {v.tolist()}")
    fwd = t - c
    n = np.linalg.norm(fwd)
    if n < 1e-12:
        raise PrposeError(f"look_at: center and target coincide ({c.tolist()})")
    z = fwd / n
    x = np.cross(z, u)
    nx = np.linalg.norm(x)
    if nx < 1e-9 * max(np.linalg.norm(u), 1e-300):
        raise PrposeError(
            f"look_at: viewing direction {z.tolist()} is parallel to up {u.tolist()}; choose another up vector"
        )
    x = x / nx
    y = np.cross(z, x)
    return np.stack([x, y, z])


# -- rigs --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _h36m_table() -> dict:
    text = importlib.resources.files("prpose").joinpath("data/h36m_cameras.json").read_text()
    return json.loads(text)


def h36m_rig(subject: str) -> list[Camera]:
    """The four Human3.6M cameras of ``subject`` (metres, world->camera rotations).

    From the packaged ``prpose/data/h36m_cameras.json``: orientation quaternion (w, x, y, z) rotates camera
    coordinates into world coordinates, translation is the camera centre in millimetres; so our rotation is
    R(q)^T and our centre is translation / 1000. The table's tangential distortion is in VideoPose3D's
    order and is reversed into ``Camera``'s (3d-pose-baseline's) order.

    Args:
      subject: one of S1, S5, S6, S7, S8, S9, S11.
    Returns:
      list of 4 Camera, in the dataset's camera order (54138969, 55011271, 58860488, 60457274).
    """
    table = _h36m_table()
    extrinsics = table["extrinsics"]
    if subject not in extrinsics or not extrinsics[subject]:
        known = [s for s in extrinsics if extrinsics[s]]
        raise PrposeError(
            f"h36m_rig: unknown Human3.6M subject {subject!r}; expected one of {', '.join(known)}"
        )
    cams = []
    for intr, extr in zip(table["intrinsics"], extrinsics[subject], strict=True):
        cams.append(Camera(
            name=intr["id"],
            rotation=quaternion_to_matrix(extr["orientation"]).T,
            center=np.asarray(extr["translation"], dtype=np.float64) / 1000.0,
            focal=intr["focal_length"],
            principal=intr["center"],
            radial=intr["radial_distortion"],
            # The table keeps VideoPose3D's order (p1, p0); ``Camera.project`` takes 3d-pose-baseline's (p0, p1)
            # (cameras.h5 'p'). Reading it unswapped moved points by up to 0.7 px (tests/test_h36m.py).
            tangential=intr["tangential_distortion"][::-1],
            width=intr["res_w"],
            height=intr["res_h"],
        ))
    return cams


def ring_rig(num_cameras: int, distance: float, height: float, target_height: float = 1.0,
             focal: float = 1145.0, size=(1000, 1000), start_azimuth_deg: float = 0.0) -> list[Camera]:
    """Distortion-free cameras evenly spaced on a horizontal circle, all looking at (0, 0, target_height).

    Camera i sits at azimuth a_i = start_azimuth_deg + 360 i / num_cameras with the convention of
    ``view_rotation``: azimuth 0 is on the -Y side, increasing counter-clockwise seen from above
    (90 degrees is the +X side), i.e. centre = (distance sin a, -distance cos a, height).

    Args:
      num_cameras: >= 1.  distance: horizontal radius in metres (> 0).  height: camera z in metres.
      target_height: z of the look-at point.  focal: pixels (both axes).  size: (width, height) pixels.
      start_azimuth_deg: azimuth of camera 0 in degrees.
    Returns:
      list of Camera named "ring0", "ring1", ...
    """
    if isinstance(num_cameras, bool) or int(num_cameras) != num_cameras or num_cameras < 1:
        raise PrposeError(f"ring_rig: num_cameras must be a positive integer, got {num_cameras!r}")
    if not (distance > 0 and math.isfinite(distance)):
        raise PrposeError(f"ring_rig: distance must be a positive number of metres, got {distance!r}")
    if not (focal > 0 and math.isfinite(focal)):
        raise PrposeError(f"ring_rig: focal must be positive, got {focal!r}")
    try:
        width, height_px = (int(v) for v in size)
    except (TypeError, ValueError):
        raise PrposeError(f"ring_rig: size must be (width, height) in pixels, got {size!r}") from None
    cams = []
    for i in range(int(num_cameras)):
        a = math.radians(start_azimuth_deg + 360.0 * i / num_cameras)
        center = np.array([distance * math.sin(a), -distance * math.cos(a), height])
        cams.append(Camera(
            name=f"ring{i}",
            rotation=look_at(center, (0.0, 0.0, target_height)),
            center=center,
            focal=(focal, focal),
            principal=(width / 2.0, height_px / 2.0),
            width=width,
            height=height_px,
        ))
    return cams


# -- virtual views (jax) -----------------------------------------------------------------------------------
def elevation_ring_cameras(num_azimuths: int = 8, elevations_deg: Sequence[float] = (0.0, 30.0, 60.0),
                           distance: float = 5.0, target=(0.0, 0.0, 1.0), focal: float = 1145.0,
                           size=(1000, 1000), start_azimuth_deg: float = 0.0) -> list[Camera]:
    """A rig of distortion-free cameras on rings at several elevations, all looking at `target` (world metres,
    Z-up): views never seen in training (prpose.views.views_from_cameras, `prpose eval --unseen-views`).

    Camera (ring e, azimuth a) sits at target + distance * (cos(el) sin(az), -cos(el) cos(az), sin(el)) (azimuth
    0 on the -Y side, as :func:`ring_rig` and :func:`view_rotation`) and looks at the target. Names are
    "az{deg}_el{deg}".
    """
    target = np.asarray(target, np.float64)
    cams = []
    for el in elevations_deg:
        for i in range(num_azimuths):
            az = start_azimuth_deg + 360.0 * i / num_azimuths
            a, e = math.radians(az), math.radians(el)
            center = target + distance * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a),
                                                   math.sin(e)])
            # Straight down would make look_at's up vector degenerate; elevations stay below 90 degrees.
            if abs(el) >= 89.0:
                raise PrposeError(f"elevations_deg: {el} is too close to +-90 (camera straight above/below)")
            cams.append(Camera(name=f"az{az:g}_el{el:g}", rotation=look_at(center, target), center=center,
                               focal=(focal, focal), principal=(size[0] / 2, size[1] / 2), radial=(0.0, 0.0, 0.0),
                               tangential=(0.0, 0.0), width=size[0], height=size[1]))
    return cams


def view_rotation(azimuth, elevation, roll):
    """World->camera rotation of a virtual camera looking at the origin (jax; broadcasts its arguments).

    Angles in radians, world Z-up:
      * azimuth: where the camera stands around the vertical axis. 0 = on the -Y side looking toward +Y;
        pi/2 = on the +X side (counter-clockwise seen from above). A subject facing -Y is seen from the
        front at azimuth 0 (its left side appears on the image's right).
      * elevation: > 0 puts the camera ABOVE the subject looking DOWN at it (camera centre direction
        (cos e sin a, -cos e cos a, sin e)); < 0 looks up from below.
      * roll: rotation about the optical axis; a positive roll turns the image content clockwise on screen
        (u right, v down) by ``roll``.
    Equals ``look_at(c, 0, up=Z)`` for centre direction c, followed by the roll.

    Args:
      azimuth, elevation, roll: arrays broadcastable to a common shape (...).
    Returns:
      (..., 3, 3) rotation matrices (rows: camera x, y, z axes in world coordinates), det +1.
    """
    import jax.numpy as jnp

    a, e, r = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=jnp.result_type(float)) for v in
                                     (azimuth, elevation, roll)))
    ca, sa, ce, se = jnp.cos(a), jnp.sin(a), jnp.cos(e), jnp.sin(e)
    zero = jnp.zeros_like(a)
    # Unrolled camera axes before roll (closed form of look_at from the centre direction to the origin).
    x = jnp.stack([ca, sa, zero], -1)  # right: horizontal, perpendicular to the viewing direction
    y = jnp.stack([se * sa, -se * ca, -ce], -1)  # down (in the image)
    z = jnp.stack([-ce * sa, ce * ca, -se], -1)  # forward: toward the origin
    cr, sr = jnp.cos(r)[..., None], jnp.sin(r)[..., None]
    # Roll: new camera coords = Rz(roll) @ old, Rz = [[c, -s, 0], [s, c, 0], [0, 0, 1]]. With v down, a
    # rotation from +x toward +y is clockwise on screen.
    x_new = cr * x - sr * y
    y_new = sr * x + cr * y
    return jnp.stack([x_new, y_new, z], -2)


def project_normalized_pose(pose, rotation, depth=2.0, min_depth=1e-3):
    """Perspective projection of a (normalised) 3D pose seen by a virtual camera (jax).

    Rotates the pose into camera coordinates (``rotation @ p``, p relative to the origin the camera looks
    at), pushes it ``depth`` along the optical axis, and divides by camera-z. Used by camera augmentation
    (REFERENCE.md: normalised 3D pose, random view, depth 2.0, then 2D normalisation).

    Args:
      pose: (..., J, 3) 3D pose (world axes, Z-up), typically ``normalize_3d`` output.
      rotation: (..., 3, 3) world->camera rotations, e.g. ``view_rotation(...)``; broadcast against pose.
      depth: distance from the camera to the pose's origin along the optical axis.
      min_depth: camera-z used for joints at or behind this (keeps the output finite, never NaN).
    Returns:
      (..., J, 2) normalised image coordinates (x right, y down), i.e. pixels / focal.
    """
    import jax.numpy as jnp

    pose = jnp.asarray(pose)
    rotation = jnp.asarray(rotation)
    if pose.ndim < 2 or pose.shape[-1] != 3:
        raise PrposeError(f"project_normalized_pose: pose has shape {tuple(pose.shape)}, expected (..., J, 3)")
    if rotation.ndim < 2 or rotation.shape[-2:] != (3, 3):
        raise PrposeError(
            f"project_normalized_pose: rotation has shape {tuple(rotation.shape)}, expected (..., 3, 3)"
        )
    cam = jnp.einsum("...ij,...kj->...ki", rotation, pose)
    z = cam[..., 2] + depth
    z = jnp.where(z > min_depth, z, min_depth)
    return cam[..., :2] / z[..., None]
