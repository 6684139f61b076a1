"""In-graph token policies and rollouts: ``rollout(vec_env, policy_fn, params, key, num_steps)`` is one
jitted ``lax.scan`` in which the language model reads the env's tokens, writes action tokens and the env
parses them.

**Prompts.** Every step the policy sees a left-padded ``prompt int32[N, P]`` / ``prompt_mask bool[N, P]``
(real tokens last, so prompt + generated tokens are contiguous; positions come from the mask). Two modes:

- ``history_len=None``: the prompt is the env's current observation (optionally after ``bos_id``). This is
  the right mode for tasks whose observation already *is* the reference's history window (maze FO shows the
  newest text, ``last_k=1``; maze PO renders its 40-text window itself). ``P = max_tokens (+1 with BOS)``.
- ``history_len=H``: a per-env sliding buffer of the last ``H`` tokens of ``[BOS] obs act obs act ...``,
  restarted at every episode start; for tasks whose observation is only the newest text.

**Actions.** ``policy_fn(params, prompt, prompt_mask, key) -> (tokens int32[N, A], mask bool[N, A])`` in the
env tokenizer's ids, padded with ``vec_env.pad_id``. ``make_token_policy`` builds one from the Flax GPT-2:
KV-cache ``generate`` up to the stop token (the reference's EOS, ``"\\n"`` for maze) or ``max_new_tokens``,
greedy or sampled at ``temperature``; like the reference's ``out_str_process`` (``x.removesuffix("\\n") +
"\\n"``) it appends the stop token when generation ran out of room (``append_stop``).

**Vocabulary.** A from-scratch model need not carry GPT-2's 50,257-row LM head: ``VocabMap`` maps the few
ids a task can produce (its text pieces, action strings, pad/EOS) to a compact model vocabulary and back,
in-graph. Token ids the env writes stay GPT-2's, so data and tokenisation are the reference's.

**Trajectories** (``Trajectory``) are time-major ``[T, N, ...]`` and are what datasets store too
(``learners.datasets``); ``bc_batch`` turns them into the learners' batch layout (``learners.common``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from learners.ilql import perturbed_logits
from learners.models import GPT2Config, decode_loop, decode_step, generate, prefill
from learners.models.heads import apply_heads

# ----------------------------------------------------------------------------------------------------
# Trajectories


@struct.dataclass
class Trajectory:
    """Time-major transitions, ``T`` steps of ``N`` envs (leading axes ``[T, N]``; ``flat()`` gives ``[T*N]``).

    prompt_tokens int32[T, N, P], prompt_mask bool[T, N, P]: what the policy read (left-padded, env ids).
    action_tokens int32[T, N, A], action_mask bool[T, N, A]: what it wrote (right-padded with pad_id).
    action int32[T, N]: the env's parse of the action text (``num_actions`` = no action's text).
    reward float32[T, N]; terminated, truncated, done bool[T, N] (done = either; the env auto-resets, so
    step ``t + 1`` of a done env is the first step of its next episode).
    info: the env's other per-env info (e.g. maze ``valid_action``), ``[T, N]`` leaves.
    """

    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    action_tokens: jax.Array
    action_mask: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    done: jax.Array
    info: dict

    @property
    def num_steps(self) -> int:
        return self.reward.shape[0]

    @property
    def num_envs(self) -> int:
        return self.reward.shape[1]

    def flat(self) -> Trajectory:
        """Transitions as one axis ``[T * N, ...]`` (time-major order)."""
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), self)


def first_episode_mask(done: jax.Array) -> jax.Array:
    """bool[T, N]: steps that belong to each env's first episode (up to and including its first done)."""
    before = jnp.cumsum(done.astype(jnp.int32), axis=0) - done.astype(jnp.int32)
    return before == 0


def first_episode_returns(traj: Trajectory) -> tuple[jax.Array, jax.Array]:
    """``(returns float32[N], finished bool[N])`` of each env's first episode (undiscounted)."""
    keep = first_episode_mask(traj.done)
    return (traj.reward * keep).sum(axis=0), traj.done.any(axis=0)


@functools.partial(jax.jit, static_argnames=("vocab",))
def bc_batch(traj: Trajectory, vocab: VocabMap | None = None) -> dict[str, jax.Array]:
    """The learners' batch layout (``learners.common``) of every transition, ``[M, P + A]`` with ``M = T*N``.

    ``input_ids`` = prompt then action tokens (real tokens contiguous: the prompt is left-padded, the action
    right-padded), mapped into the model vocabulary when ``vocab`` is given; ``attention_mask``;
    ``action_mask`` (the action's real tokens); ``rewards`` (the env reward on the action's last token).
    Also ``done [M]`` and ``reward [M]`` per transition. Jitted (``vocab`` static).
    """
    t = traj.flat() if traj.reward.ndim == 2 else traj
    ids = jnp.concatenate([t.prompt_tokens, t.action_tokens], axis=-1)
    if vocab is not None:
        ids = vocab.encode(ids)
    attn = jnp.concatenate([t.prompt_mask, t.action_mask], axis=-1)
    act = jnp.concatenate([jnp.zeros_like(t.prompt_mask), t.action_mask], axis=-1)
    p = t.prompt_tokens.shape[-1]
    last = p + jnp.maximum(t.action_mask.sum(-1), 1) - 1
    rewards = jnp.where(jnp.arange(ids.shape[-1])[None] == last[:, None], t.reward[:, None], 0.0)
    return {"input_ids": ids.astype(jnp.int32), "attention_mask": attn, "action_mask": act,
            "rewards": rewards.astype(jnp.float32), "done": t.done, "reward": t.reward}


# ----------------------------------------------------------------------------------------------------
# Vocabulary


class VocabMap:
    """A compact model vocabulary over a subset of a tokenizer's ids (static tables, in-graph lookups).

    ``ids``: the tokenizer ids the model can read or write (model id ``i`` = ``ids[i]``). Tokenizer ids not
    in ``ids`` read as ``unknown`` (default: the first id, which ``for_env`` makes the pad id).
    """

    def __init__(self, ids, full_size: int, unknown: int | None = None):
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size == 0 or len(np.unique(ids)) != ids.size:
            raise ValueError("VocabMap ids must be a non-empty list of distinct token ids")
        if ids.min() < 0 or ids.max() >= full_size:
            raise ValueError(f"VocabMap ids must lie in [0, {full_size})")
        self.full_size = int(full_size)
        self.ids = ids.astype(np.int32)
        unknown_model = 0 if unknown is None else int(np.flatnonzero(self.ids == unknown)[0])
        self.to_model = np.full((self.full_size,), unknown_model, np.int32)
        self.to_model[self.ids] = np.arange(ids.size, dtype=np.int32)

    @property
    def size(self) -> int:
        return int(self.ids.size)

    def encode(self, tokens: jax.Array) -> jax.Array:
        """Tokenizer ids -> model ids."""
        return jnp.asarray(self.to_model)[tokens]

    def decode(self, model_ids: jax.Array) -> jax.Array:
        """Model ids -> tokenizer ids."""
        return jnp.asarray(self.ids)[model_ids]

    def model_id(self, token_id: int) -> int:
        return int(self.to_model[int(token_id)])

    @classmethod
    def identity(cls, size: int) -> VocabMap:
        return cls(np.arange(size), size)

    @classmethod
    def for_env(cls, vec_env, extra_ids=(), pad_to: int = 8) -> VocabMap:
        """Every id ``vec_env``'s text can produce: its text pieces (the text layer renders an observation as
        the concatenation of its pieces' encodings), its action strings, pad/EOS and ``extra_ids``; pad id
        first. Tasks with in-graph numbers (``Num`` pieces) get the identity map. ``pad_to``: round the size
        up (with unused ids) for friendlier matmul shapes."""
        tok = vec_env.tokenizer
        if tok is None:
            raise ValueError("VocabMap.for_env needs a tokenizer: use obs_mode 'tokens'/'both'")
        text = vec_env.text
        if getattr(text, "nums", None):
            return cls.identity(tok.vocab_size)
        found = {int(vec_env.pad_id)}
        for ids in tok.encode_batch(list(text.strings)):
            found.update(int(i) for i in ids)
        found.update(int(i) for i in np.asarray(vec_env.action_token_table()).reshape(-1))
        found.update(int(i) for i in extra_ids)
        if tok.eos_id is not None:
            found.add(int(tok.eos_id))
        rest = sorted(found - {int(vec_env.pad_id)})
        ids = [int(vec_env.pad_id)] + rest
        if pad_to > 1:
            spare = (i for i in range(tok.vocab_size) if i not in found)
            while len(ids) % pad_to:
                ids.append(next(spare))
        return cls(ids, tok.vocab_size, unknown=int(vec_env.pad_id))


# ----------------------------------------------------------------------------------------------------
# Policies

PolicyFn = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def stop_token_id(vec_env, text: str = "\n") -> int:
    """The tokenizer id of the stop text (the reference's EOS: ``tokenizer.encode("\\n")[0]``)."""
    ids = vec_env.tokenizer.encode(text)
    if len(ids) != 1:
        raise ValueError(f"stop text {text!r} is {len(ids)} tokens with {vec_env.tokenizer.name}; need exactly 1")
    return int(ids[0])


def _check_vocab(config: GPT2Config, vocab: VocabMap | None, stop_token_id: int, pad_token_id: int,
                 max_new_tokens: int):
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    vocab = vocab if vocab is not None else VocabMap.identity(config.vocab_size)
    if vocab.size > config.vocab_size:
        raise ValueError(f"vocab has {vocab.size} ids but the model's vocab_size is {config.vocab_size}")
    stop_m = vocab.model_id(stop_token_id)
    if int(vocab.ids[stop_m]) != stop_token_id:
        raise ValueError(f"stop token {stop_token_id} is not in the model vocabulary")
    return vocab, stop_m, vocab.model_id(pad_token_id)


def _finish(gen, vocab: VocabMap, max_new_tokens: int, stop_token_id: int, pad_token_id: int, append_stop: bool):
    """Model-vocabulary ``Generation`` -> env ids ``(tokens [N, A], mask [N, A])`` (see ``make_token_policy``)."""
    tokens = vocab.decode(gen.tokens)
    lengths = gen.lengths
    if append_stop:
        stopped = jnp.take_along_axis(tokens, (lengths - 1)[:, None], axis=1)[:, 0] == stop_token_id
        tokens = jnp.pad(tokens, ((0, 0), (0, 1)), constant_values=pad_token_id)
        tokens = jnp.where((jnp.arange(max_new_tokens + 1)[None] == lengths[:, None]) & ~stopped[:, None],
                           stop_token_id, tokens)
        lengths = lengths + (~stopped).astype(jnp.int32)
    mask = jnp.arange(tokens.shape[1])[None] < lengths[:, None]
    return jnp.where(mask, tokens, pad_token_id).astype(jnp.int32), mask


def make_token_policy(config: GPT2Config, *, stop_token_id: int, pad_token_id: int, max_new_tokens: int = 8,
                      vocab: VocabMap | None = None, greedy: bool = False, temperature: float = 1.0,
                      append_stop: bool = True, logits_fn_hook=None) -> PolicyFn:
    """A GPT-2 token policy ``policy(params, prompt, prompt_mask, key) -> (tokens int32[N, A], mask bool[N, A])``.

    Generates up to ``max_new_tokens`` with the KV cache, stopping a row at ``stop_token_id`` (kept).
    ``append_stop`` (the reference's ``out_str_process``): a row that ran out of room gets the stop token
    appended, so ``A = max_new_tokens + 1``; otherwise ``A = max_new_tokens``. Ids are the tokenizer's;
    ``vocab`` maps them to the model's vocabulary and back. ``temperature`` may be a traced scalar;
    ``greedy`` is static. ``logits_fn_hook(logits, hidden)`` perturbs each token's logits.
    """
    vocab, stop_m, pad_m = _check_vocab(config, vocab, stop_token_id, pad_token_id, max_new_tokens)

    def policy(params, prompt, prompt_mask, key):
        gen = generate(params, vocab.encode(prompt), prompt_mask, key, max_new_tokens, stop_m, temperature,
                       greedy, logits_fn_hook, config=config, pad_token_id=pad_m)
        return _finish(gen, vocab, max_new_tokens, stop_token_id, pad_token_id, append_stop)

    return policy


def make_value_policy(config: GPT2Config, *, beta, stop_token_id: int, pad_token_id: int,
                      max_new_tokens: int = 8, vocab: VocabMap | None = None, heads=("q1", "q2"),
                      greedy: bool = False, temperature: float = 1.0, append_stop: bool = True) -> PolicyFn:
    """ILQL / MC decoding (spec §13.2): ``policy(params, prompt, prompt_mask, key)`` with
    ``params = {"pi_beta": <BC GPT-2 params>, "value": <value-model params>}``.

    Every generated token is drawn from ``pi_beta_logits + beta * min_k Q_k`` over the (model) vocabulary,
    where ``pi_beta`` is the frozen BC model and ``Q_k`` the value model's Q heads (``heads``: ``("q1",
    "q2")`` for ILQL, ``("q",)`` for MC) on its own GPT-2 base; V is not subtracted, as the reference. Both
    models run with their own KV cache. ``beta`` may be traced. Output as ``make_token_policy``.
    """
    vocab, stop_m, pad_m = _check_vocab(config, vocab, stop_token_id, pad_token_id, max_new_tokens)
    heads = tuple(heads)
    if not heads or not all(h.startswith("q") for h in heads) or len(heads) > 2:
        raise ValueError(f"heads must be one or two Q heads, e.g. ('q1', 'q2') or ('q',); got {heads}")

    def policy(params, prompt, prompt_mask, key):
        ids = vocab.encode(prompt)
        max_len = prompt.shape[1] + max_new_tokens - 1
        pb, vp = params["pi_beta"], params["value"]
        logits, _, cache_b = prefill(config, pb, ids, prompt_mask, max_len)
        _, hidden, cache_v = prefill(config, vp["base"], ids, prompt_mask, max_len)

        def step_fn(caches, tokens, live):
            lg, _, cb = decode_step(config, pb, caches[0], tokens, live)
            _, hd, cv = decode_step(config, vp["base"], caches[1], tokens, live)
            return lg, hd, (cb, cv)

        def hook(lg, hd):
            q = apply_heads(config, vp, hd, heads)
            return perturbed_logits(lg, q[heads[0]], beta, q[heads[1]] if len(heads) == 2 else None)

        gen = decode_loop(step_fn, (cache_b, cache_v), logits, hidden, key, max_new_tokens, stop_m, temperature,
                          greedy, hook, pad_m)
        return _finish(gen, vocab, max_new_tokens, stop_token_id, pad_token_id, append_stop)

    return policy


# ----------------------------------------------------------------------------------------------------
# Prompt buffers


def left_align(tokens: jax.Array, length: jax.Array, pad_id: int, bos_id: int | None = None):
    """Right-padded ``tokens [N, L]`` with ``length [N]`` -> left-padded ``(tokens [N, L'], mask [N, L'])``,
    ``L' = L + 1`` with a leading ``bos_id``."""
    n, width = tokens.shape
    if bos_id is not None:
        tokens = jnp.concatenate([jnp.full((n, 1), bos_id, tokens.dtype), tokens], axis=1)
        length = length + 1
        width += 1
    shift = width - length
    cols = jnp.arange(width)[None]
    src = (cols - shift[:, None]) % width
    mask = cols >= shift[:, None]
    out = jnp.take_along_axis(tokens, src, axis=1)
    return jnp.where(mask, out, pad_id).astype(jnp.int32), mask


def append_tokens(buf: jax.Array, buf_mask: jax.Array, seg: jax.Array, seg_mask: jax.Array, pad_id: int):
    """Append right-padded ``seg [N, W]`` to left-padded ``buf [N, H]``, keeping the newest ``H`` tokens.

    The real tokens of ``[buf, seg]`` are contiguous from ``H - n`` to ``H + l``; the newest ``H`` of them are
    the slice starting at ``l``.
    """
    h = buf.shape[1]
    n = buf_mask.sum(axis=1)
    ln = seg_mask.sum(axis=1)
    cat = jnp.concatenate([buf, seg.astype(buf.dtype)], axis=1)
    out = jax.vmap(lambda c, s: jax.lax.dynamic_slice(c, (s,), (h,)))(cat, ln)
    mask = jnp.arange(h)[None] >= (h - jnp.minimum(n + ln, h))[:, None]
    return jnp.where(mask, out, pad_id), mask


def _prompt_width(vec_env, history_len: int | None, bos_id: int | None) -> int:
    if vec_env.max_tokens is None:
        raise ValueError("rollouts need token observations: make_vec(..., obs_mode='tokens' or 'both')")
    if history_len is None:
        return vec_env.max_tokens + (bos_id is not None)
    if history_len < vec_env.max_tokens + (bos_id is not None):
        raise ValueError(f"history_len={history_len} must hold one observation ({vec_env.max_tokens} tokens"
                         f"{' + BOS' if bos_id is not None else ''})")
    return int(history_len)


def _start_prompt(vec_env, obs, history_len, bos_id):
    """The prompt of an episode's first step: ``[BOS] obs``, left-padded to the prompt width."""
    tokens, mask = left_align(obs["tokens"], obs["length"], vec_env.pad_id, bos_id)
    if history_len is None:
        return tokens, mask
    return _place_right(tokens, mask, history_len, vec_env.pad_id)


def _place_right(tokens, mask, width, pad):
    """Left-padded ``[N, L]`` -> left-padded ``[N, width]`` (``width >= L``)."""
    n, length = tokens.shape
    tokens = jnp.concatenate([jnp.full((n, width - length), pad, tokens.dtype), tokens], axis=1)
    mask = jnp.concatenate([jnp.zeros((n, width - length), bool), mask], axis=1)
    return tokens, mask


def _next_prompt(vec_env, prompt, pmask, act, amask, obs, done, history_len, bos_id):
    start, smask = _start_prompt(vec_env, obs, history_len, bos_id)
    if history_len is None:
        return start, smask
    pad = vec_env.pad_id
    buf, bmask = append_tokens(prompt, pmask, act, amask, pad)
    # The observation is right-padded; its mask is ``col < length``.
    omask = jnp.arange(obs["tokens"].shape[1])[None] < obs["length"][:, None]
    buf, bmask = append_tokens(buf, bmask, jnp.where(omask, obs["tokens"], pad), omask, pad)
    return jnp.where(done[:, None], start, buf), jnp.where(done[:, None], smask, bmask)


# ----------------------------------------------------------------------------------------------------
# Rollouts

# act_fn(params, prompt, prompt_mask, key, obs, state) -> (action tokens [N, A], mask [N, A])
ActFn = Callable[..., tuple[jax.Array, jax.Array]]


def scan_env(vec_env, act_fn: ActFn, params, key, num_steps: int, *, history_len: int | None = None,
             bos_id: int | None = None, env_params=None, carry=None, record: Callable | None = None):
    """The rollout scan with a general actor ``act_fn(params, prompt, prompt_mask, key, obs, state)`` (it may
    read the env's state, e.g. an expert). Traceable; returns ``(Trajectory, carry)``. ``carry`` continues a
    previous call's envs (default: a fresh reset). ``record(info) -> {name: [N] array}``: more per-step facts
    for ``Trajectory.info``, read from the step's whole ``info`` (e.g. from ``final_observation``)."""
    if vec_env.action_mode != "tokens":
        raise ValueError("rollouts write action text: make_vec(..., action_mode='tokens')")
    _prompt_width(vec_env, history_len, bos_id)
    if carry is None:
        key, k_reset = jax.random.split(key)
        obs, state = vec_env.reset(k_reset, env_params)
        prompt, pmask = _start_prompt(vec_env, obs, history_len, bos_id)
        carry = (state, prompt, pmask)

    def body(c, k):
        state, prompt, pmask = c
        k_act, k_env = jax.random.split(k)
        act, amask = act_fn(params, prompt, pmask, k_act, None, state)
        obs, state, reward, term, trunc, info = vec_env.step(k_env, state, act, env_params)
        done = term | trunc
        parsed = info.get("action_index", info.get("action"))
        extra = {k2: v for k2, v in info.items()
                 if k2 not in ("final_observation", "action_index", "action", "terminated", "truncated")
                 and hasattr(v, "shape") and v.shape == reward.shape}
        if record is not None:
            extra.update(record(info))
        rec = Trajectory(prompt_tokens=prompt, prompt_mask=pmask, action_tokens=act, action_mask=amask,
                         action=parsed, reward=reward.astype(jnp.float32), terminated=term, truncated=trunc,
                         done=done, info=extra)
        prompt, pmask = _next_prompt(vec_env, prompt, pmask, act, amask, obs, done, history_len, bos_id)
        return (state, prompt, pmask), rec

    carry, traj = jax.lax.scan(body, carry, jax.random.split(key, num_steps))
    return traj, carry


_STATIC = ("vec_env", "policy_fn", "num_steps", "history_len", "bos_id")


@functools.partial(jax.jit, static_argnames=_STATIC)
def rollout(vec_env, policy_fn: PolicyFn, params, key, num_steps: int, *, history_len: int | None = None,
            bos_id: int | None = None, env_params=None) -> Trajectory:
    """``num_steps`` steps of ``vec_env`` (reset first) under ``policy_fn``: one jitted ``lax.scan``.

    ``policy_fn(params, prompt, prompt_mask, key) -> (tokens, mask)`` (see ``make_token_policy``);
    ``vec_env`` must have token observations and ``action_mode="tokens"``. ``history_len`` / ``bos_id``: see
    the module docstring. ``env_params``: the env's traced params (default: the vec env's own).
    Returns a time-major ``Trajectory``. Compiles once per (vec_env, policy_fn, num_steps, ...).
    """
    traj, _ = scan_env(vec_env, lambda p, t, m, k, _o, _s: policy_fn(p, t, m, k), params, key, num_steps,
                       history_len=history_len, bos_id=bos_id, env_params=env_params)
    return traj


# ----------------------------------------------------------------------------------------------------
# Groups of envs with their own params (e.g. one group per maze start)


class GroupedEnv:
    """``G`` groups of ``vec_env.num_envs`` envs, group ``g`` running with ``params[g]``; a drop-in for the
    ``VecEnv`` in ``rollout`` (``num_envs = G * vec_env.num_envs``, env ``g * n + i`` is env ``i`` of group
    ``g``). ``params``: the env's params pytree with a leading ``G`` axis on every leaf (see
    ``stack_params``). Other attributes are the wrapped ``VecEnv``'s."""

    def __init__(self, vec_env, params):
        leaves = jax.tree.leaves(params)
        if not leaves:
            raise ValueError("GroupedEnv needs params with at least one leaf")
        self.inner = vec_env
        self.group_params = params
        self.groups = int(np.shape(leaves[0])[0])
        self.num_envs = self.groups * vec_env.num_envs

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _flat(self, tree):
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)

    def _split(self, tree):
        return jax.tree.map(lambda x: x.reshape((self.groups, -1) + x.shape[1:]), tree)

    def reset(self, key, params=None):
        del params
        keys = jax.random.split(key, self.groups)
        return self._flat(jax.vmap(self.inner.reset)(keys, self.group_params))

    def step(self, key, state, action, params=None):
        del params
        keys = jax.random.split(key, self.groups)
        out = jax.vmap(self.inner.step)(keys, self._split(state), self._split(action), self.group_params)
        return self._flat(out)


def stack_params(params, **fields):
    """``params`` replicated along a new leading axis, with ``fields`` (equal-length sequences) set per group,
    e.g. ``stack_params(env.default_params, start=[(1, 1), (1, 2)])``."""
    sizes = {len(v) for v in fields.values()}
    if len(sizes) != 1:
        raise ValueError("stack_params: every field needs the same number of groups")
    g = sizes.pop()
    out = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (g,) + jnp.shape(x)), params)
    return out.replace(**{k: jnp.asarray(np.asarray(v)) for k, v in fields.items()})
