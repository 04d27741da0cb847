"""Procrustes alignment and NP-MPJPE (REFERENCE.md: two poses match when NP-MPJPE < kappa = 0.1).

Alignment of ``source`` onto ``target`` finds a proper rotation R (no reflection), a uniform scale s >= 0 and
a translation t minimising sum_j |s R x_j + t - y_j|^2 (Umeyama / Horn). With centred points X, Y and the
cross-covariance M = X^T Y (3x3, rows as points) = U S V^T:
    R = U D V^T (acting on row vectors: aligned = s X R + mean(Y)),  D = diag(1, 1, sign det(U V^T)),
    s = trace(S D) / |X|^2.
NP-MPJPE is the mean per-joint Euclidean distance after that alignment.

The rotation comes from Horn's quaternion method (the top eigenvector of a symmetric 4x4 built from M is
the optimal *proper* rotation, its eigenvalue is trace(S D), so reflections are excluded by construction),
with the 4x4 eigenproblem solved by unrolled Jacobi rotations: pure elementwise arithmetic, which on CPU beat
batched LAPACK SVD/eigh by about an order of magnitude at 65k pairs (bench/bench_procrustes.py). The SVD
and eigh solvers stay available (``method=``) as references.

All functions are jax.numpy and jittable.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from prpose.errors import PrposeError

# |X|^2 (summed squared distance to the centroid) below this is a degenerate source: scale 0 is used, so the
# aligned pose collapses onto the target's centroid (finite error, never NaN).
_EPS = 1e-12


def _check(x, name: str, fn: str):
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[-1] != 3:
        raise PrposeError(f"{fn}: argument {name!r} has shape {tuple(x.shape)}, expected (..., J, 3)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _weights(mask, shape, dtype, fn: str):
    """(..., J) float weights (1 = use the joint) from an optional bool mask."""
    if mask is None:
        return jnp.ones(shape[:-1], dtype)
    mask = jnp.asarray(mask)
    if mask.ndim < 1 or mask.shape[-1] != shape[-2]:
        raise PrposeError(
            f"{fn}: argument 'mask' has shape {tuple(mask.shape)}, expected (..., {shape[-2]}) for poses of "
            f"shape {tuple(shape)}"
        )
    return jnp.broadcast_to(mask.astype(bool), shape[:-1]).astype(dtype)


def _rotation_svd(m):
    """Reference solver: batched jnp.linalg.svd (slow on CPU for many 3x3s)."""
    u, s, vt = jnp.linalg.svd(m)
    d = jnp.sign(jnp.linalg.det(u @ vt))
    d = jnp.where(d == 0, 1.0, d)  # exactly-singular edge case: any sign is optimal
    u = u.at[..., :, 2].multiply(d[..., None])
    return u @ vt, s[..., 0] + s[..., 1] + d * s[..., 2]


def _horn_matrix(m):
    """Horn's symmetric 4x4 N(M) as a nested list of (...) arrays: its top eigenvector is the unit
    quaternion of the optimal rotation, its top eigenvalue max_R tr(R^T M) = sigma1 + sigma2 + d sigma3."""
    sxx, sxy, sxz = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    syx, syy, syz = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    szx, szy, szz = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    upper = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [None, sxx - syy - szz, sxy + syx, szx + sxz],
        [None, None, -sxx + syy - szz, syz + szy],
        [None, None, None, -sxx - syy + szz],
    ]
    return [[upper[min(i, j)][max(i, j)] for j in range(4)] for i in range(4)]


def _quaternion_rows(w, x, y, z):
    """Unit quaternion -> (..., 3, 3) rotation acting on ROW vectors (the transpose of the usual matrix)."""
    return jnp.stack([
        jnp.stack([w * w + x * x - y * y - z * z, 2 * (x * y + w * z), 2 * (x * z - w * y)], -1),
        jnp.stack([2 * (x * y - w * z), w * w - x * x + y * y - z * z, 2 * (y * z + w * x)], -1),
        jnp.stack([2 * (x * z + w * y), 2 * (y * z - w * x), w * w - x * x - y * y + z * z], -1),
    ], -2)


def _top_eigenpair(evals, evecs):
    """Pick the largest eigenvalue and its eigenvector from per-column lists (elementwise selects)."""
    best, q = evals[0], list(evecs[0])
    for value, vec in zip(evals[1:], evecs[1:]):
        better = value > best
        best = jnp.where(better, value, best)
        q = [jnp.where(better, v, c) for v, c in zip(vec, q)]
    return best, q


def _rotation_horn_eigh(m):
    """Horn's quaternion method with batched jnp.linalg.eigh of the 4x4 (LAPACK per matrix on CPU)."""
    n = _horn_matrix(m)
    w, v = jnp.linalg.eigh(jnp.stack([jnp.stack(row, -1) for row in n], -2))
    return _quaternion_rows(v[..., 0, 3], v[..., 1, 3], v[..., 2, 3], v[..., 3, 3]), w[..., 3]


# Cyclic Jacobi sweeps on Horn's 4x4. Measured max |error| of NP-MPJPE against a float64 NumPy SVD
# (bench/bench_procrustes.py --check): 3 sweeps ~2e-5, 4 sweeps ~2e-7 (float32 round-off).
_JACOBI_SWEEPS = 4


def _rotation_horn_jacobi(m, sweeps=_JACOBI_SWEEPS):
    """Horn's quaternion method, the 4x4 eigenproblem solved by unrolled cyclic Jacobi rotations.

    Everything is elementwise arithmetic on (...) arrays, which XLA fuses into a few vectorised loops:
    on CPU about 10x faster than batched LAPACK SVD for 65k 3x3s (bench/bench_procrustes.py). Jacobi is
    robust to repeated eigenvalues (planar or collinear poses): it always returns an orthonormal basis,
    and any unit vector of a repeated top eigenspace is an optimal rotation.
    """
    a = _horn_matrix(m)
    one = jnp.ones_like(a[0][0])
    zero = jnp.zeros_like(one)
    v = [[one if i == j else zero for j in range(4)] for i in range(4)]

    def sweep(_, carry):
        a, v = [list(r) for r in carry[0]], [list(r) for r in carry[1]]
        for p in range(3):
            for q in range(p + 1, 4):
                apq = a[p][q]
                nz = apq != 0
                # Rotation angle that zeroes a[p][q] (Golub & Van Loan, sym. Schur 2x2): t = tan(angle).
                theta = (a[q][q] - a[p][p]) / (2.0 * jnp.where(nz, apq, 1.0))
                t = jnp.where(theta >= 0, 1.0, -1.0) / (jnp.abs(theta) + jnp.sqrt(theta * theta + 1.0))
                t = jnp.where(nz, t, 0.0)
                c = jax.lax.rsqrt(t * t + 1.0)
                s = t * c
                new = [row[:] for row in a]
                for k in range(4):
                    if k not in (p, q):
                        new[k][p] = new[p][k] = c * a[k][p] - s * a[k][q]
                        new[k][q] = new[q][k] = s * a[k][p] + c * a[k][q]
                new[p][p] = a[p][p] - t * apq
                new[q][q] = a[q][q] + t * apq
                new[p][q] = new[q][p] = jnp.zeros_like(apq)
                a = new
                for k in range(4):
                    v[k][p], v[k][q] = c * v[k][p] - s * v[k][q], s * v[k][p] + c * v[k][q]
        return tuple(map(tuple, a)), tuple(map(tuple, v))

    # A rolled loop over sweeps (one sweep unrolled inside) keeps compile time ~4x lower than unrolling all.
    a, v = jax.lax.fori_loop(0, sweeps, sweep, (tuple(map(tuple, a)), tuple(map(tuple, v))))
    value, quat = _top_eigenpair([a[i][i] for i in range(4)], [[v[k][i] for k in range(4)] for i in range(4)])
    inv = jax.lax.rsqrt(sum(c * c for c in quat))  # Jacobi keeps columns unit; renormalise round-off
    rot = _quaternion_rows(*(c * inv for c in quat))
    # The barrier materialises the result: without it XLA fused (= recomputed) this long elementwise chain
    # into each consumer, which measured 2x slower.
    return jax.lax.optimization_barrier((rot, value))


_SOLVERS = {"jacobi": _rotation_horn_jacobi, "svd": _rotation_svd, "eigh": _rotation_horn_eigh}
METHODS = tuple(_SOLVERS)


def _solver(method: str):
    try:
        return _SOLVERS[method]
    except KeyError:
        raise PrposeError(f"procrustes: unknown method {method!r}; expected one of {', '.join(METHODS)}") from None


def _covariance(xs, yt):
    """M[..., a, b] = sum_j xs[..., j, a] yt[..., j, b] as fused elementwise reductions (a batched 3x3 dot
    of broadcast inputs compiled to slow tiny matmuls on CPU)."""
    return jnp.stack([jnp.stack([jnp.sum(xs[..., a] * yt[..., b], -1) for b in range(3)], -1)
                      for a in range(3)], -2)


def _transform(x, rot_scaled, offset):
    """x (..., J, 3) @ rot_scaled (..., 3, 3) + offset (..., 3), unrolled elementwise (see _covariance)."""
    cols = [sum(x[..., a] * rot_scaled[..., None, a, b] for a in range(3)) + offset[..., None, b]
            for b in range(3)]
    return jnp.stack(cols, -1)


def _align_parts(source, target, w, method):
    """Centroids, rotation, scale of the weighted alignment. source/target (..., J, 3), w (..., J)."""
    wsum = jnp.maximum(w.sum(-1), 1e-30)[..., None]  # (..., 1)
    mu_s = (source * w[..., None]).sum(-2) / wsum
    mu_t = (target * w[..., None]).sum(-2) / wsum
    xs = (source - mu_s[..., None, :]) * w[..., None]
    yt = target - mu_t[..., None, :]
    rot, trace = _solver(method)(_covariance(xs, yt))
    norm_x = jnp.sum(xs * xs, axis=(-2, -1))
    ok = norm_x > _EPS
    scale = jnp.where(ok, trace / jnp.where(ok, norm_x, 1.0), 0.0)
    return mu_s, mu_t, rot, scale


@functools.partial(jax.jit, static_argnames=("method",))
def procrustes_align(source, target, mask=None, *, method: str = "jacobi"):
    """Align ``source`` onto ``target`` with a rotation (no reflection), uniform scale and translation.

    Args:
      source: (..., J, 3) poses to move.
      target: (..., J, 3) reference poses (broadcast against source).
      mask: optional (..., J) bool; only joints with mask True enter the fit. Every joint is transformed.
      method: rotation solver, "jacobi" (default, fastest on CPU), "svd" or "eigh" (references).
    Returns:
      (..., J, 3) aligned source. Jitted (compiled once per input shapes).
    """
    return _checked_align(source, target, mask, method, "procrustes_align", ("source", "target"))[0]


def _checked_align(source, target, mask, method, fn, names):
    """Check and broadcast the inputs, align source onto target; -> (aligned (..., J, 3), target, weights (..., J))."""
    source, target = _check(source, names[0], fn), _check(target, names[1], fn)
    shape = jnp.broadcast_shapes(source.shape, target.shape)
    source, target = jnp.broadcast_to(source, shape), jnp.broadcast_to(target, shape)
    w = _weights(mask, shape, source.dtype, fn)
    mu_s, mu_t, rot, scale = _align_parts(source, target, w, method)
    return _transform(source - mu_s[..., None, :], rot * scale[..., None, None], mu_t), target, w


def _mean_distance(aligned, target, w):
    d = aligned - target
    sq = jnp.sum(d * d, -1)
    dist = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)  # NaN-free gradient at 0
    return (dist * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)


@functools.partial(jax.jit, static_argnames=("method",))
def np_mpjpe(pred, target, mask=None, *, method: str = "jacobi"):
    """Normalised-Procrustes MPJPE: align ``pred`` onto ``target``, mean per-joint Euclidean distance.

    Args:
      pred, target: (..., J, 3) (broadcast).
      mask: optional (..., J) bool; masked-out joints neither enter the fit nor the mean.
      method: rotation solver, see ``procrustes_align``.
    Returns:
      (...) mean distance over the used joints (0 where no joint is used).
    """
    return _mean_distance(*_checked_align(pred, target, mask, method, "np_mpjpe", ("pred", "target")))


# Pairs per block in pairwise_np_mpjpe: bounds the (rows, M, J) intermediates (~5 MB each at J=17) for
# large N x M, e.g. evaluation over whole test sets; B=256 training batches (65,536 pairs) run in one block.
_PAIRS_PER_BLOCK = 65536


@functools.partial(jax.jit, static_argnames=("method",))
def pairwise_np_mpjpe(a, b, mask_a=None, mask_b=None, *, method: str = "jacobi"):
    """All-pairs NP-MPJPE: ``out[i, j] = np_mpjpe(a[i], b[j], mask_a[i] & mask_b[j])`` (a[i] aligned onto b[j]).

    Jitted. Every per-pair sum the alignment needs is a matmul over the joints: with 0/1 weights
    w_k = ma_ik mb_jk, the pair's joint count n = ma_i . mb_j, its weighted sums S_x = (ma_i x_i)^T mb_j and
    S_y = ma_i^T (mb_j y_j), the cross-covariance M = (ma_i x_i)^T (mb_j y_j) - S_x S_y^T / n and
    |X_c|^2 = (ma_i |x_i|^2) . mb_j - |S_x|^2 / n. Poses are first centred on the centroid of their own
    usable joints, so the subtracted terms stay small (no float32 cancellation; a float64 NumPy reference
    checks this in tests/test_procrustes.py). Only the rotation (one 3x3 per pair) and the final per-joint
    distances are per-pair work. Large N x M is processed in blocks of rows (``lax.map``), memory bounded.

    Args:
      a: (N, J, 3).  b: (M, J, 3).
      mask_a: optional (N, J) bool, mask_b: optional (M, J) bool: the joints usable in each pose (default all);
        a pair is compared on the joints usable in both, and a pair without one gets 0.
      method: rotation solver, see ``procrustes_align``.
    Returns:
      (N, M).
    """
    fn = "pairwise_np_mpjpe"
    a, b = _check(a, "a", fn), _check(b, "b", fn)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1] != b.shape[1]:
        raise PrposeError(f"{fn}: expected a (N, J, 3) and b (M, J, 3), got {tuple(a.shape)} and {tuple(b.shape)}")
    dtype = jnp.result_type(a.dtype, b.dtype)
    wa = _weights(mask_a, a.shape, dtype, fn)  # (N, J)
    wb = _weights(mask_b, b.shape, dtype, fn)  # (M, J)
    solver = _solver(method)

    def centred(x, w):
        """Centre on the centroid of the usable joints and zero the others: (masked x, w |x|^2)."""
        mu = (x * w[..., None]).sum(-2, keepdims=True) / jnp.maximum(w.sum(-1), 1.0)[:, None, None]
        x = (x - mu).astype(dtype) * w[..., None]
        return x, jnp.sum(x * x, -1)

    x, x2 = centred(a, wa)  # (N, J, 3), (N, J)
    y, _ = centred(b, wb)  # (M, J, 3)

    def block(xb, x2b, wab):
        """xb (R, J, 3) masked centred rows, x2b (R, J) their squared norms, wab (R, J) masks -> (R, M)."""
        count = wab @ wb.T  # (R, M) joints usable in both
        inv = jnp.where(count > 0, 1.0 / jnp.maximum(count, 1.0), 0.0)
        sx = jnp.einsum("rja,mj->rma", xb, wb)  # (R, M, 3) sum over the common joints of x
        sy = jnp.einsum("rj,mja->rma", wab, y)  # (R, M, 3) ... of y
        m = jnp.einsum("rja,mjb->rmab", xb, y) - sx[..., :, None] * sy[..., None, :] * inv[..., None, None]
        norm_x = x2b @ wb.T - jnp.sum(sx * sx, -1) * inv  # (R, M) |X_c|^2 of the pair's common joints
        rot, trace = solver(m)
        ok = norm_x > _EPS
        scale = jnp.where(ok, trace / jnp.where(ok, norm_x, 1.0), 0.0)
        rs = rot * scale[..., None, None]  # (R, M, 3, 3) acting on row vectors
        mu_x, mu_y = sx * inv[..., None], sy * inv[..., None]
        # aligned_k = s (x_k - mu_x) R + mu_y, compared on the pair's common joints only.
        offset = mu_y - sum(mu_x[..., a, None] * rs[..., a, :] for a in range(3))
        aligned = _transform(xb[:, None], rs, offset)
        w = wab[:, None] * wb[None]  # (R, M, J)
        return _mean_distance(aligned, y[None], w)

    n, m_ = a.shape[0], b.shape[0]
    rows = max(1, _PAIRS_PER_BLOCK // max(m_, 1))
    if n <= rows:
        return block(x, x2, wa)
    pad = (-n) % rows

    def split(v):
        return jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)).reshape(-1, rows, *v.shape[1:])

    out = jax.lax.map(lambda args: block(*args), (split(x), split(x2), split(wa)))
    return out.reshape(-1, m_)[:n]
