"""Flax GPT-2 (learners/models) against Hugging Face's torch GPT2LMHeadModel as the reference: checkpoint
loading (safetensors and .bin), logits under left/right padding, KV-cache decoding, greedy generation,
sampling determinism, the logits hook, and compile-once decoding.

Needs torch (CPU build) and transformers 5 in the test environment; they are part of the test install."""

from __future__ import annotations

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from learners.models import (
    GENERATE_STATIC_ARGNAMES,
    GPT2Config,
    decode_step,
    forward,
    from_pretrained,
    generate,
    init_cache,
    init_params,
    prefill,
    save_pretrained,
)
from learners.models.hf import params_from_state_dict

VOCAB, STOP = 1000, 7
# One jitted entry point per function, shared by the tests, so each shape compiles once per session.
FORWARD = jax.jit(forward, static_argnums=0)
GENERATE = jax.jit(generate, static_argnames=GENERATE_STATIC_ARGNAMES)


@pytest.fixture(scope="module")
def hf_model():
    """A randomly initialised HF GPT-2 whose every weight (biases, LayerNorms too) is perturbed, so that a
    dropped bias or a wrong LayerNorm cannot hide behind HF's zero/one initialisation."""
    torch.manual_seed(0)
    hc = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=VOCAB, n_positions=64,
                                 bos_token_id=STOP, eos_token_id=STOP, pad_token_id=STOP)
    model = transformers.GPT2LMHeadModel(hc).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def loaded(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_gpt2")
    hf_model.save_pretrained(path)
    assert os.path.isfile(path / "model.safetensors")
    return from_pretrained(path)


def _hf_logits(model, ids, mask):
    pos = np.maximum(mask.cumsum(1) - 1, 0)
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask.astype(np.int64)),
                    position_ids=torch.tensor(pos), output_hidden_states=True)
    return out.logits.numpy(), out.hidden_states[-1].numpy()


def _batch(rng, b, t):
    ids = rng.integers(0, VOCAB, (b, t)).astype(np.int32)
    mask = np.ones((b, t), bool)
    mask[1, :3] = False  # left padding
    mask[2, t - 4:] = False  # right padding
    mask[3, :1] = False
    mask[3, t - 2:] = False  # both
    return ids, mask


def test_config_is_read_and_validated(loaded):
    config, params = loaded
    assert (config.vocab_size, config.n_embd, config.n_layer, config.n_head, config.n_positions) == (VOCAB, 64, 2, 2,
                                                                                                      64)
    assert config.activation_function == "gelu_new"
    assert params["h_0"]["attn"]["c_attn"]["kernel"].shape == (64, 192)  # Conv1D [in, out] = Dense kernel
    with pytest.raises(ValueError, match="gelu"):
        GPT2Config.tiny(activation_function="relu")
    with pytest.raises(ValueError, match="divisible"):
        GPT2Config.tiny(n_embd=65)
    with pytest.raises(ValueError, match="max_len"):
        init_cache(config, 1, config.n_positions + 1)


def test_logits_and_hidden_match_hf_with_padding(hf_model, loaded):
    config, params = loaded
    ids, mask = _batch(np.random.default_rng(0), 4, 12)
    ref_logits, ref_hidden = _hf_logits(hf_model, ids, mask)
    out = FORWARD(config, params, jnp.asarray(ids), jnp.asarray(mask))
    assert out.logits.shape == (4, 12, VOCAB) and out.logits.dtype == jnp.float32
    assert np.abs(ref_logits).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(np.asarray(out.logits)[mask], ref_logits[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(out.hidden)[mask], ref_hidden[mask], atol=1e-4, rtol=0)
    # Left-padded row = the same tokens unpadded: positions come from the mask.
    solo = FORWARD(config, params, jnp.asarray(ids[1:2, 3:]), jnp.ones((1, 9), bool))
    np.testing.assert_allclose(np.asarray(solo.logits[0]), np.asarray(out.logits[1, 3:]), atol=1e-5)


def test_bin_checkpoint_and_gpt2model_layout(hf_model, loaded, tmp_path):
    config, params = loaded
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")  # includes the tied lm_head.weight
    with open(tmp_path / "config.json", "w") as f:
        json.dump(hf_model.config.to_dict(), f)
    config_bin, params_bin = from_pretrained(tmp_path)
    assert config_bin == config
    chex.assert_trees_all_equal(params_bin, params)
    # GPT2Model-style keys (no "transformer." prefix, old causal-mask buffers) load too.
    bare = {k.removeprefix("transformer."): v.numpy()
            for k, v in hf_model.state_dict().items() if k != "lm_head.weight"}
    bare["h.0.attn.bias"] = np.ones((1, 1, 64, 64), np.float32)
    chex.assert_trees_all_equal(params_from_state_dict(bare, config), params)
    # A bfloat16 safetensors checkpoint (no numpy dtype) loads as float32.
    bf16 = transformers.GPT2LMHeadModel(hf_model.config)
    bf16.load_state_dict(hf_model.state_dict())
    bf16.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    _, params_bf16 = from_pretrained(tmp_path / "bf16")
    assert params_bf16["wte"]["embedding"].dtype == np.float32
    chex.assert_trees_all_close(params_bf16, params, atol=0.02)
    with pytest.raises(ValueError, match="does not use"):
        params_from_state_dict({**bare, "score.weight": np.zeros(3)}, config)


def test_save_pretrained_loads_in_hf(tmp_path):
    config = GPT2Config.tiny(vocab_size=VOCAB, n_positions=64)  # == the loaded config: FORWARD compiles once
    params = init_params(config, jax.random.key(1))
    save_pretrained(params, config, tmp_path)
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids, mask = _batch(np.random.default_rng(1), 4, 12)
    ref, _ = _hf_logits(model, ids, mask)
    ours = FORWARD(config, params, jnp.asarray(ids), jnp.asarray(mask)).logits
    np.testing.assert_allclose(np.asarray(ours)[mask], ref[mask], atol=1e-4, rtol=0)


def test_kv_cache_decode_equals_full_forward_and_compiles_once(loaded):
    config, params = loaded
    rng = np.random.default_rng(2)
    ids, mask = _batch(rng, 4, 10)
    n_new = 5
    new = rng.integers(0, VOCAB, (4, n_new)).astype(np.int32)
    full_ids = np.concatenate([ids, new], 1)
    full_mask = np.concatenate([mask, np.ones((4, n_new), bool)], 1)
    full_out = FORWARD(config, params, jnp.asarray(full_ids), jnp.asarray(full_mask))
    full = full_out.logits

    logits, hidden, cache = jax.jit(prefill, static_argnums=(0, 4))(config, params, jnp.asarray(ids),
                                                                    jnp.asarray(mask), 10 + n_new)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(full)[np.arange(4), last], atol=1e-4)
    np.testing.assert_allclose(np.asarray(hidden), np.asarray(full_out.hidden)[np.arange(4), last], atol=1e-4)

    step = jax.jit(chex.assert_max_traces(decode_step, n=1), static_argnums=0)
    for i in range(n_new):
        logits, _hidden, cache = step(config, params, cache, jnp.asarray(new[:, i]))
        np.testing.assert_allclose(np.asarray(logits), np.asarray(full[:, 10 + i]), atol=1e-4)
    assert int(cache.index) == 10 + n_new
    np.testing.assert_array_equal(np.asarray(cache.next_position), full_mask.sum(1))

    # Chunked prefill (5 + 5 tokens, one compile) equals one prefill.
    cache2 = init_cache(config, 4, 10)
    a = FORWARD(config, params, jnp.asarray(ids[:, :5]), jnp.asarray(mask[:, :5]), cache=cache2)
    b = FORWARD(config, params, jnp.asarray(ids[:, 5:]), jnp.asarray(mask[:, 5:]), cache=a.cache)
    chunked = np.concatenate([np.asarray(a.logits), np.asarray(b.logits)], 1)
    np.testing.assert_allclose(chunked[mask], np.asarray(full)[:, :10][mask], atol=1e-4)


def _gen_fn():
    """A fresh jitted ``generate`` that fails if it is traced twice."""

    @functools.wraps(generate)  # keeps the signature, so static_argnames still find their parameters
    def gen(*args, **kwargs):
        return generate(*args, **kwargs)

    return jax.jit(chex.assert_max_traces(gen, n=1), static_argnames=GENERATE_STATIC_ARGNAMES)


def _check_stop_padding(tokens, lengths, n, pad):
    for row, length in zip(tokens, lengths):
        assert 1 <= length <= n
        assert (row[length:] == pad).all()
        assert STOP not in row[: length - 1]
        assert length == n or row[length - 1] == STOP


def test_greedy_generate_matches_hf_generate(hf_model, loaded):
    config, params = loaded
    rng = np.random.default_rng(3)
    b, t, n = 4, 8, 12
    ids = rng.integers(8, VOCAB, (b, t)).astype(np.int32)
    mask = np.ones((b, t), bool)
    mask[1, :3] = mask[2, :5] = False  # HF generate wants left padding
    ids[~mask] = STOP
    with torch.no_grad():
        ref = hf_model.generate(torch.tensor(ids, dtype=torch.long),
                                attention_mask=torch.tensor(mask.astype(np.int64)), do_sample=False,
                                max_new_tokens=n, eos_token_id=STOP, pad_token_id=STOP).numpy()[:, t:]
    ref = np.pad(ref, ((0, 0), (0, n - ref.shape[1])), constant_values=STOP)
    out = GENERATE(params, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0), n, STOP, greedy=True,
                   config=config, pad_token_id=STOP)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    np.testing.assert_array_equal(tokens, ref)
    _check_stop_padding(tokens, lengths, n, STOP)
    assert len(set(tokens[:, 0])) > 1  # rows really differ

    # Stop handling on a row that hits the stop token: use a token greedy emits as the stop id.
    stop = int(tokens[0, 3])
    first = int(np.argmax(tokens[0] == stop))
    out2 = GENERATE(params, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0), n, stop, greedy=True,
                    config=config, pad_token_id=0)
    assert int(out2.lengths[0]) == first + 1
    np.testing.assert_array_equal(np.asarray(out2.tokens[0, : first + 1]), tokens[0, : first + 1])
    assert (np.asarray(out2.tokens[0, first + 1:]) == 0).all()

    # Right-padding the same prompts gives the same continuation (positions and cache slots come from the mask).
    right_ids = np.full_like(ids, STOP)
    right_mask = np.zeros_like(mask)
    for r in range(b):
        k = mask[r].sum()
        right_ids[r, :k], right_mask[r, :k] = ids[r, mask[r]], True
    out3 = GENERATE(params, jnp.asarray(right_ids), jnp.asarray(right_mask), jax.random.key(0), n, STOP,
                    greedy=True, config=config, pad_token_id=STOP)
    np.testing.assert_array_equal(np.asarray(out3.tokens), tokens)


def test_sampling_is_keyed_compiles_once_and_hook_applies(loaded):
    config, params = loaded
    rng = np.random.default_rng(4)
    b, t, n = 4, 8, 12  # the greedy test's shapes, so GENERATE reuses its compile
    ids = jnp.asarray(rng.integers(8, VOCAB, (b, t)).astype(np.int32))
    mask = jnp.ones((b, t), bool).at[2, :2].set(False)
    gen = _gen_fn()
    one = jnp.float32(1.0)
    a = gen(params, ids, mask, jax.random.key(5), n, STOP, one, config=config)
    b_ = gen(params, ids, mask, jax.random.key(5), n, STOP, one, config=config)
    c = gen(params, ids[::-1], mask[::-1], jax.random.key(6), n, STOP + 1, jnp.float32(0.7), config=config)
    chex.assert_trees_all_equal(a, b_)  # same key, same tokens; and none of the calls retraced
    c2 = gen(params, ids[::-1], mask[::-1], jax.random.key(5), n, STOP + 1, jnp.float32(0.7), config=config)
    assert not np.array_equal(np.asarray(c.tokens), np.asarray(c2.tokens))  # the key matters
    _check_stop_padding(np.asarray(a.tokens), np.asarray(a.lengths), n, STOP)
    # Near-zero temperature sampling is greedy.
    cold = gen(params, ids, mask, jax.random.key(7), n, STOP, jnp.float32(1e-6), config=config)
    greedy = GENERATE(params, ids, mask, jax.random.key(0), n, STOP, greedy=True, config=config, pad_token_id=STOP)
    chex.assert_trees_all_equal(cold, greedy)

    # The hook sees [B, V] logits and [B, E] hidden states; a large bonus on one token forces it.
    def hook(logits, hidden):
        assert logits.shape == (b, VOCAB) and hidden.shape == (b, config.n_embd)
        return logits.at[:, 42].add(1e4)

    forced = GENERATE(params, ids, mask, jax.random.key(8), n, STOP, one, logits_fn_hook=hook, config=config,
                      pad_token_id=0)
    assert (np.asarray(forced.tokens) == 42).all() and (np.asarray(forced.lengths) == n).all()
    stopped = GENERATE(params, ids, mask, jax.random.key(8), n, 42, one, logits_fn_hook=hook, config=config,
                       pad_token_id=0)
    np.testing.assert_array_equal(np.asarray(stopped.lengths), 1)
    assert (np.asarray(stopped.tokens[:, 0]) == 42).all() and (np.asarray(stopped.tokens[:, 1:]) == 0).all()


def test_bfloat16_compute_and_presets(loaded):
    config, params = loaded
    ids, mask = _batch(np.random.default_rng(5), 4, 12)  # the logits test's shapes
    ref = FORWARD(config, params, jnp.asarray(ids), jnp.asarray(mask))
    out = FORWARD(config.replace(dtype="bfloat16"), params, jnp.asarray(ids), jnp.asarray(mask))
    assert out.logits.dtype == jnp.float32 and out.hidden.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out.logits)[mask], np.asarray(ref.logits)[mask], atol=0.15)
    assert GPT2Config.tiny().vocab_size == 50257
    assert GPT2Config.gpt2_small().n_embd == 768 and GPT2Config.gpt2_medium().n_layer == 24
