"""The rendering shortcuts of ``VecEnv`` for cores with ``constant_reset_facts``: the
reset text is rendered once at build time and finished envs take it, so a step renders
only the stepped observation; and for texts that grow at the end (``TaskText.append``,
Wordle) the state keeps the tokens and a step renders only the new row. They must
change nothing: observations, ``final_observation`` and rewards are bit-identical to
the two-render path that lays out every piece of both texts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from pure_envs.maze import Maze
from pure_envs.wordle import Wordle, WordleState, pack

N = 8
STEPS = 20
# A small word list keeps the build fast and makes solved games (early ends) likely.
WORDS = ["slate", "crane", "pious", "mango", "tiger", "brick", "flame", "ghost"]


def _rollouts(vec, actions):
    """Reset, then a scan of ``STEPS`` steps taking ``actions[t]``: with the shortcuts and
    without them (``_reset_text`` is read when the step is traced; without it there is
    no appending either), in one jitted program (one compile instead of two)."""
    reset_text = vec._reset_text

    def rollout(key):
        obs, state = vec.reset(key)

        def body(state, xs):
            k, a = xs
            obs, state, reward, terminated, truncated, info = vec.step(k, state, a)
            return state, (obs, info["final_observation"], reward, terminated, truncated)

        keys = jax.random.split(jax.random.PRNGKey(7), STEPS)
        return obs, jax.lax.scan(body, state, (keys, actions))[1]

    def both(key):
        try:
            with_shortcut = rollout(key)
            vec._reset_text = None  # the two-render path
            return with_shortcut, rollout(key)
        finally:
            vec._reset_text = reset_text

    return jax.device_get(jax.jit(both)(jax.random.PRNGKey(3)))


@pytest.mark.parametrize("obs_mode", ["tokens", "both"])
def test_wordle_shortcut_is_bit_identical(obs_mode):
    # Index actions: the in-graph text parser is not what this test is about, and
    # compiles slowly. Some invalid ones: no text (index G), and letters that are no
    # word (G + 1 + code).
    vec = jaxlm_gym.make_vec("wordle", N, obs_mode=obs_mode, action_mode="index", word_list=WORDS)
    assert not vec.text.pools and vec.task_text.prepare is None
    reset_text = vec._reset_text
    assert reset_text is not None and set(reset_text) == {"tokens", "length", "mask"}
    g = vec.num_actions
    rng = np.random.default_rng(0)
    actions = rng.integers(0, g, size=(STEPS, N)).astype(np.int32)
    actions[5, :2] = g
    actions[6, 2:4] = g + 1 + pack("qzx")
    actions = jnp.asarray(actions)
    a, b = _rollouts(vec, actions)
    flat_a, tree_a = jax.tree.flatten(a)
    flat_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
    _, (obs, final, reward, terminated, truncated) = a
    done = terminated | truncated
    assert done.sum() > N  # episodes ended (and restarted) during the rollout
    assert terminated.any() and (reward == 0).any()  # some games were solved early
    # Finished envs show the empty board; their final observation is the stepped text.
    t, i = np.argwhere(done)[0]
    assert vec.decode({"facts": jax.tree.map(lambda x: x[t, i:i + 1], obs["facts"])})[0] == "Wordle:\n"
    for name, const in reset_text.items():
        np.testing.assert_array_equal(obs[name][done], np.broadcast_to(const, obs[name][done].shape))
    assert (final["length"][done] > reset_text["length"]).all()


def test_wrong_flag_raises(monkeypatch):
    monkeypatch.setattr(Maze, "constant_reset_facts", True)  # maze starts at a random cell
    with pytest.raises(ValueError, match="maze-fo.*constant_reset_facts"):
        jaxlm_gym.make_vec("maze-fo", 2, obs_mode="tokens")
    # Symbolic observations render no text: nothing to check, nothing to keep.
    assert jaxlm_gym.make_vec("maze-fo", 2, obs_mode="symbolic")._reset_text is None


def test_flag_is_opt_in():
    assert Wordle.constant_reset_facts is True
    assert Maze.constant_reset_facts is False
    assert jaxlm_gym.make_vec("maze-fo", 2, obs_mode="tokens")._reset_text is None


@pytest.mark.parametrize("obs_mode", ["tokens", "both"])
def test_wordle_state_keeps_the_text(obs_mode):
    """In the token modes Wordle's state is an ``AppendState``: the core's state and the
    text it shows. Token actions (parsed in-graph) include invalid texts; ``jit(step)``
    traces once over steps that append rows and steps that reset."""
    import chex

    from jaxlm_gym.vec_env import AppendState

    vec = jaxlm_gym.make_vec("wordle", N, obs_mode=obs_mode, action_mode="tokens", word_list=WORDS)
    texts = [" ".join(w) + "\n" for w in WORDS] + ["qzx\n", "", "Hello there", "a b c d e\n", "z"]
    table = jnp.asarray(np.stack([vec.encode_action(t, 8) for t in texts]))
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(vec.step, n=1))
    obs, state = jax.jit(vec.reset)(jax.random.PRNGKey(0))
    assert isinstance(state, AppendState) and isinstance(vec.core_state(state), WordleState)
    rng = np.random.default_rng(1)
    saw_done = False
    for t in range(14):
        action = table[rng.integers(0, len(texts), N)]
        obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(t), state, action)
        saw_done |= bool((terminated | truncated).any())
        np.testing.assert_array_equal(state.tokens, obs["tokens"])
        np.testing.assert_array_equal(state.length, obs["length"])
        full = vec.text.render_batch(obs["facts"])  # every piece laid out anew
        for name in ("tokens", "length", "mask"):
            np.testing.assert_array_equal(obs[name], full[name])
            np.testing.assert_array_equal(info["final_observation"][name],
                                          vec.text.render_batch(info["final_observation"]["facts"])[name])
    assert saw_done
    assert int(vec.core_state(state).time.max()) <= 6
    # Symbolic observations keep the core's state as it is.
    sym = jaxlm_gym.make_vec("wordle", N, obs_mode="symbolic", action_mode="tokens", word_list=WORDS)
    _, s = jax.jit(sym.reset)(jax.random.PRNGKey(0))
    assert not isinstance(s, AppendState) and sym.core_state(s) is s
