"""Wordle datasets: the greedy information-gain expert against a plain numpy/Python search, its play on the
benchmark list, the reference's jsonl layout (write -> read, a hand-written line), the in-graph recipe
end to end, and the Wordle wiring of the drivers (score, errors)."""

from __future__ import annotations

import json
import pathlib
import types
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from learners.datasets import (
    complete_episode_mask,
    episodes_to_trajectory,
    generate_dataset,
    read_wordle_jsonl,
    task_expert,
    wordle_expert,
    wordle_trajectory_episodes,
    write_wordle_jsonl,
)
from pure_envs import wordle

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "lmrl-gym"
if not DATA.is_dir():
    DATA = pathlib.Path("/work/shared/data/lmrl-gym")
BENCH = DATA / "wordle_official_400.txt"
pytestmark = pytest.mark.skipif(not BENCH.is_file(), reason="reference word lists not available")


# ---------------------------------------------------------------------------------------------- the expert


def _python_choice(guesses, answers, history):
    """The most informative guess, by plain Python: the answers consistent with every (guess, feedback) of
    ``history`` (feedback by the spec's rule: g same letter, y letter anywhere in the word, else b), then for
    every guess the partition of them by feedback; the entropy is highest where ``prod c^c`` is lowest (exact
    integers). Ties: a consistent guess first, then the lowest index."""

    def marks(g, t):
        return "".join("g" if a == b else "y" if a in t else "b" for a, b in zip(g, t))

    alive = [t for t in answers if all(marks(g, t) == m for g, m in history)]
    best = None
    for i, g in enumerate(guesses):
        prod = 1
        for c in Counter(marks(g, t) for t in alive).values():
            prod *= c**c
        key = (prod, g not in alive, i)
        best = key if best is None or key < best else best
    return best[2], len(alive)


def _play(env, target: str, guesses: list[str]) -> wordle.WordleState:
    _, state = env.reset_env(jax.random.PRNGKey(0), env.default_params)
    state = state.replace(target=jnp.int32(env.answers.index(target)))
    for g in guesses:
        a = env.guesses.index(g) if g in env.guesses else env.num_actions  # invalid: no letters shown
        _, state, *_ = env.step_env(jax.random.PRNGKey(0), state, jnp.int32(a), env.default_params)
    return state


# (hidden word, guesses so far): the empty board, one to three guesses, an invalid try, a set of two
STATES = [("acorn", []), ("acorn", ["slate"]), ("humor", ["slate"]), ("gooey", ["mamma"]),
          ("mount", ["slate", "broth"]), ("genie", ["xxxxx", "slate"]), ("spell", ["slate", "swill"]),
          ("vigil", ["slate", "moist", "vying"])]


@pytest.fixture(scope="module")
def bench_vec():
    return jaxlm_gym.make_vec("wordle", len(STATES), obs_mode="symbolic", action_mode="index", word_list=str(BENCH))


def test_expert_picks_the_most_informative_guess(bench_vec):
    env = bench_vec.env
    states = [_play(env, t, h) for t, h in STATES]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *states)
    expert = wordle_expert(bench_vec)
    assert wordle_expert(bench_vec) is expert  # cached: generate_dataset's compiled scan is reused
    got = np.asarray(jax.jit(expert)(batch))
    # the expert's consistent sets are the core's (its bitset popcount)
    np.testing.assert_array_equal(np.asarray(expert.tables.consistent(batch)).sum(1), np.asarray(batch.count))
    sizes = []
    for (target, hist), state, g in zip(STATES, states, got):
        shown = [(w, "".join("byg"[m] for m in np.asarray(state.marks[i])))
                 for i, w in enumerate(hist) if w in env.guesses]
        want, size = _python_choice(env.guesses, env.answers, shown)
        sizes.append(size)
        assert env.guesses[g] == env.guesses[want], (target, hist, size)
    assert env.guesses[got[0]] == "slate"  # the empty board's guess
    assert sizes[0] == len(env.answers) and min(sizes) <= 2  # every branch ran: first guess, shortcut, search
    assert any(2 < x < len(env.answers) for x in sizes), sizes


def test_undiluted_expert_solves_nearly_every_game():
    n = 64
    vec = jaxlm_gym.make_vec("wordle", n, obs_mode="symbolic", action_mode="index", word_list=str(BENCH))
    expert = wordle_expert(vec)

    @jax.jit
    def play(key):
        _, st = vec.reset(key)

        def body(st, k):
            _, st, r, te, tr, info = vec.step(k, st, expert(vec.core_state(st)))
            return st, (r, te | tr, info["solved"])

        return jax.lax.scan(body, st, jax.random.split(key, 6))[1]

    r, done, solved = map(np.asarray, play(jax.random.PRNGKey(7)))
    first = (np.cumsum(done, 0) - done) == 0
    assert done.any(0).all()  # six tries at most
    assert (solved & first).any(0).mean() >= 0.95  # 431 words: the greedy search solves every game we tried
    assert (r * first).sum(0).mean() >= -2.5  # about -1.9 on 1,024 games


def test_task_expert_names_the_tasks_that_have_one():
    with pytest.raises(ValueError, match="maze-fo.*wordle"):
        task_expert(types.SimpleNamespace(id="chess"))


# ---------------------------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def data():
    vec = jaxlm_gym.make_vec("wordle", 6, obs_mode="tokens", action_mode="tokens", word_list=str(BENCH))
    bos = vec.tokenizer.eos_id
    traj = generate_dataset(vec, wordle_expert(vec), jax.random.PRNGKey(1), 14, 0.3, bos_id=bos)
    return vec, bos, traj


def test_generated_episodes_round_trip_through_the_reference_layout(data, tmp_path):
    vec, bos, traj = data
    episodes = wordle_trajectory_episodes(vec, traj, bos_id=bos)
    assert episodes and all(ep[-1]["done"] for ep in episodes)
    for ep in episodes:
        assert ep[0]["state"] == "Wordle:\n"
        for s, nxt in zip(ep, ep[1:]):  # each state is the history so far: the last one plus action + feedback
            assert nxt["state"] == s["state"] + s["action"] + s["feedback"]
        if ep[-1]["reward"] == 0.0:  # solved on the last guess
            assert ep[-1]["feedback"] == "g g g g g\n"
    path = tmp_path / "train_data.jsonl"
    assert write_wordle_jsonl(path, episodes) == len(episodes)
    line = json.loads(path.read_text().splitlines()[0])
    assert line["sequence"][0] == ["Wordle:\n", 0.0] and line["sequence"][1][1] == 1.0
    assert len(line["reward"]) == len(line["sequence"]) - 1 and line["done"] is True
    assert read_wordle_jsonl(path) == episodes

    # tokenised back, the episodes are the generated rows (complete episodes, env by env)
    back = episodes_to_trajectory(vec, read_wordle_jsonl(path), bos_id=bos)
    host = jax.device_get(traj)
    keep = np.asarray(complete_episode_mask(traj.done))
    rows = [(t, i) for i in range(keep.shape[1]) for t in range(keep.shape[0]) if keep[t, i]]
    assert back.reward.shape == (len(rows),)
    for name in ("prompt_tokens", "prompt_mask", "action_tokens", "action_mask", "action", "reward", "done"):
        want = np.stack([getattr(host, name)[t, i] for t, i in rows])
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), want, err_msg=name)


def test_reader_takes_a_reference_line(tmp_path):
    line = {"sequence": [["Wordle:\n", 0.0], ["s l a t e\n", 1.0], ["b b y b b\n", 0.0], ["\n", 1.0], ["\n", 0.0],
                         ["a c o r n\n", 1.0], ["g g g g g\n", 0.0]],
            "reward": [-1.0, 0.0, -1.0, 0.0, 0.0, 0.0], "done": True}
    path = tmp_path / "eval_data.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (ep,) = read_wordle_jsonl(path)
    assert [s["action"] for s in ep] == ["s l a t e\n", "\n", "a c o r n\n"]
    assert [s["reward"] for s in ep] == [-1.0, -1.0, 0.0] and [s["done"] for s in ep] == [False, False, True]
    assert ep[2]["state"] == "Wordle:\ns l a t e\nb b y b b\n\n\n" and ep[2]["feedback"] == "g g g g g\n"
    again = tmp_path / "again.jsonl"
    write_wordle_jsonl(again, [ep])
    assert json.loads(again.read_text()) == line  # same layout, is_action as a float
    vec = jaxlm_gym.make_vec("wordle", 1, obs_mode="tokens", action_mode="tokens", word_list=str(BENCH))
    tr = episodes_to_trajectory(vec, [ep])
    g = vec.env.guesses
    assert np.asarray(tr.action).tolist() == [g.index("slate"), vec.num_actions, g.index("acorn")]
    path.write_text(json.dumps({**line, "reward": line["reward"][:-1]}) + "\n")
    with pytest.raises(ValueError, match="one reward per text"):
        read_wordle_jsonl(path)


# ---------------------------------------------------------------------------------------------- drivers


def test_wordle_score_uses_the_data_average():
    n = jaxlm_gym.score.normalize
    assert n("wordle", [-6.0, -3.0, -1.5, 0.0], average=-3.0).tolist() == [0.0, 50.0, 75.0, 100.0]
    with pytest.raises(ValueError, match="average"):
        n("wordle", -2.0)


def test_bc_runs_on_wordle_end_to_end():
    from learners.train_bc import BCRunConfig, train_bc

    with pytest.raises(ValueError, match="dataset expert"):
        BCRunConfig(task="chess")
    with pytest.raises(ValueError, match="Wordle option"):
        BCRunConfig(task="maze-fo", word_list=str(BENCH))
    tiny = dict(task="wordle", word_list=str(BENCH), data_envs=16, data_steps=12, epsilon=0.5, n_layer=1, n_head=2,
                n_embd=32, num_updates=2, chunk=2, batch_size=8, progress=False)
    out = train_bc(BCRunConfig(**tiny))
    d = out["data"]
    assert d["score"] == pytest.approx(50.0) and d["score_average"] == d["mean_return"]
    assert -6.0 <= out["mean_return"] <= 0.0 and 0.0 <= out["score"] <= 100.0
    top = train_bc(BCRunConfig(**tiny, evaluate=False, filter="top_fraction", filter_fraction=0.1))
    assert 0 < top["data"]["kept_transitions"] < 16 * 12
