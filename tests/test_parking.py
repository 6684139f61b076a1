"""LLF-Bench parking core vs highway-env 1.12.1 ``parking-v0`` (the reference, from PyPI).

The differential tests drive highway-env and ``Parking`` from the same state with the same
actions and compare every step. highway-env spends ~80 % of a step building its observation
through pandas; the fast tests swap in an equivalent numpy ``observe`` (checked equal to the
original in ``test_fast_observe_is_the_reference_observe``); the slow test runs it unpatched.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
gym = pytest.importorskip("gymnasium")
highway_env = pytest.importorskip("highway_env")
from highway_env.envs.common.observation import KinematicsGoalObservation

from pure_envs import parking as P
from pure_envs.parking import Parking

TOL = 1e-5  # per-step agreement: |ours - reference| <= TOL * max(1, |reference|)
SHORT, LONG = 16, 500
N_AUTO, T_AUTO = 201, 501  # the one jitted rollout shape: 200 short + 1 long episode
KEY = jax.random.key(0)
ENV = Parking()  # one instance: jitted methods cache on it (a new instance would recompile)
PARAMS = ENV.default_params

_ORIGINAL_OBSERVE = KinematicsGoalObservation.observe


def _fast_observe(self):
    """KinematicsGoalObservation.observe without pandas (same values, same dict)."""
    if not self.observer_vehicle:
        return _ORIGINAL_OBSERVE(self)
    d, g = self.observer_vehicle.to_dict(), self.observer_vehicle.goal.to_dict()
    obs = np.array([d[f] for f in self.features], np.float64)
    goal = np.array([g[f] for f in self.features], np.float64)
    return OrderedDict([("observation", obs / self.scales), ("achieved_goal", obs / self.scales),
                        ("desired_goal", goal / self.scales)])


@pytest.fixture
def fast_reference(monkeypatch):
    monkeypatch.setattr(KinematicsGoalObservation, "observe", _fast_observe)
    return gym.make("parking-v0").unwrapped


def _spot_of(goal) -> int:
    x, y = goal.position
    k = round(float(x + 26.0) / 4.0)
    return k if y > 0 else P.N_SPOTS + k


def _lane_spot(lane_index) -> int:
    frm, _, k = lane_index
    return k if frm == "a" else P.N_SPOTS + k


# ----------------------------------------------------------------------------- episodes
def _episode_plan(n_short: int, seed: int = 0):
    """(reset seed, start override or None, goal override or None, actions[T, 2], steps) per episode.

    Styles: 0 reference start, uniform actions in [-1.5, 1.5] (the clip); 1 reference start,
    saturated / out-of-range actions; 2 random start anywhere with speed in [-20, 20]; 3 start
    near a wall moving toward it (impacts, reversing crashes); 4 start next to the goal, small
    actions (successes)."""
    rng = np.random.default_rng(seed)
    plan = []
    for i in range(n_short):
        style = i % 5
        start = goal = None
        if style == 0:
            acts = rng.uniform(-1.5, 1.5, (SHORT, 2))
        elif style == 1:
            acts = rng.choice([-3.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0, 2.0], (SHORT, 2))
        elif style == 2:
            start = (rng.uniform(-30, 30), rng.uniform(-17, 17), rng.uniform(-4, 10), rng.uniform(-20, 20))
            acts = rng.uniform(-1.2, 1.2, (SHORT, 2))
        elif style == 3:
            side = rng.integers(4)
            along = rng.uniform(-0.9, 0.9)
            depth = rng.uniform(14, 19) if side < 2 else rng.uniform(27, 32)
            sign = 1.0 if side % 2 else -1.0
            x, y = (along * 30, sign * depth) if side < 2 else (sign * depth, along * 17)
            toward = math.atan2(sign, 0.0) if side < 2 else (0.0 if sign > 0 else math.pi)
            speed = rng.uniform(3, 30) * rng.choice([1.0, -1.0])
            heading = toward + rng.uniform(-0.6, 0.6) + (math.pi if speed < 0 else 0.0)
            start = (x, y, heading, speed)
            acts = np.stack([rng.choice([1.0, 0.3, -0.5]) * np.ones(SHORT), rng.uniform(-1, 1, SHORT)], 1)
        else:
            goal = int(rng.integers(2 * P.N_SPOTS))
            gx, gy, gh = P.SPOTS[goal]
            start = (gx + rng.uniform(-1.5, 1.5), gy + rng.uniform(-1.5, 1.5), gh + rng.uniform(-0.3, 0.3),
                     rng.uniform(-1, 1))
            acts = rng.uniform(-0.2, 0.2, (SHORT, 2))
        plan.append((i, start, goal, acts.astype(np.float32), SHORT))
    return plan


def _long_plan(limit: float = 1.0):
    """A full 500-step episode: circling at the +40 (limit 1) or -40 (limit -1) m/s speed limit
    until truncation."""
    return [(1000, None, None, np.tile(np.float32([[limit, 0.8 * limit]]), (LONG, 1)), LONG)]


def _run_reference(ref, plan):
    """Per episode: our start state (x, y, heading, speed, goal) and the reference's per-step records."""
    starts, records = [], []
    for seed, start, goal, acts, steps in plan:
        ref.reset(seed=seed)
        v = ref.vehicle
        if start is not None:
            v.position = np.array(start[:2], np.float64)
            v.heading, v.speed = float(start[2]), float(start[3])
        if goal is not None:
            v.goal.position = np.array(P.SPOTS[goal][:2], np.float64)
            v.goal.heading = float(P.SPOTS[goal][2])
        starts.append((v.position[0], v.position[1], v.heading, v.speed, _spot_of(v.goal)))
        rec = []
        for t in range(steps):
            obs, reward, terminated, truncated, info = ref.step(acts[t].astype(np.float64))
            rec.append({"obs": np.concatenate([obs["observation"], obs["achieved_goal"], obs["desired_goal"]]),
                        "reward": float(reward), "terminated": bool(terminated), "truncated": bool(truncated),
                        "crashed": bool(info["crashed"]), "success": bool(info["is_success"]),
                        "x": v.position[0], "y": v.position[1], "heading": v.heading, "speed": v.speed})
            if terminated or truncated:
                break
        records.append(rec)
    return starts, records




@jax.jit
def _auto_rollout(states, keys, actions):
    """T_AUTO steps of the vmapped public ``step`` (auto-reset) for N_AUTO envs."""
    vstep = jax.vmap(lambda k, s, a: ENV.step(k, s, a, PARAMS))

    def body(s, ka):
        obs, s2, r, te, tr, info = vstep(ka[0], s, ka[1])
        return s2, (obs, s2, r, te, tr, info)

    return jax.lax.scan(body, states, (keys, actions))[1]


def _compare(plan, starts, records):
    """Run our side for the whole plan in one batch and check every reference step."""
    assert len(plan) <= N_AUTO
    acts = np.zeros((T_AUTO, N_AUTO, 2), np.float32)
    for i, p in enumerate(plan):
        acts[: len(p[3]), i] = p[3]
    starts = list(starts) + [(0.0, 0.0, 0.0, 0.0, 0)] * (N_AUTO - len(plan))
    x, y, h, v, g = (np.array(c) for c in zip(*starts))
    keys = jax.random.split(KEY, T_AUTO * N_AUTO).reshape(T_AUTO, N_AUTO)
    _, st, rew, te, tr, info = jax.tree.map(np.asarray, _auto_rollout(Parking.state_from(x, y, h, v, g), keys,
                                                                      jnp.asarray(acts)))
    final = info["final_observation"]  # the observation before an auto-reset
    sym = final["symbolic"]
    ours = {"obs": np.concatenate([sym["observation"], sym["achieved_goal"], sym["desired_goal"]], -1),
            "reward": rew, "terminated": te, "truncated": tr, "crashed": info["crashed"], "success": info["success"],
            "facts": final["facts"]}
    worst = {"obs": 0.0, "reward": 0.0, "pos": 0.0, "heading": 0.0, "speed": 0.0}
    events = {"crashed": 0, "success": 0, "truncated": 0}
    for i, rec in enumerate(records):
        for t, r in enumerate(rec):
            where = f"episode {i} (plan {plan[i][0]}) step {t + 1}"
            for k in ("terminated", "truncated", "crashed", "success"):
                assert bool(ours[k][t, i]) == r[k], f"{where}: {k} ours {ours[k][t, i]} reference {r[k]}"
            err = np.abs(ours["obs"][t, i] - r["obs"]) / np.maximum(1.0, np.abs(r["obs"]))
            worst["obs"] = max(worst["obs"], err.max())
            worst["reward"] = max(worst["reward"], abs(ours["reward"][t, i] - r["reward"]) / max(1.0, abs(r["reward"])))
            if not (r["terminated"] or r["truncated"]):  # after the last step the state is the next episode's
                pos = st.pos[t, i].astype(np.float64) + st.pos_lo[t, i]
                worst["pos"] = max(worst["pos"], np.abs(pos - [r["x"], r["y"]]).max() / 100)  # observation units
                dh = float(st.heading[t, i]) + float(st.heading_lo[t, i]) - r["heading"]
                worst["heading"] = max(worst["heading"], abs((dh + math.pi) % (2 * math.pi) - math.pi))
                speed = float(st.speed[t, i]) + float(st.speed_lo[t, i])
                worst["speed"] = max(worst["speed"], abs(speed - r["speed"]) / max(1.0, abs(r["speed"])))
            assert max(worst.values()) <= TOL, f"{where}: {worst}"
            # facts the text layer reads
            f = {k: ours["facts"][k][t, i] for k in ours["facts"]}
            assert f["fb_r"] == 1 and f["invalid"] == 0 and f["at_reset"] == 0
            assert f["fb_hp"] == (r["reward"] >= -0.12) and f["fb_hn"] == r["crashed"], where
            assert f["reward"] == ours["reward"][t, i]
            for events_key in events:
                events[events_key] += r[events_key]
        last = rec[-1]
        if len(rec) < plan[i][4]:
            assert last["terminated"] or last["truncated"]
    return worst, events


# ----------------------------------------------------------------------------- tests
def test_constants_match_reference(fast_reference):
    ref = fast_reference
    ref.reset(seed=0)
    cfg = ref.config
    assert cfg["simulation_frequency"] == P.SIMULATION_FREQUENCY and cfg["policy_frequency"] == P.POLICY_FREQUENCY
    assert cfg["duration"] == P.DURATION and P.MAX_STEPS == 500
    assert list(cfg["reward_weights"]) == list(P.REWARD_WEIGHTS)
    assert cfg["success_goal_reward"] == P.SUCCESS_GOAL_REWARD and cfg["collision_reward"] == P.COLLISION_REWARD
    assert list(cfg["observation"]["scales"]) == list(P.SCALES) and cfg["observation"]["normalize"] is False
    assert cfg["vehicles_count"] == 0 and cfg["controlled_vehicles"] == 1 and cfg["add_walls"]
    v = ref.vehicle
    assert (v.LENGTH, v.WIDTH, v.MAX_SPEED, v.MIN_SPEED) == (P.LENGTH, P.WIDTH, P.MAX_SPEED, P.MIN_SPEED)
    at = ref.action_type
    assert tuple(at.acceleration_range) == P.ACCELERATION_RANGE and tuple(at.steering_range) == P.STEERING_RANGE
    assert at.clip and tuple(at.space().shape) == (2,)
    # the 28 spots, in lane order
    lanes = ref.road.network.lanes_dict()
    assert len(lanes) == 28
    for idx, lane in lanes.items():
        s = _lane_spot(idx)
        np.testing.assert_array_equal(lane.position(lane.length / 2, 0), P.SPOTS[s, :2])
        assert lane.heading == P.SPOTS[s, 2]
    # the walls, in road.objects order after the goal landmark
    walls = ref.road.objects[1:]
    assert len(walls) == 4
    for w, centre, corners, diag in zip(walls, P.WALL_CENTRES, P.WALL_CORNERS, P.WALL_DIAGONALS):
        np.testing.assert_array_equal(w.position, centre)
        np.testing.assert_array_equal(w.polygon()[:4], corners)
        assert w.diagonal == diag and w.solid
    assert not ref.road.objects[0].solid  # the goal landmark never collides


def test_fast_observe_is_the_reference_observe(fast_reference):
    ref = fast_reference
    rng = np.random.default_rng(1)
    for seed in range(3):
        ref.reset(seed=seed)
        for _ in range(5):
            ref.step(rng.uniform(-1, 1, 2))
            for ot in (ref.observation_type, ref.observation_type_parking):
                a, b = _fast_observe(ot), _ORIGINAL_OBSERVE(ot)
                assert list(a) == list(b)
                for k in a:
                    np.testing.assert_array_equal(a[k], b[k])


def test_reset_matches_reference_rule(fast_reference):
    """The goal is uniform over the 27 spots other than the ego's closest lane (heading-dependent)."""
    ref = fast_reference
    starts, ref_obs = [], []
    for seed in range(60):
        obs, info = ref.reset(seed=seed)
        v = ref.vehicle
        assert tuple(v.position) == P.EGO_START and v.speed == 0 and 0 <= v.heading < 2 * math.pi
        assert _lane_spot(v.lane_index) == int(Parking.ego_lane(v.heading))
        assert _spot_of(v.goal) != _lane_spot(v.lane_index)
        assert v.goal.heading == P.SPOTS[_spot_of(v.goal), 2]
        assert not info["is_success"]
        starts.append((0.0, 0.0, v.heading, 0.0, _spot_of(v.goal)))
        ref_obs.append(np.concatenate([obs["observation"], obs["achieved_goal"], obs["desired_goal"]]))
    # our observation of the same starts
    x, y, h, s, g = (np.array(c) for c in zip(*starts))
    sym = jax.vmap(lambda st: ENV._observe(st, PARAMS, True))(Parking.state_from(x, y, h, s, g))["symbolic"]
    ours = np.concatenate([sym["observation"], sym["achieved_goal"], sym["desired_goal"]], axis=1)
    np.testing.assert_allclose(ours, np.array(ref_obs), atol=1e-7)


def test_our_reset_distribution():
    env = ENV

    @jax.jit
    def draw(keys):
        obs, states = jax.vmap(lambda k: env.reset_env(k, PARAMS))(keys)
        return obs, states, jax.vmap(Parking.ego_lane)(jnp.mod(states.heading, 2 * jnp.pi))

    obs, states, excluded = draw(jax.random.split(jax.random.key(5), 27000))
    goal, heading, excluded = np.asarray(states.goal), np.asarray(states.heading), np.asarray(excluded)
    assert (goal != excluded).all()
    up = np.sin(heading) > 0
    assert set(excluded[up]) == {P.EGO_LANE_UP} and set(excluded[~up]) == {P.EGO_LANE_DOWN}
    # given the excluded spot, the goal is uniform over the other 27 (chi-square, 26 dof)
    for ex in (P.EGO_LANE_UP, P.EGO_LANE_DOWN):
        counts = np.bincount(goal[excluded == ex], minlength=28)
        assert counts[ex] == 0
        others = np.delete(counts, ex)
        expected = others.sum() / 27
        assert ((others - expected) ** 2 / expected).sum() < 60  # p < 1e-4 under uniformity
    # heading ~ U[0, 2 pi) (kept in [-pi, pi])
    assert np.abs(heading).max() <= math.pi + 1e-6
    hist = np.histogram(np.mod(heading, 2 * math.pi), bins=8, range=(0, 2 * math.pi))[0]
    assert np.abs(hist / hist.sum() - 1 / 8).max() < 0.01
    # the reset observation and facts
    s = jax.tree.map(lambda x: np.asarray(x)[0], obs)
    f = s["facts"]
    assert f["at_reset"] == 1 and f["fb_r"] == f["fb_hp"] == f["fb_hn"] == f["invalid"] == 0 and f["reward"] == 0
    assert states.time.dtype == jnp.int32 and (np.asarray(states.time) == 0).all()
    np.testing.assert_array_equal(s["symbolic"]["desired_goal"], P.GOAL_FEATURES[goal[0]].astype(np.float32))


def test_differential_against_highway_env(fast_reference):
    plan = _episode_plan(200) + _long_plan()
    starts, records = _run_reference(fast_reference, plan)
    worst, events = _compare(plan, starts, records)
    # the plan reaches every kind of ending
    assert events["crashed"] >= 40 and events["success"] >= 10 and events["truncated"] == 1, events
    print("worst relative errors:", worst, events)


@pytest.mark.slow
def test_differential_unpatched_reference():
    """Unpatched highway-env (pandas observation), other episodes."""
    ref = gym.make("parking-v0").unwrapped
    plan = _episode_plan(60, seed=7) + _long_plan(-1.0)
    starts, records = _run_reference(ref, plan)
    _, events = _compare(plan, starts, records)
    assert events["crashed"] >= 10 and events["truncated"] == 1, events


def test_truncation_after_500_steps():
    """time += 0.2 per step reaches duration 100 at step 500 (float sum 100.00000000000088)."""
    t = 0.0
    for i in range(1, 501):
        t += 1 / 5
        assert (t >= 100) == (i == 500)
    assert PARAMS.max_steps_in_episode == 500
    states = Parking.state_from(np.zeros(N_AUTO), np.zeros(N_AUTO), np.arange(N_AUTO) * 1.5, np.zeros(N_AUTO),
                                np.arange(N_AUTO) % 28)
    keys = jax.random.split(KEY, T_AUTO * N_AUTO).reshape(T_AUTO, N_AUTO)
    obs, s, _, te, tr, info = _auto_rollout(states, keys, jnp.zeros((T_AUTO, N_AUTO, 2)))
    te, tr, time = np.asarray(te), np.asarray(tr), np.asarray(s.time)
    assert not te.any()
    assert (np.argwhere(tr)[:, 0] == 499).all() and tr[499].all()
    assert (time[498] == 499).all() and (time[499] == 0).all() and (time[500] == 1).all()  # auto-reset
    assert (np.asarray(obs["facts"]["at_reset"])[499] == 1).all()
    assert (np.asarray(info["final_observation"]["facts"]["at_reset"])[499] == 0).all()
    # a shorter limit through the params
    state = jax.tree.map(lambda x: x[0], states)
    flags = []
    for k in jax.random.split(KEY, 4):
        _, state, _, te, tr, _ = ENV.step(k, state, jnp.zeros(2), PARAMS.replace(max_steps_in_episode=3))
        flags.append(bool(tr))
    assert flags == [False, False, True, False]


def test_terminating_on_the_last_step_is_not_also_truncated():
    params = PARAMS.replace(max_steps_in_episode=1)
    gx, gy, gh = P.SPOTS[5]
    state = Parking.state_from(gx, gy, gh, 0.0, 5)
    _, _, r, te, tr, info = ENV.step(KEY, state, jnp.zeros(2), params)
    # (at the goal itself the square root magnifies float32 rounding: ~3e-5 instead of ~3e-9)
    assert bool(te) and not bool(tr) and bool(info["success"]) and float(r) == pytest.approx(0.0, abs=1e-4)


def test_invalid_action_does_not_step():
    env, params = ENV, PARAMS
    _, state = env.reset(jax.random.key(3), params)
    _, state, *_ = env.step(KEY, state, jnp.array([1.0, 0.5]), params)
    for bad in ([jnp.nan, 0.0], [0.0, jnp.nan], [jnp.nan, jnp.nan]):
        obs, new, r, te, tr, info = env.step(KEY, state, jnp.array(bad, jnp.float32), params)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), new, state)  # time included
        assert float(r) == 0.0 and not bool(te) and not bool(tr) and not bool(info["success"])
        f = obs["facts"]
        assert int(f["invalid"]) == 1 and int(f["fb_r"]) == int(f["fb_hp"]) == int(f["fb_hn"]) == 0
        assert int(f["at_reset"]) == 0 and float(f["reward"]) == 0.0
        np.testing.assert_allclose(obs["symbolic"]["observation"], env.features(state), rtol=1e-6)


def test_crash_facts_and_info():
    env, params = ENV, PARAMS
    state = Parking.state_from(0.0, 18.5, math.pi / 2, 10.0, 0)  # 10 m/s into the top wall
    _, after, r, te, _, info = env.step(KEY, state, jnp.array([1.0, 0.0]), params)
    obs = info["final_observation"]  # before the auto-reset
    assert bool(info["crashed"]) and bool(te) and float(r) < -5 and int(after.time) == 0
    f = obs["facts"]
    assert (int(f["fb_r"]), int(f["fb_hp"]), int(f["fb_hn"]), int(f["invalid"])) == (1, 0, 1, 0)
    assert float(f["reward"]) == float(r)
    for i in range(6):
        assert float(f[f"obs_{i}"]) == float(obs["symbolic"]["observation"][i]) == float(f[f"achieved_{i}"])
        assert float(f[f"desired_{i}"]) == float(obs["symbolic"]["desired_goal"][i])
    assert set(f) == set(env.fact_shapes)


def test_jit_vmap_consistency():
    """The vmapped, scanned step equals single-env jitted steps (NaN actions included)."""
    keys = jax.random.split(jax.random.key(11), N_AUTO)
    _, states = jax.vmap(lambda k: ENV.reset(k, PARAMS))(keys)
    acts = jax.random.uniform(jax.random.key(12), (T_AUTO, N_AUTO, 2), minval=-1.5, maxval=1.5)
    acts = acts.at[2, 0].set(jnp.nan).at[3, 1, 1].set(jnp.nan)
    step_keys = jax.random.split(KEY, T_AUTO * N_AUTO).reshape(T_AUTO, N_AUTO)
    out = _auto_rollout(states, step_keys, acts)
    for i in range(3):
        s = jax.tree.map(lambda x, i=i: x[i], states)
        for t in range(5):
            o, s, r, te, tr, _ = ENV.step(step_keys[t, i], s, acts[t, i], PARAMS)
            jax.tree.map(lambda a, b, t=t, i=i: np.testing.assert_array_equal(a, np.asarray(b)[t, i]),
                         (o, s, r, te, tr), tuple(out[:5]))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="supported"):
        Parking(instruction_type="p")
    with pytest.raises(ValueError, match="not supported"):
        Parking(feedback_type="fp")
    env = Parking(feedback_type="m")
    assert env.feedback_kinds == ("r", "hp", "hn") and env.feedback_mixture
