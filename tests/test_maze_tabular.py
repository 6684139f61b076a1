"""benchmarks/maze_tabular.py: exact scoring of tabular maze policies, and the tables of a tiny dataset."""

import importlib.util
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "maze_tabular.py"
_spec = importlib.util.spec_from_file_location("maze_tabular", _PATH)
mt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mt)


@pytest.fixture(scope="module")
def maze():
    env = jaxlm_gym.make("maze-fo")[0]
    return env, sorted((int(r), int(c)) for r, c in env.free_cells)


def test_exact_returns_of_the_optimal_and_the_uniform_policy(maze):
    env, cells = maze
    goal = jnp.asarray(env.default_params.goal)
    opt = np.zeros((len(cells), 4))
    for i, c in enumerate(cells):
        opt[i, int(env.optimal_action(jnp.asarray(c), goal))] = 1.0
    assert mt.expected_returns(opt, cells, env) == pytest.approx(env.optimal_returns())
    assert mt.score_of(opt, cells, env)[0] == pytest.approx(100.0)
    # uniform moves: the reference's random rollouts average -86.3 (200 episodes); exact: -85.9
    assert mt.score_of(np.full((len(cells), 4), 0.25), cells, env)[1] == pytest.approx(-85.89, abs=0.01)
    # a policy that only bumps into the wall above (1, 1): 100 moves at -1, then the Failure step
    up = np.zeros((len(cells), 4))
    up[:, 2] = 1.0
    assert mt.expected_returns(up, cells, env)[(1, 1)] == pytest.approx(-101.0)


def test_mc_policy_is_pi_bc_times_exp_beta_q():
    counts = np.array([[1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    q = np.array([[-2.0, -3.0, np.nan, np.nan], [np.nan] * 4])
    pi = mt.mc_policy(counts, q, beta=2.0)
    w = np.array([0.25 * np.exp(-4.0), 0.75 * np.exp(-6.0)])
    np.testing.assert_allclose(pi[0], [*(w / w.sum()), 0.0, 0.0])
    np.testing.assert_allclose(pi[1], 0.25)  # no data in the cell: uniform


def test_dataset_tables_count_every_transition():
    t = mt.dataset_tables(0, data_envs=8, data_steps=24, epsilon=0.5)
    assert t["bc"].sum() == 8 * 24 and t["fbc"].sum() <= t["bc"].sum()
    assert (t["q_count"] <= t["bc"]).all() and t["tokens_per_move"] == [3]
    seen = t["q_count"] > 0
    assert np.isfinite(t["q"][seen]).all() and np.isnan(t["q"][~seen]).all()
    assert (t["q"][seen] <= 0).all()  # every reward is 0 or negative
