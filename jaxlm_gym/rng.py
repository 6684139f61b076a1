"""Threefry keys whose hash XLA's CPU backend fuses: same numbers, fewer kernels.

On CPU, jax lowers every threefry-2x32 hash as a rolled loop of five iterations (to keep
compile times short), so each ``split`` / ``bits`` / ``randint`` is a while loop of ~25
small kernels that XLA cannot fuse with its neighbours. A text env's step draws four
times (the env keys, each core's key split, the core's own draw, the paraphrase draw);
gridworld's reset draws ~180 words per env. ``fused(key)`` re-labels a threefry key as
``FUSED``, a PRNG implementation with the same seed, split, fold-in and bit functions as
jax's partitionable threefry, written out unrolled: every draw from it (and from keys
split off it) is bit for bit what the threefry key gives (``tests/test_rng.py``), but
each hash is one fused kernel inside a single-pass while loop (see ``_hash``). ``VecEnv``
re-labels the keys it is handed; a key of another implementation (``rbg``, ...) passes
through unchanged. Gridworld's step went from ~790 to ~380 kernels; in-process A/B: a few
per cent for gridworld and parking, ~18 % for bandits (README, "Fused threefry keys").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import define_prng_impl, threefry_prng_impl

from .loops import maybe

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotl(x, d: int):
    return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def hash_2x32(k1, k2, x1, x2):
    """Threefry-2x32 (20 rounds) of the counter words ``(x1, x2)`` under key ``(k1, k2)``
    (uint32 arrays that broadcast): the two output words. Unrolled, as jax writes it for
    accelerators."""
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = _rotl(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _counts(shape) -> tuple[jax.Array, jax.Array]:
    """The 64-bit row-major index of every element of ``shape`` as (high, low) words."""
    size = math.prod(shape)
    if size >= 2**32:
        raise NotImplementedError(f"draws of {size} >= 2**32 words")
    low = jax.lax.iota(np.uint32, size).reshape(shape) if shape else jnp.zeros((), np.uint32)
    return jnp.zeros(shape, np.uint32), low


def _hash(key, shape):
    hi, lo = _counts(tuple(shape))
    # One pass of a while loop (``maybe`` with a true predicate): its result is a buffer
    # that every consumer reads. XLA would otherwise fuse the 20 rounds into each consumer
    # of a word (e.g. every text piece that reads a paraphrase index) and compute them
    # again there; an optimization_barrier does not survive XLA's CPU pipeline.
    return maybe(True, lambda c: hash_2x32(key[0], key[1], *c), (hi, lo))


def _split(key, shape):
    b1, b2 = _hash(key, shape)
    return jnp.stack([b1, b2], axis=b1.ndim)


def _random_bits(key, bit_width: int, shape):
    if bit_width not in (8, 16, 32, 64):
        raise TypeError(f"bit_width must be 8, 16, 32 or 64, got {bit_width}")
    b1, b2 = _hash(key, shape)
    if bit_width == 64:
        return (b1.astype(np.uint64) << np.uint64(32)) | b2.astype(np.uint64)
    if bit_width == 32:
        return b1 ^ b2
    return (b1 ^ b2).astype(np.dtype(f"uint{bit_width}"))


def _fold_in(key, data):
    # jax folds ``data`` in as the counter pair (0, data) of one hash.
    b1, b2 = hash_2x32(key[0], key[1], jnp.zeros((1,), np.uint32), jnp.asarray(data, np.uint32).reshape(1))
    return jnp.concatenate([b1, b2])


FUSED = define_prng_impl(key_shape=(2,), seed=threefry_prng_impl.seed, split=_split,
                         random_bits=_random_bits, fold_in=_fold_in,
                         name="threefry2x32_fused", tag="fry_fused")


def fused(key: jax.Array) -> jax.Array:
    """``key`` (a typed threefry key or a raw uint32[..., 2] one) as a ``FUSED`` key that
    draws the same numbers; other keys unchanged. With ``jax_threefry_partitionable``
    off, jax's threefry draws differ (another counter layout): keys pass unchanged."""
    if not jax.config.jax_threefry_partitionable:
        return key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0, impl="threefry2x32")):
            return key
        return jax.random.wrap_key_data(jax.random.key_data(key), impl=FUSED)
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,) and jax.config.jax_default_prng_impl == "threefry2x32":
        return jax.random.wrap_key_data(key, impl=FUSED)
    return key
