"""A stand-in for the pretrained GPT-2 the reference starts from: next-token prediction over the dataset's own
transition texts, from scratch.

The reference fine-tunes Hugging Face ``gpt2``, which already reads the whole observation text. Our models are
trained from scratch on near-random data, where imitating the moves (BC) never asks the model to carry the
observation's details to the action, and a value model started from nothing must learn to read the text from the
values alone (on maze FO it often does not tell apart cells whose texts differ only in the column; see the README).
``pretrain_lm`` trains a GPT-2 on rows ``[BOS] obs_t action_t obs_{t+1}`` with the loss on every real token:
predicting the next observation (its position, its wall sentence) from the current one and the move asks exactly
for the features a value needs. ``train_value(value_init="lm")`` starts the value model's GPT-2 from it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax.training import train_state

from learners.bc import bc_loss_fn
from learners.common import make_optimizer, make_update
from learners.loop import MetricsLog, make_train_chunk, run_chunks
from learners.models import GPT2Config, init_params, make_apply_fn
from learners.rollout import Trajectory, VocabMap

LM_KEYS = ("input_ids", "attention_mask", "action_mask")


def transition_rows(traj: Trajectory, vocab: VocabMap, max_len: int, drop_next_first: bool = True) -> dict:
    """``[(T - 1) * N, max_len]`` rows (time-major) of ``obs_t action_t obs_{t+1}``, real tokens first (right-padded),
    cut to ``max_len`` tokens; ``action_mask`` = ``attention_mask`` (the loss covers every real token).

    ``obs_{t+1}`` is left out when step ``t`` ended its episode (the next prompt is another episode's start), and
    its first token (the BOS) is dropped when ``drop_next_first``."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    p, pm = traj.prompt_tokens[:-1], traj.prompt_mask[:-1]
    a, am = traj.action_tokens[:-1], traj.action_mask[:-1]
    n, nm = traj.prompt_tokens[1:], traj.prompt_mask[1:]
    if drop_next_first:
        nm = nm & (jnp.cumsum(nm, axis=-1) > 1)
    nm = nm & ~traj.done[:-1, :, None].astype(bool)
    ids = jnp.concatenate([p, a, n], axis=-1)
    mask = jnp.concatenate([pm, am, nm], axis=-1)
    ids = ids.reshape(-1, ids.shape[-1])
    mask = mask.reshape(-1, mask.shape[-1])
    order = jnp.argsort(~mask, axis=-1, stable=True)  # real tokens first, in their order
    ids = jnp.take_along_axis(ids, order, axis=-1)[:, :max_len]
    mask = jnp.take_along_axis(mask, order, axis=-1)[:, :max_len]
    ids = jnp.where(mask, vocab.encode(ids), 0).astype(jnp.int32)
    return {"input_ids": ids, "attention_mask": mask, "action_mask": mask}


def pretrain_lm(config: GPT2Config, rows: dict, key: jax.Array, num_updates: int, batch_size: int = 64,
                lr: float = 1e-3, weight_decay: float = 0.0, chunk: int = 100, log: Callable | None = None,
                progress: bool = False) -> tuple[dict, list[float]]:
    """A fresh GPT-2 (``config``) trained ``num_updates`` steps of next-token prediction on ``rows``
    (``transition_rows``); minibatches drawn in-graph, ``chunk`` updates per jitted scan, driven by the learners'
    host loop (``learners.loop.run_chunks``: its rows go to ``log``, e.g. a ``MetricsLog``; a progress bar).
    Returns the params and the mean loss of each chunk."""
    if num_updates < 1 or num_updates % chunk:
        raise ValueError(f"num_updates ({num_updates}) must be a positive multiple of chunk ({chunk})")
    if rows["input_ids"].shape[1] > config.n_positions:
        raise ValueError(f"rows are {rows['input_ids'].shape[1]} tokens wide, the model has "
                         f"n_positions={config.n_positions}")
    k_init, k_train = jax.random.split(key)
    state = train_state.TrainState.create(apply_fn=make_apply_fn(config), params=init_params(config, k_init),
                                          tx=make_optimizer(lr, weight_decay))
    run = make_train_chunk(make_update(bc_loss_fn, None), batch_size, chunk, keys=LM_KEYS)
    data = {k: rows[k] for k in LM_KEYS}
    state, metrics, _, _ = run_chunks(lambda st, k: run(st, data, k), state, k_train, num_chunks=num_updates // chunk,
                                      chunk=chunk, log=log if log is not None else MetricsLog(None),
                                      desc="LM pretraining", progress=progress)
    return state.params, [m["loss"] for m in metrics]
