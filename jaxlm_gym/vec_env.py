"""``make_vec``: a batch of envs as one pure, jittable pair of functions.

``VecEnv.reset(key)`` and ``VecEnv.step(key, state, action)`` vmap the core over
``num_envs`` envs, render observations as symbols and/or token buffers, and (with
``action_mode="tokens"``) parse the agent's action text in-graph. Both are pure: call
them inside ``jax.jit`` and ``jax.lax.scan``; each traces once per shape.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pure_envs.base import TextEnv

from . import registry
from .loops import maybe
from .rng import fused
from .text import ActionParser, get_tokenizer

OBS_MODES = ("symbolic", "tokens", "both")
ACTION_MODES = ("index", "tokens")


@struct.dataclass
class AppendState:
    """``VecEnv`` state of a task whose text every step extends at the end
    (``TaskText.append``, e.g. Wordle in the token observation modes): ``core`` the
    core's state batch; ``tokens`` int32[N, L] and ``length`` int32[N] the current text;
    ``keep`` int32[N] its tokens before the last piece (what the next step leaves)."""

    core: Any
    tokens: jax.Array
    length: jax.Array
    keep: jax.Array


class VecEnv:
    """``num_envs`` copies of one task, stepped together.

    Observation (dict, leading axis ``num_envs``):
      ``facts``: the core's text facts (always; ``decode`` writes text from them);
      ``symbolic``: the core's symbolic view (obs_mode "symbolic" or "both");
      ``tokens`` int32[N, L], ``length`` int32[N], ``mask`` bool[N, L]: the text as token
      ids, right-padded with ``pad_id`` (obs_mode "tokens" or "both").
    Action: int32[N] indices (action_mode "index"; ``num_actions`` means "no action's
      text"), or int32[N, L] token ids of the action text, padded with ``pad_id``
      (action_mode "tokens"; parsed in-graph by exact text match).
    ``step`` returns ``(obs, state, reward, terminated, truncated, info)``, auto-resets
    finished envs and keeps the pre-reset observation in ``info["final_observation"]``;
    with ``action_mode="tokens"``, ``info["action_index"]`` is the parsed action.
    State: the core's state batch; for tasks whose text grows at the end (Wordle) in the
    token observation modes, an ``AppendState`` that also holds the rendered tokens, so
    a step renders only the new row. ``core_state(state)`` is the core's in every case.
    """

    def __init__(self, env_id: str, env, params, num_envs: int, obs_mode: str, action_mode: str,
                 tokenizer=None, sharding=None, max_tokens: int | None = None, paraphrase: int | None = None):
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.id = env_id
        self.env = env
        self.params = params
        self.num_envs = int(num_envs)
        self.obs_mode = obs_mode
        self.action_mode = action_mode
        self.task_text = registry.spec(env_id).text(env)
        wants_tokens = obs_mode != "symbolic" or action_mode == "tokens" or tokenizer is not None
        self.tokenizer = get_tokenizer(tokenizer) if wants_tokens else None
        text_tok = self.tokenizer if obs_mode != "symbolic" else None
        if max_tokens is not None and text_tok is None:
            raise ValueError("max_tokens only applies with obs_mode 'tokens' or 'both'")
        self.text = self.task_text.document.compile(text_tok, max_tokens, paraphrase, self.task_text.common)
        self.parser = None
        if action_mode == "tokens" or self.tokenizer is not None:
            if self.task_text.parser is not None:
                self.parser = self.task_text.parser(self.tokenizer)
            elif not self.task_text.actions:
                raise ValueError(f"{env_id} has no fixed action strings; use action_mode='index'")
            else:
                self.parser = ActionParser(self.task_text.actions, self.tokenizer, self.task_text.aliases)
        self.sharding = _resolve_sharding(sharding, self.num_envs)
        self._reset_text = self._constant_reset_render()
        self._append = None
        if self._reset_text is not None and self.task_text.append is not None:
            self._append = self.task_text.append(self.tokenizer)

    # ------------------------------------------------------------------ properties
    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    @property
    def action_strings(self) -> tuple[str, ...]:
        return tuple(self.task_text.actions)

    @property
    def max_tokens(self) -> int | None:
        """Length of the observation token buffer (None in symbolic mode)."""
        return self.text.max_tokens

    @property
    def pad_id(self) -> int | None:
        return None if self.tokenizer is None else int(self.tokenizer.pad_id)

    def __repr__(self) -> str:
        return (f"VecEnv({self.id!r}, num_envs={self.num_envs}, obs_mode={self.obs_mode!r}, "
                f"action_mode={self.action_mode!r}, max_tokens={self.max_tokens})")

    # ------------------------------------------------------------------ pure API
    def reset(self, key: jax.Array, params=None):
        """Reset all envs: ``(obs, state)``, batched along axis 0."""
        params = self.params if params is None else params
        env_keys, text_keys = self._split(fused(key))
        core_obs, state = jax.vmap(self.env.reset, in_axes=(0, None))(env_keys, params)
        view = self._view(core_obs, text_keys)
        if self._appending:
            keep = view["length"] - self._append.trailing(view["facts"])
            state = AppendState(state, view["tokens"], view["length"], keep)
        return self._shard(view), self._shard(state)

    def core_state(self, state):
        """The core's state batch inside a ``VecEnv`` state."""
        return state.core if isinstance(state, AppendState) else state

    @property
    def _appending(self) -> bool:
        # Read when reset / step are traced (tests switch the shortcuts off to compare).
        return self._append is not None and self._reset_text is not None

    def step(self, key: jax.Array, state, action, params=None):
        """Step all envs: ``(obs, state, reward, terminated, truncated, info)``."""
        params = self.params if params is None else params
        state = self._shard(state)
        index = self._action_index(action)
        env_keys, text_keys = self._split(fused(key))
        if not isinstance(self.env, TextEnv):
            core_obs, state, reward, terminated, truncated, info = jax.vmap(
                self.env.step, in_axes=(0, 0, 0, None))(env_keys, state, index, params)
            info = dict(info)
            info["final_observation"] = self._view(info["final_observation"], text_keys)
            view = self._view(core_obs, text_keys)
        else:
            view, state, reward, terminated, truncated, info = self._step_text_env(
                env_keys, text_keys, state, index, params)
        if self.action_mode == "tokens":
            info["action" if not self.discrete else "action_index"] = index
        out = (view, state, reward, terminated, truncated, info)
        return self._shard(out)

    def _step_text_env(self, env_keys, text_keys, state, index, params):
        """``TextEnv.step`` for the batch, element for element, with two batch-level
        shortcuts: the auto-reset (for every env a fresh episode, computed by gymnax-style
        cores on every step) runs only when some env of the batch is done; the stepped
        text (``final_observation``) is rendered once and is the observation of every env
        that goes on, so only the finished envs' reset texts are rendered on top (a compact
        sub-batch when few are done, e.g. parking's crashes: see ``_with_reset_rows``).
        Tasks whose every episode starts from the same text (``constant_reset_facts``,
        e.g. Wordle) render once per step: the stepped text is
        ``final_observation``, and finished envs take the text rendered at build time."""
        env = self.env
        cache = state if self._appending else None
        state = self.core_state(state)
        if env.step_needs_key:
            pairs = jax.vmap(jax.random.split)(env_keys)
            k_step, k_reset = pairs[:, 0], pairs[:, 1]
        else:
            k_step = k_reset = env_keys
        obs_st, state_st, reward, terminated, info = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
            k_step, state, index, params)
        truncated = jax.vmap(env.is_truncated, in_axes=(0, None))(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        any_done = jnp.any(done)

        def reset_done(stepped):
            obs_re, state_re = jax.vmap(env.reset_env, in_axes=(0, None))(k_reset, params)
            pick = lambda r, s: jnp.where(done.reshape(done.shape + (1,) * (r.ndim - 1)), r, s)  # noqa: E731
            return jax.tree.map(pick, (obs_re, state_re), stepped)

        obs, state = maybe(any_done, reset_done, (obs_st, state_st))
        if self._reset_text is None and (self.obs_mode == "symbolic" or not self._reuse_final):
            view = self._view(obs, text_keys)
            final = jax.lax.cond(any_done, lambda _: self._view(obs_st, text_keys), lambda _: view, None)
        elif self._reset_text is None:
            # A row's text depends on its own facts and key only, so the observation of a
            # running env is its final observation: render that for every env, then only
            # the finished envs' reset texts (see ``_with_reset_rows``).
            final = self._view(obs_st, text_keys)
            view = self._view(obs, text_keys, render=False)
            view.update(self._with_reset_rows(done, view["facts"], final))
        else:
            # Every episode starts from the same text (rendered at build time): render only
            # the stepped observations and put the reset text in the rows of finished envs.
            if cache is None:
                final = self._view(obs_st, text_keys)
            else:  # the text grows at the end: splice the new tail onto the kept tokens
                final = self._view(obs_st, text_keys, render=False)
                tail = self._append.tail_facts(state_st, final["facts"])
                final.update(self._append.text.render_after(tail, cache.tokens, cache.keep))
            view = self._view(obs, text_keys, render=False)
            for name, const in self._reset_text.items():
                pick = done.reshape(done.shape + (1,) * const.ndim)
                view[name] = jnp.where(pick, jnp.asarray(const), final[name])
            if cache is not None:
                keep = view["length"] - self._append.trailing(view["facts"])
                state = AppendState(state, view["tokens"], view["length"], keep)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": final}
        return view, state, reward, terminated, truncated, info

    # Finished envs whose reset text a step renders in a compact sub-batch: at most
    # 1 / _RESET_SHARE of the batch (more: the whole batch).
    _RESET_SHARE = 8
    _reuse_final = True  # read when step is traced (tests switch it off to compare)

    def _with_reset_rows(self, done, facts, final) -> dict:
        """The text fields of the observation after the auto-reset: ``final``'s rows, with
        the rows of ``done`` envs rendered from ``facts`` (the reset observations' facts,
        drawn and prepared). With random ends only a few envs are done per step: their
        rows are gathered into a sub-batch of ``num_envs // _RESET_SHARE`` rows (rounded
        up), rendered, and scattered back; when more are done the whole batch is rendered.
        On the usual step (no env done) nothing runs and ``final``'s buffers are reused in
        place (``loops.maybe``: a ``cond`` returning them unchanged would copy them)."""
        n = self.num_envs
        k = -(-n // self._RESET_SHARE)
        fields = ("tokens", "length", "mask")
        count = jnp.sum(done, dtype=jnp.int32)

        def few(out):
            # Rows of the done envs, then filler (index n: rendered from row n - 1, dropped
            # when written).
            idx = jnp.nonzero(done, size=k, fill_value=n)[0]
            sub = self.text.render_batch(jax.tree.map(lambda x: x[jnp.minimum(idx, n - 1)], facts))
            return {name: out[name].at[idx].set(sub[name], mode="drop") for name in fields}

        def many(out):
            rows = self.text.render_batch(facts)
            return {name: jnp.where(done.reshape(done.shape + (1,) * (rows[name].ndim - 1)), rows[name], out[name])
                    for name in fields}

        out = {name: final[name] for name in fields}
        update = many if k >= n else (lambda o: jax.lax.cond(count <= k, few, many, o))
        return maybe(count > 0, update, out)

    # ------------------------------------------------------------------ host helpers
    def decode(self, obs) -> list[str]:
        """The host text of every env's observation (what a person or an LLM would read)."""
        return self.text.host_batch(obs["facts"])

    def encode_action(self, text: str, width: int | None = None) -> np.ndarray:
        """Token ids of one action text, int32[width] padded with ``pad_id``."""
        return self._need_parser().encode(text, width)

    def encode_actions(self, texts, width: int | None = None) -> np.ndarray:
        """Token ids of ``num_envs`` action texts, int32[N, width]."""
        texts = list(texts)
        if len(texts) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} action texts, got {len(texts)}")
        if width is None:
            width = max(self._need_parser().max_tokens, *(len(self.tokenizer.encode(t)) for t in texts))
        return np.stack([self.encode_action(t, width) for t in texts])

    def action_token_table(self, width: int | None = None) -> np.ndarray:
        """int32[num_actions, width]: canonical token ids of every action string."""
        return self._need_parser().table(width)

    # ------------------------------------------------------------------ internals
    def _need_parser(self) -> ActionParser:
        if self.parser is None:
            raise ValueError("action text needs a tokenizer: use action_mode='tokens', obs_mode "
                             "'tokens'/'both', or pass tokenizer=")
        return self.parser

    def _split(self, key):
        if not self.text.pools:
            return jax.random.split(key, self.num_envs), None
        keys = jax.random.split(key, 2 * self.num_envs)
        return keys[: self.num_envs], keys[self.num_envs:]

    def _constant_reset_render(self) -> dict | None:
        """The rendered text fields (``tokens``, ``length``, ``mask``) of the reset
        observation, as host arrays without the env axis, for cores that declare
        ``constant_reset_facts``; None when the shortcut does not apply (symbolic
        observations, paraphrase pools: their draw makes the text random). A
        ``task_text.prepare`` is a function of the facts alone, so it keeps them constant.
        The core's claim is checked on a few keys: a wrong flag would show every
        finished env a wrong first text."""
        env = self.env
        if not (isinstance(env, TextEnv) and env.constant_reset_facts) or self.obs_mode == "symbolic" \
                or self.text.pools:
            return None

        def build(keys):  # one program: the facts of 8 resets, and the text of the first
            facts = jax.vmap(lambda k: env.reset_env(k, self.params)[0]["facts"])(keys)
            first = jax.tree.map(lambda x: x[:1], facts)
            return facts, self.text.render_batch(self._prepare(first))

        facts, text = jax.device_get(jax.jit(build)(jax.random.split(jax.random.PRNGKey(0), 8)))
        differ = sorted(k for k, v in facts.items() if not np.all(np.asarray(v) == np.asarray(v)[:1]))
        if differ:
            raise ValueError(f"{self.id}: {type(env).__name__}.constant_reset_facts is True, but its reset facts "
                             f"{differ} differ between keys; set constant_reset_facts = False for this core")
        return {k: np.asarray(v)[0] for k, v in text.items()}

    def _prepare(self, facts):
        if self.task_text.prepare is not None:
            facts = jax.vmap(self.task_text.prepare)(facts)
        return facts

    def _view(self, core_obs, text_keys, render: bool = True) -> dict:
        facts = core_obs["facts"]
        if text_keys is not None:
            facts = jax.vmap(self.text.draw)(text_keys, facts)
        facts = self._prepare(facts)
        out: dict[str, Any] = {"facts": facts}
        if self.obs_mode != "tokens":
            out["symbolic"] = core_obs["symbolic"]
        if self.obs_mode != "symbolic" and render:
            out.update(self.text.render_batch(facts))
        return out

    @property
    def discrete(self) -> bool:
        """Whether the core's actions are indices (else arrays, e.g. continuous controls)."""
        return isinstance(self.env.action_space(self.params), spaces.Discrete)

    def _core_actions(self, action):
        """Check a batch of non-index actions against the core's action space."""
        n = self.num_envs
        space = self.env.action_space(self.params)
        leaves = space.spaces if isinstance(space, spaces.Dict) else None
        if leaves is None:
            want = {None: space}
            action = {None: action}
        else:
            want = dict(leaves)
            if hasattr(action, "__dataclass_fields__"):  # a struct of the core (e.g. OptimizationAction)
                action = {k: getattr(action, k) for k in action.__dataclass_fields__}
            if not isinstance(action, dict) or set(action) != set(want):
                raise ValueError(f"{self.id}: actions must be a dict with keys {sorted(want)}")
        out = {}
        for name, sp in want.items():
            a = action[name]
            if not hasattr(a, "shape") or not hasattr(a, "dtype"):
                a = jnp.asarray(a)
            label = "action" if name is None else f"action[{name!r}]"
            shape = (n, *tuple(sp.shape))
            if tuple(a.shape) != shape:
                raise ValueError(f"{self.id}: {label} shape must be {shape}, got {tuple(a.shape)}")
            if jnp.issubdtype(sp.dtype, jnp.floating) and not jnp.issubdtype(a.dtype, jnp.floating):
                raise TypeError(f"{self.id}: {label} must be float, got dtype {a.dtype}")
            if jnp.issubdtype(sp.dtype, jnp.integer) and not jnp.issubdtype(a.dtype, jnp.integer):
                raise TypeError(f"{self.id}: {label} must be integer, got dtype {a.dtype}")
            out[name] = self._shard(a.astype(sp.dtype))
        return out[None] if leaves is None else out

    def _action_index(self, action):
        n = self.num_envs
        if self.action_mode == "index" and not self.discrete:
            return self._core_actions(action)
        if not hasattr(action, "shape") or not hasattr(action, "dtype"):
            action = jnp.asarray(action)
        if self.action_mode == "index":
            if not jnp.issubdtype(action.dtype, jnp.integer):
                names = list(self.action_strings[:4]) + (["..."] if len(self.action_strings) > 4 else [])
                raise TypeError(f"{self.id}: actions must be integer indices, got dtype {action.dtype}; "
                                f"valid: 0..{self.num_actions - 1} = {names}, "
                                f"{self.num_actions} = not an action")
            if tuple(action.shape) != (n,):
                raise ValueError(f"{self.id}: action shape must be ({n},) (one index per env), "
                                 f"got {tuple(action.shape)}")
            return self._shard(action.astype(jnp.int32))
        if not jnp.issubdtype(action.dtype, jnp.integer):
            raise TypeError(f"{self.id}: action_mode='tokens' takes int32 token ids, got dtype {action.dtype}")
        if action.ndim != 2 or action.shape[0] != n or action.shape[1] < 1:
            raise ValueError(f"{self.id}: action tokens must have shape ({n}, L) with L >= 1, "
                             f"padded with pad_id={self.pad_id}; got {tuple(action.shape)}")
        return self.parser.parse_batch(self._shard(action.astype(jnp.int32)))

    def _shard(self, tree):
        if self.sharding is None:
            return tree
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.sharding), tree)


def _resolve_sharding(sharding, num_envs: int):
    """A NamedSharding that splits axis 0 (the env batch) over devices, or None."""
    if sharding is None:
        return None
    if isinstance(sharding, Mesh):
        mesh, axis = sharding, tuple(sharding.axis_names)
    elif isinstance(sharding, NamedSharding):
        mesh, spec = sharding.mesh, sharding.spec
        axis = spec[0] if len(spec) else None
        if axis is None:
            raise ValueError("sharding must split axis 0 (the env batch), e.g. NamedSharding(mesh, P('envs'))")
    else:
        raise TypeError(f"sharding must be a jax.sharding.Mesh or NamedSharding, got {type(sharding).__name__}")
    names = axis if isinstance(axis, tuple) else (axis,)
    size = int(np.prod([mesh.shape[a] for a in names]))
    if num_envs % size:
        raise ValueError(f"num_envs={num_envs} must be a multiple of the {size} devices of the sharding")
    return NamedSharding(mesh, PartitionSpec(axis))


def make_vec(id: str, num_envs: int, obs_mode: str = "symbolic", action_mode: str = "index",
             tokenizer=None, sharding=None, max_tokens: int | None = None, paraphrase: int | None = None,
             **config) -> VecEnv:
    """Build ``num_envs`` envs of ``id`` as one batched, jittable ``VecEnv``.

    ``obs_mode``: "symbolic", "tokens" or "both". ``action_mode``: "index" or "tokens".
    ``tokenizer``: None (GPT-2 BPE), a HF tokenizer or a local folder. ``sharding``: a
    ``Mesh`` or ``NamedSharding`` that splits the env batch over devices.
    ``max_tokens``: observation buffer length (default: the task's longest text; smaller
    is an error). ``paraphrase``: pin every paraphrase pool to this index.
    ``config``: the task's options and params (see ``make``).
    """
    env, params = registry.make(id, **config)
    return VecEnv(id, env, params, num_envs, obs_mode, action_mode, tokenizer, sharding, max_tokens, paraphrase)
