"""The 3D-lifting baseline: the same backbone, trained with the same data and budget to regress 3D from 2D.

The paper's strongest non-embedding baseline: lift each 2D pose to a normalised 3D pose, then retrieve by
NP-MPJPE between lifted poses (eval.baselines.LiftingMethod). The training loop (prpose.training) trains
embeddings only, so this small trainer reuses its pieces to keep the comparison fair: the model is
prpose.model.Embedder built from the run's ModelConfig with a 51-unit mean head (17 joints x 3, the stddev head
is unused), batches come from prpose.pairs.sample_batch (both views of a frame are training examples), camera
augmentation is prpose.augment.camera_augment with the same AugmentConfig, and the optimiser, schedule, steps,
batch size and weight EMA are the TrainConfig's. Loss: mean squared error on normalised 3D coordinates
(Martinez et al.).

A lifter run directory holds `lifter_config.json` (the TrainConfig) and `lifter_weights.npz` (EMA weights and
batch statistics, as leaves in the model's state order).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np

from prpose.errors import PrposeError

CONFIG_FILE = "lifter_config.json"
WEIGHTS_FILE = "lifter_weights.npz"


def _lifter_model_config(config):
    # A 51-d "embedding" is the flattened 3D pose; no mask input, since the lifter is trained on full views.
    return dataclasses.replace(config.model, embedding_dim=51)


def train_lifter(config, data_dir, workdir, log=print) -> dict:
    """Train the lifting baseline with `config` (prpose.config.TrainConfig) on the train split of `data_dir`.

    Writes the run into `workdir`; returns {"steps", "seconds", "final_loss", "losses"}.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from prpose.augment import camera_augment
    from prpose.dataset import load_dataset
    from prpose.inference import build_model
    from prpose.pairs import load_train_arrays, sample_batch
    from prpose.training import ema_decay_at, make_optimizer

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    arrays, report = load_train_arrays(load_dataset(data_dir), "train")
    log(f"lifter: {report.summary()}")
    model = build_model(_lifter_model_config(config), 1, seed=config.seed)
    model.train()
    graphdef, params, batch_stats, rng_state = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    ema = {"params": jax.tree.map(jnp.copy, params), "batch_stats": jax.tree.map(jnp.copy, batch_stats)}
    aug = config.augment
    b = config.batch_size

    @jax.jit
    def step(params, batch_stats, rng_state, opt_state, ema, i, key):
        key = jax.random.fold_in(key, i)
        k_batch, k_a, k_p = jax.random.split(key, 3)
        batch = sample_batch(k_batch, arrays, b)
        a2d, p2d = batch.anchor2d, batch.positive2d
        if aug.projection_probability > 0:
            a2d = camera_augment(a2d, batch.poses3d, k_a, aug)
            p2d = camera_augment(p2d, batch.poses3d, k_p, aug)
        inputs = jnp.concatenate([a2d, p2d])
        target = jnp.concatenate([batch.poses3d, batch.poses3d]).reshape(2 * b, 51)

        def loss_fn(params, batch_stats, rng_state):
            batch_stats, rng_state = jax.tree.map(lambda x: x, (batch_stats, rng_state))
            m = nnx.merge(graphdef, params, batch_stats, rng_state)
            pred, _ = m(inputs, None)
            _, _, new_stats, new_rng = nnx.split(m, nnx.Param, nnx.BatchStat, ...)
            return jnp.mean((pred - target) ** 2), (new_stats, new_rng)

        (loss, (batch_stats, rng_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, rng_state)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = ema_decay_at(config.ema_decay, i)
        ema = {"params": jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema["params"], params),
               "batch_stats": batch_stats}
        return params, batch_stats, rng_state, opt_state, ema, loss

    key = jax.random.key(config.seed + 1)
    start, losses = time.perf_counter(), []
    every = max(1, config.steps // 20)
    for i in range(config.steps):
        params, batch_stats, rng_state, opt_state, ema, loss = step(
            params, batch_stats, rng_state, opt_state, ema, jnp.int32(i), key)
        if (i + 1) % every == 0 or i + 1 == config.steps:
            losses.append((i + 1, float(loss)))
            log(f"lifter: step {i + 1}/{config.steps} mse {float(loss):.4f} ({time.perf_counter() - start:.0f} s)")
    leaves = jax.tree.leaves((ema["params"], ema["batch_stats"]))
    np.savez(workdir / WEIGHTS_FILE, *[np.asarray(x) for x in leaves])
    (workdir / CONFIG_FILE).write_text(config.to_json())
    seconds = time.perf_counter() - start
    return {"steps": config.steps, "seconds": round(seconds, 1), "final_loss": losses[-1][1], "losses": losses}


class Lifter:
    """A trained lifter: `lift(keypoints (M, 13, 2), visible (M, 13)) -> (M, 17, 3)` normalised 3D."""

    def __init__(self, run_dir):
        import jax
        from flax import nnx

        from prpose.config import TrainConfig
        from prpose.inference import build_model

        run_dir = pathlib.Path(run_dir)
        cfg_path, w_path = run_dir / CONFIG_FILE, run_dir / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise PrposeError(f"{run_dir}: not a lifter run (expected {CONFIG_FILE} and {WEIGHTS_FILE}; train one "
                              f"with `prpose eval --train-lifter`)")
        self.config = TrainConfig.from_json(cfg_path.read_text(), source=str(cfg_path))
        model = build_model(_lifter_model_config(self.config), 1, seed=self.config.seed)
        model.eval()
        graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        treedef = jax.tree.structure((params, batch_stats))
        with np.load(w_path) as z:
            leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
        if len(leaves) != treedef.num_leaves:
            raise PrposeError(f"{w_path}: {len(leaves)} arrays, the model of {cfg_path} needs {treedef.num_leaves}")
        params, batch_stats = jax.tree.unflatten(treedef, leaves)
        self._model = nnx.merge(graphdef, params, batch_stats, rest)
        self._forward = nnx.jit(lambda m, x: m(x, None)[0])
        self.name = f"3D lifting ({run_dir.name})"

    def lift(self, keypoints2d, visible) -> np.ndarray:
        from prpose.eval.baselines import normalized_2d_features

        x = normalized_2d_features(keypoints2d, visible).reshape(-1, 13, 2)
        out = []
        for s in range(0, len(x), 4096):
            chunk = x[s:s + 4096]
            pad = np.zeros((4096 - len(chunk), 13, 2), np.float32)  # one compiled shape
            out.append(np.asarray(self._forward(self._model, np.concatenate([chunk, pad])))[:len(chunk)])
        return np.concatenate(out).reshape(-1, 17, 3) if out else np.zeros((0, 17, 3), np.float32)

