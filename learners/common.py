"""Shared pieces of the learners: the batch layout, masked reductions, the optimiser, a generic update.

**Batch layout** (all learners). Token-level arrays have length ``T``:

- ``input_ids`` ``[B, T]`` int32, ``attention_mask`` ``[B, T]`` (1 = real token),
- ``action_mask`` ``[B, T]`` (1 = the token belongs to an action ``Text``; the reference's ``is_action``),
- ``rewards`` ``[B, T]`` float (the env reward sits on the last token of each action, 0 elsewhere).

Per-transition arrays have length ``L = T - 1`` and are *aligned* as in the reference: index ``i`` is the
transition "prefix ``tokens[:i+1]`` -> next token ``tokens[i+1]``". So predictions come from model outputs
``[:, :-1]``, while targets, action flags and rewards come from ``[:, 1:]``. The array-level functions in
``bc``, ``ilql``, ``mc`` and ``ppo`` all take aligned ``[B, L]`` arrays.

**Models** are passed as ``apply_fn(params, input_ids, attention_mask)``; what it returns depends on the
learner (documented in each ``*_loss_fn``). Nothing here depends on a particular network.

**Normalisation.** Every token loss is a sum over the batch's action tokens divided by their count (one
mean over all action tokens in the batch, not a mean of per-sequence means), as the reference does. The
count is floored at 1 so that a batch without action tokens gives 0 instead of the reference's NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

# AdamW settings shared by every reference training script (spec §13 "Common").
ADAM_B1 = 0.9
ADAM_B2 = 0.95
ADAM_EPS = 1e-8


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``log softmax(logits)[..., target]`` for each position. ``logits [..., V]``, ``targets [...]`` int."""
    logits = logits.astype(jnp.float32)
    return -optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def gather_tokens(values: jax.Array, targets: jax.Array) -> jax.Array:
    """``values[..., target]``: the entry of a per-vocabulary array (e.g. Q logits) for each chosen token."""
    return jnp.take_along_axis(values, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def action_count(mask: jax.Array) -> jax.Array:
    """Number of masked-in tokens in the batch, floored at 1 (the divisor of every token loss)."""
    return jnp.maximum(mask.astype(jnp.float32).sum(), 1.0)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``sum(x * mask) / max(sum(mask), 1)`` over the whole batch."""
    mask = mask.astype(jnp.float32)
    return (x * mask).sum() / action_count(mask)


def aligned_mask(batch: dict) -> jax.Array:
    """Float ``[B, T-1]`` mask of transitions whose next token is a real action token."""
    return (batch["action_mask"][:, 1:].astype(jnp.float32) * batch["attention_mask"][:, 1:].astype(jnp.float32))


def decay_mask(params: Any) -> Any:
    """Weight-decay mask: decay matrices (ndim >= 2) only, not biases or LayerNorm scales/biases.

    The reference excludes ``bias`` and every ``ln_*`` parameter by regex; for GPT-2 plus the MLP heads those
    are exactly the 1-D leaves, so this rule needs no knowledge of parameter names.
    """
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def make_optimizer(lr: float, weight_decay: float = 0.0, grad_accum_steps: int = 1) -> optax.GradientTransformation:
    """The reference optimiser: AdamW(b1=0.9, b2=0.95, eps=1e-8) inside ``optax.MultiSteps``.

    The reference gives the base model and each head its own optimiser with these same settings; Adam and
    decoupled weight decay act elementwise, so one optimiser over the joined parameter tree is equivalent.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
    inner = optax.adamw(learning_rate=lr, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, weight_decay=weight_decay,
                        mask=decay_mask)
    return optax.MultiSteps(inner, every_k_schedule=grad_accum_steps)


def is_real_step(opt_state: Any) -> jax.Array:
    """True when the optimiser applied an update this call (``MultiSteps`` back at mini-step 0)."""
    if isinstance(opt_state, optax.MultiStepsState):
        return opt_state.mini_step == 0
    return jnp.asarray(True)


LossFn = Callable[[Any, Callable, dict, Any], tuple]


def make_update(loss_fn: LossFn, config: Any) -> Callable:
    """``update(train_state, batch) -> (train_state, metrics)`` for a ``flax.training.train_state.TrainState``.

    ``loss_fn(params, apply_fn, batch, config) -> (loss, metrics)``; ``config`` is closed over (static).
    The returned function is pure and jittable.
    """

    def update(state, batch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.apply_fn, batch, config)
        state = state.apply_gradients(grads=grads)
        return state, {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}

    return update


def logits_of(model_out: Any) -> jax.Array:
    """The logits from a model output: the array itself, ``out[0]`` of a tuple, or ``out["logits"]``."""
    if isinstance(model_out, dict):
        return model_out["logits"]
    if isinstance(model_out, (tuple, list)):
        return model_out[0]
    return model_out
