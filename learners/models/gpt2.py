"""GPT-2 language model in Flax linen, numerically matching Hugging Face ``GPT2LMHeadModel``.

Architecture (as HF GPT-2): learned token and position embeddings, ``n_layer`` pre-LayerNorm blocks
(``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``), causal multi-head attention, a GELU MLP of width
``n_inner`` (default ``4 * n_embd``), a final LayerNorm ``ln_f`` and an LM head tied to the token
embedding. No dropout: the learners fine-tune without it, and HF's eval mode has none either.

**Inputs.** ``input_ids int32[B, T]`` and ``attention_mask bool[B, T]`` (True = real token). Padding may sit on
the left or the right. Position ids are derived from the mask as HF's ``generate`` does:
``position = cumsum(mask) - 1`` (pads get 0; their outputs are meaningless and must be ignored).

**Outputs.** ``GPT2Output(logits float32[B, T, V], hidden [B, T, n_embd], cache)``. ``hidden`` is the last
hidden state *after* ``ln_f`` (HF's ``hidden_states[-1]``), where value heads sit.

**KV cache.** ``init_cache(config, batch, max_len)`` gives a fixed-shape ``KVCache``. Calling the model with
``cache=`` writes the ``T`` new tokens into slots ``[index, index + T)`` of every row (one shared write
index), marks the slots valid from ``attention_mask``, lets each new token attend to valid slots at or
before its own, and continues each row's position count. Prefill (``T`` = prompt length) and decoding
(``T = 1``) are the same call with different static ``T``, so a whole generation is one prefill plus a
``lax`` loop over one compiled decode step. Writing past ``max_len`` is not checked at run time (XLA would
clamp the write): size the cache as prompt length + new tokens.

Parameter tree (names mirror HF's so that checkpoint conversion is a rename)::

    wte/embedding [V, E]   wpe/embedding [n_positions, E]   ln_f/{scale, bias}
    h_<i>/ln_1, h_<i>/ln_2                      LayerNorm {scale, bias}
    h_<i>/attn/c_attn, h_<i>/attn/c_proj        Dense {kernel [in, out], bias}
    h_<i>/mlp/c_fc, h_<i>/mlp/c_proj            Dense {kernel [in, out], bias}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

# HF activation names this model implements: the tanh approximation ("gelu_new") and exact erf GELU.
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_ACTIVATIONS = _TANH_GELUS + ("gelu",)
_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Static GPT-2 hyperparameters (hashable, so it can be a static jit argument).

    ``dtype`` is the compute dtype of activations, the KV cache and the LM-head matmul; parameters stay
    float32, attention softmax runs in float32 and logits are returned as float32.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    scale_attn_by_inverse_layer_idx: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPT2Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPT2Config: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(
                f"GPT2Config.activation_function {self.activation_function!r} is not supported; "
                f"valid choices: {list(_ACTIVATIONS)}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"GPT2Config.dtype {self.dtype!r} is not supported; valid choices: {list(_DTYPES)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    def replace(self, **changes) -> GPT2Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **overrides) -> GPT2Config:
        """2 layers, 2 heads, width 64, the full GPT-2 vocabulary (override ``vocab_size`` to shrink it)."""
        return cls(**{"n_positions": 512, "n_embd": 64, "n_layer": 2, "n_head": 2, **overrides})

    @classmethod
    def gpt2_small(cls, **overrides) -> GPT2Config:
        """HF ``gpt2`` (124M): the LMRL-Gym default base."""
        return cls(**overrides)

    @classmethod
    def gpt2_medium(cls, **overrides) -> GPT2Config:
        """HF ``gpt2-medium`` (355M): LMRL-Gym's Twenty Questions ILQL base."""
        return cls(**{"n_embd": 1024, "n_layer": 24, "n_head": 16, **overrides})


@struct.dataclass
class KVCache:
    """Fixed-shape decoding cache.

    keys, values: one ``[B, max_len, n_head, head_dim]`` array per layer (compute dtype).
    valid: ``bool[B, max_len]``, slots holding a real (unmasked) token.
    next_position: ``int32[B]``, position id of each row's next real token (= its real tokens so far).
    index: ``int32[]``, the next slot to write (shared by all rows).
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid: jax.Array
    next_position: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]


class GPT2Output(NamedTuple):
    logits: jax.Array | None  # float32[B, T, V]; None when called with return_logits=False
    hidden: jax.Array  # [B, T, n_embd], after ln_f
    cache: KVCache | None


def init_cache(config: GPT2Config, batch: int, max_len: int) -> KVCache:
    """An empty cache for ``batch`` rows and ``max_len`` token slots (prompt + generated)."""
    if not 1 <= max_len <= config.n_positions:
        raise ValueError(f"init_cache: max_len must be in [1, n_positions={config.n_positions}], got {max_len}")
    shape = (batch, max_len, config.n_head, config.head_dim)
    zeros = tuple(jnp.zeros(shape, config.compute_dtype) for _ in range(config.n_layer))
    return KVCache(keys=zeros, values=tuple(jnp.zeros_like(z) for z in zeros),
                   valid=jnp.zeros((batch, max_len), bool), next_position=jnp.zeros((batch,), jnp.int32),
                   index=jnp.zeros((), jnp.int32))


def _dense(features: int, std: float, dtype) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.normal(std), bias_init=nn.initializers.zeros)


def _layer_norm(config: GPT2Config) -> nn.LayerNorm:
    # use_fast_variance=False: E[(x-mean)^2] as torch does, for logit parity.
    return nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=config.compute_dtype, param_dtype=jnp.float32,
                        use_fast_variance=False)


class _Attention(nn.Module):
    config: GPT2Config
    layer_idx: int

    def setup(self):
        c = self.config
        # HF init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer).
        self.c_attn = _dense(3 * c.n_embd, 0.02, c.compute_dtype)
        self.c_proj = _dense(c.n_embd, 0.02 / math.sqrt(2 * c.n_layer), c.compute_dtype)

    def __call__(self, x, allowed, kv=None, write_index=None):
        """x [B, T, E]; allowed bool[B, T, S]; kv = (keys, values) [B, S, H, D] cache slots or None."""
        c = self.config
        b, t, _ = x.shape
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        q, k, v = (a.reshape(b, t, c.n_head, c.head_dim) for a in (q, k, v))
        if kv is not None:
            k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, write_index, 0, 0))
            v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, write_index, 0, 0))
        scale = 1.0 / math.sqrt(c.head_dim)
        if c.scale_attn_by_inverse_layer_idx:
            scale /= self.layer_idx + 1
        scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * scale
        # A finite floor, not -inf: a pad query with no valid key gets a uniform (ignored) row, never NaN.
        scores = jnp.where(allowed[:, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhts,bshd->bthd", probs, v).reshape(b, t, c.n_embd)
        return self.c_proj(out), (k, v)


class _MLP(nn.Module):
    config: GPT2Config

    def setup(self):
        c = self.config
        self.c_fc = _dense(c.inner_dim, 0.02, c.compute_dtype)
        self.c_proj = _dense(c.n_embd, 0.02 / math.sqrt(2 * c.n_layer), c.compute_dtype)

    def __call__(self, x):
        approximate = self.config.activation_function in _TANH_GELUS
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=approximate))


class _Block(nn.Module):
    config: GPT2Config
    layer_idx: int

    def setup(self):
        self.ln_1 = _layer_norm(self.config)
        self.attn = _Attention(self.config, self.layer_idx)
        self.ln_2 = _layer_norm(self.config)
        self.mlp = _MLP(self.config)

    def __call__(self, x, allowed, kv=None, write_index=None):
        a, kv = self.attn(self.ln_1(x), allowed, kv, write_index)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class GPT2LMHeadModel(nn.Module):
    """GPT-2 with a tied LM head. See the module docstring for inputs, outputs and the cache."""

    config: GPT2Config

    def setup(self):
        c = self.config
        init = nn.initializers.normal(0.02)
        self.wte = nn.Embed(c.vocab_size, c.n_embd, embedding_init=init, dtype=c.compute_dtype,
                            param_dtype=jnp.float32)
        self.wpe = nn.Embed(c.n_positions, c.n_embd, embedding_init=init, dtype=c.compute_dtype,
                            param_dtype=jnp.float32)
        self.h = [_Block(c, i) for i in range(c.n_layer)]
        self.ln_f = _layer_norm(c)

    def __call__(self, input_ids, attention_mask, cache: KVCache | None = None, position_ids=None,
                 return_logits: bool = True) -> GPT2Output:
        """Forward ``input_ids int32[B, T]`` under ``attention_mask bool[B, T]``.

        Without ``cache``: a full causal forward (``position_ids`` may override the mask-derived ones).
        With ``cache``: appends the ``T`` tokens to it (see module docstring) and returns the new cache.
        ``return_logits=False`` skips the ``[B, T, V]`` projection (use ``logits`` on chosen hidden states).
        """
        _b, t = input_ids.shape
        mask = attention_mask.astype(bool)
        counts = jnp.cumsum(mask, axis=1, dtype=jnp.int32)
        if cache is None:
            if t > self.config.n_positions:
                raise ValueError(f"sequence length {t} exceeds n_positions={self.config.n_positions}")
            if position_ids is None:
                position_ids = jnp.maximum(counts - 1, 0)
            causal = jnp.tril(jnp.ones((t, t), bool))
            allowed = causal[None] & mask[:, None, :]
            write_index, valid = None, None
        else:
            if position_ids is not None:
                raise ValueError("position_ids cannot be given with a cache (they continue the cache's count)")
            position_ids = jnp.maximum(cache.next_position[:, None] + counts - 1, 0)
            write_index = cache.index
            valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, write_index))
            slots = jnp.arange(cache.max_len)
            query_slots = write_index + jnp.arange(t)
            allowed = (slots[None, :] <= query_slots[:, None])[None] & valid[:, None, :]

        x = self.wte(input_ids) + self.wpe(position_ids)
        new_keys, new_values = [], []
        for i, block in enumerate(self.h):
            kv = None if cache is None else (cache.keys[i], cache.values[i])
            x, (k, v) = block(x, allowed, kv, write_index)
            new_keys.append(k)
            new_values.append(v)
        hidden = self.ln_f(x)

        new_cache = None
        if cache is not None:
            new_cache = KVCache(keys=tuple(new_keys), values=tuple(new_values), valid=valid,
                                next_position=cache.next_position + counts[:, -1], index=cache.index + t)
        logits = self.logits(hidden) if return_logits else None
        return GPT2Output(logits=logits, hidden=hidden, cache=new_cache)

    def logits(self, hidden):
        """Tied LM head: ``hidden [..., E] -> float32 [..., V]``."""
        return self.wte.attend(hidden).astype(jnp.float32)

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        return init_cache(self.config, batch, max_len)


# ----------------------------------------------------------------------------------------------------
# Functional helpers. ``params`` is always the bare parameter dict (what ``init_params`` returns), i.e.
# ``model.apply({"params": params}, ...)``.


def init_params(config: GPT2Config, key: jax.Array) -> dict[str, Any]:
    """Randomly initialised parameters (HF's initialisation scheme)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    # Jitted: eager init would compile every initializer op separately.
    return jax.jit(GPT2LMHeadModel(config).init)(key, ids, jnp.ones((1, 1), bool))["params"]


def forward(config: GPT2Config, params, input_ids, attention_mask, cache: KVCache | None = None,
            position_ids=None, return_logits: bool = True) -> GPT2Output:
    """``GPT2LMHeadModel(config).apply`` with bare params (see ``GPT2LMHeadModel.__call__``)."""
    return GPT2LMHeadModel(config).apply({"params": params}, input_ids, attention_mask, cache=cache,
                                         position_ids=position_ids, return_logits=return_logits)


def lm_logits(config: GPT2Config, params, hidden) -> jax.Array:
    """The tied LM head on any ``[..., E]`` hidden states."""
    return GPT2LMHeadModel(config).apply({"params": params}, hidden, method=GPT2LMHeadModel.logits)


def make_apply_fn(config: GPT2Config):
    """``apply_fn(params, input_ids, attention_mask) -> (logits, hidden)``, the learners' model interface."""

    def apply_fn(params, input_ids, attention_mask):
        out = forward(config, params, input_ids, attention_mask)
        return out.logits, out.hidden

    return apply_fn


def last_valid_index(mask) -> jax.Array:
    """Index of each row's last True in ``mask [B, T]`` (0 for an all-False row)."""
    t = mask.shape[1]
    return jnp.max(jnp.where(mask.astype(bool), jnp.arange(t, dtype=jnp.int32), 0), axis=1)


def prefill(config: GPT2Config, params, prompt_tokens, prompt_mask, max_len: int):
    """Run the prompt into a fresh cache of ``max_len`` slots.

    Returns ``(logits float32[B, V], hidden [B, E], cache)`` at each row's last real prompt token (works
    for left and right padding), i.e. the distribution of the first new token.
    """
    b, t = prompt_tokens.shape
    if max_len < t:
        raise ValueError(f"prefill: max_len ({max_len}) must be >= prompt length ({t})")
    out = forward(config, params, prompt_tokens, prompt_mask, cache=init_cache(config, b, max_len),
                  return_logits=False)
    hidden = jnp.take_along_axis(out.hidden, last_valid_index(prompt_mask)[:, None, None], axis=1)[:, 0]
    return lm_logits(config, params, hidden), hidden, out.cache


def decode_step(config: GPT2Config, params, cache: KVCache, tokens, live=None):
    """Append one token per row (``tokens int32[B]``; rows with ``live`` False write a masked slot).

    Returns ``(logits float32[B, V], hidden [B, E], cache)`` for the next token.
    """
    mask = jnp.ones(tokens.shape, bool) if live is None else live.astype(bool)
    out = forward(config, params, tokens[:, None], mask[:, None], cache=cache)
    return out.logits[:, 0], out.hidden[:, 0], out.cache
