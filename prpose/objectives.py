"""What the trainer optimises: the model it builds and the loss it minimises (the trainer's one seam).

``prpose.training`` samples a batch, augments the two views of every example (cameras, detector noise,
occlusion) and hands the result, a :class:`Views`, to the run's :class:`Objective`; everything task-specific
lives here. ``get_objective(config)`` picks it by ``config.task``:

* ``"embedding"``: Pr-VIPE (``loss.embedding="probabilistic"``) or the L2-VIPE ablation (``"l2"``). Anchors
  and positives go through the embedder in one call (shared weights, one batch-norm batch); negatives are
  mined on the embedding means with the NP-MPJPE of the 3D labels (prpose.losses.pr_vipe_loss, prpose.mining).
* ``"lifting"``: the 3D-lifting baseline (Martinez et al.): the same encoder (prpose.model.PoseLifter)
  regresses the normalised 3D pose of both views; loss = mean squared error on the normalised coordinates.
  Same data, augmentation, optimiser, schedule and budget as the embedding run of the same config, so the
  comparison in ``prpose eval`` is fair.

An objective is plain data: ``build_model(model_config, window, seed) -> nnx.Module`` (prpose.model) and a
pure ``loss(model, views, key, config) -> (scalar loss, metrics)`` traced inside the jitted step under
``jax.value_and_grad`` (model in train mode; metrics: dict of scalars, "loss" included).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from prpose.model import build_lifter, build_model


class Views(NamedTuple):
    """The augmented training inputs of one batch (B examples; windows add a T axis after B).

    anchor2d, positive2d: (B, J, 2) normalised keypoints of the model's input profile, two views of each pose.
    visible: (2B, J) bool joints present in the anchors then the positives, or None (no occlusion, no detections).
    anchor_visible3d: (B, 17) the anchors' visible joints mapped to h36m17, or None.
    poses3d: (B, 17, 3) normalised h36m17 3D poses (the label).
    """

    anchor2d: jax.Array
    positive2d: jax.Array
    visible: jax.Array | None
    anchor_visible3d: jax.Array | None
    poses3d: jax.Array

    def inputs(self) -> jax.Array:
        """(2B, J, 2) anchors then positives: one model call, shared weights, one batch-norm batch."""
        return jnp.concatenate([self.anchor2d, self.positive2d])


@dataclasses.dataclass(frozen=True)
class Objective:
    """A task of the trainer.

    name: the config's ``task``.
    build_model: ``(model_config, window, seed) -> nnx.Module``, a fresh model.
    loss: ``(model, views, key, config) -> (loss, metrics)``, pure and jittable.
    progress: (label, metric, format) shown on the progress bar.
    embeds: the model is a pose embedder (validated cross-view during training; ``load_model`` loads it).
    """

    name: str
    build_model: Callable[..., Any]
    loss: Callable[..., tuple[jax.Array, dict]]
    progress: tuple[tuple[str, str, str], ...]
    embeds: bool


def embedding_loss(model, views: Views, key, config):
    """Pr-VIPE / L2-VIPE: mining on means with the labels' NP-MPJPE, K samples, K x K distances for the chosen
    triplets (prpose.losses.pr_vipe_loss). Adds the match parameters ``a``, ``b`` to the metrics."""
    from prpose.losses import pr_vipe_loss

    # Labels for mining: NP-MPJPE between the 3D poses (window: averaged over frames), optionally on the joints
    # the anchors show; prpose.mining computes only the pairs that decide the pick (same picks as the full
    # (B, B) matrix). No gradient.
    joint_mask = views.anchor_visible3d if config.loss.labels_visible_only else None
    with jax.named_scope("embedder"):  # the rows of bench/bench_train_step.py --profile
        mean, stddev = model(views.inputs(), views.visible)
    b = views.anchor2d.shape[0]
    with jax.named_scope("loss"):
        a_match, b_match = model.match_params()
        loss, metrics = pr_vipe_loss(mean[:b], stddev[:b], mean[b:], stddev[b:], a_match, b_match, key,
                                     config.loss, config.model.num_samples,
                                     poses3d=jax.lax.stop_gradient(views.poses3d), joint_mask=joint_mask)
    return loss, dict(metrics, a=a_match, b=b_match)


def lifting_loss(model, views: Views, key, config):
    """Mean squared error of the lifted normalised 3D pose of both views; ``mpjpe``: mean joint error (same units)."""
    del key, config
    target = jnp.concatenate([views.poses3d, views.poses3d])
    error = model(views.inputs(), views.visible) - target
    mse = jnp.mean(error ** 2)
    return mse, {"loss": mse, "mpjpe": jax.lax.stop_gradient(jnp.linalg.norm(error, axis=-1).mean())}


OBJECTIVES = {
    "embedding": Objective(
        "embedding", build_model, embedding_loss,
        progress=(("loss", "loss", ".3f"), ("trip", "triplet", ".3f"), ("active", "active_fraction", ".2f"),
                  ("a", "a", ".2f"), ("b", "b", ".2f")),
        embeds=True),
    "lifting": Objective(
        "lifting", build_lifter, lifting_loss, progress=(("mse", "loss", ".4f"), ("mpjpe", "mpjpe", ".3f")),
        embeds=False),
}


def get_objective(config) -> Objective:
    """The Objective of a TrainConfig (``config.task``; the config checks the name)."""
    return OBJECTIVES[config.task]


__all__ = ["Views", "Objective", "OBJECTIVES", "get_objective", "embedding_loss", "lifting_loss"]
