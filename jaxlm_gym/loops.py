"""Control flow in the shape XLA's CPU backend handles well."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def maybe(pred, fun, x):
    """``fun(x)`` if ``pred`` else ``x``, as a while loop of at most one iteration.

    XLA updates a loop's operand in place, where a ``cond`` whose false branch returns ``x``
    unchanged copies all of ``x`` (e.g. every env's state, on every step without a reset).
    A loop is also a fusion boundary: with ``pred`` True, ``fun(x)`` is computed once into
    a buffer that its consumers read, instead of being fused into (and recomputed by) each
    of them (``rng._hash``)."""
    def body(carry):
        return jnp.bool_(False), fun(carry[1])
    return jax.lax.while_loop(lambda c: c[0], body, (jnp.asarray(pred), x))[1]
