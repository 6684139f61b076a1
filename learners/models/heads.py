"""Heads on GPT-2's last hidden state (spec §13.2 and §13.5).

**Value model** (ILQL, MC returns). A trainable GPT-2 base (usually initialised from the BC model) whose
last hidden state (after ``ln_f``) feeds MLP heads, as the reference:

- Q head: ``Dense(n_embd) -> ReLU -> Dense(V)``, one Q per next token (``V`` = the model vocabulary);
- V head: the same MLP with one output.

The second layer of every head is zero-initialised (kernel and bias), so a fresh model predicts Q = V = 0.
Parameters: ``{"base": <GPT-2 params>, "q1": ..., "q2": ..., "v": ...}`` (ILQL: ``q1, q2, v``; MC: ``q``).
``make_value_apply_fn`` returns ``apply_fn(params, input_ids, attention_mask) -> {"q1": f32[B, T, V], ...,
"v": f32[B, T]}``, the interface of ``learners.ilql.ilql_loss_fn`` and ``learners.mc.mc_loss_fn``.

**Policy with a value head** (PPO). ``Dense(n_embd -> 1)`` on the policy's own last hidden state (shared
trunk), zero-initialised weights and a configurable bias (maze scripts: -1). Parameters
``{"base": <GPT-2 params>, "value": {"kernel", "bias"}}``; ``make_policy_value_apply_fn`` returns
``{"logits": f32[B, T, V], "values": f32[B, T]}`` (``learners.ppo.ppo_loss_fn``'s interface).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learners.models.gpt2 import GPT2Config, forward, init_params, lm_logits

ILQL_HEADS = ("q1", "q2", "v")
MC_HEADS = ("q",)


class MLPHead(nn.Module):
    """``Dense(hidden) -> ReLU -> Dense(out)``; the last layer starts at zero (weights and bias)."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden, dtype=jnp.float32, param_dtype=jnp.float32, name="dense1")(x))
        return nn.Dense(self.out, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                        dtype=jnp.float32, param_dtype=jnp.float32, name="dense2")(x)


def _head(config: GPT2Config, name: str) -> MLPHead:
    return MLPHead(hidden=config.n_embd, out=1 if name.startswith("v") else config.vocab_size)


def _check_heads(heads: Sequence[str]) -> tuple[str, ...]:
    heads = tuple(heads)
    bad = [h for h in heads if not (h.startswith("q") or h == "v")]
    if not heads or bad:
        raise ValueError(f"value heads must be Q heads ('q', 'q1', 'q2', ...) and/or 'v'; got {heads}")
    return heads


def init_value_model(config: GPT2Config, key: jax.Array, base_params: Any = None,
                     heads: Sequence[str] = ILQL_HEADS) -> dict[str, Any]:
    """Value-model parameters: ``base_params`` (copied; e.g. the BC model's) or a fresh GPT-2, plus ``heads``."""
    heads = _check_heads(heads)
    k_base, *k_heads = jax.random.split(key, 1 + len(heads))
    base = init_params(config, k_base) if base_params is None else jax.tree.map(jnp.array, base_params)
    x = jnp.zeros((1, config.n_embd), jnp.float32)
    out = {"base": base}
    for name, k in zip(heads, k_heads):
        out[name] = jax.jit(_head(config, name).init)(k, x)["params"]
    return out


def apply_heads(config: GPT2Config, params: dict, hidden: jax.Array, heads: Sequence[str]) -> dict[str, jax.Array]:
    """The named heads on ``hidden [..., E]``: Q heads give ``[..., V]``, ``v`` gives ``[...]``."""
    hidden = hidden.astype(jnp.float32)
    out = {}
    for name in heads:
        y = _head(config, name).apply({"params": params[name]}, hidden)
        out[name] = y[..., 0] if name == "v" else y
    return out


def make_value_apply_fn(config: GPT2Config, heads: Sequence[str] = ILQL_HEADS):
    """``apply_fn(params, input_ids, attention_mask) -> {head: array}`` (see the module docstring)."""
    heads = _check_heads(heads)

    def apply_fn(params, input_ids, attention_mask):
        hidden = forward(config, params["base"], input_ids, attention_mask, return_logits=False).hidden
        return apply_heads(config, params, hidden, heads)

    return apply_fn


def init_policy_value(config: GPT2Config, key: jax.Array, base_params: Any = None,
                      value_bias: float = 0.0) -> dict[str, Any]:
    """PPO parameters: the policy's GPT-2 (``base_params`` copied, or fresh) and a linear value head
    (zero weights, bias ``value_bias``)."""
    base = init_params(config, key) if base_params is None else jax.tree.map(jnp.array, base_params)
    value = {"kernel": jnp.zeros((config.n_embd, 1), jnp.float32),
             "bias": jnp.full((1,), value_bias, jnp.float32)}
    return {"base": base, "value": value}


def value_of(params: dict, hidden: jax.Array) -> jax.Array:
    """The PPO value head on ``hidden [..., E]`` -> ``[...]``."""
    return (hidden.astype(jnp.float32) @ params["value"]["kernel"] + params["value"]["bias"])[..., 0]


def make_policy_value_apply_fn(config: GPT2Config):
    """``apply_fn(params, input_ids, attention_mask) -> {"logits": [B, T, V], "values": [B, T]}``."""

    def apply_fn(params, input_ids, attention_mask):
        hidden = forward(config, params["base"], input_ids, attention_mask, return_logits=False).hidden
        return {"logits": lm_logits(config, params["base"], hidden), "values": value_of(params, hidden)}

    return apply_fn
