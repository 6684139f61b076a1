"""Jittable autoregressive decoding: one prefill, then a ``lax.while_loop`` over a single compiled decode step.

``generate`` is traceable end to end; jit it with ``GENERATE_STATIC_ARGNAMES`` static (``temperature``,
``stop_token_id`` and ``pad_token_id`` may be traced). ``decode_loop`` is the model-agnostic core: it takes
any ``step_fn`` and is what learners use when decoding needs more than one network (e.g. ILQL, whose Q
heads sit on their own base with its own cache).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from learners.models.gpt2 import GPT2Config, decode_step, prefill

# jax.jit(generate, static_argnames=GENERATE_STATIC_ARGNAMES)
GENERATE_STATIC_ARGNAMES = ("max_new_tokens", "greedy", "logits_fn_hook", "config")

LogitsHook = Callable[[jax.Array, jax.Array], jax.Array]


class Generation(NamedTuple):
    """tokens: int32[B, max_new_tokens], ``pad_token_id`` after each row's stop token.
    lengths: int32[B], generated tokens per row, the stop token included."""

    tokens: jax.Array
    lengths: jax.Array


def _choose(logits, key, temperature, greedy: bool):
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


def decode_loop(step_fn: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array, Any]], state: Any,
                logits: jax.Array, hidden: jax.Array, key: jax.Array, max_new_tokens: int, stop_token_id,
                temperature=1.0, greedy: bool = False, logits_fn_hook: LogitsHook | None = None,
                pad_token_id=None) -> Generation:
    """Sample up to ``max_new_tokens`` tokens per row.

    ``logits [B, V]`` / ``hidden [B, E]`` give the first token's distribution; ``step_fn(state, tokens[B],
    live bool[B]) -> (logits, hidden, state)`` appends one token per row (``live`` False once a row has
    stopped). ``logits_fn_hook(logits, hidden) -> logits`` is applied before every choice. Token ``i`` is
    drawn with ``fold_in(key, i)``; ``stop_token_id=None`` never stops early. The loop ends as soon as every
    row has stopped, so ``step_fn`` runs at most ``max_new_tokens - 1`` times.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    b = logits.shape[0]
    stop = jnp.asarray(-1 if stop_token_id is None else stop_token_id, jnp.int32)
    pad = stop if pad_token_id is None else jnp.asarray(pad_token_id, jnp.int32)
    if pad_token_id is None and stop_token_id is None:
        pad = jnp.asarray(0, jnp.int32)
    hook = logits_fn_hook if logits_fn_hook is not None else (lambda lg, _h: lg)

    def choose(i, lg, hd, done):
        tok = _choose(hook(lg, hd), jax.random.fold_in(key, i), temperature, greedy)
        return jnp.where(done, pad, tok)

    done = jnp.zeros((b,), bool)
    tok = choose(0, logits, hidden, done)
    tokens = jnp.full((b, max_new_tokens), pad, jnp.int32).at[:, 0].set(tok)
    lengths = jnp.ones((b,), jnp.int32)
    done = tok == stop

    def cond(carry):
        i, _, _, done, _, _ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, state, tok, done, tokens, lengths = carry
        lg, hd, state = step_fn(state, tok, ~done)
        new = choose(i, lg, hd, done)
        tokens = jax.lax.dynamic_update_slice(tokens, new[:, None], (0, i))
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | (new == stop)
        return i + 1, state, new, done, tokens, lengths

    carry = (jnp.asarray(1, jnp.int32), state, tok, done, tokens, lengths)
    _, _, _, _, tokens, lengths = jax.lax.while_loop(cond, body, carry)
    return Generation(tokens=tokens, lengths=lengths)


def generate(params, prompt_tokens, prompt_mask, key, max_new_tokens: int, stop_token_id, temperature=1.0,
             greedy: bool = False, logits_fn_hook: LogitsHook | None = None, *, config: GPT2Config,
             pad_token_id=None) -> Generation:
    """Continue ``prompt_tokens int32[B, T]`` (``prompt_mask bool[B, T]``, left or right padding) with GPT-2.

    Greedy (``greedy=True``) or sampling at ``temperature``; stops a row at ``stop_token_id`` (kept in the
    output), then pads with ``pad_token_id`` (default: the stop token, GPT-2's convention). The cache holds
    ``T + max_new_tokens - 1`` slots. Returns ``Generation(tokens, lengths)``.
    """
    _b, t = prompt_tokens.shape
    logits, hidden, cache = prefill(config, params, prompt_tokens, prompt_mask, t + max_new_tokens - 1)

    def step_fn(cache, tokens, live):
        return decode_step(config, params, cache, tokens, live)

    return decode_loop(step_fn, cache, logits, hidden, key, max_new_tokens, stop_token_id, temperature, greedy,
                       logits_fn_hook, pad_token_id)
