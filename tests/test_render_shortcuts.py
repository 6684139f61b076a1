"""Rendering shortcuts that must change nothing (bit-identical tokens):

* ``VecEnv`` renders the observation after an auto-reset as the final observation's rows
  plus only the finished envs' reset texts (a compact sub-batch, or the whole batch when
  many are done), instead of rendering both texts for every env;
* ``CompiledText`` lays numbers out as two table pieces each when every number of the
  batch has a table row, instead of a layout per number (``_render_numbers``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym

N = 16  # a sub-batch of 2 rows: steps with 1-2 finished envs and with more take both paths
STEPS = 36


def test_reset_rows_match_two_render_path():
    vec = jaxlm_gym.make_vec("llf-highway-parking-v0", N, obs_mode="tokens", action_mode="index",
                             feedback_type="a", max_steps_in_episode=30)
    assert vec._reset_text is None and -(-N // vec._RESET_SHARE) == 2
    # Full throttle, a steering of its own per env: the cars hit walls at different steps
    # (1-2 envs done), the rest are truncated together at step 30 (more than 2).
    steer = np.random.default_rng(0).uniform(-1, 1, N)
    actions = jnp.asarray(np.stack([np.ones((STEPS, N)), np.broadcast_to(steer, (STEPS, N))], -1), jnp.float32)

    def rollout(key):
        obs, state = vec.reset(key)

        def body(state, xs):
            k, a = xs
            obs, state, reward, terminated, truncated, info = vec.step(k, state, a)
            return state, (obs, info["final_observation"], reward, terminated | truncated)

        return obs, jax.lax.scan(body, state, (jax.random.split(jax.random.PRNGKey(7), STEPS), actions))[1]

    def both(key):
        try:
            fast = rollout(key)
            vec._reuse_final = False
            return fast, rollout(key)
        finally:
            del vec._reuse_final  # back to the class default

    a, b = jax.device_get(jax.jit(both)(jax.random.PRNGKey(3)))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    done = a[1][3].sum(axis=1)
    assert ((done >= 1) & (done <= 2)).any() and (done > 2).any(), done.tolist()
    obs = jax.tree.map(lambda x: x[-1], a[1][0])
    for i, text in enumerate(vec.decode(obs)):
        assert obs["tokens"][i, : obs["length"][i]].tolist() == vec.tokenizer.encode(text)


# Parking declares fast_digits=1 (features and rewards below 10): its table layout takes
# no value of 10 or more and no nan / inf, which the general path writes. Bandits' numbers
# declare nothing: the table takes integer parts below 10**4, nan and inf.
@pytest.mark.parametrize("env_id, action, tabled_want", [
    ("llf-highway-parking-v0", jnp.zeros((8, 2), jnp.float32), [True, True, False, True, False, True] + [False] * 5),
    ("llf-bandits-BanditTenArmedGaussian-v0", jnp.zeros((8,), jnp.int32),
     [True] * 6 + [False, False, True, True, True]),
])
def test_number_tables_match_number_layout(env_id, action, tabled_want):
    vec = jaxlm_gym.make_vec(env_id, 8, obs_mode="tokens", feedback_type="a")
    _, state = vec.reset(jax.random.PRNGKey(0))
    obs, *_ = vec.step(jax.random.PRNGKey(1), state, action)
    text = vec.text
    scales = jnp.asarray([1.0, -1.0, 37.3, 1e-5, 999.9, -4e-4, 12345.0, 3e12, np.inf, -np.inf, np.nan], jnp.float32)

    @jax.jit
    def render(facts, scale):
        facts = {k: (v * scale if k in {n.key for n in text.nums} else v) for k, v in facts.items()}
        gid, on, vals = jax.vmap(text.plan)(facts)
        f = text._number_fields(vals)
        return text._tabled_ok(f), text._render_tabled(gid, on, vals, f), text._render_numbers(gid, on, vals)

    tabled = []
    for scale in scales:
        ok, got, want = jax.device_get(render(obs["facts"], scale))
        tabled.append(bool(ok))
        if ok:
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
    assert tabled == tabled_want
