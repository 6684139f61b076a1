"""Shared conventions of the symbolic cores.

Every core is a gymnax 1.0 ``Environment``. Its observation is a dict with two parts:

* ``"symbolic"`` — arrays for a symbolic policy (positions, bits, ...);
* ``"facts"`` — small int32 arrays from which the text layer writes the task's text
  (which sentence, which slot value). Cores never build strings.

Discrete cores take an int action in ``[0, num_actions)``; the index ``num_actions``
(``invalid_action``) stands for text that matched no action string, and takes the task's
invalid-action path. Any other out-of-range index is treated the same way.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from gymnax.environments import environment


class TextEnv(environment.Environment):
    """Base of jaxlm-gym cores (gymnax ``Environment`` with the conventions above)."""

    #: Names of the integer facts the core emits, with their shapes (for docs and checks).
    fact_shapes: dict[str, tuple[int, ...]] = {}
    #: False when ``step_env`` draws no randomness: then the step key goes to the reset
    #: as it is, saving a key split per env and step (the dominant cost of cheap cores).
    step_needs_key: bool = True
    #: True when ``reset_env``'s ``facts`` do not depend on the key nor on the params
    #: (static config may shape them): every episode starts from the same text. The
    #: batched env then renders that text once, at build time, instead of on every step
    #: (it checks the claim on a few keys and raises if it is false). Opt-in.
    constant_reset_facts: bool = False

    @partial(jax.jit, static_argnames=("self",))
    def step(self, key, state, action, params=None):
        """gymnax 1.0 ``step`` (auto-reset, ``info["final_observation"]``), one split fewer
        when the transition itself is deterministic."""
        if params is None:
            params = self.default_params
        if self.step_needs_key:
            key_step, key_reset = jax.random.split(key)
        else:
            key_step = key_reset = key
        obs_st, state_st, reward, terminated, info = self.step_env(key_step, state, action, params)
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_env(key_reset, params)
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_re, state_st)
        obs = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), obs_re, obs_st)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
        return obs, state, reward, terminated, truncated, info

    @property
    def invalid_action(self) -> int:
        """The action index meaning "text that is no action of this task"."""
        return self.num_actions
