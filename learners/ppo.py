"""PPO (spec §13.5; reference ``LLM_RL/algorithms/ppo/{base_interface,gpt2/interface}.py``).

Rollout side (``ppo_rollout_targets``):

- per-token reward = env reward (on each action's last token) ``- kl_coef * (log pi - log pi_init)`` on every
  action token;
- GAE over the action tokens of a row (gamma, lambda): the next state of an action token is the next action
  token; after the last one it is V at the row's last real token, times ``(1 - done)``;
  returns = advantages + V; advantages whitened over all action tokens of the batch.

Loss side (``ppo_loss``), normalised by the number of action tokens:
``pg = max(-A * ratio, -A * clip(ratio, 1 +- clip))``,
``vf = 0.5 * max((V - R)^2, (clip(V, V_old +- value_clip) - R)^2)``,
``loss = pg + value_loss_coef * vf (+ bc_loss_weight * BC on an offline batch)``. No entropy bonus (the
reference has none).

KL coefficient: fixed ``init_kl_coef``, or the adaptive controller of Ziegler et al. (``adaptive_kl_coef``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learners.bc import bc_loss
from learners.common import action_count, aligned_mask, logits_of, token_logprobs

WHITEN_EPS = 1e-8


def kl_penalized_rewards(rewards: jax.Array, logprobs: jax.Array, ref_logprobs: jax.Array, mask: jax.Array,
                         kl_coef: float) -> jax.Array:
    """``rewards - kl_coef * (logprobs - ref_logprobs) * mask`` (aligned ``[B, L]``)."""
    return rewards - kl_coef * (logprobs - ref_logprobs) * mask.astype(rewards.dtype)


def kl_k3(logprobs: jax.Array, ref_logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over action tokens of ``exp(d) - 1 - d`` with ``d = log pi - log pi_ref`` (the reference's KL log)."""
    d = (logprobs - ref_logprobs) * mask
    return ((jnp.exp(d) - 1.0 - d) * mask).sum() / action_count(mask)


def gae(rewards: jax.Array, values: jax.Array, action_mask: jax.Array, last_value: jax.Array, *,
        gamma: float, lam: float, token_dones: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """GAE over the action positions of each row; returns ``(advantages, returns)``, 0 off actions.

    ``rewards, values, action_mask [B, L]`` aligned; ``last_value [B]`` is the value after the row's last
    action (the caller applies ``(1 - done)``). Positions without an action are skipped, so the discount is
    per action token. ``token_dones [B, L]`` (optional, not in the reference) cuts the recursion after an
    action token that ended an episode, for rows holding several episodes.
    """
    act = action_mask.astype(bool)
    dones = jnp.zeros_like(act) if token_dones is None else token_dones.astype(bool)

    def body(carry, x):
        last_adv, next_v = carry
        r, v, a, d = x
        cont = 1.0 - d.astype(jnp.float32)
        delta = r + gamma * next_v * cont - v
        adv = delta + gamma * lam * cont * last_adv
        carry = (jnp.where(a, adv, last_adv), jnp.where(a, v, next_v))
        return carry, jnp.where(a, adv, 0.0)

    def t_first(x):
        return jnp.moveaxis(x, -1, 0)

    init = (jnp.zeros(last_value.shape, jnp.float32), last_value.astype(jnp.float32))
    xs = (t_first(rewards.astype(jnp.float32)), t_first(values.astype(jnp.float32)), t_first(act), t_first(dones))
    _, adv = jax.lax.scan(body, init, xs, reverse=True)
    adv = jnp.moveaxis(adv, 0, -1)
    returns = jnp.where(act, adv + values, 0.0)
    return adv, returns


def whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True) -> jax.Array:
    """Whiten ``x`` with the mean and (population) variance of its masked entries; 0 off the mask."""
    mask = mask.astype(jnp.float32)
    n = action_count(mask)
    mean = (x * mask).sum() / n
    var = (((x - mean) ** 2) * mask).sum() / n
    out = (x - mean) * jax.lax.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        out = out + mean
    return out * mask


def last_real_value(values_full: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """V at the last real (non-padding) token of each row. ``values_full, attention_mask [B, T]``."""
    t = attention_mask.shape[-1]
    last = jnp.maximum(jnp.where(attention_mask.astype(bool), jnp.arange(t), -1).max(axis=-1), 0)
    return jnp.take_along_axis(values_full, last[:, None], axis=-1)[:, 0]


def ppo_rollout_targets(logprobs: jax.Array, ref_logprobs: jax.Array, values_full: jax.Array, batch: dict, *,
                        gamma: float, lam: float, kl_coef: float, whiten_advantages: bool = True) -> dict:
    """Everything the PPO loss needs from one batch of rollouts (pure, jittable).

    ``logprobs, ref_logprobs [B, T-1]``: log-probs of each next token under the rollout policy and the frozen
    initial policy (``token_logprobs(logits[:, :-1], input_ids[:, 1:])``); ``values_full [B, T]``: V at every
    token. ``batch``: ``input_ids``, ``attention_mask``, ``action_mask``, ``rewards`` ``[B, T]``, ``dones [B]``.
    Returns ``old_logprobs``, ``old_values``, ``advantages``, ``returns`` (aligned ``[B, T-1]``) and ``kl``
    (mean k3 estimate over action tokens, what the adaptive controller reads).
    """
    mask = aligned_mask(batch)
    rewards = kl_penalized_rewards(batch["rewards"][:, 1:].astype(jnp.float32), logprobs, ref_logprobs, mask, kl_coef)
    values = values_full[:, :-1].astype(jnp.float32)
    last_v = last_real_value(values_full, batch["attention_mask"]) * (1.0 - batch["dones"].astype(jnp.float32))
    adv, ret = gae(rewards, values, mask, last_v, gamma=gamma, lam=lam)
    if whiten_advantages:
        adv = whiten(adv, mask)
    return {"old_logprobs": logprobs, "old_values": values, "advantages": adv, "returns": ret,
            "kl": kl_k3(logprobs, ref_logprobs, mask)}


def ppo_loss(logprobs: jax.Array, values: jax.Array, old_logprobs: jax.Array, old_values: jax.Array,
             advantages: jax.Array, returns: jax.Array, mask: jax.Array, *, clip: float, value_clip: float,
             value_loss_coef: float) -> tuple[jax.Array, dict]:
    """Reference clipped PPO loss on aligned ``[B, L]`` arrays."""
    mask = mask.astype(jnp.float32)
    n = action_count(mask)
    v_clipped = jnp.clip(values, old_values - value_clip, old_values + value_clip)
    vf1 = (values - returns) ** 2
    vf2 = (v_clipped - returns) ** 2
    vf_loss = 0.5 * (jnp.maximum(vf1, vf2) * mask).sum() / n
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = jnp.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    pg_loss = (jnp.maximum(pg1, pg2) * mask).sum() / n
    loss = pg_loss + value_loss_coef * vf_loss
    metrics = {"policy_loss": pg_loss, "value_loss": vf_loss,
               "policy_clipfrac": ((pg2 > pg1) * mask).sum() / n,
               "value_clipfrac": ((vf2 > vf1) * mask).sum() / n,
               "approx_kl": ((ratio - 1.0) - log_ratio).sum() / n,
               "ratio_mean": (ratio * mask).sum() / n, "n_action_tokens": mask.sum()}
    return loss, metrics


def _policy_and_values(out: Any) -> tuple[jax.Array, jax.Array]:
    if isinstance(out, dict):
        logits, values = out["logits"], out["values"]
    else:
        logits, values = out[0], out[1]
    return logits, (values[..., 0] if values.ndim == 3 else values)


def ppo_loss_fn(params: Any, apply_fn: Callable, batch: dict, config: Any) -> tuple[jax.Array, dict]:
    """PPO loss of a policy with a value head on its own trunk.

    ``apply_fn(params, input_ids, attention_mask)`` returns ``(logits [B, T, V], values [B, T])`` or a dict
    with ``"logits"`` and ``"values"``. ``batch``: ``input_ids``, ``attention_mask``, ``action_mask``
    ``[B, T]`` and the aligned ``[B, T-1]`` outputs of ``ppo_rollout_targets`` (``old_logprobs``,
    ``old_values``, ``advantages``, ``returns``). Optional ``batch["bc"]``: an offline batch
    (``input_ids``, ``attention_mask``, ``action_mask``) for the ``bc_loss_weight`` term. ``config`` needs
    ``clip``, ``value_clip``, ``value_loss_coef``, ``bc_loss_weight``.
    """
    ids = batch["input_ids"]
    logits, values_full = _policy_and_values(apply_fn(params, ids, batch["attention_mask"]))
    logprobs = token_logprobs(logits[:, :-1], ids[:, 1:])
    loss, metrics = ppo_loss(logprobs, values_full[:, :-1], batch["old_logprobs"], batch["old_values"],
                             batch["advantages"], batch["returns"], aligned_mask(batch), clip=config.clip,
                             value_clip=config.value_clip, value_loss_coef=config.value_loss_coef)
    if config.bc_loss_weight and "bc" in batch:
        bc = batch["bc"]
        bc_logits = logits_of(apply_fn(params, bc["input_ids"], bc["attention_mask"]))
        bcl = bc_loss(bc_logits[:, :-1], bc["input_ids"][:, 1:], aligned_mask(bc))
        metrics = {**metrics, "bc_loss": bcl, "ppo_loss": loss}
        loss = loss + config.bc_loss_weight * bcl
    return loss, metrics


def adaptive_kl_coef(kl_coef: float, current_kl: float, n_steps: int, target: float, horizon: int) -> float:
    """Ziegler et al. controller: ``kl_coef * (1 + clip(current / target - 1, -0.2, 0.2) * n_steps / horizon)``.

    Host-side, once per round, as in the reference (``AdaptiveKLController.update``).
    """
    err = float(np.clip(current_kl / target - 1.0, -0.2, 0.2))
    return kl_coef * (1.0 + err * n_steps / horizon)
