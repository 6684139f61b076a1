"""ILQL (spec §13.2-13.3; reference ``LLM_RL/algorithms/ilql/{base_interface,gpt2/interface}.py``).

Transitions are per action token: state = prefix, action = the next token; gamma is applied per action
token. For the transition at an action token ``i`` (aligned index, see ``learners.common``):

- ``Q_k(s_i, a_i)`` (k = 1, 2) is regressed with ``0.5 (x - y)^2`` to ``stopgrad(r_i + gamma V(s'))`` where
  ``V(s')`` is V at the *next action token* of the row; after the row's last action it is ``v_final``:
  V at the first action prefix of the next window when one is given, otherwise V at the last action token
  itself; times ``(1 - done)``.
- ``V(s_i)`` is expectile-regressed to ``min(targetQ1, targetQ2)(s_i, a_i)`` with weight ``tau`` where the
  target is >= V, else ``1 - tau``.
- CQL: ``CE(Q_logits, data token) = logsumexp_vocab(Q) - Q(a)`` per Q head.
- Total: ``q1 + q2 + v + cql_weight * (cql1 + cql2)``, each normalised by the number of action tokens.
- Target network (base + Q heads) follows the online one by Polyak averaging with ``polyak_alpha`` at real
  optimiser steps (``MultiSteps`` boundaries), optionally hard-copied every ``hard_update_every`` steps.

Decoding perturbs the frozen BC policy: ``logits = pi_beta_logits + beta * min(Q1, Q2)`` (``perturbed_logits``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from learners.common import action_count, aligned_mask, gather_tokens, is_real_step

# ---------------------------------------------------------------- array-level pieces


def expectile_weights(target: jax.Array, value: jax.Array, tau: float) -> jax.Array:
    """``tau`` where ``target >= value`` (ties included), else ``1 - tau``."""
    return jnp.where(target >= value, tau, 1.0 - tau)


def expectile_loss(value: jax.Array, target: jax.Array, tau: float, mask: jax.Array) -> jax.Array:
    """Expectile regression of ``value`` toward ``stopgrad(target)``, normalised by the action count."""
    target = jax.lax.stop_gradient(target)
    w = jax.lax.stop_gradient(expectile_weights(target, value, tau))
    mask = mask.astype(jnp.float32)
    return (w * 0.5 * (value - target) ** 2 * mask).sum() / action_count(mask)


def next_action_values(values: jax.Array, action_mask: jax.Array, final_value: jax.Array) -> jax.Array:
    """For each position ``i``: ``values`` at the next action position ``j > i`` of the row, or ``final_value``
    when there is none. ``values, action_mask [B, L]``, ``final_value [B]``."""
    length = values.shape[-1]
    idx = jnp.where(action_mask.astype(bool), jnp.arange(length), length)
    nxt_incl = jax.lax.cummin(idx, axis=idx.ndim - 1, reverse=True)
    nxt = jnp.concatenate([nxt_incl[..., 1:], jnp.full(idx.shape[:-1] + (1,), length, idx.dtype)], axis=-1)
    v_ext = jnp.concatenate([values, final_value[..., None].astype(values.dtype)], axis=-1)
    return jnp.take_along_axis(v_ext, nxt, axis=-1)


def ilql_targets(rewards: jax.Array, values: jax.Array, action_mask: jax.Array, final_value: jax.Array,
                 gamma: float, *, final_done: jax.Array | None = None,
                 token_dones: jax.Array | None = None) -> jax.Array:
    """Q targets ``r_i + gamma * V(s'_i)`` at action positions, 0 elsewhere (aligned ``[B, L]`` arrays).

    ``final_value [B]`` bootstraps the row's last action; ``final_done [B]`` zeroes it (the reference's
    ``v_final * (1 - dones)``). ``token_dones [B, L]`` (optional, not in the reference) marks an episode end
    after that action token, for rows that hold several episodes.
    """
    if final_done is not None:
        final_value = final_value * (1.0 - final_done.astype(final_value.dtype))
    vns = next_action_values(values, action_mask, final_value)
    if token_dones is not None:
        vns = vns * (1.0 - token_dones.astype(vns.dtype))
    return (rewards + gamma * vns) * action_mask.astype(vns.dtype)


def cql_term(q_logits: jax.Array, actions: jax.Array, mask: jax.Array) -> jax.Array:
    """``mean over action tokens of logsumexp_vocab(Q) - Q(a)`` (= CE of the Q logits with the data token)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(q_logits.astype(jnp.float32), actions)
    mask = mask.astype(jnp.float32)
    return (ce * mask).sum() / action_count(mask)


def ilql_loss(q1: jax.Array, q2: jax.Array, v: jax.Array, v_final: jax.Array,
              target_q1: jax.Array, target_q2: jax.Array, q1_logits: jax.Array, q2_logits: jax.Array,
              actions: jax.Array, mask: jax.Array, rewards: jax.Array, *,
              gamma: float, tau: float, cql_weight: float) -> tuple[jax.Array, dict]:
    """The reference ILQL loss on aligned arrays.

    ``q1, q2, target_q1, target_q2 [B, L]``: Q at the data token; ``v [B, L]``: V of each state;
    ``v_final [B]``: bootstrap after the last action (already ``* (1 - done)``); ``q*_logits [B, L, V]``;
    ``actions [B, L]`` data tokens; ``mask [B, L]`` action and not padding; ``rewards [B, L]``.
    """
    mask = mask.astype(jnp.float32)
    n = action_count(mask)
    target = jax.lax.stop_gradient(ilql_targets(rewards, v, mask, jax.lax.stop_gradient(v_final), gamma))
    q1_loss = (0.5 * (q1 - target) ** 2 * mask).sum() / n
    q2_loss = (0.5 * (q2 - target) ** 2 * mask).sum() / n
    target_q = jax.lax.stop_gradient(jnp.minimum(target_q1, target_q2))
    v_loss = expectile_loss(v, target_q, tau, mask)
    cql1 = cql_term(q1_logits, actions, mask)
    cql2 = cql_term(q2_logits, actions, mask)
    loss = q1_loss + q2_loss + v_loss + cql_weight * (cql1 + cql2)

    def mean(x):
        return (x * mask).sum() / n

    metrics = {"q1_loss": q1_loss, "q2_loss": q2_loss, "v_loss": v_loss, "q1_cql_loss": cql1,
               "q2_cql_loss": cql2, "q1_mean": mean(q1), "q2_mean": mean(q2), "v_mean": mean(v),
               "target_q_mean": mean(target_q), "n_action_tokens": mask.sum()}
    return loss, metrics


def polyak_update(online: Any, target: Any, alpha: float) -> Any:
    """``target <- alpha * online + (1 - alpha) * target`` leafwise (``optax.incremental_update``)."""
    return optax.incremental_update(online, target, alpha)


def perturbed_logits(pi_beta_logits: jax.Array, q1_logits: jax.Array, beta: float,
                     q2_logits: jax.Array | None = None) -> jax.Array:
    """Decoding logits ``pi_beta_logits + beta * min(Q1, Q2)`` over the vocabulary (MC: no ``q2``).

    Raw BC logits, not log-probabilities; V is not subtracted (it would not change the softmax anyway).
    """
    q = q1_logits if q2_logits is None else jnp.minimum(q1_logits, q2_logits)
    return pi_beta_logits + beta * q


# ---------------------------------------------------------------- model-level loss


def _value(out: dict) -> jax.Array:
    v = out["v"]
    return v[..., 0] if v.ndim == 3 else v


def _last_index(mask: jax.Array) -> jax.Array:
    """Index of the last nonzero entry of each row (0 for an empty row)."""
    t = mask.shape[-1]
    return jnp.maximum(jnp.where(mask.astype(bool), jnp.arange(t), -1).max(axis=-1), 0)


def ilql_loss_fn(params: Any, apply_fn: Callable, batch: dict, config: Any, *,
                 target_params: Any) -> tuple[jax.Array, dict]:
    """ILQL loss of a value model.

    ``apply_fn(params, input_ids, attention_mask)`` returns a dict with ``"q1"``, ``"q2"`` ``[B, T, V]`` and
    ``"v"`` ``[B, T]`` (or ``[B, T, 1]``): the heads on the base model's last hidden state. The target network
    uses the same ``apply_fn`` with ``target_params`` (its ``"v"`` is ignored).

    ``batch``: ``input_ids``, ``attention_mask``, ``action_mask``, ``rewards`` ``[B, T]``, ``dones [B]``.
    Optional next window (``TextTrajectoryChain``): ``next_input_ids``, ``next_attention_mask`` ``[B, T']``
    and ``next_dones [B]``; then ``v_final`` = V at the next window's last real token times
    ``(1 - next_dones)``. Without it, ``v_final`` = V at the row's last action token times ``(1 - dones)``.
    ``config`` needs ``gamma``, ``tau``, ``cql_weight``.
    """
    ids, attn = batch["input_ids"], batch["attention_mask"]
    out = apply_fn(params, ids, attn)
    tout = jax.lax.stop_gradient(apply_fn(target_params, ids, attn))
    actions = ids[:, 1:]
    q1_logits, q2_logits = out["q1"][:, :-1], out["q2"][:, :-1]
    v_full = _value(out)

    if "next_input_ids" in batch:
        nout = apply_fn(params, batch["next_input_ids"], batch["next_attention_mask"])
        nv = _value(nout)
        last = _last_index(batch["next_attention_mask"])
        v_final = jnp.take_along_axis(nv, last[:, None], axis=-1)[:, 0]
        v_final = v_final * (1.0 - batch["next_dones"].astype(v_final.dtype))
    else:
        # token index of the last action token = (aligned index of the last action) + 1
        last = _last_index(batch["action_mask"][:, 1:]) + 1
        v_final = jnp.take_along_axis(v_full, last[:, None], axis=-1)[:, 0]
        v_final = v_final * (1.0 - batch["dones"].astype(v_final.dtype))

    loss, metrics = ilql_loss(
        gather_tokens(q1_logits, actions), gather_tokens(q2_logits, actions), v_full[:, :-1], v_final,
        gather_tokens(tout["q1"][:, :-1], actions), gather_tokens(tout["q2"][:, :-1], actions),
        q1_logits, q2_logits, actions, aligned_mask(batch), batch["rewards"][:, 1:].astype(jnp.float32),
        gamma=config.gamma, tau=config.tau, cql_weight=config.cql_weight)
    return loss, metrics


# ---------------------------------------------------------------- train state and update


class ILQLState(struct.PyTreeNode):
    """Online parameters (base + Q1 + Q2 + V, one pytree), their target copy, and the optimiser state.

    ``target_params`` has the same structure as ``params``; its V part is never read (the reference keeps no
    target V) but is averaged along, which keeps the trees aligned.
    """

    step: jax.Array
    params: Any
    target_params: Any
    opt_state: Any
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, apply_fn: Callable, params: Any, tx: optax.GradientTransformation) -> ILQLState:
        return cls(step=jnp.asarray(0, jnp.int32), params=params,
                   target_params=jax.tree.map(jnp.array, params),  # a copy: safe under buffer donation
                   opt_state=tx.init(params), apply_fn=apply_fn, tx=tx)


def update_targets(params: Any, target_params: Any, step: jax.Array, *, polyak_alpha: float,
                   hard_update_every: int | None = None) -> Any:
    """Polyak step, then (if set) a hard copy when ``step % hard_update_every == 0`` (``optax.periodic_update``)."""
    target_params = polyak_update(params, target_params, polyak_alpha)
    if hard_update_every is not None:
        target_params = optax.periodic_update(params, target_params, step, hard_update_every)
    return target_params


def make_ilql_update(config: Any) -> Callable:
    """``update(state: ILQLState, batch) -> (state, metrics)``; pure and jittable.

    ``config`` needs ``gamma``, ``tau``, ``cql_weight``, ``polyak_alpha`` and ``hard_update_every``. Targets
    move only when the optimiser really stepped (end of a ``MultiSteps`` accumulation), as the reference.
    """

    def update(state: ILQLState, batch: dict):
        def loss(p):
            return ilql_loss_fn(p, state.apply_fn, batch, config, target_params=state.target_params)

        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step = state.step + 1
        target_params = jax.lax.cond(
            is_real_step(opt_state),
            lambda: update_targets(params, state.target_params, step, polyak_alpha=config.polyak_alpha,
                                   hard_update_every=config.hard_update_every),
            lambda: state.target_params)
        state = state.replace(step=step, params=params, target_params=target_params, opt_state=opt_state)
        return state, {**metrics, "loss": value, "grad_norm": optax.tree.norm(grads)}

    return update
