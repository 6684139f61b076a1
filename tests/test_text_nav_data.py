"""Text-Nav datasets: the shortest-completion expert against a plain-Python BFS written from the spec (from
resets and from states that random play left behind), its play undiluted (every episode won), the in-graph
recipe on FO and PO token envs, the filtered-BC rule, the score and BC end to end.

The reference documents no Text-Nav jsonl layout (spec §10 lists none), so there is no reader here."""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from learners.datasets import (
    EXPERTS,
    episode_facts,
    filter_steps,
    generate_dataset,
    task_expert,
    text_nav_expert,
    trajectory_episodes,
)
from learners.presets import get_preset
from learners.rollout import first_episode_mask
from pure_envs import text_nav as tn

# ---------------------------------------------------------------------------------------------- host BFS
# The quest by the spec (lmrl-gym.md §3), on what it depends on: where the agent is, where the stale food
# is, and whether the chest and the fridge are open (nothing else blocks or enables a command it needs).

EDGES = [("bedroom", "west", "living room"), ("living room", "west", "dining room"), ("dining room", "west", "kitchen"),
         ("kitchen", "west", "backyard"), ("kitchen", "north", "garden"), ("living room", "south", "office"),
         ("office", "east", "bathroom"), ("bedroom", "south", "bathroom")]
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
FURNITURE = {"bedroom": "table", "living room": "table", "dining room": "table", "office": "chest",
             "kitchen": "fridge"}
EXITS: dict[str, dict[str, str]] = {}
for _a, _d, _b in EDGES:
    EXITS.setdefault(_a, {})[_d] = _b
    EXITS.setdefault(_b, {})[OPPOSITE[_d]] = _a


def _moves(s):
    """Next states of ``(room, where, chest open, fridge open)``; ``where``: ("floor", room), ("inventory",)
    or ("on", room) (that room's furniture). Eating the stale food loses, so it is no move."""
    room, where, is_open = s[0], s[1], {"chest": s[2], "fridge": s[3]}
    furn = FURNITURE.get(room)
    out = [(to, where, s[2], s[3]) for to in EXITS[room].values()]
    if furn in is_open:
        flipped = dict(is_open, **{furn: not is_open[furn]})
        out.append((room, where, flipped["chest"], flipped["fridge"]))
    reachable = furn == "table" or (furn is not None and is_open[furn])
    if where == ("floor", room) or (where == ("on", room) and reachable):
        out.append((room, ("inventory",), s[2], s[3]))
    if where == ("inventory",):
        out.append((room, ("floor", room), s[2], s[3]))
        if reachable:  # put on the table / insert into the open container
            out.append((room, ("on", room), s[2], s[3]))
    return out


def host_steps_to_win(s) -> int:
    """Fewest commands from ``s`` to the win (stale food in the fridge, fridge closed), by BFS."""
    dist, queue = {s: 0}, deque([s])
    while queue:
        x = queue.popleft()
        if x[1] == ("on", "kitchen") and not x[3]:
            return dist[x]
        for y in _moves(x):
            if y not in dist:
                dist[y] = dist[x] + 1
                queue.append(y)
    raise AssertionError(f"no way to win from {s}")


def host_state(room: int, stale_location: int, opened) -> tuple:
    """The core's encoding (``TextNavState``) -> the BFS's state."""
    lo = int(stale_location)
    if lo < 8:
        where = ("floor", tn.ROOMS[lo])
    elif lo == tn.INV:
        where = ("inventory",)
    else:
        where = ("on", tn.ROOMS[tn.FURNITURE_ROOM[lo]])
    return tn.ROOMS[int(room)], where, bool(opened[0]), bool(opened[1])


# ---------------------------------------------------------------------------------------------- the expert


def _symbolic(env_id, n):
    return jaxlm_gym.make_vec(env_id, n, obs_mode="symbolic", action_mode="index")


def _expert_episode_lengths(vec, expert, key, state, params, steps):
    """Play ``expert`` from ``state`` for ``steps`` steps; per env: the steps of the first episode (0: not
    finished), whether it was won, and whether every command of it was admissible."""

    def body(st, k):
        a = expert(vec.core_state(st))
        _, st, r, te, tr, info = vec.step(k, st, a, params)
        return st, (te | tr, info["success"], info["valid_action"])

    done, won, valid = jax.lax.scan(body, state, jax.random.split(key, steps))[1]
    first = first_episode_mask(done)
    length = jnp.where(done.any(0), jnp.argmax(done, axis=0) + 1, 0)
    return length, (won & first).any(0), jnp.all(valid | ~first, axis=0)


@pytest.mark.parametrize("env_id", ["text-nav-fo", "text-nav-po"])
def test_undiluted_expert_wins_every_episode_in_the_fewest_steps(env_id):
    n = 256
    vec = _symbolic(env_id, n)
    expert = text_nav_expert(vec)
    assert text_nav_expert(vec) is expert and task_expert(vec) is expert  # cached: one compiled scan

    @jax.jit
    def play(key):
        _, st = vec.reset(key)
        start = vec.core_state(st).room
        return (start, *_expert_episode_lengths(vec, expert, key, st, vec.params, 15))

    want = {r: host_steps_to_win(host_state(r, tn.START_LOCATIONS[tn.STALE], (0, 0))) for r in range(8)}
    assert want == {r: len(tn.walkthrough(r)) for r in range(8)}  # the reference's walkthrough lengths
    for seed in range(3):
        start, length, won, valid = map(np.asarray, play(jax.random.PRNGKey(seed)))
        assert won.all() and valid.all()
        np.testing.assert_array_equal(length, [want[r] for r in start])
        assert len(set(start.tolist())) == 8  # every start room drawn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_finishes_from_random_states_as_the_host_bfs_says(seed):
    """States after up to 25 random admissible commands (stale food dropped, put on tables, in the chest,
    in hand; containers open or shut), then the expert: won in exactly the host BFS's number of steps (at
    most 13: stale food on the bathroom floor or in the shut chest, agent in the garden)."""
    n = 256
    vec = _symbolic("text-nav-po", n)
    params = vec.params.replace(max_steps_in_episode=1000)  # no truncation while exploring
    expert = text_nav_expert(vec)

    @jax.jit
    def explore(key):
        k_reset, k_len, k_play = jax.random.split(key, 3)
        obs, st = vec.reset(k_reset, params)
        stop = jax.random.randint(k_len, (n,), 0, 26)

        def body(carry, x):
            obs, st = carry
            t, k = x
            adm = obs["symbolic"]["admissible"].astype(bool)
            # never eat the stale food (that loses and resets): the states stay interesting
            adm = adm.at[:, tn.COMMANDS.index("eat stale food")].set(False)
            a = jax.random.categorical(k, jnp.where(adm, 0.0, -jnp.inf), axis=-1)
            a = jnp.where(t < stop, a, tn.NUM_COMMANDS)  # past its length an env writes no command
            obs, st, *_ = vec.step(k, st, a, params)
            return (obs, st), None

        (_, st), _ = jax.lax.scan(body, (obs, st), (jnp.arange(25), jax.random.split(k_play, 25)))
        st = st.replace(time=jnp.zeros((n,), jnp.int32))  # symbolic: the state is the core's
        return st, _expert_episode_lengths(vec, expert, key, st, params, 16)  # 13 steps at most

    core, (length, won, valid) = jax.device_get(explore(jax.random.PRNGKey(100 + seed)))
    assert won.all() and valid.all()
    states = [host_state(core.room[i], core.location[i, tn.STALE], core.opened[i]) for i in range(n)]
    np.testing.assert_array_equal(length, [host_steps_to_win(s) for s in states])
    wheres = {s[1][0] for s in states}
    assert wheres == {"floor", "inventory", "on"}, wheres  # the stale food was moved around
    assert any(s[1] == ("on", "office") for s in states) or any(s[2] for s in states)


def test_expert_registry():
    assert EXPERTS["text-nav-fo"] is EXPERTS["text-nav-po"] is text_nav_expert
    with pytest.raises(ValueError, match="not a Text-Nav env"):
        text_nav_expert(_symbolic("maze-fo", 1))


# ---------------------------------------------------------------------------------------------- the recipe


@pytest.fixture(scope="module")
def po_data():
    """PO token env (FO's recipe runs in the BC test): undiluted and diluted data from one compiled scan
    (``epsilon`` is traced)."""
    vec = jaxlm_gym.make_vec("text-nav-po", 64, obs_mode="tokens", action_mode="tokens")
    expert = text_nav_expert(vec)
    return vec, [generate_dataset(vec, expert, jax.random.PRNGKey(3 + i), 16, eps) for i, eps in enumerate((0.0, 0.5))]


def test_generated_undiluted_data_is_the_walkthrough(po_data):
    vec, (traj, _) = po_data
    # every episode: the reference's walkthrough from its start room, won on the last command
    walks = {tuple(c + "\n" for c in tn.walkthrough(r)) for r in range(8)}
    episodes = trajectory_episodes(vec, traj)
    assert len(episodes) >= 64
    for ep in episodes:
        assert tuple(s["action"] for s in ep) in walks
        assert [s["reward"] for s in ep] == [0.0] * (len(ep) - 1) + [1.0] and ep[-1]["done"]
    assert {len(ep) for ep in episodes} == set(range(6, 10))
    assert bool(np.asarray(traj.info["valid_action"]).all()) and bool(np.asarray(traj.info["success"]).any())
    assert "Admissible commands: " in episodes[0][0]["state"]


def test_diluted_data_and_the_filtered_bc_rule(po_data):
    _, (_, traj) = po_data
    facts = episode_facts(traj.reward, traj.done, traj.terminated)
    complete = np.asarray(facts["complete"])
    ret = np.asarray(facts["ep_return"])
    first = np.asarray(first_episode_mask(traj.done)) & np.asarray(traj.done)
    assert first.sum() == 64 and 0.3 < ret[first].mean() < 0.8  # epsilon 0.5: about 55 % of episodes won
    pre = get_preset("filtered_bc", "text-nav-po")
    keep = filter_steps(facts, pre.rule, last_reward_value=pre.last_reward_value, fraction=pre.fraction)
    np.testing.assert_array_equal(keep, complete & (ret == 1.0))  # exactly the won episodes' steps
    assert 0 < keep.sum() < keep.size


# ---------------------------------------------------------------------------------------------- drivers


def test_text_nav_score_uses_the_data_average():
    n = jaxlm_gym.score.normalize
    for task in ("text-nav-fo", "text-nav-po"):
        assert n(task, [0.0, 0.25, 0.5, 0.75, 1.0], average=0.5).tolist() == [0.0, 25.0, 50.0, 75.0, 100.0]
        with pytest.raises(ValueError, match="average"):
            n(task, 0.5)
        with pytest.raises(ValueError, match="strictly inside"):
            n(task, 0.5, average=1.0)  # undiluted data: every episode won, no average to scale by


def test_bc_runs_on_text_nav_end_to_end():
    from learners.train_bc import BCRunConfig, train_bc

    tiny = dict(task="text-nav-fo", data_envs=16, data_steps=15, epsilon=0.5, n_layer=1, n_head=2, n_embd=32,
                num_updates=2, chunk=2, batch_size=8, progress=False)
    out = train_bc(BCRunConfig(**tiny))
    d = out["data"]
    assert d["first_episodes_finished"] == 1.0 and 0.0 < d["mean_return"] < 1.0
    assert d["score"] == pytest.approx(50.0) and d["score_average"] == d["mean_return"]
    ev = out["eval"]
    assert 0.0 <= ev["mean_return"] <= 1.0 and 0.0 <= ev["score"] <= 100.0 and ev["finished"] == 1.0
    assert ev["success"] == pytest.approx(ev["mean_return"])  # a won episode returns 1, any other 0
    assert ev["env_steps"] == 32 * 15  # 32 episodes from random resets, the 15-step cap


def test_reproduce_table2_takes_text_nav_offline_only():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_table2.py"
    spec = importlib.util.spec_from_file_location("reproduce_table2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.EPSILON["text-nav-fo"] == mod.EPSILON["text-nav-po"] == 0.5
    with pytest.raises(SystemExit):  # the online algorithms are maze-only: refused before any training
        mod.main(["--tasks", "text-nav-fo", "text-nav-po", "--algos", "bc", "ppo"])
