"""Monte-Carlo returns (spec §13.4; reference ``LLM_RL/algorithms/mc_returns/{base_interface,data}.py``).

Targets are discounted returns-to-go over the sequence of action-token rewards (gamma once per action
token, no bootstrapping); ``Q(s, a_token)`` is L2-regressed (``0.5 (x - y)^2``) to them, plus
``cql_weight * CE(Q_logits, data token)``; both normalised by the number of action tokens. Decoding is
``pi_beta_logits + beta * Q`` (``learners.ilql.perturbed_logits`` without ``q2``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from learners.common import action_count, aligned_mask, gather_tokens
from learners.ilql import cql_term


def returns_to_go(rewards: jax.Array, action_mask: jax.Array, gamma: float,
                  bootstrap: jax.Array | None = None) -> jax.Array:
    """Discounted return-to-go at each action position, 0 elsewhere.

    ``G_i = r_i + gamma * G_next(i)`` where ``next(i)`` is the next action position of the row; rewards at
    non-action positions are ignored (the reference keeps only ``rewards[should_take_action]``).
    ``rewards, action_mask [..., L]``; ``bootstrap [...]`` (default 0) is the return after the row's last
    action, for a row that continues a chain whose later part lies elsewhere (the reference computes the
    returns of a whole chain before splitting it into windows).
    """
    act = action_mask.astype(bool)
    batch_shape = rewards.shape[:-1]
    g0 = jnp.zeros(batch_shape, jnp.float32) if bootstrap is None else bootstrap.astype(jnp.float32)

    def body(g, x):
        r, a = x
        g = jnp.where(a, r + gamma * g, g)
        return g, jnp.where(a, g, 0.0)

    xs = (jnp.moveaxis(rewards.astype(jnp.float32), -1, 0), jnp.moveaxis(act, -1, 0))
    _, out = jax.lax.scan(body, g0, xs, reverse=True)
    return jnp.moveaxis(out, 0, -1)


def mc_loss(q: jax.Array, q_logits: jax.Array, actions: jax.Array, mask: jax.Array, returns: jax.Array, *,
            cql_weight: float) -> tuple[jax.Array, dict]:
    """Reference MC loss on aligned arrays: ``q, returns, actions, mask [B, L]``, ``q_logits [B, L, V]``."""
    mask = mask.astype(jnp.float32)
    n = action_count(mask)
    q_loss = (0.5 * (q - jax.lax.stop_gradient(returns)) ** 2 * mask).sum() / n
    cql = cql_term(q_logits, actions, mask)
    loss = q_loss + cql_weight * cql
    return loss, {"q_loss": q_loss, "q_cql_loss": cql, "q_mean": (q * mask).sum() / n,
                  "returns_mean": (returns * mask).sum() / n, "n_action_tokens": mask.sum()}


def mc_loss_fn(params: Any, apply_fn: Callable, batch: dict, config: Any) -> tuple[jax.Array, dict]:
    """MC loss of a value model. ``apply_fn(params, input_ids, attention_mask)`` returns a dict with
    ``"q"`` ``[B, T, V]`` (the Q head on the base model's last hidden state).

    ``batch``: ``input_ids``, ``attention_mask``, ``action_mask`` ``[B, T]`` and either ``returns [B, T-1]``
    (aligned, e.g. from ``returns_to_go`` over a whole chain) or ``rewards [B, T]`` (returns are then computed
    within the row with ``config.gamma``). ``config`` needs ``cql_weight`` (and ``gamma`` without ``returns``).
    """
    ids = batch["input_ids"]
    out = apply_fn(params, ids, batch["attention_mask"])
    q_logits = out["q"][:, :-1]
    actions = ids[:, 1:]
    mask = aligned_mask(batch)
    if "returns" in batch:
        returns = batch["returns"].astype(jnp.float32)
    else:
        returns = returns_to_go(batch["rewards"][:, 1:], mask, config.gamma)
    return mc_loss(gather_tokens(q_logits, actions), q_logits, actions, mask, returns, cql_weight=config.cql_weight)
