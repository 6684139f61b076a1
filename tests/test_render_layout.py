"""The token layout's static bounds (``CompiledText._reach``: where each piece can lie)
hold on real trajectories of every task family, and the tokens equal
``tokenizer.encode`` of the host text, over many envs and steps. The contract suite
checks every registered env the same way on fewer envs and steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layout_check import assert_pieces_within_reach

import jaxlm_gym

# Feedback ``a`` (the default) of every LLF task is checked the same way by the contract
# suite; here the longer runs: history windows, gridworld's path instruction, ``m``.
CASES = [("maze-po", {}), ("wordle", {}),
         ("llf-gridworld-v0", {"feedback_type": "m", "instruction_type": "p"}),
         ("llf-highway-parking-v0", {"feedback_type": "m"})]


@pytest.mark.parametrize("env_id,config", CASES, ids=[f"{e}-{c.get('feedback_type', '')}" for e, c in CASES])
def test_layout_bounds_hold_and_tokens_equal_encode(env_id, config):
    n, steps = 32, 8
    vec = jaxlm_gym.make_vec(env_id, n, obs_mode="tokens", action_mode="index", **config)
    tok, text = vec.tokenizer, vec.text
    if vec.discrete:
        sample = lambda k: jax.random.randint(k, (n,), 0, vec.num_actions)  # noqa: E731
    else:
        sample = lambda k: jax.vmap(vec.env.action_space(vec.params).sample)(jax.random.split(k, n))  # noqa: E731

    def run(key):
        obs, state = vec.reset(key)

        def body(state, k):
            k_act, k_step = jax.random.split(k)
            obs, state, *_ = vec.step(k_step, state, sample(k_act))
            return state, obs

        _, traj = jax.lax.scan(body, state, jax.random.split(key, steps))
        return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), obs, traj)

    traj = jax.device_get(jax.jit(run)(jax.random.key(7)))
    checked = 0
    for t in range(steps + 1):
        obs = jax.tree.map(lambda x: x[t], traj)
        assert_pieces_within_reach(text, obs["facts"])
        for i, s in enumerate(vec.decode(obs)):
            ids = np.asarray(obs["tokens"][i][: int(obs["length"][i])]).tolist()
            assert ids == tok.encode(s), s
            checked += 1
    assert checked == n * (steps + 1)
