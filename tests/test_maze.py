"""Maze: the reference's layout, rewards, limits, strings and window, checked exactly."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from jaxlm_gym.tasks.maze import ACTIONS, wall_sentence
from pure_envs import maze

GOAL = (8, 6)
LAYOUT = maze.LAYOUTS["double_t"]


# ---------------------------------------------------------------------------
# A plain-Python maze written from the spec (lmrl-gym.md section 2), to diff against.

def _walls(pos):
    r, c = pos
    rel = [("to your right", (r, c + 1)), ("to your left", (r, c - 1)), ("above you", (r - 1, c)),
           ("below you", (r + 1, c))]
    return [name for name, (y, x) in rel if LAYOUT[y, x] == 1]


def _wall_text(pos):
    w = _walls(pos)
    if not w:
        return "There are no walls near you."
    if len(w) == 1:
        return f"There is a wall {w[0]}."
    return "There are walls " + ", ".join(w) + "."


def _digits(n):
    return " ".join(str(n))


def _describe(pos, fo):
    if fo:
        return (f"The goal is at position {_digits(GOAL[0])}, {_digits(GOAL[1])}. Your current position is at "
                f"position {_digits(pos[0])}, {_digits(pos[1])}. {_wall_text(pos)}\n")
    return _wall_text(pos) + "\n"


class RefMaze:
    MOVES = {"move left\n": (0, -1), "move right\n": (0, 1), "move up\n": (-1, 0), "move down\n": (1, 0)}

    def __init__(self, start, fo, last_k, max_steps=100):
        self.pos, self.fo, self.last_k, self.max_steps = start, fo, last_k, max_steps
        self.num_steps = 0
        self.history = [_describe(start, fo)]

    def step(self, action):
        if self.num_steps >= self.max_steps:
            self.history = ["Failure\n"]
            return -1.0, True
        if action not in self.MOVES:
            self.num_steps += 1
            self.history = [_describe(self.pos, self.fo)]
            return -4.0, False
        dr, dc = self.MOVES[action]
        nxt = (self.pos[0] + dr, self.pos[1] + dc)
        if LAYOUT[nxt] == 0:
            self.pos = nxt
        self.num_steps += 1
        if self.pos == GOAL:
            obs, reward, done = "Success\n", 0.0, True
        else:
            obs, reward, done = _describe(self.pos, self.fo), -1.0, False
        self.history = (self.history + [action, obs])[-self.last_k:]
        return reward, done

    def text(self):
        return "".join(self.history)


FREE = [tuple(int(v) for v in c) for c in np.argwhere(LAYOUT == 0)]
STARTS = [c for c in FREE if c != GOAL]


_VECS = {}


def _single(env_id, start, action_mode="tokens", **config):
    """A one-env VecEnv (cached per config, so its jitted functions compile once) and params."""
    key = (env_id, action_mode, tuple(sorted(config.items())))
    if key not in _VECS:
        vec = jaxlm_gym.make_vec(env_id, 1, obs_mode="both", action_mode=action_mode, **config)
        _VECS[key] = (vec, jax.jit(vec.reset), jax.jit(vec.step))
    vec, reset, step = _VECS[key]
    params = vec.params.replace(start=start)
    vec.env.check_params(params)
    return vec, params, reset, step


class Driver:
    """Steps a one-env VecEnv with action texts and returns host text, reward and flags."""

    def __init__(self, single):
        self.vec, self.params, _reset, self._jit_step = single
        self.obs, self.state = _reset(jax.random.key(0), self.params)
        self.t = 0

    def text(self):
        return self.vec.decode(self.obs)[0]

    def step(self, action_text):
        self.t += 1
        tokens = jnp.asarray(self.vec.encode_actions([action_text], width=8))
        self.obs, self.state, r, te, tr, info = self._jit_step(jax.random.key(self.t), self.state, tokens,
                                                               self.params)
        final = self.vec.decode(info["final_observation"])[0]
        return final, float(r[0]), bool(te[0]), bool(tr[0])


# ---------------------------------------------------------------------------


def test_layout_and_distances():
    assert LAYOUT.shape == (10, 13) and len(FREE) == 26 and len(STARTS) == 25
    dist = maze.bfs_distances(LAYOUT, GOAL)
    assert [dist[1, c] for c in (1, 2, 3, 4, 5)] == [12, 11, 10, 11, 12]
    assert [dist[1, c] for c in (7, 8, 9, 10, 11)] == [12, 11, 10, 11, 12]
    assert [dist[r, 3] for r in (2, 3, 4)] == [9, 8, 7] == [dist[r, 9] for r in (2, 3, 4)]
    assert [dist[5, c] for c in range(3, 10)] == [6, 5, 4, 3, 4, 5, 6]
    assert [dist[6, 6], dist[7, 6]] == [2, 1]
    assert np.mean([dist[s] for s in STARTS]) == pytest.approx(7.84)


def test_optimal_returns_mean_is_the_normalisation_maximum():
    env, params = jaxlm_gym.make("maze-fo")
    returns = env.optimal_returns(params)
    assert len(returns) == 25
    assert np.mean(list(returns.values())) == pytest.approx(-6.84)
    assert jaxlm_gym.score.normalize("maze-fo", -6.84) == pytest.approx(100.0)


def test_in_graph_bfs_policy_is_optimal_from_every_start():
    env, params = jaxlm_gym.make("maze-fo")
    best = env.optimal_returns(params)

    def episode(start):
        p = params.replace(start=start)
        obs, state = env.reset(jax.random.key(0), p)

        def body(carry, k):
            obs, state, ret, done = carry
            a = env.optimal_action(obs["symbolic"]["position"], obs["symbolic"]["goal"])
            obs2, state2, r, te, tr, _ = env.step(k, state, a, p)
            ret = ret + jnp.where(done, 0.0, r)
            return (obs2, state2, ret, done | te | tr), None

        carry = (obs, state, jnp.float32(0), jnp.bool_(False))
        return jax.lax.scan(body, carry, jax.random.split(jax.random.key(1), 15))[0][2]

    starts = jnp.asarray(STARTS, jnp.int32)
    returns = jax.jit(jax.vmap(episode))(starts)
    assert np.asarray(returns).tolist() == [best[s] for s in STARTS]


@pytest.mark.parametrize("env_id,fo,last_k", [("maze-fo", True, 1), ("maze-po", False, 40)])
def test_strings_rewards_and_window_match_the_reference(env_id, fo, last_k):
    rng = random.Random(0)
    texts = list(ACTIONS) + ["move left", "Move up\n", " move down\n", "go\n"]
    for episode in range(6):
        start = rng.choice(STARTS)
        ref, ours = RefMaze(start, fo, last_k), Driver(_single(env_id, start))
        assert ours.text() == ref.text()
        for t in range(30):
            # Mostly moves; invalid text now and then (it wipes the PO window, L1).
            action = rng.choice(texts) if rng.random() < 0.15 else rng.choice(ACTIONS)
            r_ref, done_ref = ref.step(action)
            final, r, te, tr = ours.step(action)
            assert final == ref.text(), (episode, t, action)
            assert r == r_ref and (te or tr) == done_ref
            if done_ref:
                break


def test_exact_observation_strings():
    fo = Driver(_single("maze-fo", (1, 11)))
    assert fo.text() == ("The goal is at position 8, 6. Your current position is at position 1, 1 1. "
                         "There are walls to your right, above you, below you.\n")
    po = Driver(_single("maze-po", (1, 11)))
    assert po.text() == "There are walls to your right, above you, below you.\n"
    final, r, te, tr = po.step("move left\n")
    assert final == ("There are walls to your right, above you, below you.\nmove left\n"
                     "There are walls above you, below you.\n")
    assert Driver(_single("maze-fo", (5, 3))).text() == (
        "The goal is at position 8, 6. Your current position is at position 5, 3. "
        "There are walls to your left, below you.\n")
    assert wall_sentence(0) == "There are no walls near you.\n"
    assert wall_sentence(4) == "There is a wall above you.\n"


def test_reward_table_and_success():
    d = Driver(_single("maze-fo", (7, 6)))
    assert d.step("move left\n")[1:] == (-1.0, False, False)  # bump a wall: valid, stays
    assert d.step("jump\n")[1:] == (-4.0, False, False)
    final, r, te, tr = d.step("move down\n")
    assert (final, r, te, tr) == ("Success\n", 0.0, True, False)
    po = Driver(_single("maze-po", (7, 6)))
    final, r, te, tr = po.step("move down\n")
    assert final == "There are walls to your right, to your left.\nmove down\nSuccess\n" and te


def test_text_actions_match_exactly():
    vec = _single("maze-fo", (5, 6))[0]
    tok = vec.tokenizer
    parse = jax.jit(vec.parser.parse_batch)

    def idx(ids, width=8):
        row = np.full((1, width), vec.pad_id, np.int32)
        row[0, : len(ids)] = ids
        return int(parse(jnp.asarray(row))[0])

    for i, s in enumerate(ACTIONS):
        assert idx(tok.encode(s)) == i
    # The same text in other token ids is the same action (the reference matches text).
    assert idx(tok.encode("mo") + tok.encode("ve") + tok.encode(" left") + tok.encode("\n")) == 0
    for bad in ["move left", "Move left\n", " move left\n", "move left\n\n", "move  left\n", "", "move lef\n"]:
        assert idx(tok.encode(bad)) == 4, bad
    # Tokens after the first pad are ignored; a single id that is no action is invalid.
    assert idx(tok.encode("move up\n") + [vec.pad_id, 318, 318]) == 2
    assert idx([318]) == 4


def test_time_limit_failure_step():
    # All-invalid play: 100 steps of -4, then "Failure" with -1 on the 101st (L2).
    d = Driver(_single("maze-fo", (1, 1)))
    total = 0.0
    for t in range(100):
        final, r, te, tr = d.step("nope\n")
        total += r
        assert not (te or tr)
    final, r, te, tr = d.step("move down\n")
    assert (final, r, te, tr) == ("Failure\n", -1.0, False, True)
    assert total + r == -401.0
    # Bumping a wall 100 times: -101 in all; the Failure step does not move the agent.
    d = Driver(_single("maze-po", (1, 1)))
    total = sum(d.step("move up\n")[1] for _ in range(101))
    assert total == -101.0
    # failure_step=False: truncated right after step 100, no Failure text.
    d = Driver(_single("maze-fo", (1, 1), failure_step=False))
    outs = [d.step("move up\n") for _ in range(100)]
    assert all(not (o[2] or o[3]) for o in outs[:-1]) and outs[-1][3] and not outs[-1][2]
    assert outs[-1][0].startswith("The goal is at position") and sum(o[1] for o in outs) == -100.0


def test_po_window_keeps_40_texts_and_wipe_flag():
    d = Driver(_single("maze-po", (5, 3)))
    for t in range(25):
        d.step(["move right\n", "move left\n"][t % 2])
    text = d.text()
    lines = text.splitlines(keepends=True)
    assert len(lines) == 40 and lines[0].startswith("move ")
    # An invalid action wipes the window (default, as the reference: L1) ...
    final, r, *_ = d.step("left\n")  # after 25 moves the agent stands at (5, 4)
    assert final == "There are walls above you, below you.\n" and r == -4.0
    # ... and keeps it with wipe_history_on_invalid=False (the invalid turn left out).
    k = Driver(_single("maze-po", (5, 3), wipe_history_on_invalid=False))
    k.step("move right\n")
    before = k.text()
    final, r, *_ = k.step("left\n")
    assert final == before and r == -4.0


def test_odd_window_keeps_a_leading_observation():
    ref, d = RefMaze((5, 3), False, 5), Driver(_single("maze-po", (5, 3), window=5))
    for a in ["move right\n", "move right\n", "move left\n", "move up\n"]:
        ref.step(a)
        assert d.step(a)[0] == ref.text()


def test_uniform_start_and_given_start():
    vec = jaxlm_gym.make_vec("maze-fo", 5000, obs_mode="symbolic")
    obs, _ = jax.jit(vec.reset)(jax.random.key(0))
    pos = np.asarray(obs["symbolic"]["position"])
    cells, counts = np.unique(pos, axis=0, return_counts=True)
    assert sorted(map(tuple, cells.tolist())) == sorted(STARTS)  # every start, never the goal
    expected = 5000 / 25
    assert ((counts - expected) ** 2 / expected).sum() < 60  # chi-square, 24 dof: p < 1e-4
    fixed = jaxlm_gym.make_vec("maze-fo", 3, start=(2, 9))
    assert np.asarray(fixed.reset(jax.random.key(1))[0]["symbolic"]["position"]).tolist() == [[2, 9]] * 3


def test_symbolic_observation():
    vec, params, reset, _ = _single("maze-fo", (1, 11), action_mode="index")
    obs, _ = reset(jax.random.key(0), params)
    sym = jax.tree.map(lambda x: np.asarray(x[0]).tolist(), obs["symbolic"])
    assert sym == {"position": [1, 11], "goal": [8, 6], "walls": [1, 0, 1, 1], "status": 0}
    _, params, reset, step = _single("maze-po", (1, 11), action_mode="index")
    obs, state = reset(jax.random.key(0), params)
    obs, *_ = step(jax.random.key(1), state, jnp.asarray([0]), params)
    sym = jax.tree.map(lambda x: np.asarray(x[0]), obs["symbolic"])
    assert "position" not in sym and sym["walls"].tolist() == [0, 0, 1, 1]
    assert sym["pair_action"][-1] == 0 and sym["pair_kind"][-1] == maze.DESCRIBE
    assert sym["first_kind"] == maze.DESCRIBE and sym["first_walls"].tolist() == [1, 0, 1, 1]


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="free cell"):
        jaxlm_gym.make("maze-fo", goal=(0, 0))
    with pytest.raises(ValueError, match="start"):
        jaxlm_gym.make("maze-fo", start=(8, 6))
    with pytest.raises(ValueError, match="valid layouts"):
        jaxlm_gym.make("maze-fo", layout="spiral")
