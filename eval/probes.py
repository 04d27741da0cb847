"""Linear probes on frozen features: what a representation makes linearly decodable.

Probes are closed-form ridge regressions fitted on the train split's views and scored on the test split's:
  * normalised 3D pose (51 values): R^2 (pooled over coordinates) and MPJPE of the linear read-out;
  * camera viewpoint relative to the person: azimuth (regressing cos and sin, scored by the mean circular
    error in degrees) and elevation (mean absolute error in degrees). A view-invariant embedding should make the
    pose decodable and the viewpoint *not*;
  * a categorical label (action/content) where the data has one: a one-vs-rest least-squares classifier,
    accuracy.
The same probes run on any features (Pr-VIPE means, normalised 2D keypoints, an untrained network) so the
rows compare directly.
"""

from __future__ import annotations

import numpy as np

from prpose import keypoints as kp
from prpose.errors import PrposeError


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression with an unpenalised intercept, in float64.

    x: (N, F) features, y: (N, T) targets. Minimises ||x W + c - y||^2 + lam N ||W||^2 (the penalty scales with
    N so lam means the same at any sample size). Returns (W (F, T), c (T,)).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise PrposeError(f"fit_ridge: x {x.shape} and y {y.shape}, expected (N, F) and (N, T)")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise PrposeError("fit_ridge: non-finite features or targets")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc + lam * len(x) * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ yc)
    return w, my - mx @ w


def predict(x: np.ndarray, w: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64) @ w + c


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination pooled over all target columns: 1 - SS_res / SS_tot."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ss_res = ((y_true - y_pred) ** 2).sum()
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum()
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def circular_error_deg(true_rad: np.ndarray, pred_rad: np.ndarray) -> np.ndarray:
    """Absolute angular difference in degrees, in [0, 180]."""
    d = np.angle(np.exp(1j * (np.asarray(pred_rad) - np.asarray(true_rad))))
    return np.degrees(np.abs(d))


def relative_viewpoint(poses3d_world: np.ndarray, camera_centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera azimuth and elevation relative to the person, radians.

    poses3d_world: (N, 17, 3) h36m17 world metres (Z-up); camera_centers: (N, 3) or (3,).
    The person's forward direction is horizontal and perpendicular to the hip line (left hip -> right hip
    crossed with up points forward for a person facing +forward, left on their left). Azimuth 0: the camera is in
    front of the person; positive toward the person's left. Elevation: angle of the pelvis->camera vector above
    the horizontal.
    """
    p = np.asarray(poses3d_world, np.float64)
    pelvis = p[:, kp.H36M17.index("pelvis")]
    hip = p[:, kp.H36M17.index("right_hip")] - p[:, kp.H36M17.index("left_hip")]  # points to the right
    hip[:, 2] = 0.0
    up = np.array([0.0, 0.0, 1.0])
    forward = np.cross(up, hip)  # up x right = forward for a right-handed Z-up world
    forward /= np.maximum(np.linalg.norm(forward, axis=1, keepdims=True), 1e-12)
    left = np.cross(up, forward)
    v = np.broadcast_to(np.asarray(camera_centers, np.float64), pelvis.shape) - pelvis
    horiz = np.hypot((v * forward).sum(1), (v * left).sum(1))
    azimuth = np.arctan2((v * left).sum(1), (v * forward).sum(1))
    elevation = np.arctan2(v[:, 2], horiz)
    return azimuth, elevation


def pose_probe(train_x, train_pose, test_x, test_pose, lam: float = 1e-3) -> dict:
    """Linear read-out of normalised 3D poses (N, 17, 3): R^2 and MPJPE (normalised units) on the test set."""
    w, c = fit_ridge(train_x, np.asarray(train_pose).reshape(len(train_pose), -1), lam)
    pred = predict(test_x, w, c).reshape(-1, 17, 3)
    test_pose = np.asarray(test_pose, np.float64)
    return {"r2": r2_score(test_pose.reshape(len(test_pose), -1), pred.reshape(len(pred), -1)),
            "mpjpe": float(np.linalg.norm(pred - test_pose, axis=-1).mean())}


def viewpoint_probe(train_x, train_az, train_el, test_x, test_az, test_el, lam: float = 1e-3) -> dict:
    """Linear read-out of the relative camera azimuth (via cos, sin) and elevation, errors in degrees.

    Also reports the error of the best constant guess (the training mean direction / mean elevation), the
    "nothing decodable" level.
    """
    y = np.stack([np.cos(train_az), np.sin(train_az), train_el], 1)
    w, c = fit_ridge(train_x, y, lam)
    pred = predict(test_x, w, c)
    az_err = circular_error_deg(test_az, np.arctan2(pred[:, 1], pred[:, 0]))
    el_err = np.degrees(np.abs(pred[:, 2] - test_el))
    const_az = np.arctan2(np.sin(train_az).mean(), np.cos(train_az).mean())
    return {"azimuth_error_deg": float(az_err.mean()), "elevation_error_deg": float(el_err.mean()),
            "azimuth_error_deg_constant": float(circular_error_deg(test_az, const_az).mean()),
            "elevation_error_deg_constant": float(np.degrees(np.abs(np.mean(train_el) - test_el)).mean())}


def label_probe(train_x, train_labels, test_x, test_labels, lam: float = 1e-3) -> dict:
    """One-vs-rest least-squares linear classifier; accuracy on test labels seen in training.

    Test rows whose label never occurs in training are skipped and counted.
    """
    classes = np.unique(np.asarray(train_labels))
    if classes.size < 2:
        return {"accuracy": None, "classes": int(classes.size), "note": "fewer than 2 classes in training"}
    onehot = (np.asarray(train_labels)[:, None] == classes[None, :]).astype(np.float64)
    w, c = fit_ridge(train_x, onehot, lam)
    test_labels = np.asarray(test_labels)
    known = np.isin(test_labels, classes)
    if not known.any():
        return {"accuracy": None, "classes": int(classes.size), "skipped": int(len(test_labels))}
    pred = classes[np.argmax(predict(np.asarray(test_x)[known], w, c), axis=1)]
    majority = classes[np.argmax(onehot.sum(0))]
    return {"accuracy": float((pred == test_labels[known]).mean()), "classes": int(classes.size),
            "majority_accuracy": float((test_labels[known] == majority).mean()),
            "skipped": int((~known).sum())}


def dataset_viewpoints(dataset, views) -> tuple[np.ndarray, np.ndarray]:
    """Relative azimuth and elevation (N, C) radians of every view of a ViewSet built from `dataset`."""
    poses = np.asarray(dataset.poses3d[views.rows], np.float64)
    names = list(dataset.camera_names)
    cam_idx = [names.index(c) for c in views.camera_names]
    rig = np.asarray(dataset.rig_index)[views.rows]
    centers = np.stack([[dataset.rigs[r][c].center for c in cam_idx] for r in range(len(dataset.rigs))])
    az, el = [], []
    for c in range(len(cam_idx)):
        a, e = relative_viewpoint(poses, centers[rig, c])
        az.append(a), el.append(e)
    return np.stack(az, 1), np.stack(el, 1)


def run_probes(feature_fns: dict, train_views, test_views, train_viewpoint=None, test_viewpoint=None,
               label_fn=None, lam: float = 1e-3) -> dict:
    """Every probe on every representation.

    feature_fns: name -> fn(keypoints (M, 13, 2), visible (M, 13)) -> (M, F) frozen features.
    train_views / test_views: prpose.views.ViewSet (every camera's view is one probe example).
    *_viewpoint: (azimuth, elevation) arrays (N, C) radians (dataset_viewpoints), or None to skip.
    label_fn: sequence name -> label (e.g. eval.alignment.content_label) or None; rows without a label are
    left out of the label probe.
    Returns {representation: {"pose": ..., "viewpoint": ..., "label": ...}}.
    """
    def stack(views, fn):
        n, c = views.num_frames, views.num_cameras
        x = fn(views.keypoints2d.reshape(n * c, 13, 2), views.visible.reshape(n * c, 13))
        return np.asarray(x, np.float64).reshape(n * c, -1)

    def per_view(a, views):
        return np.repeat(np.asarray(a), views.num_cameras, axis=0)

    out = {}
    for name, fn in feature_fns.items():
        xtr, xte = stack(train_views, fn), stack(test_views, fn)
        res = {"features": int(xtr.shape[1]),
               "pose": pose_probe(xtr, per_view(train_views.poses3d, train_views), xte,
                                  per_view(test_views.poses3d, test_views), lam)}
        if train_viewpoint is not None and test_viewpoint is not None:
            res["viewpoint"] = viewpoint_probe(xtr, train_viewpoint[0].ravel(), train_viewpoint[1].ravel(), xte,
                                               test_viewpoint[0].ravel(), test_viewpoint[1].ravel(), lam)
        if label_fn is not None and "sequence" in train_views.labels:
            ltr = per_view([label_fn(s) or "" for s in train_views.labels["sequence"]], train_views)
            lte = per_view([label_fn(s) or "" for s in test_views.labels["sequence"]], test_views)
            if (ltr != "").any() and (lte != "").any():
                res["label"] = label_probe(xtr[ltr != ""], ltr[ltr != ""], xte[lte != ""], lte[lte != ""], lam)
        out[name] = res
    return out
