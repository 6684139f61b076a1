"""Symbolic-observation MLP PPO (``learners.ppo_mlp``): the pieces (observation flattening, action heads,
GAE with truncation bootstrapping, argument checks) and three tiny in-graph training runs -- maze-fo
(discrete), optimization (Gaussian + categorical) and a two-armed bandit (a learning check).

Each run compiles one update program; ``xla_backend_optimization_level=0`` halves the CPU compile time,
which dominates at these sizes.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from learners.ppo_mlp import action_layout, flatten_obs, gae_targets, train_ppo_mlp

FAST = {"xla_backend_optimization_level": 0}
BANDIT = "llf-bandits-BanditTwoArmedDeterministicFixed-v0"
MAZE_LIMIT = 10  # max_steps_in_episode for the maze run: episodes end by step 11 (the Failure step)


def _finite_tree(tree) -> bool:
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ppo_mlp") / "metrics.jsonl"
    # 5 updates in chunks of 2: two full chunks and a partial one, all on one compiled program
    run = train_ppo_mlp("maze-fo", num_envs=8, num_steps=8, num_updates=5, chunk=2, update_epochs=2,
                        num_minibatches=2, env_kwargs={"max_steps_in_episode": MAZE_LIMIT}, metrics_path=str(path),
                        compiler_options=FAST)
    return run, path


@pytest.fixture(scope="module")
def bandit_run():
    # horizon 10: the reference's bandit never ends; a fixed horizon gives episode returns to compare
    return train_ppo_mlp(BANDIT, num_envs=16, num_steps=20, num_updates=15, chunk=5, lr=3e-3,
                         env_kwargs={"horizon": 10}, compiler_options=FAST)


# ---------------------------------------------------------------------------- pieces
def test_flatten_obs_orders_leaves_and_casts():
    obs = {"b": jnp.array([[True, False, True], [False, False, True]]), "a": jnp.array([3, -1], jnp.int32),
           "c": jnp.arange(8, dtype=jnp.float32).reshape(2, 2, 2)}
    flat = flatten_obs(obs)
    assert flat.dtype == jnp.float32 and flat.shape == (2, 1 + 3 + 4)
    np.testing.assert_array_equal(flat[0], [3, 1, 0, 1, 0, 1, 2, 3])
    np.testing.assert_array_equal(flat[1], [-1, 0, 0, 1, 4, 5, 6, 7])


def test_action_layouts():
    maze = action_layout(jaxlm_gym.make_vec("maze-fo", 2))
    assert (maze.kind, maze.n_cat, maze.n_cont) == ("discrete", 4, 0)  # index 4 (invalid text) excluded
    park = action_layout(jaxlm_gym.make_vec("llf-highway-parking-v0", 2))
    assert (park.kind, park.n_cat, park.n_cont) == ("box", 0, 2)
    a = park.to_env(jnp.zeros(2, jnp.int32), jnp.array([[5.0, -0.5], [-3.0, 0.25]]))
    np.testing.assert_allclose(a, [[1.0, -0.5], [-1.0, 0.25]])  # clipped to the Box [-1, 1]
    opt = action_layout(jaxlm_gym.make_vec("llf-optimization-Booth-v0", 2))
    assert (opt.kind, opt.n_cat, opt.n_cont) == ("dict", 2, 2)  # propose / stop, not the invalid kind
    a = opt.to_env(jnp.array([1, 0], jnp.int32), jnp.array([[50.0, -50.0], [1.0, 2.0]]))
    assert set(a) == {"x", "kind"}
    np.testing.assert_allclose(a["x"], [[50.0, -50.0], [1.0, 2.0]])  # unbounded Box: no clipping
    np.testing.assert_array_equal(a["kind"], [1, 0])


def test_gae_bootstraps_truncation_not_termination():
    # two envs, both done at t = 1: env 0 terminated, env 1 truncated (V(final obs) = 10)
    reward = jnp.ones((3, 2))
    value = jnp.array([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]])
    final_value = jnp.array([[0.0, 0.0], [10.0, 10.0], [0.0, 0.0]])
    done = jnp.array([[False, False], [True, True], [False, False]])
    terminated = jnp.array([[False, False], [True, False], [False, False]])
    adv, ret = gae_targets(reward, value, final_value, terminated, done, jnp.zeros(2), gamma=0.5, lam=1.0)
    # t2: 1; t1: 1 (terminated) / 1 + 0.5 * 10 (truncated), cut from t2; t0: 1 - 0.5 + 0.5 * adv1
    np.testing.assert_allclose(adv, [[1.0, 3.5], [1.0, 6.0], [1.0, 1.0]])
    np.testing.assert_allclose(ret, [[1.5, 4.0], [1.0, 6.0], [1.0, 1.0]])


@pytest.mark.parametrize("kwargs, match", [
    ({"num_envs": 8, "num_steps": 8, "num_minibatches": 3}, r"valid num_minibatches: \[1, 2, 4, 8, 16, 32, 64\]"),
    ({"hidden": ()}, "hidden must be"),
    ({"num_envs": 0}, "num_envs must be a positive int"),
    ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_ppo_mlp("maze-fo", **kwargs)


def test_unknown_env_id_names_valid_ids():
    with pytest.raises(ValueError, match="valid ids: .*maze-fo"):
        train_ppo_mlp("maze-nope", num_updates=1)


# ---------------------------------------------------------------------------- training runs
def test_maze_run_curve_and_single_compile(maze_run):
    run, path = maze_run
    assert run["traces"] == 1  # one trace (and one compile) for all three chunks, the partial one included
    curve = run["curve"]
    assert [p["update"] for p in curve] == [2, 4, 5]
    assert [p["env_steps"] for p in curve] == [128, 256, 320]
    for p in curve:
        assert p["episodes"] > 0
        # -1 per step, episodes end by the Failure step: returns in [-(limit + 1), 0]; an invalid-text
        # action (-4) would be possible only if the policy sampled index num_actions
        assert -(MAZE_LIMIT + 1) <= p["mean_return"] <= 0
        assert p["score"] == pytest.approx(jaxlm_gym.score.normalize("maze-fo", p["mean_return"]))
        assert -1.0 <= p["mean_reward"] <= 0.0  # -1 per move, 0 on the goal, never the -4 of invalid text
    assert _finite_tree(run["params"]) and run["wall_s"] > 0 and run["env_steps_per_s"] > 0
    assert run["config"]["obs_dim"] == 9 and run["config"]["action_kind"] == "discrete"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["update"] for r in lines] == [2, 4, 5]
    assert all(math.isfinite(r[k]) for r in lines for k in ("policy_loss", "value_loss", "entropy", "approx_kl"))


def test_optimization_run_gaussian_and_categorical_heads():
    horizon = 5
    run = train_ppo_mlp("llf-optimization-Booth-v0", num_envs=4, num_steps=5, num_updates=2, chunk=1,
                        update_epochs=1, num_minibatches=1, env_kwargs={"horizon": horizon}, normalize_obs=True,
                        compiler_options=FAST)
    assert run["traces"] == 1 and len(run["curve"]) == 2
    for p in run["curve"]:
        assert p["episodes"] == 4 * 5 // horizon  # every env truncates once per 5 steps
        assert math.isfinite(p["mean_return"]) and p["score"] is None  # no normalisation constants
    params = run["params"]
    assert params["mean"][0].shape == (64, 2) and params["logits"][0].shape == (64, 2)
    assert params["log_std"].shape == (2,) and _finite_tree(params) and _finite_tree(run["obs_stats"])
    obs = {"grad": jnp.ones((3, 2)), "x": jnp.zeros((3, 2)), "y": jnp.full((3,), 7.0)}
    action = run["policy"](params, obs, jax.random.key(0))
    assert action["x"].shape == (3, 2) and action["x"].dtype == jnp.float32 and _finite_tree(action["x"])
    assert action["kind"].dtype == jnp.int32 and set(np.asarray(action["kind"]).tolist()) <= {0, 1}


def test_bandit_learns_the_paying_arm(bandit_run):
    # One arm always pays 1, the other never, behind a fresh permutation every episode: a uniform random
    # policy earns 0.5 per step (5 per 10-step episode); reading pulls / reward_sum, the best is 9.5.
    curve = bandit_run["curve"]
    assert [p["update"] for p in curve] == [5, 10, 15]
    assert all(p["episodes"] == 16 * 20 * 5 // 10 for p in curve)
    assert curve[-1]["mean_return"] >= 8.0, curve
    assert curve[-1]["mean_return"] > curve[0]["mean_return"]
