"""Hugging Face GPT-2 checkpoints <-> ``learners.models.gpt2`` parameters, from and to LOCAL folders only.

Reads ``config.json`` plus ``model.safetensors`` (via the ``safetensors`` numpy API), or ``pytorch_model.bin``
(needs torch, imported only then), or their sharded ``*.index.json`` forms. Both ``GPT2LMHeadModel``
(``transformer.`` prefix) and bare ``GPT2Model`` key layouts are accepted. HF's ``Conv1D`` already stores
weights as ``[in, out]``, which is Flax's ``Dense.kernel`` layout, so no transpose is needed; the LM head is
tied to ``wte`` and not stored separately.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from learners.models.gpt2 import GPT2Config

SAFETENSORS_NAME = "model.safetensors"
TORCH_NAME = "pytorch_model.bin"
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of old checkpoints
_CONFIG_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon", "n_inner",
                "activation_function", "scale_attn_by_inverse_layer_idx")


def config_from_hf(hf_config: dict[str, Any], dtype: str = "float32") -> GPT2Config:
    """``GPT2Config`` from a parsed HF ``config.json``; ValueError for options this model does not implement."""
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"expected a GPT-2 checkpoint (model_type 'gpt2'), got model_type {model_type!r}")
    if not hf_config.get("tie_word_embeddings", True):
        raise ValueError("only tied word embeddings are supported (tie_word_embeddings must be true)")
    if not hf_config.get("scale_attn_weights", True):
        raise ValueError("scale_attn_weights=false is not supported (valid: true)")
    kwargs = {k: hf_config[k] for k in _CONFIG_KEYS if k in hf_config}
    return GPT2Config(**kwargs, dtype=dtype)


def config_to_hf(config: GPT2Config) -> dict[str, Any]:
    d = {k: getattr(config, k) for k in _CONFIG_KEYS}
    d.update(model_type="gpt2", architectures=["GPT2LMHeadModel"], tie_word_embeddings=True, scale_attn_weights=True,
             n_ctx=config.n_positions)
    eot = 50256 if config.vocab_size > 50256 else None  # GPT-2's <|endoftext|>; none in smaller vocabularies
    d.update(bos_token_id=eot, eos_token_id=eot)
    return d


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    with safe_open(path, framework="numpy") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            try:
                out[name] = f.get_tensor(name)
            except TypeError:  # bfloat16 has no numpy dtype: go through jax (ml_dtypes) instead
                with safe_open(path, framework="flax") as g:
                    out[name] = np.asarray(g.get_tensor(name).astype("float32"))
    return out


def _load_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"{path} is a PyTorch checkpoint; reading it needs torch (pip install torch)") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}


def _load_state(path: str) -> dict[str, np.ndarray]:
    for name, loader in ((SAFETENSORS_NAME, _load_safetensors), (TORCH_NAME, _load_torch)):
        single = os.path.join(path, name)
        if os.path.isfile(single):
            return loader(single)
        index = single + ".index.json"
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(loader(os.path.join(path, shard)))
            return state
    raise FileNotFoundError(f"no {SAFETENSORS_NAME} or {TORCH_NAME} (or sharded index) in {path!r}")


def params_from_state_dict(state: dict[str, np.ndarray], config: GPT2Config) -> dict[str, Any]:
    """Convert an HF GPT-2 state dict (numpy arrays) to the Flax parameter tree, checking every shape."""
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    used = set()

    def take(name, shape):
        if name not in state:
            raise ValueError(f"checkpoint lacks {name!r}")
        arr = np.asarray(state[name], dtype=np.float32)
        if arr.shape != shape:
            raise ValueError(f"{name!r} has shape {arr.shape}, config expects {shape}")
        used.add(name)
        return arr

    e, v, inner = config.n_embd, config.vocab_size, config.inner_dim

    def ln(prefix):
        return {"scale": take(f"{prefix}.weight", (e,)), "bias": take(f"{prefix}.bias", (e,))}

    def dense(prefix, n_in, n_out):
        return {"kernel": take(f"{prefix}.weight", (n_in, n_out)), "bias": take(f"{prefix}.bias", (n_out,))}

    params: dict[str, Any] = {
        "wte": {"embedding": take("wte.weight", (v, e))},
        "wpe": {"embedding": take("wpe.weight", (config.n_positions, e))},
        "ln_f": ln("ln_f"),
    }
    for i in range(config.n_layer):
        p = f"h.{i}"
        params[f"h_{i}"] = {
            "ln_1": ln(f"{p}.ln_1"),
            "attn": {"c_attn": dense(f"{p}.attn.c_attn", e, 3 * e), "c_proj": dense(f"{p}.attn.c_proj", e, e)},
            "ln_2": ln(f"{p}.ln_2"),
            "mlp": {"c_fc": dense(f"{p}.mlp.c_fc", e, inner), "c_proj": dense(f"{p}.mlp.c_proj", inner, e)},
        }
    if "lm_head.weight" in state:
        used.add("lm_head.weight")
        if not np.array_equal(np.asarray(state["lm_head.weight"], np.float32), params["wte"]["embedding"]):
            raise ValueError("lm_head.weight differs from wte.weight; only tied GPT-2 heads are supported")
    unexpected = sorted(k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        raise ValueError(f"checkpoint has weights this GPT-2 does not use: {unexpected[:8]}")
    return params


def from_pretrained(path: str | os.PathLike, dtype: str = "float32") -> tuple[GPT2Config, dict[str, Any]]:
    """Load a local HF GPT-2 folder. Returns ``(config, params)`` (params float32, ``dtype`` = compute dtype)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a local directory (only local checkpoints can be loaded)")
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = config_from_hf(json.load(f), dtype=dtype)
    return config, params_from_state_dict(_load_state(path), config)


def state_dict_from_params(params: dict[str, Any], config: GPT2Config) -> dict[str, np.ndarray]:
    """The inverse of ``params_from_state_dict`` (``GPT2LMHeadModel`` key names, float32, no lm_head)."""
    state = {"transformer.wte.weight": params["wte"]["embedding"], "transformer.wpe.weight": params["wpe"]["embedding"],
             "transformer.ln_f.weight": params["ln_f"]["scale"], "transformer.ln_f.bias": params["ln_f"]["bias"]}
    for i in range(config.n_layer):
        h, p = params[f"h_{i}"], f"transformer.h.{i}"
        for ln_name in ("ln_1", "ln_2"):
            state[f"{p}.{ln_name}.weight"] = h[ln_name]["scale"]
            state[f"{p}.{ln_name}.bias"] = h[ln_name]["bias"]
        for mod, layer in (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj")):
            state[f"{p}.{mod}.{layer}.weight"] = h[mod][layer]["kernel"]
            state[f"{p}.{mod}.{layer}.bias"] = h[mod][layer]["bias"]
    return {k: np.ascontiguousarray(np.asarray(a, dtype=np.float32)) for k, a in state.items()}


def save_pretrained(params: dict[str, Any], config: GPT2Config, path: str | os.PathLike) -> None:
    """Write ``config.json`` + ``model.safetensors`` that HF's ``GPT2LMHeadModel.from_pretrained`` reads."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config_to_hf(config), f, indent=2)
    save_file(state_dict_from_params(params, config), os.path.join(path, SAFETENSORS_NAME), metadata={"format": "pt"})
