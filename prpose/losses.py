"""Pr-VIPE training losses (Sun et al. 2020, Sec. 3.2-3.3), plus the L2-VIPE ablation's triplet loss.

total = triplet_weight * triplet ratio loss
      + positive_weight * mean d(anchor, positive)
      + kl_weight * KL(N(mu, sigma^2) || N(0, I))
where d = -log P is the match distance of prpose.matching. The triplet ratio loss
relu(d(a, p) - d(a, n) + log beta) asks the positive pair to be at least beta times as likely to match as the
negative pair (P(a,p) / P(a,n) >= beta). It is averaged over the ACTIVE triplets only (non-zero loss, the
count taken without gradient), so the loss does not fade as most triplets become easy.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from prpose.errors import PrposeError
from prpose.matching import match_distance, sample_embeddings
from prpose.mining import STRATEGIES, mine_negatives


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss and mining settings (saved with every checkpoint; the config module imports this class).

    beta: ratio of the triplet ratio loss; the margin is log(beta) (paper: 2 -> ln 2 ~ 0.693).
    triplet_weight, positive_weight (paper 0.005), kl_weight (paper 0.001): loss weights.
    smoothing: s of the match probability, (1-s) sigmoid(.) + s/2 (paper: 0.1).
    kappa: NP-MPJPE threshold; poses at >= kappa are negatives (paper: 0.1).
    mining: "semi_hard" (paper), "hardest" or "random".
    embedding: "probabilistic" (Pr-VIPE) or "l2" (the deterministic L2-VIPE ablation: means only,
        plain L2 triplet loss with `l2_margin`; the positive and KL terms are not used).
    l2_margin: margin of the L2-VIPE triplet loss, in embedding units.
    labels_visible_only: with keypoint occlusion in training, compare 3D labels for mining on the joints the
        anchor's 2D input shows (IJCV): a pose hidden below the waist matches any legs.
    """

    beta: float = 2.0
    triplet_weight: float = 1.0
    positive_weight: float = 0.005
    kl_weight: float = 0.001
    smoothing: float = 0.1
    kappa: float = 0.1
    mining: str = "semi_hard"
    embedding: str = "probabilistic"
    l2_margin: float = 1.0
    labels_visible_only: bool = False

    def __post_init__(self):
        def bad(field, expected):
            raise PrposeError(f"LossConfig.{field}: got {getattr(self, field)!r}, expected {expected}")

        def number(field):
            value = getattr(self, field)
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not number("beta") or self.beta <= 1.0:
            bad("beta", "a number > 1 (the positive pair must be beta times as likely to match)")
        for field in ("triplet_weight", "positive_weight", "kl_weight", "l2_margin"):
            if not number(field) or getattr(self, field) < 0:
                bad(field, "a non-negative number")
        if not number("smoothing") or not 0.0 <= self.smoothing < 1.0:
            bad("smoothing", "a number in [0, 1)")
        if not number("kappa") or self.kappa <= 0:
            bad("kappa", "a positive NP-MPJPE threshold (paper: 0.1)")
        if self.mining not in STRATEGIES:
            bad("mining", f"one of {STRATEGIES}")
        if self.embedding not in ("probabilistic", "l2"):
            bad("embedding", "'probabilistic' or 'l2'")
        if not isinstance(self.labels_visible_only, bool):
            bad("labels_visible_only", "true or false")


def _active_mean(per_triplet, valid):
    """Mean of per-triplet losses over valid triplets with a non-zero loss; the count has no gradient.

    Returns (loss, active_fraction = active / valid, number of valid triplets).
    """
    valid = jnp.asarray(valid, bool)
    per_triplet = jnp.where(valid, per_triplet, 0.0)
    active = jax.lax.stop_gradient((per_triplet > 0) & valid).astype(per_triplet.dtype)
    num_active = active.sum()
    num_valid = valid.sum().astype(per_triplet.dtype)
    loss = per_triplet.sum() / jnp.maximum(num_active, 1.0)  # 0 (not NaN) when nothing is active
    return loss, num_active / jnp.maximum(num_valid, 1.0), num_valid


def triplet_ratio_loss(d_anchor_positive, d_anchor_negative, valid, beta: float = 2.0):
    """relu(d(a,p) - d(a,n) + log beta) averaged over active, valid triplets.

    d_anchor_positive, d_anchor_negative: (B,) match distances; valid: (B,) bool (False = no negative mined).
    Returns (loss scalar, active_fraction scalar = active / valid triplets).
    """
    per = jax.nn.relu(d_anchor_positive - d_anchor_negative + jnp.log(beta))
    loss, active_fraction, _ = _active_mean(per, valid)
    return loss, active_fraction


def positive_pairwise_loss(d_anchor_positive):
    """Mean d(anchor, positive) over the batch: (B,) -> scalar (pulls matching views together)."""
    return jnp.mean(d_anchor_positive)


def kl_to_standard_normal(mean, stddev):
    """KL(N(mean, diag stddev^2) || N(0, I)) summed over dimensions, averaged over rows: (B, D) x2 -> scalar.

    Closed form per dimension: (sigma^2 + mu^2 - 1) / 2 - log sigma.
    """
    per_dim = 0.5 * (jnp.square(stddev) + jnp.square(mean) - 1.0) - jnp.log(stddev)
    return jnp.mean(jnp.sum(per_dim, axis=-1))


def l2_triplet_loss(anchor, positive, negative, valid, margin: float = 1.0):
    """L2-VIPE ablation: relu(||a - p|| - ||a - n|| + margin), averaged over active, valid triplets.

    anchor, positive, negative: (B, D) deterministic embeddings; valid: (B,) bool.
    Returns (loss, active_fraction).
    """
    from prpose.matching import safe_l2_distance

    per = jax.nn.relu(safe_l2_distance(anchor, positive) - safe_l2_distance(anchor, negative) + margin)
    loss, active_fraction, _ = _active_mean(per, valid)
    return loss, active_fraction


def pr_vipe_loss(
    anchor_mean,
    anchor_stddev,
    positive_mean,
    positive_stddev,
    a,
    b,
    key,
    config: LossConfig,
    num_samples: int,
    *,
    poses3d=None,
    pose_distances=None,
    joint_mask=None,
):
    """The whole Pr-VIPE objective for one batch: mining, sampling, match distances, losses.

    anchor_mean, anchor_stddev, positive_mean, positive_stddev: (B, D) model outputs for the two views.
    a, b: match parameters (model.match_params()); key: jax PRNG key (sampling, random mining).
    config: LossConfig; num_samples: K (ModelConfig.num_samples).
    poses3d: (B, 17, 3) normalised 3D poses, or pose_distances: precomputed (B, B) NP-MPJPE; joint_mask:
        optional (B, 17) usable-joint mask for the labels (see prpose.mining).
    The negative of anchor i is the positive of batch item j (mined on embedding means), so the positive
    samples are drawn once and the negatives gathered from them; only the chosen (B,) pairs get the K x K
    sample distance.
    Returns (total loss scalar, metrics dict of scalars: loss, triplet, positive, kl, active_fraction,
    valid_fraction, d_positive, d_negative (mean over valid triplets), stddev (mean sigma)).
    With config.embedding == "l2" the stddevs are ignored (may be None) and the L2 triplet loss is used.
    """
    if not isinstance(config, LossConfig):
        raise PrposeError(f"pr_vipe_loss: config is {type(config).__name__}, expected prpose.losses.LossConfig")
    sample_key, a_key, mine_key = jax.random.split(key, 3)
    with jax.named_scope("mining"):
        negative_index, valid = mine_negatives(
            anchor_mean,
            positive_mean,
            poses3d,
            kappa=config.kappa,
            strategy=config.mining,
            key=mine_key,
            pose_distances=pose_distances,
            joint_mask=joint_mask,
        )
    valid_f = valid.astype(jnp.float32)
    valid_fraction = valid_f.mean()

    if config.embedding == "l2":
        negative_mean = positive_mean[negative_index]
        triplet, active_fraction = l2_triplet_loss(anchor_mean, positive_mean, negative_mean, valid, config.l2_margin)
        total = config.triplet_weight * triplet
        return total, {
            "loss": total,
            "triplet": triplet,
            "active_fraction": active_fraction,
            "valid_fraction": valid_fraction,
        }

    anchor_samples = sample_embeddings(anchor_mean, anchor_stddev, a_key, num_samples)  # (B, K, D)
    positive_samples = sample_embeddings(positive_mean, positive_stddev, sample_key, num_samples)
    negative_samples = positive_samples[negative_index]
    s = config.smoothing
    d_pos = match_distance(anchor_samples, positive_samples, a, b, s)  # (B,)
    d_neg = match_distance(anchor_samples, negative_samples, a, b, s)  # (B,)

    triplet, active_fraction = triplet_ratio_loss(d_pos, d_neg, valid, config.beta)
    positive = positive_pairwise_loss(d_pos)
    # The prior regularises every embedding the model produced in the step: anchors and positives.
    kl = kl_to_standard_normal(
        jnp.concatenate([anchor_mean, positive_mean]), jnp.concatenate([anchor_stddev, positive_stddev])
    )
    total = config.triplet_weight * triplet + config.positive_weight * positive + config.kl_weight * kl
    num_valid = jnp.maximum(valid_f.sum(), 1.0)
    metrics = {
        "loss": total,
        "triplet": triplet,
        "positive": positive,
        "kl": kl,
        "active_fraction": active_fraction,
        "valid_fraction": valid_fraction,
        "d_positive": jax.lax.stop_gradient(d_pos.mean()),
        "d_negative": jax.lax.stop_gradient((d_neg * valid_f).sum() / num_valid),
        "stddev": jax.lax.stop_gradient(jnp.concatenate([anchor_stddev, positive_stddev]).mean()),
    }
    return total, metrics
