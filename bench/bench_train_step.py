"""Benchmark the jitted training step: where its time goes, stage by stage and op by op, against a matmul's rate.

    python bench/bench_train_step.py                                  # paper preset: width 1024, batch 256
    python bench/bench_train_step.py --preset cpu --data /work/data/mocap
    python bench/bench_train_step.py --preset paper --data /work/data/mocap --threads 1 --profile 5 --against c9f4b00
    python bench/bench_train_step.py --preset cpu --no-stages --profile 5 --top 40 --trace-dir /tmp/trace
    python bench/bench_train_step.py --width 512 1024 --batch 128 256 --threads 1

Stages: every stage of ``prpose.training.train_step`` is jitted on its own, on the shapes the step uses, and
timed in round-robin with the full step (so all rows share the machine's load): batch sampling + augmentation
(``augmented_views``), the embedder's forward + backward (the MLP with batch norm, ReLU, dropout and its RNG),
the same Dense layers alone (plain matmuls: what the MLP would cost with nothing else), the loss's forward +
backward given the embeddings (mining with its NP-MPJPE labels from the 3D poses, K samples, K x K match
distances), and the optimizer + EMA update. For reference (not part of the step since mining computes only
the pairs that decide, prpose.mining.SHORTLIST) the full (B, B) NP-MPJPE matrix (``pose_distance_matrix``). Each
row shows the wall time and the process CPU time (median over rounds), XLA's FLOP count of the stage
(``compiled.cost_analysis()``) and its rate. "full - sum" is what jitting the step as one program gains (fusion)
or loses.

Op by op (``--profile STEPS``): the full step is traced with the JAX profiler (``jax.profiler.trace``; Python
tracer off) and its XSpace read with ``jax.profiler.ProfileData``. XLA's CPU runtime writes one event per
executed thunk (an HLO op or fusion of the optimised module, ``compiled.as_text()``) and marks the thread-pool
tasks it runs (an asynchronous Eigen matmul, a partitioned fusion), linked to the thread and time that scheduled
them. Every moment of every thread is charged to the HLO op running there or to the op that scheduled the task
running there (``attribute_cpu_time``); the rest of the executor's time is its own row. Ops are grouped into
stages by the named scopes of the step (``jax.named_scope``: augment, embedder, dropout_rng, loss, mining,
optimizer, ema; "transpose(" in an op's source name marks the backward pass) and by kind (matmul: a dot or a
fusion holding one, with its FLOPs counted from the HLO's shapes; RNG; copy; fusion; control). Thread times
include preemption by other processes, so the rows are scaled to the untraced step's CPU time (the header prints
the factor: ~1.0 on a quiet machine). ``--trace-dir`` keeps the trace (TensorBoard / Perfetto) and the HLO text.
The header also prints the step's page faults and kernel time (``getrusage``) and its temporary buffer's size.

The machine is shared: wall times move with the load, CPU time much less. ``--threads 1`` pins the process to
one core before JAX starts (XLA's thread pool then has one thread: every op runs alone, the cleanest per-op
attribution; without pinning XLA runs independent ops concurrently even with single-threaded Eigen) and turns
Eigen's multi-threading off. The matmul reference ((N x N) @ (N x N) float32, 2 N^3 FLOPs) is timed in the same
process and rounds.

MLP FLOPs counted: forward per embedded pose 2 * (in * W + 2 * blocks * W^2 + W * 2D) (input layer, two Dense
per residual block, mean and stddev heads; in = 26 or 39), two poses per example, forward + backward ~= 3 x
forward. "MLP % of matmul" = that count / the embedder stage's time / the matmul rate.

``--against REF`` measures the steps/s of the step at git revision REF (``git archive`` into a temporary
directory) and of this checkout in two worker processes that take turns (rounds alternate who goes first):
the old/new ratio comes from one run under one load.

Measured 2026-11-30 on the shared 2-core machine (load 10-25: wall times there are not comparable, so CPU ms per
step with --threads 1, which then only turned Eigen's threading off (no pinning); --data /work/data/mocap), main
before the shortlist mining (1f5224d) -> after:
  paper (width 1024, batch 256): mining labels (B, B) 30.4 -> 0 (now inside the loss: 9.9 -> 19.2), embedder
  fwd+bwd 186.7 -> 158.9 (without dropout 147.8 / 150.8; Dense layers alone 138.9 / 141.8), optimizer + EMA
  11.1 -> 10.5, full step 245.6 -> 223.7; MLP part 75% -> 94% of the matmul rate (Dense layers alone 101-105%).
  The full step exceeded the sum of its stages by ~34 ms there (7 ms before); explained below (page faults).
  cpu (width 512, batch 128, visible-joint labels): labels 27.7 -> 0, loss 4.7 -> 8.7, embedder 23.4 -> 23.6,
  full step 61.3 -> 37.7 (MLP part 78% of matmul). --against 1f5224d: 1.95x steps/s by wall time (17.9 vs 9.2
  steps/s), 1.77x by CPU time (default threads: 2.13x wall, 1.69x CPU). Quality: the cpu preset trained 3,000 steps
  on /work/data/mocap before (736d1ce) and with the mining changes gave bit-identical weights (fingerprint
  2edf5f4c0648-478973f2320b; test split every 10th frame, bench_robustness.py clean Hit@1 82.9, Hit@10 97.6 both);
  everything (+ the 16-bit dropout), 3,000 steps: Hit@1 83.2, Hit@10 98.0.

Op by op, 2026-11-30 07:05-07:14 (/work/scratch/QUIET set: the lead's trainings paused, other helpers' benches
running, load 2.9-6.6), --data /work/data/mocap --rounds 5 --calls 3 --profile 5 --against c9f4b00:
  The paper step's temporary buffer (every activation of forward + backward) is 58.6 MB, above glibc's largest
  mmap threshold (32 MB): XLA's runtime mallocs it at each execution, glibc mmaps it fresh and unmaps it on free,
  so every step page-faulted it in again: 14,332 minor faults and 27.9 ms of kernel time per step (the cpu
  preset's 17.6 MB buffer: 0 faults). That was the full - sum gap: the stages alone have smaller buffers.
  prpose.training.reuse_freed_memory() (called by train_and_evaluate and by this bench; mallopt: no mmap, no
  trimming) reuses the buffer: 1 fault and 0.0-0.7 ms kernel time per step; weights after 6 paper steps
  bit-identical with and without it. Full - sum now +4.3 ms CPU (--threads 1) and +1.2 ms (default threads).
  --against c9f4b00 (main before): paper --threads 1: 197.0 -> 169.8 ms CPU per step, 1.19x steps/s by wall
  (per round 1.13-1.25), 1.16x by CPU; default threads: 1.10x wall (1.09-1.17), 1.13x CPU (220.6 -> 194.9 ms).
  cpu preset: unchanged (0.99x, --threads 1).
  paper, --threads 1 (one core; charged thread time 1.41x the CPU time, load 6.6): CPU ms per step of 175.9:
  embedder fwd 32.0 (matmul 29.3) + bwd 115.4 (matmul 108.6) + dropout RNG 2.2; mining 7.8; loss fwd 4.4, bwd
  2.8; augmentation 0.4; optimizer 4.6; EMA 2.4; keys/grad norm/metrics 3.6 (copies 2.5); executor 0.3. By kind:
  matmul 138.1 ms (78%, 24 ops, 94.5 GFLOP/s = 99% of the matmul reference's 95.1), fusions 30.6, RNG 2.6,
  copies 2.5, control 1.4. Default threads (2 cores): 175.0 ms CPU: matmul 127.8 (73%, 102 GFLOP/s), fusions
  37.7, executor 2.9.
  cpu, --threads 1 (charged 0.97x the CPU time: load 3.7, every CPU ms found): CPU ms per step of 32.4: embedder
  fwd 5.9 (matmul 5.2) + bwd 12.4 (matmul 11.5) + dropout RNG 0.8; mining 4.8 (15%: the 2,048 shortlisted
  NP-MPJPEs, ~380 small ops); loss fwd 2.2, bwd 1.4; augmentation 1.5; optimizer 1.1; EMA 0.2; other 1.2;
  executor 1.0. By kind: matmul 16.7 ms (52%, 99 GFLOP/s), fusions 10.5, RNG 1.7, control 1.2, copies 1.1.
  Default threads: 45.3 ms CPU per step (vs 32.4 on one core), of which the executor 6.4 ms (14%).
  Mining's anchors gathered instead of broadcast (prpose.mining._mine_shortlist; weights bit-identical after 40 cpu
  and 12 paper steps), --threads 1 --against a02051e, 07:40-07:43 (load 5.7-8.0): cpu 33.6 -> 32.6 ms CPU per step
  (1.03x; 1.05x steps/s by wall, rounds 0.86-1.15), mining row 4.8 -> 3.5 ms; paper 169.5 -> 166.0 ms CPU (1.02x).
  That paper run's trace charged 1.00x its CPU time (a quiet core): of 176.1 ms, matmul 135.6 (77%, 96.2 GFLOP/s
  = 104% of the reference's 92.2), embedder fwd 46.1 + bwd 100.8 (non-matmul 4.4 + 7.2), dropout RNG 2.7, mining
  7.6, loss 4.9 + 3.7, optimizer 4.4, EMA 0.9, other 4.1 (copies 3.1), executor 0.2.
  One core vs default threads, same checkout, two interleaved workers (07:26-07:29, load 5-6): cpu 20.5 vs 20.3
  steps/s (32.6 vs 36.2 ms CPU per step), paper 3.7 vs 3.7 steps/s (170.2 vs 179.1 ms CPU): on this loaded
  machine the second thread buys no wall time and costs 5-10% more CPU.

Without --data a small synthetic dataset is generated in a temporary directory (the step's cost does not
depend on the data's size: it samples B frames from device arrays).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _set_threads(threads: int) -> None:
    """Before JAX starts: with ``threads`` 1, one core (the process is pinned to the first CPU it may use, so XLA's
    thread pool gets one thread: the profiler then shows every op run alone) and single-threaded Eigen."""
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def mlp_forward_flops(model_config) -> int:
    w, blocks, d, inputs = model_config.width, model_config.num_blocks, model_config.embedding_dim, model_config.input_dim
    return 2 * (inputs * w + 2 * blocks * w * w + w * 2 * d)


def make_config(args, width=None, batch=None):
    from prpose.config import from_overrides

    overrides = list(args.set)
    overrides += [f"model.width={width}"] if width else []
    overrides += [f"train.batch_size={batch}"] if batch else []
    return from_overrides(args.preset, overrides)


def load_arrays(data, config, tmp):
    from prpose.pairs import load_train_arrays

    if data is None:
        from prpose.data_prep import synthetic

        data = os.path.join(tmp, "synthetic")
        synthetic.main(argparse.Namespace(out=data, sequences=20, frames=50, seed=0, rig="h36m", cameras=4,
                                          overwrite=False))
    return load_train_arrays(data, "train", profile=config.model.input_profile,
                             detections=config.augment.detection_probability > 0)


def step_function(config, compiler_options=None):
    """(jitted train step, state, ema, graphdef, tx) as prpose.training runs it (state and ema donated)."""
    import functools

    import jax

    from prpose import training
    from prpose.training import create_train_state, make_optimizer, train_step

    if hasattr(training, "reuse_freed_memory"):  # as train_and_evaluate does (older revisions: --against)
        training.reuse_freed_memory()
    tx = make_optimizer(config)
    graphdef, _, state, ema = create_train_state(config, tx)
    step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, config=config), donate_argnums=(0, 1),
                   compiler_options=compiler_options)
    return step, state, ema, graphdef, tx


def stages(config, arrays):
    """Ordered {name: (jitted fn, args)}: the step's stages, each on the shapes the step uses."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from prpose.losses import pr_vipe_loss
    from prpose.mining import pose_distance_matrix
    from prpose.training import augmented_views, ema_decay_at

    step, state, ema, graphdef, tx = step_function(config)
    # The full step donates state and ema: the stages work on copies.
    stage_state, stage_ema = jax.tree.map(jnp.copy, (state, ema))
    key = jax.random.key(1)
    keys = tuple(jax.random.split(key, 5))
    views_fn = jax.jit(lambda keys: augmented_views(list(keys), arrays, config))
    views = views_fn(keys)
    mask = views.anchor_visible3d if config.loss.labels_visible_only else None
    labels_fn = jax.jit(pose_distance_matrix)
    inputs, visible = views.inputs(), views.visible

    def embedder(params, batch_stats, rng_state, dropout):
        def loss(params):
            model = nnx.merge(graphdef, params, *jax.tree.map(lambda x: x, (batch_stats, rng_state)))
            if not dropout:
                model.set_attributes(deterministic=True, raise_if_not_found=False)
            mean, stddev = model(inputs, visible)
            return jnp.sum(mean * 0.5) + jnp.sum(stddev * 0.25)  # any cotangent: the backward pass is the same
        return jax.grad(loss)(params)

    b, d, w = config.batch_size, config.model.embedding_dim, config.model.width
    dims = [config.model.input_dim] + [w] * (1 + 2 * config.model.num_blocks)
    weights = [jnp.full((i, o), 0.01, jnp.float32) for i, o in zip(dims[:-1], dims[1:])]
    weights.append(jnp.full((w, 2 * d), 0.01, jnp.float32))
    x0 = jnp.ones((2 * b, dims[0]), jnp.float32)

    def dense_only(weights, x):
        def loss(weights):
            h = x
            for m in weights[:-1]:
                h = jax.nn.relu(h @ m)
            return jnp.sum(h @ weights[-1])
        return jax.grad(loss)(weights)

    mean = jax.random.normal(key, (2 * b, d))
    stddev = jnp.full((2 * b, d), 0.3)

    def loss_stage(mean, stddev, a, bias, key):
        def loss(mean, stddev, a, bias):  # as prpose.objectives.embedding_loss calls it
            total, _ = pr_vipe_loss(mean[:b], stddev[:b], mean[b:], stddev[b:], a, bias, key, config.loss,
                                    config.model.num_samples, poses3d=views.poses3d, joint_mask=mask)
            return total
        return jax.grad(loss, argnums=(0, 1, 2, 3))(mean, stddev, a, bias)

    def update(grads, opt_state, params, ema_params, count):
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = ema_decay_at(config.ema_decay, count)
        return params, opt_state, jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)

    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), stage_state.params)
    out = {
        "batch + augmentation": (views_fn, (keys,)),
        "embedder fwd+bwd (MLP part)": (jax.jit(lambda *a: embedder(*a, True)),
                                        (stage_state.params, stage_state.batch_stats, stage_state.rng_state)),
        "  same without dropout": (jax.jit(lambda *a: embedder(*a, False)),
                                   (stage_state.params, stage_state.batch_stats, stage_state.rng_state)),
        "  its Dense layers alone": (jax.jit(dense_only), (weights, x0)),
        "loss fwd+bwd (mining, K x K)": (jax.jit(loss_stage), (mean, stddev, jnp.float32(1.0), jnp.float32(0.0), key)),
        "  (B, B) NP-MPJPE, not in step": (labels_fn, (views.poses3d, mask)),
        "optimizer + EMA": (jax.jit(update), (grads, stage_state.opt_state, stage_state.params, stage_ema["params"], stage_state.step)),
    }
    return out, (step, state, ema)


SUMMED = ("batch + augmentation", "embedder fwd+bwd (MLP part)", "loss fwd+bwd (mining, K x K)", "optimizer + EMA")


def xla_flops(fn, args) -> float:
    try:
        cost = fn.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # cost analysis is best effort (backend dependent)
        return float("nan")


def _timed(fn, calls: int):
    """(wall s, process CPU s) per call of fn() over ``calls`` calls."""
    import jax

    wall, cpu = time.perf_counter(), time.process_time()
    out = None
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def breakdown(config, arrays, rounds: int, calls: int, matmul_n: int):
    """Print the stage table of ``config`` and the MLP part's share of the matmul rate (by wall and CPU time)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    table, (step, state, ema) = stages(config, arrays)
    a = jax.random.normal(jax.random.key(0), (matmul_n, matmul_n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    table = {"matmul reference": (matmul, (a, a)), **table}
    flops = {name: xla_flops(fn, args) for name, (fn, args) in table.items()}
    flops["full step"] = xla_flops(step, (state, ema, arrays))
    for fn, args in table.values():
        jax.block_until_ready(fn(*args))  # compile
    box = {"state": state, "ema": ema}

    def run_step():
        box["state"], box["ema"], metrics = step(box["state"], box["ema"], arrays)
        return box["state"], metrics

    jax.block_until_ready(run_step())
    names = list(table) + ["full step"]
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            fn = run_step if name == "full step" else (lambda f=table[name][0], x=table[name][1]: f(*x))
            w, c = _timed(fn, 1 if name == "matmul reference" else calls)
            wall[name].append(w)
            cpu[name].append(c)
    med = {n: float(np.median(wall[n])) for n in names}
    med_cpu = {n: float(np.median(cpu[n])) for n in names}
    mlp_flops = 3 * 2 * config.batch_size * mlp_forward_flops(config.model)
    print(f"\nwidth {config.model.width}, blocks {config.model.num_blocks}, batch {config.batch_size}, "
          f"K {config.model.num_samples}, norm {config.model.norm}, dropout {config.model.dropout}, "
          f"labels_visible_only {config.loss.labels_visible_only}, optimizer {config.optimizer}")
    print(f"{'stage':<32} {'wall ms':>8} {'CPU ms':>8} {'% step':>7} {'XLA GFLOP':>10} {'GFLOP/s':>8}")
    summed = sum(med[n] for n in SUMMED)
    for name in names:
        gf = flops.get(name, float("nan")) / 1e9
        share = f"{100 * med[name] / med['full step']:6.0f}%" if name != "matmul reference" else ""
        print(f"{name:<32} {1e3 * med[name]:>8.2f} {1e3 * med_cpu[name]:>8.2f} {share:>7} {gf:>10.3f} "
              f"{gf / med[name]:>8.1f}")
    print(f"{'sum of the 4 stages':<32} {1e3 * summed:>8.2f} {1e3 * sum(med_cpu[n] for n in SUMMED):>8.2f}")
    print(f"{'full - sum (fusion, dispatch)':<32} {1e3 * (med['full step'] - summed):>8.2f}")
    for label, times in (("wall", med), ("CPU", med_cpu)):
        peak = 2 * matmul_n ** 3 / times["matmul reference"] / 1e9
        mlp = mlp_flops / times["embedder fwd+bwd (MLP part)"] / 1e9
        dense = mlp_flops / times["  its Dense layers alone"] / 1e9
        print(f"by {label} time: matmul {peak:.1f} GFLOP/s; MLP part ({mlp_flops / 1e9:.2f} GFLOP counted) "
              f"{mlp:.1f} GFLOP/s = {100 * mlp / peak:.0f}% of matmul (Dense layers alone {100 * dense / peak:.0f}%); "
              f"whole step {100 * mlp_flops / times['full step'] / 1e9 / peak:.0f}%, {1 / times['full step']:.1f} "
              f"steps/s, {config.batch_size / times['full step']:.0f} examples/s")


# --- op by op: the JAX profiler's trace of the full step (--profile) -------------------------------------------

# Named scopes of prpose.training.train_step (and the losses / model it calls), innermost first: the row an HLO
# op is charged to. "transpose(" in an op's name marks the backward pass (jax names the VJP's ops so).
SCOPE_ROWS = (
    ("dropout_rng", "dropout RNG (fwd)", None),
    ("mining", "mining (NP-MPJPE shortlist)", None),
    ("embedder", "embedder fwd", "embedder bwd"),
    ("loss", "loss fwd (samples, K x K)", "loss bwd"),
    ("augment", "batch + augmentation", None),
    ("optimizer", "optimizer", None),
    ("ema", "EMA", None),
)
OTHER_ROW = "other (keys, grad norm, metrics)"


class HloOp(NamedTuple):
    """One instruction of the compiled module: opcode, source op name (metadata), dot FLOPs inside it."""

    opcode: str
    op_name: str
    flops: float  # 2 * M * N * K summed over the dots it runs (a fusion: the dots fused into it); 0 otherwise
    kind: str  # matmul | rng | copy | fusion | control | other


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([^\s=]+) = ")


def _split_shape(text: str) -> tuple[str, str]:
    """'f32[2,3]{1,0} dot(...' or '(s32[], u32[4]{0}) while(...' -> (shape, rest)."""
    if text.startswith("("):
        depth = 0
        for i, ch in enumerate(text):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                return text[:i + 1], text[i + 1:].lstrip()
    shape, _, rest = text.partition(" ")
    return shape, rest


def _dims(shape: str) -> list[int]:
    match = re.match(r"\w+\[([\d,]*)\]", shape)
    return [int(d) for d in match.group(1).split(",") if d] if match else []


def parse_hlo(text: str) -> tuple[str, dict[str, HloOp]]:
    """(module name, {instruction name: HloOp}) of an optimised HLO module's text (``compiled.as_text()``).

    A fusion's FLOPs are those of the dots in the computations it calls (YNNPACK / Eigen matmul fusions).
    """
    module = re.search(r"^HloModule (\S+?),?\s", text, re.M).group(1)
    shapes, raw, computation, members = {}, {}, None, {}
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%(\S+) \(", line)
        if header:
            computation = header.group(1)
            members[computation] = []
            continue
        match = _INSTRUCTION.match(line)
        if not match or computation is None:
            continue
        name = match.group(1)
        shape, rest = _split_shape(line[match.end():])
        opcode = re.match(r"[\w-]+", rest).group(0)
        shapes[name] = shape
        raw[name] = (opcode, rest)
        members[computation].append(name)

    def own_flops(name):
        opcode, rest = raw[name]
        if opcode != "dot":
            return 0.0
        lhs = re.match(r"dot\(%([^\s,)]+)", rest).group(1)
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
        k = math.prod(_dims(shapes[lhs])[int(d)] for d in contracting.split(",") if d)
        return 2.0 * math.prod(_dims(shapes[name])) * k

    def fused_flops(computation):
        total = 0.0
        for name in members.get(computation, ()):
            total += own_flops(name)
            for called in re.findall(r"calls=%([\w.-]+)", raw[name][1]):
                total += fused_flops(called)
        return total

    ops = {}
    for name, (opcode, rest) in raw.items():
        op_name = re.search(r'op_name="([^"]*)"', rest)
        op_name = op_name.group(1) if op_name else ""
        flops = own_flops(name)
        if opcode == "fusion":
            flops += sum(fused_flops(c) for c in re.findall(r"calls=%([\w.-]+)", rest))
        if flops:
            kind = "matmul"
        elif "threefry" in op_name or "dropout_rng" in op_name or "random_bits" in op_name or "_uniform" in op_name:
            kind = "rng"
        elif opcode in ("copy", "copy-start", "copy-done", "transpose"):
            kind = "copy"
        elif opcode in ("while", "conditional", "call"):
            kind = "control"
        elif opcode == "fusion":
            kind = "fusion"
        else:
            kind = "other"
        ops[name] = HloOp(opcode, op_name, flops, kind)
    return module, ops


def stage_of(op_name: str) -> str:
    """The breakdown row of an HLO op from its source op name (named scopes; see SCOPE_ROWS)."""
    parts = set(re.split(r"[/()]", op_name))
    for scope, forward, backward in SCOPE_ROWS:
        if scope in parts:
            return backward if backward and "transpose(" in op_name else forward
    return OTHER_ROW


EXECUTOR = "XLA runtime (thunk executor, task scheduling)"


def _cpu_intervals(plane, module: str):
    """Per thread of the host plane: the time-ordered intervals [start ns, end ns, kind, value] and the
    thread-pool tasks' producers {id: (thread, ns)}; kinds: op (value: HLO op of ``module``), exec (the thunk
    executor), task (a thread-pool task; value: its id), wait (blocked: not CPU work)."""
    threads, producers = [], {}
    for index, line in enumerate(plane.lines):
        intervals, open_tasks = [], []
        for ev in sorted(line.events, key=lambda e: e.start_ns):
            stats = dict(ev.stats)
            start, end = ev.start_ns, ev.start_ns + ev.duration_ns
            if "hlo_op" in stats and stats.get("hlo_module") == module:
                intervals.append([start, end, "op", stats["hlo_op"], stats.get("run_id")])
            elif ev.name == "ThunkExecutor::Execute":
                intervals.append([start, end, "exec", None, None])
            elif ev.name.startswith("ThunkExecutor::Execute (wait") or ev.name.endswith("::Await"):
                intervals.append([start, end, "wait", None, None])
            elif ev.name == "ThreadpoolListener::Record":
                producers[stats["_p"]] = (index, start)
            elif ev.name == "ThreadpoolListener::StartRegion":
                open_tasks.append([start, None, "task", stats["_c"], None])
            elif ev.name == "ThreadpoolListener::StopRegion" and open_tasks:
                task = open_tasks.pop()
                task[1] = start
                intervals.append(task)
        threads.append(intervals)
    return threads, producers


def attribute_cpu_time(plane, module: str, cores: int):
    """CPU time (ns) per HLO op of ``module`` from a profiler XSpace's host plane, and the op's event count.

    XLA's CPU runtime writes one event per executed thunk (HLO op or fusion; a loop's body ops nest inside the
    loop's event) and marks thread-pool tasks (StartRegion / StopRegion, linked by id to the Record of the
    thread that scheduled them). Every moment of every thread is charged to the innermost interval running on
    it: an op's event to the op; a task to the op that scheduled it (an asynchronous matmul or a partitioned
    fusion running on the pool; tasks scheduled by tasks inherit their owner); the executor's own time and tasks
    it scheduled outside any op to EXECUTOR; blocked waits to nobody. When more threads are busy than ``cores``,
    each is charged its share (dt * cores / busy threads), so the total estimates the process's CPU time.

    Returns ({op or EXECUTOR: ns}, {op: events}, {run id: (first op start, last op end) ns}).
    """
    threads, producers = _cpu_intervals(plane, module)
    points = []  # (time, order, thread, interval); order: ends (0) before starts (1)
    for index, intervals in enumerate(threads):
        for interval in intervals:
            points.append((interval[0], 1, -(interval[1] - interval[0]), index, interval))
            points.append((interval[1], 0, 0, index, interval))
    for task, (index, time) in producers.items():
        points.append((time, 2, 0, index, task))  # a Record: resolved after the intervals open at that time
    points.sort(key=lambda p: p[:3])
    stacks = [[] for _ in threads]
    task_owner, charged, events, runs = {}, {}, {}, {}

    def owner(stack):
        for interval in reversed(stack):
            kind = interval[2]
            if kind == "op":
                return interval[3]
            if kind == "task":
                return task_owner.get(interval[3], EXECUTOR)
            if kind == "wait":
                return None
        return EXECUTOR if stack else None

    last = None
    for time, order, _, index, item in points:
        if last is not None and time > last:
            busy = [o for o in (owner(s) for s in stacks) if o is not None]
            share = (time - last) * min(1.0, cores / len(busy)) if busy else 0.0
            for o in busy:
                charged[o] = charged.get(o, 0.0) + share
        last = time
        if order == 2:
            task_owner[item] = owner(stacks[index]) or EXECUTOR
        elif order == 1:
            stacks[index].append(item)
            if item[2] == "op":
                events[item[3]] = events.get(item[3], 0) + 1
                start, end = runs.get(item[4], (math.inf, -math.inf))
                runs[item[4]] = (min(start, item[0]), max(end, item[1]))
        else:
            stacks[index].remove(item)
    return charged, events, runs


def profile_ops(run_step, steps: int, hlo_text: str, log_dir: str, perfetto: bool = False) -> dict:
    """Trace ``steps`` calls of ``run_step`` (each waited for) and charge the CPU time per HLO op.

    Returns {"ops": {name: (HloOp, events per step, ms per step charged)}, "executor_ms": the runtime's own ms
    per step, "span_ms": the mean span of one execution (first op start to last op end), "traced_wall",
    "traced_cpu": s per step while traced, "steps": steps}. The charges are thread time: with other processes
    on the machine they include the time a thread was runnable but preempted (print_profile rescales).
    """
    import jax

    module, hlo = parse_hlo(hlo_text)
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # the Python tracer costs more than small ops take
    with jax.profiler.trace(log_dir, create_perfetto_trace=perfetto, profiler_options=options):
        wall, cpu = _timed(lambda: jax.block_until_ready(run_step()), steps)
    paths = glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "*.xplane.pb"))
    if not paths:
        raise SystemExit(f"bench_train_step: the profiler wrote no *.xplane.pb under {log_dir}")
    plane = jax.profiler.ProfileData.from_file(max(paths, key=os.path.getmtime)).find_plane_with_name("/host:CPU")
    charged, events, runs = attribute_cpu_time(plane, module, len(os.sched_getaffinity(0)))
    if len(runs) != steps:
        raise SystemExit(f"bench_train_step: the trace holds {len(runs)} executions of {module}, expected {steps}")
    unknown = sorted(set(events) - set(hlo))
    if unknown:
        raise SystemExit(f"bench_train_step: traced ops not in the compiled module: {unknown[:5]}")
    ops = {name: (hlo[name], count / steps, charged.get(name, 0.0) / steps / 1e6) for name, count in events.items()}
    span = sum(end - start for start, end in runs.values()) / steps / 1e6
    return {"ops": ops, "executor_ms": charged.get(EXECUTOR, 0.0) / steps / 1e6, "span_ms": span, "steps": steps,
            "traced_wall": wall, "traced_cpu": cpu}


def stage_table(ops: dict) -> dict[str, dict]:
    """{row: {"events", "ms", "matmul_ms", "flops", "rng_ms", "copy_ms"}} per step, from profile_ops' "ops"."""
    rows: dict[str, dict] = {}
    for op, count, ms in ops.values():
        row = rows.setdefault(stage_of(op.op_name), dict(events=0.0, ms=0.0, matmul_ms=0.0, flops=0.0, rng_ms=0.0,
                                                          copy_ms=0.0))
        row["events"] += count
        row["ms"] += ms
        row["flops"] += op.flops * count
        if op.kind == "matmul":
            row["matmul_ms"] += ms
        elif op.kind in ("rng", "copy"):
            row[f"{op.kind}_ms"] += ms
    return rows


def print_profile(prof: dict, step_wall: float, step_cpu: float, peak: float, top: int) -> None:
    """The op-by-op tables: per stage, per kind of op, the ``top`` ops.

    The charged thread times are scaled to the untraced step's CPU time (``step_cpu``): on a shared machine a
    thread's time includes preemption by other processes, which inflates every op alike; the shares are what
    the trace measures.
    """
    charged = sum(ms for _, _, ms in prof["ops"].values()) + prof["executor_ms"]
    scale = 1e3 * step_cpu / charged
    ops = {name: (op, count, ms * scale) for name, (op, count, ms) in prof["ops"].items()}
    executor = prof["executor_ms"] * scale
    total = 1e3 * step_cpu
    print(f"op by op: jax.profiler trace of {prof['steps']} steps; thread time charged per HLO op (its thunk events "
          f"and the pool tasks it scheduled); matmul reference {peak:.1f} GFLOP/s by CPU time")
    print(f"untraced step: {1e3 * step_wall:.2f} ms wall, {1e3 * step_cpu:.2f} ms CPU; traced: "
          f"{1e3 * prof['traced_wall']:.2f} ms wall, {1e3 * prof['traced_cpu']:.2f} ms CPU (profiler overhead "
          f"{100 * (prof['traced_cpu'] / step_cpu - 1):+.0f}%), execution span {prof['span_ms']:.2f} ms; thread time "
          f"charged {charged:.2f} ms = {charged / 1e3 / prof['traced_cpu']:.2f} x the traced CPU time (> 1: "
          f"preempted by other processes); rows scaled to the untraced CPU time")
    print(f"{'stage':<34} {'ops':>5} {'CPU ms':>7} {'%':>5} {'matmul':>7} {'GFLOP':>6} {'GFLOP/s':>7} {'% peak':>6} "
          f"{'RNG':>6} {'copy':>6} {'other':>7}")
    rows = stage_table(ops)
    order = [r for _, f, b in SCOPE_ROWS for r in (f, b) if r] + [OTHER_ROW]
    for name in sorted(rows, key=order.index):
        r = rows[name]
        rate = f"{r['flops'] / 1e6 / r['matmul_ms']:>7.1f} {100 * r['flops'] / 1e6 / r['matmul_ms'] / peak:>5.0f}%" \
            if r["matmul_ms"] else " " * 14
        rest = r["ms"] - r["matmul_ms"] - r["rng_ms"] - r["copy_ms"]
        print(f"{name:<34} {r['events']:>5.0f} {r['ms']:>7.2f} {100 * r['ms'] / total:>4.1f}% {r['matmul_ms']:>7.2f} "
              f"{r['flops'] / 1e9:>6.2f} {rate} {r['rng_ms']:>6.2f} {r['copy_ms']:>6.2f} {rest:>7.2f}")
    print(f"{EXECUTOR[:34]:<34} {'':>5} {executor:>7.2f} {100 * executor / total:>4.1f}%")
    print(f"{'total':<34} {sum(r['events'] for r in rows.values()):>5.0f} {total:>7.2f}")
    kinds: dict[str, list[float]] = {}
    for op, count, ms in ops.values():
        k = kinds.setdefault(op.kind, [0.0, 0.0, 0.0])
        k[0] += count
        k[1] += ms
        k[2] += op.flops * count
    print("by kind: " + "; ".join(f"{k} {v[1]:.2f} ms ({100 * v[1] / total:.0f}%, {v[0]:.0f} ops"
                                  + (f", {v[2] / 1e6 / v[1]:.1f} GFLOP/s" if v[2] else "") + ")"
                                  for k, v in sorted(kinds.items(), key=lambda kv: -kv[1][1])))
    if top:
        print(f"{'HLO op (top ' + str(top) + ' by CPU time)':<34} {'kind':<7} {'n':>3} {'CPU ms':>7} {'%':>5} "
              f"{'GFLOP':>6} {'GFLOP/s':>7}  stage / source op")
    for name, (op, count, ms) in sorted(ops.items(), key=lambda kv: -kv[1][2])[:top]:
        rate = f"{op.flops * count / 1e6 / ms:7.1f}" if op.flops else " " * 7
        source = op.op_name.replace("jit(train_step)/", "")
        print(f"{name[:34]:<34} {op.kind:<7} {count:>3.0f} {ms:>7.3f} {100 * ms / total:>4.1f}% "
              f"{op.flops * count / 1e9:>6.3f} {rate}  {stage_of(op.op_name)} / {source[-56:]}")


def profile(config, arrays, steps: int, matmul_n: int, top: int, trace_dir: str | None = None) -> dict:
    """Time the full step (wall, CPU) and the matmul reference, then trace ``steps`` steps and print the
    op-by-op tables. Returns profile_ops' result with "wall" and "cpu" (s per step) added."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    step, state, ema, _, _ = step_function(config)
    compiled = step.lower(state, ema, arrays).compile()
    hlo_text, hlo_temp_bytes = compiled.as_text(), compiled.memory_analysis().temp_size_in_bytes
    box = {"state": state, "ema": ema}

    def run_step():
        box["state"], box["ema"], metrics = step(box["state"], box["ema"], arrays)
        return box["state"], metrics

    a = jax.random.normal(jax.random.key(0), (matmul_n, matmul_n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    for _ in range(2):
        jax.block_until_ready((run_step(), matmul(a, a)))
    times, kernel = [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF)
        times.append((_timed(lambda: matmul(a, a), 1), _timed(run_step, steps)))
        after = resource.getrusage(resource.RUSAGE_SELF)
        kernel.append(((after.ru_minflt - before.ru_minflt) / steps, (after.ru_stime - before.ru_stime) / steps))
    peak = float(np.median([2 * matmul_n ** 3 / t[0][1] / 1e9 for t in times]))  # by CPU time
    wall, cpu = (float(np.median([t[1][i] for t in times])) for i in (0, 1))
    faults, system = (float(np.median([k[i] for k in kernel])) for i in (0, 1))
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = trace_dir or tmp
        prof = profile_ops(run_step, steps, hlo_text, log_dir, perfetto=bool(trace_dir))
        if trace_dir:
            with open(os.path.join(trace_dir, "train_step.hlo.txt"), "w") as f:
                f.write(hlo_text)
    print(f"\nwidth {config.model.width}, batch {config.batch_size}, {len(os.sched_getaffinity(0))} core(s) visible to XLA")
    print(f"page faults {faults:.0f} per step (+ matmul reference), kernel time {1e3 * system:.2f} ms per step "
          f"(the step's temporary buffer: {hlo_temp_bytes / 2 ** 20:.1f} MB)")
    print_profile(prof, wall, cpu, peak, top)
    return dict(prof, wall=wall, cpu=cpu, peak=peak, faults=faults, system=system)


# --- old vs new, interleaved -----------------------------------------------------------------------------------

def worker(args) -> int:
    """Serve timings of the train step of the prpose at args.worker: one line per request on stdin."""
    sys.path.insert(0, args.worker)
    import jax

    import prpose

    config = make_config(args, args.width[0] if args.width else None, args.batch[0] if args.batch else None)
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:  # stdout: replies only
        arrays, _ = load_arrays(args.data, config, tmp)
        step, state, ema, _, _ = step_function(config)
        state, ema, metrics = step(state, ema, arrays)
        jax.block_until_ready(metrics)
    print(f"ready {os.path.dirname(prpose.__file__)}", flush=True)
    for line in sys.stdin:
        calls = int(line)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            state, ema, metrics = step(state, ema, arrays)
        jax.block_until_ready((state, metrics))
        print(f"{(time.perf_counter() - wall) / calls} {(time.process_time() - cpu) / calls}", flush=True)
    return 0


def against(args, ref: str) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        old_src = os.path.join(tmp, "old")
        os.makedirs(old_src)
        archive = subprocess.run(["git", "-C", ROOT, "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old_src], input=archive, check=True)
        common = [sys.executable, os.path.abspath(__file__), "--preset", args.preset, "--threads", str(args.threads)]
        common += ["--set", *args.set] if args.set else []
        common += ["--data", args.data] if args.data else []
        common += ["--width", str(args.width[0])] if args.width else []
        common += ["--batch", str(args.batch[0])] if args.batch else []
        procs = {}
        for name, src in (("old", old_src), ("new", ROOT)):
            procs[name] = subprocess.Popen(common + ["--worker", src], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True, env=dict(os.environ, PYTHONPATH=src))
        for name, p in procs.items():
            line = p.stdout.readline().split()
            if not line or line[0] != "ready":
                for q in procs.values():
                    q.kill()
                raise SystemExit(f"bench_train_step: the {name} worker did not start (see its error above)")
            print(f"{name}: {ref if name == 'old' else 'this checkout'} ({line[1]})")
        times = {name: [] for name in procs}
        for r in range(args.rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                procs[name].stdin.write(f"{args.calls}\n")
                procs[name].stdin.flush()
                times[name].append(tuple(map(float, procs[name].stdout.readline().split())))
        for p in procs.values():
            p.stdin.close()
            p.wait()
    med = {n: np.median(np.array(t), axis=0) for n, t in times.items()}
    for name in ("old", "new"):
        print(f"{name}: {1e3 * med[name][0]:.2f} ms/step wall ({1 / med[name][0]:.1f} steps/s), "
              f"{1e3 * med[name][1]:.2f} ms/step CPU")
    ratios = np.array([o[0] / n[0] for o, n in zip(times["old"], times["new"])])
    print(f"new/old steps/s: {med['old'][0] / med['new'][0]:.2f}x wall (per round {ratios.min():.2f}-"
          f"{ratios.max():.2f}), {med['old'][1] / med['new'][1]:.2f}x CPU time; {args.rounds} rounds of "
          f"{args.calls} steps")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="config preset (paper: width 1024, batch 256; cpu)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--width", type=int, nargs="+", default=None, help="model widths (default: the preset's)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=7, help="round-robin timing rounds (median)")
    parser.add_argument("--calls", type=int, default=10, help="calls per stage per round")
    parser.add_argument("--matmul", type=int, default=2048, help="N of the reference N x N matmul")
    parser.add_argument("--threads", type=int, default=0, help="1: single-threaded XLA (stable CPU times)")
    parser.add_argument("--data", default=None, help="prepared dataset (default: small synthetic, generated)")
    parser.add_argument("--against", default=None, metavar="GIT_REF",
                        help="also time the step of this git revision vs this checkout, interleaved")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="also trace STEPS full steps with the JAX profiler and print the op-by-op tables")
    parser.add_argument("--no-stages", action="store_true", help="skip the stage-by-stage table")
    parser.add_argument("--top", type=int, default=25, help="HLO ops listed by --profile")
    parser.add_argument("--trace-dir", default=None, help="keep --profile's trace (Perfetto, TensorBoard) and the "
                        "step's optimised HLO (train_step.hlo.txt) here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    if args.worker:
        return worker(args)
    sys.path.insert(0, ROOT)
    import jax

    print(f"devices: {jax.devices()} ({os.cpu_count()} CPUs visible, XLA threads: "
          f"{'1' if args.threads == 1 else 'default'}); load: {os.getloadavg()[0]:.1f} (1 min)")
    with tempfile.TemporaryDirectory() as tmp:
        arrays, report = load_arrays(args.data, make_config(args), tmp)
    print(f"data: {report.summary()}")
    for width in args.width or [None]:
        for batch in args.batch or [None]:
            if not args.no_stages:
                breakdown(make_config(args, width, batch), arrays, args.rounds, args.calls, args.matmul)
            if args.profile:
                profile(make_config(args, width, batch), arrays, args.profile, args.matmul, args.top,
                        args.trace_dir and os.path.join(args.trace_dir, f"w{width or 'preset'}_b{batch or 'preset'}"))
    if args.against:
        print(f"\nsteps/s: {args.against} vs this checkout (two worker processes taking turns)")
        against(args, args.against)
    print(f"load after: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
