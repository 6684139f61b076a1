"""LLF-Bench's gymnasium string API, backed by the jitted cores.

``jaxlm_gym.gym.make(id, instruction_type="b", feedback_type="a")`` gives a
``gymnasium.Env`` whose observation is the reference's dict of strings
``{"observation", "instruction", "feedback"}``; ``make_batch(id, num_envs, ...)`` gives
the same for a batch of envs (for LLM-agent evaluation loops), stepped as one jitted call.

Differences from the reference, on purpose:

* The field the reference sets to ``None`` (``feedback`` at reset, ``instruction`` after a
  step) is ``""`` here: ``None`` is not a member of a ``Text`` space, and
  ``gymnasium.utils.env_checker.check_env`` requires observations to be.
* ``reset(seed=s)`` derives every random choice (layouts, paraphrases, the ``'m'``
  feedback kind) from ``jax.random.key(s)``: the same seed gives the same episode in any
  process, whatever else uses NumPy's or Python's global RNGs (reference F23, F24).
* Parking's ``observation`` is the reference's dict of numpy arrays (F22: the reference
  builds a text rendering and discards it); ``make(..., text_observation=True)`` gives our
  text instead.
* Actions may be the task's native actions (an int, an array) or text. Text is parsed
  in-graph by the task's parser (exact match for discrete tasks, a number parser for
  continuous ones; never ``exec``); text that does not parse takes the task's
  invalid-action path.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces as gx

from . import registry
from .vec_env import VecEnv

_TEXT_LIMIT = 100_000  # longest string a Text space admits


def _text_space() -> gymnasium.spaces.Text:
    chars = "".join(chr(c) for c in range(32, 127)) + "\n\t"
    return gymnasium.spaces.Text(max_length=_TEXT_LIMIT, min_length=0, charset=chars)


def _gym_space(space) -> gymnasium.Space:
    if isinstance(space, gx.Discrete):
        return gymnasium.spaces.Discrete(int(space.n))
    if isinstance(space, gx.Box):
        low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape)
        high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape)
        return gymnasium.spaces.Box(low, high, tuple(space.shape), np.float32)
    if isinstance(space, gx.Dict):
        return gymnasium.spaces.Dict({k: _gym_space(v) for k, v in space.spaces.items()})
    raise TypeError(f"no gymnasium equivalent for {space!r}")


class _Batch:
    """The jitted batch behind both APIs."""

    def __init__(self, env_id: str, num_envs: int, instruction_type: str, feedback_type, paraphrase, config):
        spec = registry.spec(env_id)
        if not hasattr(spec.env_cls, "FEEDBACK_TYPES"):
            raise ValueError(f"{env_id!r} is not an LLF-Bench task; the string API serves "
                             f"{[i for i in registry.list_envs() if i.startswith('llf-')]}")
        env, params = registry.make(env_id, instruction_type=instruction_type, feedback_type=feedback_type, **config)
        self.index = VecEnv(env_id, env, params, num_envs, "symbolic", "index", paraphrase=paraphrase)
        self.text = VecEnv(env_id, env, params, num_envs, "symbolic", "tokens", paraphrase=paraphrase)
        self.env, self.params, self.num_envs = env, params, num_envs
        parts = self.index.task_text.parts
        self.parts = {name: doc.compile() for name, doc in parts.items()}
        self.width = max(self.text.parser.max_tokens * 4, 64)
        self._reset = jax.jit(self.index.reset)
        self._step_index = jax.jit(self.index.step)
        self._step_text = jax.jit(self.text.step)
        self.discrete = self.index.discrete
        self.text_observation = getattr(env, "text_observation", True)

    def observation_space(self) -> gymnasium.Space:
        if self.text_observation:
            return _text_space()
        sym = self.env.observation_space(self.params).spaces["symbolic"]
        return gymnasium.spaces.Dict({k: gymnasium.spaces.Box(-np.inf, np.inf, tuple(v.shape), np.float64)
                                      for k, v in sym.spaces.items()})

    def strings(self, obs) -> list[dict[str, str]]:
        facts = obs["facts"]
        at_reset = np.asarray(facts["at_reset"]).astype(bool)
        texts = {name: part.host_batch(facts) for name, part in self.parts.items()}
        arrays = None
        if not self.text_observation:  # the reference's raw dict of numpy arrays (parking, F22)
            arrays = {k: np.asarray(v, np.float64) for k, v in obs["symbolic"].items()}
        out = []
        for i in range(self.num_envs):
            out.append({
                "observation": texts["observation"][i] if arrays is None else {k: v[i] for k, v in arrays.items()},
                "instruction": texts["instruction"][i] if at_reset[i] else "",
                "feedback": "" if at_reset[i] else texts["feedback"][i],
            })
        return out

    def encode(self, texts: list[str]) -> jax.Array:
        tok = self.text.tokenizer
        ids = [tok.encode(t) for t in texts]
        width = max(self.width, max(len(i) for i in ids) + 1)
        buf = np.full((len(ids), width), tok.pad_id, np.int32)
        for r, row in enumerate(ids):
            buf[r, : len(row)] = row
        return jnp.asarray(buf)


def _info(info, i: int | None = None) -> dict[str, Any]:
    out = {}
    for k, v in info.items():
        if k == "final_observation":
            continue
        if isinstance(v, dict):  # a parsed text action of several arrays, e.g. {"x", "kind"}
            out[k] = _info(v, i)
            continue
        v = np.asarray(v) if i is None else np.asarray(v)[i]
        out[k] = v.item() if v.ndim == 0 else v
    return out


class LLFEnv(gymnasium.Env):
    """One LLF-Bench task with the reference's string observations (see module doc)."""

    metadata = {"render_modes": []}

    def __init__(self, env_id: str, instruction_type: str = "b", feedback_type="a", paraphrase: int | None = None,
                 **config):
        self._b = _Batch(env_id, 1, instruction_type, feedback_type, paraphrase, config)
        self.env_id = env_id
        self.observation_space = gymnasium.spaces.Dict(
            {"observation": self._b.observation_space(), "instruction": _text_space(), "feedback": _text_space()})
        self.action_space = _gym_space(self._b.env.action_space(self._b.params)) if self._b.discrete or not \
            isinstance(self._b.env.action_space(self._b.params), gx.Dict) else _text_space()
        self._key = jax.random.key(0)
        self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._key = jax.random.key(int(seed))
        self._key, k = jax.random.split(self._key)
        obs, self._state = self._b._reset(k)
        out = self._b.strings(obs)[0]
        return out, {"success": False}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        self._key, k = jax.random.split(self._key)
        if isinstance(action, str):
            obs, self._state, r, te, tr, info = self._b._step_text(k, self._state, self._b.encode([action]))
        elif self._b.discrete:
            a = np.asarray(action)
            if a.shape != () or not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"{self.env_id}: action must be an int or a string, got {action!r}")
            obs, self._state, r, te, tr, info = self._b._step_index(k, self._state, jnp.asarray([a], jnp.int32))
        else:
            a = jax.tree.map(lambda x: jnp.asarray(x)[None], action)
            obs, self._state, r, te, tr, info = self._b._step_index(k, self._state, a)
        info = _info(info, 0)
        info["success"] = bool(info.get("success", False))
        return self._b.strings(obs)[0], float(np.asarray(r)[0]), bool(np.asarray(te)[0]), bool(np.asarray(tr)[0]), info


class BatchLLFEnv:
    """``num_envs`` copies of one LLF task stepped as one jitted call; observations are
    lists of the reference's string dicts. Finished envs reset inside ``step`` (their next
    observation carries the new instruction); ``info["final_observation"]`` holds the
    strings of the finished episode's last observation."""

    def __init__(self, env_id: str, num_envs: int, instruction_type: str = "b", feedback_type="a",
                 paraphrase: int | None = None, **config):
        self._b = _Batch(env_id, num_envs, instruction_type, feedback_type, paraphrase, config)
        self.num_envs = num_envs
        self._key = jax.random.key(0)
        self._state = None

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._key = jax.random.key(int(seed))
        self._key, k = jax.random.split(self._key)
        obs, self._state = self._b._reset(k)
        return self._b.strings(obs), {"success": np.zeros(self.num_envs, bool)}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        actions = list(actions) if not hasattr(actions, "shape") else actions
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        self._key, k = jax.random.split(self._key)
        if all(isinstance(a, str) for a in actions):
            out = self._b._step_text(k, self._state, self._b.encode(list(actions)))
        elif any(isinstance(a, str) for a in actions):
            raise TypeError("actions must be all strings or all native actions")
        elif self._b.discrete:
            out = self._b._step_index(k, self._state, jnp.asarray(np.asarray(actions), jnp.int32))
        else:
            out = self._b._step_index(k, self._state, jax.tree.map(lambda *x: jnp.stack(x), *actions))
        obs, self._state, r, te, tr, info = out
        final = self._b.strings(info["final_observation"])
        info = _info(info)
        info["final_observation"] = final
        return self._b.strings(obs), np.asarray(r), np.asarray(te), np.asarray(tr), info


def make(id: str, instruction_type: str = "b", feedback_type="a", paraphrase: int | None = None,
         **config) -> LLFEnv:
    """A gymnasium env of LLF task ``id`` with string observations (see module doc)."""
    return LLFEnv(id, instruction_type, feedback_type, paraphrase, **config)


def make_batch(id: str, num_envs: int, instruction_type: str = "b", feedback_type="a",
               paraphrase: int | None = None, **config) -> BatchLLFEnv:
    """``num_envs`` envs of LLF task ``id`` stepped together (see ``BatchLLFEnv``)."""
    return BatchLLFEnv(id, num_envs, instruction_type, feedback_type, paraphrase, **config)
