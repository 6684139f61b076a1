"""Public face: registry, make, make_vec options, clear errors for bad input, scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym


def test_registry_lists_the_envs():
    assert {"maze-fo", "maze-po"} <= set(jaxlm_gym.list_envs())
    assert jaxlm_gym.list_envs() == sorted(jaxlm_gym.list_envs())


def test_make_returns_core_and_params_with_overrides():
    env, params = jaxlm_gym.make("maze-po", max_steps_in_episode=50, window=6)
    assert params.max_steps_in_episode == 50 and env.window == 6 and env.observability == "po"


def test_unknown_id_names_the_valid_ids():
    with pytest.raises(ValueError, match="unknown env id 'maze'.*maze-fo.*maze-po"):
        jaxlm_gym.make("maze")
    with pytest.raises(ValueError, match="valid ids"):
        jaxlm_gym.make_vec("wordle-9000", 4)


def test_bad_config_names_the_valid_options():
    with pytest.raises(ValueError, match=r"unknown config \['speed'\].*window.*max_steps_in_episode"):
        jaxlm_gym.make("maze-fo", speed=3)
    with pytest.raises(ValueError, match="fixed by the id"):
        jaxlm_gym.make("maze-fo", observability="po")


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"obs_mode": "pixels"}, ValueError, "obs_mode must be one of"),
    ({"action_mode": "text"}, ValueError, "action_mode must be one of"),
    ({"num_envs": 0}, ValueError, "num_envs must be a positive int"),
    ({"num_envs": 2.5}, ValueError, "num_envs must be a positive int"),
    ({"max_tokens": 64}, ValueError, "max_tokens only applies"),
    ({"sharding": "gpu"}, TypeError, "sharding must be"),
])
def test_bad_make_vec_options(kwargs, exc, match):
    args = {"num_envs": 4, **kwargs}
    with pytest.raises(exc, match=match):
        jaxlm_gym.make_vec("maze-fo", **args)


def test_wrong_action_shape_or_dtype_fails_at_trace_time():
    vec = jaxlm_gym.make_vec("maze-fo", 4)
    obs, state = vec.reset(jax.random.key(0))
    step = jax.jit(vec.step)
    with pytest.raises(TypeError, match=r"integer indices.*move left"):
        step(jax.random.key(1), state, jnp.zeros((4,), jnp.float32))
    with pytest.raises(ValueError, match=r"action shape must be \(4,\)"):
        step(jax.random.key(1), state, jnp.zeros((3,), jnp.int32))
    text = jaxlm_gym.make_vec("maze-fo", 4, action_mode="tokens")
    with pytest.raises(ValueError, match=r"shape \(4, L\)"):
        jax.jit(text.step)(jax.random.key(1), state, jnp.zeros((4,), jnp.int32))
    with pytest.raises(TypeError, match="int32 token ids"):
        jax.jit(text.step)(jax.random.key(1), state, jnp.zeros((4, 3), jnp.float32))


def test_out_of_range_index_takes_the_invalid_path():
    vec = jaxlm_gym.make_vec("maze-fo", 3)
    obs, state = vec.reset(jax.random.key(0))
    _, _, r, *_ = vec.step(jax.random.key(1), state, jnp.asarray([4, -1, 99], jnp.int32))
    assert np.asarray(r).tolist() == [-4.0, -4.0, -4.0]


def test_decode_and_action_helpers():
    sym = jaxlm_gym.make_vec("maze-fo", 2)
    obs, _ = sym.reset(jax.random.key(0))
    assert all(t.startswith("The goal is at position 8, 6.") for t in sym.decode(obs))  # no tokenizer needed
    with pytest.raises(ValueError, match="needs a tokenizer"):
        sym.encode_action("move up\n")
    vec = jaxlm_gym.make_vec("maze-fo", 2, action_mode="tokens")
    assert vec.encode_action("move up\n").tolist() == [21084, 510, 198]
    assert vec.encode_actions(["move up\n", "move down and then left\n"]).shape[1] >= 6
    with pytest.raises(ValueError, match="expected 2 action texts"):
        vec.encode_actions(["move up\n"])
    assert vec.action_strings == ("move left\n", "move right\n", "move up\n", "move down\n")
    assert vec.action_token_table().shape == (4, 3)
    assert "maze-fo" in repr(vec)


def test_score_normalize():
    n = jaxlm_gym.score.normalize
    assert n("maze-fo", -101) == pytest.approx(0.0)
    assert n("maze-fo", -83) == pytest.approx(50.0)
    assert n("maze-fo", -6.84) == pytest.approx(100.0)
    assert n("maze-po", -25.75) == pytest.approx(100.0)
    assert np.allclose(n("maze-fo", [-92.0, -44.92]), [25.0, 75.0])
    with pytest.raises(ValueError, match="known tasks"):
        n("pong", 0.0)
