"""Flax GPT-2 for the learners: model and KV cache (``gpt2``), jittable decoding (``generate``) and
local Hugging Face checkpoint conversion (``hf``)."""

from learners.models.generate import GENERATE_STATIC_ARGNAMES, Generation, decode_loop, generate
from learners.models.gpt2 import (
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Output,
    KVCache,
    decode_step,
    forward,
    init_cache,
    init_params,
    lm_logits,
    make_apply_fn,
    prefill,
)
from learners.models.hf import from_pretrained, save_pretrained

__all__ = [
    "GENERATE_STATIC_ARGNAMES", "GPT2Config", "GPT2LMHeadModel", "GPT2Output", "Generation", "KVCache",
    "decode_loop", "decode_step", "forward", "from_pretrained", "generate", "init_cache", "init_params",
    "lm_logits", "make_apply_fn", "prefill", "save_pretrained",
]
