"""A toy LLF core and its text, registered as ``toy-llf`` for the machinery tests."""

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

from jaxlm_gym import registry
from jaxlm_gym.feedback import llf_text
from jaxlm_gym.text import Lit, Num, Seq
from pure_envs.llf import LLFEnv


@struct.dataclass
class _State:
    t: jnp.ndarray
    last: jnp.ndarray
    reward: jnp.ndarray


@struct.dataclass
class _Params:
    pass


class Toy(LLFEnv):
    """Two arms; arm 1 is best. r always; hp iff best; hn iff not; fp always; fn never."""

    INSTRUCTION_TYPES = ("b", "c")

    def __init__(self, instruction_type="b", feedback_type="a"):
        super().__init__(instruction_type, feedback_type)

    @property
    def default_params(self):
        return _Params()

    @property
    def num_actions(self):
        return 2

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def _obs(self, s, at_reset):
        best = s.last == 1
        step = 1 - at_reset
        facts = {"at_reset": jnp.int32(at_reset), "reward": s.reward, "arm": s.last,
                 "fb_r": jnp.int32(step), "fb_hp": (best * step).astype(jnp.int32),
                 "fb_hn": ((~best) * step).astype(jnp.int32), "fb_fp": jnp.int32(step), "fb_fn": jnp.int32(0)}
        return {"symbolic": jnp.stack([s.t, s.last]).astype(jnp.float32), "facts": facts}

    def reset_env(self, key, params):
        s = _State(jnp.int32(0), jnp.int32(0), jax.random.uniform(key) * 0)
        return self._obs(s, 1), s

    def step_env(self, key, s, action, params):
        r = jnp.where(action == 1, 1.0, 0.25) * (action < 2)
        s = _State(s.t + 1, jnp.minimum(action, 1).astype(jnp.int32), r.astype(jnp.float32))
        return self._obs(s, 0), s, r, jnp.bool_(False), {"success": action == 1}

    def is_truncated(self, s, params):
        return s.t >= 5


def _w(*texts):
    return [Lit(t) for t in texts]


def toy_text(env):
    return llf_text(
        env,
        instruction={"b": Lit("Find the better of two arms."),
                     "c": Lit("Find the better arm; it is arm 1.")},
        feedback={
            "r": {1: [Seq(Lit(w), Num("reward", 2), Lit(".")) for w in ("You got", "Reward:", "Payout", "It paid")]},
            "hp": {1: _w("Good pick.", "Right arm.", "Well chosen.", "That was best.")},
            "hn": {1: _w("Not the best.", "Wrong arm.", "Poor pick.", "Another arm pays more.")},
            "fp": {1: _w("Pull arm 1.", "Try arm 1.", "Arm 1 is best.", "Go with arm 1.")},
            "fn": {1: _w("Avoid arm 0.", "Skip arm 0.", "Arm 0 is worse.", "Not arm 0.")},
        },
        observation=Lit(""),
        actions=("0", "1"), aliases={"zero": 0, "one": 1})


if "toy-llf" not in registry.list_envs():
    registry.register("toy-llf", Toy, toy_text, "test-only toy LLF task")


