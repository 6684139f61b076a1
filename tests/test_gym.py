"""The gymnasium string API (``jaxlm_gym.gym``), on the toy LLF task and the real ones."""

import subprocess
import sys

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import jaxlm_gym
import toy_llf  # noqa: F401  (registers toy-llf)
from jaxlm_gym import gym as llf_gym

LLF_IDS = [i for i in jaxlm_gym.list_envs() if i.startswith("llf-")]
# One id per family for the compiled checks (the variants of a family share their code);
# optimization's check_env runs in tests/test_optimization_text.py (test_gym_string_api).
FAMILIES = sorted({next(i for i in LLF_IDS if i.startswith(p)) for p in
                   ("llf-bandits-", "llf-gridworld", "llf-highway-parking")
                   if any(i.startswith(p) for i in LLF_IDS)})


def test_toy_string_api():
    env = llf_gym.make("toy-llf", feedback_type="a")
    obs, info = env.reset(seed=3)
    assert obs == {"observation": "", "instruction": "Find the better of two arms.", "feedback": ""}
    assert info["success"] is False
    obs, r, te, tr, info = env.step(1)
    assert r == 1.0 and not te and not tr and info["success"] is True
    assert obs["instruction"] == "" and "1.00" in obs["feedback"]
    obs, r, *_ = env.step("zero")  # text actions, parsed in-graph
    assert r == 0.25
    obs, r, *_ = env.step("what?")  # invalid text: the task's invalid path
    assert r == 0.0 and "0.00" in obs["feedback"]
    with pytest.raises(TypeError):
        env.step(1.5)


def test_toy_passes_gymnasium_check_env():
    check_env(llf_gym.make("toy-llf"), skip_render_check=True)


def test_same_seed_same_episode_in_another_process():
    code = ("import sys; sys.path.insert(0, 'tests'); import toy_llf; from jaxlm_gym import gym; "
            "e = gym.make('toy-llf', feedback_type='m'); e.reset(seed=11); "
            "print([e.step(a)[0]['feedback'] for a in (0, 1, 1, 0, 1)])")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(h), "PATH": ""}).stdout for h in (1, 2)]
    assert runs[0] == runs[1] and runs[0].count("'") >= 10


def test_batch_api_and_auto_reset():
    b = llf_gym.make_batch("toy-llf", 3)
    obs, info = b.reset(seed=0)
    assert len(obs) == 3 and all(o["instruction"] for o in obs)
    for t in range(5):
        obs, r, te, tr, info = b.step(["1", 0, 1] if False else [1, 0, 1])
    assert tr.all() and all(o["instruction"] for o in obs)  # truncated at 5, reset in the same step
    assert all(f["feedback"] for f in info["final_observation"])
    obs, r, *_ = b.step(["1", "0", "nope"])
    np.testing.assert_allclose(r, [1.0, 0.25, 0.0])
    with pytest.raises(ValueError, match="expected 3"):
        b.step([1])


def test_unknown_and_non_llf_ids():
    with pytest.raises(ValueError, match="unknown env id"):
        llf_gym.make("llf-nope-v0")
    with pytest.raises(ValueError, match="not an LLF-Bench task"):
        llf_gym.make("maze-fo")


@pytest.mark.parametrize("env_id", LLF_IDS)
def test_every_llf_id_has_the_string_api(env_id):
    env = llf_gym.make(env_id)
    assert set(env.observation_space.spaces) == {"observation", "instruction", "feedback"}
    assert env.action_space is not None


@pytest.mark.parametrize("env_id", FAMILIES)
def test_each_llf_family_passes_check_env(env_id):
    env = llf_gym.make(env_id)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs["instruction"] and obs["feedback"] == ""
    obs, r, te, tr, info = env.step(env.action_space.sample())
    assert isinstance(obs["feedback"], str) and "success" in info
