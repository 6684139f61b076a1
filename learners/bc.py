"""Behaviour cloning and filtered BC (spec §13.1).

BC is the masked LM loss of the reference (JaxSeq ``loss_fn_mask``): next-token cross-entropy on action
tokens only, summed over the batch and divided by the number of action tokens.

Filtered BC is BC on a subset of episodes. The selection rules of the reference are here as pure functions of
per-episode arrays that return a keep mask:

- ``top_fraction_mask``: sort by return (descending, ties in original order, as Python's stable ``sorted``)
  and keep the first ``int(N * fraction)``. Wordle offline: 10 %; Wordle online: 30 %.
- ``last_reward_mask``: keep episodes whose last step reward equals a value (Maze online: 0, i.e. reached
  the goal). Offline Maze/Endgames use pre-filtered "successful trajectory" files: same rule on ``success``.
- ``"all"``: Chess online sorts by return and keeps everything.

A keep mask can be used as per-row ``weights`` in ``bc_loss_fn`` (fixed shapes, nothing moves), or rows can
be compacted with ``compact_rows`` when the kept count is known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from learners.common import aligned_mask, logits_of, masked_mean, token_logprobs

FILTER_RULES = ("top_fraction", "last_reward", "all")


def bc_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy over masked-in positions.

    ``logits [B, L, V]`` (model outputs ``[:, :-1]``), ``targets [B, L]`` (``input_ids[:, 1:]``),
    ``mask [B, L]`` (action and not padding). Sum over the batch / number of masked tokens.
    """
    return masked_mean(-token_logprobs(logits, targets), mask)


def bc_loss_fn(params: Any, apply_fn: Callable, batch: dict, config: Any = None) -> tuple[jax.Array, dict]:
    """BC loss of a policy. ``apply_fn(params, input_ids, attention_mask)`` returns logits ``[B, T, V]``
    (or a ``(logits, hidden)`` tuple, or a dict with ``"logits"``).

    ``batch``: ``input_ids``, ``attention_mask``, ``action_mask`` ``[B, T]``; optional ``weights [B]``
    (e.g. a filtered-BC keep mask) multiplies each row's tokens. ``config`` is unused (BC has no loss
    hyperparameters); it is accepted so every learner has the same signature.
    """
    del config
    logits = logits_of(apply_fn(params, batch["input_ids"], batch["attention_mask"]))
    mask = aligned_mask(batch)
    if "weights" in batch:
        mask = mask * batch["weights"].astype(jnp.float32)[:, None]
    loss = bc_loss(logits[:, :-1], batch["input_ids"][:, 1:], mask)
    return loss, {"bc_loss": loss, "n_action_tokens": mask.sum()}


# ---------------------------------------------------------------- filtering


def episode_returns(rewards: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Undiscounted return of each row: ``sum(rewards * mask, axis=-1)``. ``rewards [N, T]``."""
    if mask is not None:
        rewards = rewards * mask.astype(rewards.dtype)
    return rewards.sum(axis=-1)


def last_action_reward(rewards: jax.Array, action_mask: jax.Array) -> jax.Array:
    """Reward on the last action token of each row (the last step's reward). 0 for rows without actions.

    ``rewards, action_mask [N, T]`` token-level (rewards sit on each action's last token).
    """
    t = action_mask.shape[-1]
    idx = jnp.where(action_mask.astype(bool), jnp.arange(t), -1).max(axis=-1)
    got = jnp.take_along_axis(rewards, jnp.maximum(idx, 0)[:, None], axis=-1)[:, 0]
    return jnp.where(idx >= 0, got, 0.0)


def top_fraction_count(n: int, fraction: float) -> int:
    """How many of ``n`` episodes the top-fraction rule keeps: ``int(n * fraction)`` as the reference."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return int(n * fraction)


def top_fraction_mask(returns: jax.Array, fraction: float) -> jax.Array:
    """Keep mask ``[N]`` of the ``int(N * fraction)`` highest returns; ties keep the lower index first."""
    n = returns.shape[0]
    k = top_fraction_count(n, fraction)
    order = jnp.argsort(-returns, stable=True)
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return rank < k


def last_reward_mask(last_rewards: jax.Array, value: float = 0.0) -> jax.Array:
    """Keep mask ``[N]`` of episodes whose last step reward equals ``value`` (Maze: 0 = reached the goal)."""
    return last_rewards == value


def filter_mask(rule: str, returns: jax.Array, last_rewards: jax.Array | None = None, *,
                fraction: float = 1.0, last_reward_value: float = 0.0) -> jax.Array:
    """Keep mask for one round of (online) filtered BC under ``rule`` in ``FILTER_RULES``."""
    if rule == "top_fraction":
        return top_fraction_mask(returns, fraction)
    if rule == "last_reward":
        if last_rewards is None:
            raise ValueError("rule 'last_reward' needs last_rewards")
        return last_reward_mask(last_rewards, last_reward_value)
    if rule == "all":
        return jnp.ones(returns.shape, bool)
    raise ValueError(f"unknown filter rule {rule!r}; valid: {FILTER_RULES}")


def compact_rows(tree: Any, keep: jax.Array, size: int) -> tuple[Any, jax.Array]:
    """Move kept rows first (stable) and take ``size`` rows of every leaf.

    Returns ``(tree_of_[size, ...], valid [size])``; ``valid`` is False for padding rows when fewer than
    ``size`` were kept. Jittable (``size`` is static).
    """
    order = jnp.argsort(~keep.astype(bool), stable=True)[:size]
    valid = keep.astype(bool)[order]
    return jax.tree.map(lambda x: x[order], tree), valid
