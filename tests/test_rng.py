"""``jaxlm_gym.rng.fused``: keys that draw exactly what jax's threefry keys draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from jaxlm_gym.rng import FUSED, fused

DRAWS = {
    "split": lambda k: jax.random.key_data(jax.random.split(k, 5)),
    "split_2d": lambda k: jax.random.key_data(jax.random.split(k, (3, 4))),
    "fold_in": lambda k: jax.random.key_data(jax.random.fold_in(k, 123456789)),
    "bits32": lambda k: jax.random.bits(k, (7, 3)),
    "bits32_odd": lambda k: jax.random.bits(k, (5,)),
    "bits_scalar": lambda k: jax.random.bits(k, ()),
    "bits8": lambda k: jax.random.bits(k, (9,), jnp.uint8),
    "bits16": lambda k: jax.random.bits(k, (9,), jnp.uint16),
    "randint": lambda k: jax.random.randint(k, (11,), -3, 40),
    "uniform": lambda k: jax.random.uniform(k, (11,), minval=-2.0, maxval=5.0),
    "normal": lambda k: jax.random.normal(k, (6, 2)),
    "permutation": lambda k: jax.random.permutation(k, 20),
    "choice": lambda k: jax.random.choice(k, 20, (5,), replace=False),
    "nested": lambda k: jax.random.uniform(jax.random.split(jax.random.fold_in(k, 3))[1], (4,)),
    "vmap": lambda k: jax.vmap(lambda s: jax.random.bits(s, (3,)))(jax.random.split(k, 4)),
}


@pytest.mark.parametrize("name", sorted(DRAWS))
@pytest.mark.parametrize("seed", [0, 1, 2**31 + 5])
def test_fused_keys_draw_what_threefry_draws(name, seed):
    key = jax.random.key(seed)
    fast = fused(key)
    assert jax.random.key_impl(fast) == FUSED
    draw = jax.jit(DRAWS[name])
    np.testing.assert_array_equal(np.asarray(draw(fast)), np.asarray(draw(key)))


def test_raw_and_other_keys():
    raw = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(jax.random.uniform(fused(raw), (4,)), jax.random.uniform(raw, (4,)))
    rbg = jax.random.key(0, impl="rbg")
    assert fused(rbg) is rbg  # another implementation passes through
    batch = jax.random.split(jax.random.key(3), 6)
    np.testing.assert_array_equal(jax.random.key_data(fused(batch)), jax.random.key_data(batch))


def test_fused_hash_is_a_while_loop_of_one_pass():
    # The hash must be materialised once (not fused into every consumer): one while loop
    # per draw, of one pass.
    hlo = jax.jit(lambda k: jax.random.bits(fused(k), (4,))).lower(jax.random.key(0)).compile().as_text()
    assert hlo.count(" while(") == 1


def test_vec_env_with_fused_keys_matches_plain_threefry_core():
    # VecEnv re-labels its key: env i still sees key i of ``_split`` (same numbers).
    vec = jaxlm_gym.make_vec("llf-gridworld-v0", 3, obs_mode="symbolic")
    key = jax.random.key(11)
    obs, state = jax.jit(vec.reset)(key)
    env_keys, _ = vec._split(key)
    for i in range(3):
        _, single = vec.env.reset(env_keys[i], vec.params)
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(state)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])
