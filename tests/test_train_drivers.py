"""The training drivers end to end on maze-fo (tiny sizes), their data layouts by hand, value-guided decoding,
and checkpoint resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learners.datasets import episode_facts, filter_steps
from learners.ilql import perturbed_logits
from learners.models import GPT2Config, forward, init_params
from learners.models.heads import apply_heads, init_policy_value, init_value_model, make_policy_value_apply_fn
from learners.pretrain import transition_rows
from learners.rollout import Trajectory, VocabMap, make_value_policy
from learners.train_bc import BCRunConfig, train_bc
from learners.train_online import OnlineRunConfig, episode_returns_in_window, train_online
from learners.train_value import ValueRunConfig, step_bootstraps, train_value

# ---------------------------------------------------------------------------------------------- by hand

# two envs, five steps; env 0: episode [0, 1] ends by termination, [2, 3, 4] unfinished;
# env 1: episode [0..2] truncated, [3, 4] terminated.
REWARD = np.array([[-1, -1], [0, -1], [-1, -1], [-1, -1], [-1, 0]], np.float32)
DONE = np.array([[0, 0], [1, 0], [0, 1], [0, 0], [0, 1]], bool)
TERM = np.array([[0, 0], [1, 0], [0, 0], [0, 0], [0, 1]], bool)


def test_episode_facts_by_hand():
    f = jax.device_get(episode_facts(jnp.asarray(REWARD), jnp.asarray(DONE), jnp.asarray(TERM)))
    np.testing.assert_array_equal(f["complete"], [[1, 1], [1, 1], [0, 1], [0, 1], [0, 1]])
    np.testing.assert_allclose(f["ep_return"][:, 0], [-1, -1, -3, -3, -3])  # the tail: its part in the window
    np.testing.assert_allclose(f["ep_return"][:, 1], [-3, -3, -3, -1, -1])
    np.testing.assert_allclose(f["last_reward"][:2, 0], [0, 0])
    np.testing.assert_allclose(f["last_reward"][:, 1], [-1, -1, -1, 0, 0])
    np.testing.assert_array_equal(f["success"][:, 1], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(f["success"][:, 0], [1, 1, 0, 0, 0])


def test_filter_rules_by_hand():
    f = episode_facts(jnp.asarray(REWARD), jnp.asarray(DONE), jnp.asarray(TERM))
    goal = filter_steps(f, "last_reward", last_reward_value=0.0)
    np.testing.assert_array_equal(goal, [[1, 0], [1, 0], [0, 0], [0, 1], [0, 1]])
    # three complete episodes with returns -1, -3, -1: the top third (int(3 / 3) = 1) keeps both -1 ties
    top = filter_steps(f, "top_fraction", fraction=1 / 3)
    np.testing.assert_array_equal(top, goal)
    np.testing.assert_array_equal(filter_steps(f, "all"), jax.device_get(f["complete"]))
    with pytest.raises(ValueError, match="top_fraction"):
        filter_steps(f, "best")
    with pytest.raises(ValueError, match="fraction"):
        filter_steps(f, "top_fraction", fraction=0.0)


def test_step_bootstraps_by_hand():
    # env 0: two steps then done; actions of 2 and 3 tokens; gamma per action token
    g = 0.5
    reward = jnp.asarray([[1.0], [2.0]])
    done = jnp.asarray([[False], [True]])
    k = jnp.asarray([[2], [3]])
    boots = np.asarray(step_bootstraps(reward, done, k, g))[:, 0]
    g1 = g ** 2 * 2.0  # return at step 1's first token: 2 tokens of discount before its reward
    np.testing.assert_allclose(boots, [g1, 0.0])


def test_episode_returns_across_windows():
    acc = jnp.asarray([5.0, 0.0])
    acc, total, n = episode_returns_in_window(acc, jnp.asarray(REWARD), jnp.asarray(DONE))
    # env 0: 5 - 1 + 0 ends (4); env 1: -3 ends, then -1 + 0 ends (-1); env 0's tail -3 carries on
    assert float(total) == pytest.approx(4 - 3 - 1) and int(n) == 3
    np.testing.assert_allclose(acc, [-3.0, 0.0])


# ---------------------------------------------------------------------------------------------- decoding

CFG = GPT2Config(vocab_size=16, n_positions=32, n_embd=32, n_layer=1, n_head=2)


def _bumped(tree, key, scale=0.5):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@jax.jit
def _manual_choice(pi_beta, value, prompt, mask, beta):
    lg = forward(CFG, pi_beta, prompt, mask).logits[:, -1]
    hid = forward(CFG, value["base"], prompt, mask).hidden[:, -1]
    q = apply_heads(CFG, value, hid, ("q1", "q2"))
    return jnp.argmax(perturbed_logits(lg, q["q1"], beta, q["q2"]), axis=-1)


def test_transition_rows_by_hand():
    # T = 3 steps of one env; prompts left-padded (P = 3, BOS = 1), actions right-padded (A = 2); step 1 ends the
    # episode, so its row has no next observation
    z = np.zeros
    traj = Trajectory(
        prompt_tokens=jnp.array([[[0, 1, 5]], [[1, 8, 9]], [[0, 1, 4]]]),
        prompt_mask=jnp.array([[[0, 1, 1]], [[1, 1, 1]], [[0, 1, 1]]], bool),
        action_tokens=jnp.array([[[7, 0]], [[6, 3]], [[2, 0]]]),
        action_mask=jnp.array([[[1, 0]], [[1, 1]], [[1, 0]]], bool),
        action=jnp.array(z((3, 1), np.int32)), reward=jnp.array(z((3, 1), np.float32)),
        terminated=jnp.array([[0], [1], [0]], bool), truncated=jnp.array(z((3, 1), bool)),
        done=jnp.array([[0], [1], [0]], bool), info={})
    rows = transition_rows(traj, VocabMap(np.arange(10), 10), max_len=6)
    np.testing.assert_array_equal(rows["input_ids"], [[1, 5, 7, 8, 9, 0], [1, 8, 9, 6, 3, 0]])
    np.testing.assert_array_equal(rows["attention_mask"], [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(rows["action_mask"], rows["attention_mask"])  # the loss covers every real token
    cut = transition_rows(traj, VocabMap(np.arange(10), 10), max_len=4)  # cut to the first max_len tokens
    np.testing.assert_array_equal(cut["input_ids"], [[1, 5, 7, 8], [1, 8, 9, 6]])


def test_value_policy_decodes_pi_beta_plus_beta_min_q():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    pi_beta = init_params(CFG, k1)
    value = init_value_model(CFG, k2)
    value = {**value, **_bumped({h: value[h] for h in ("q1", "q2", "v")}, k3)}  # non-zero Q heads
    vocab = VocabMap.identity(16)
    prompt = jnp.asarray([[3, 4, 5, 6], [0, 0, 7, 8]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1], [0, 0, 1, 1]], bool)
    for beta in (4.0,):
        policy = make_value_policy(CFG, beta=beta, stop_token_id=1, pad_token_id=0, max_new_tokens=1, vocab=vocab,
                                   greedy=True, append_stop=False)
        tokens, _ = jax.jit(policy)({"pi_beta": pi_beta, "value": value}, prompt, mask, jax.random.PRNGKey(1))
        want = _manual_choice(pi_beta, value, prompt, mask, beta)
        np.testing.assert_array_equal(tokens[:, 0], want)
    with pytest.raises(ValueError, match="Q heads"):
        make_value_policy(CFG, beta=1.0, stop_token_id=1, pad_token_id=0, heads=("v",))


def test_heads_start_at_zero_and_ppo_value_bias():
    value = init_value_model(CFG, jax.random.PRNGKey(0), heads=("q", "v"))
    hid = jax.random.normal(jax.random.PRNGKey(1), (2, 3, CFG.n_embd))
    out = jax.jit(lambda v, h: apply_heads(CFG, v, h, ("q", "v")))(value, hid)
    assert out["q"].shape == (2, 3, 16) and out["v"].shape == (2, 3)
    assert float(jnp.abs(out["q"]).max()) == 0.0 and float(jnp.abs(out["v"]).max()) == 0.0
    pv = init_policy_value(CFG, jax.random.PRNGKey(0), value_bias=-1.0)
    ids = jnp.asarray([[3, 4, 5]], jnp.int32)
    mask = jnp.ones_like(ids, bool)
    res = jax.jit(make_policy_value_apply_fn(CFG))(pv, ids, mask)
    np.testing.assert_allclose(res["values"], -1.0)
    logits = jax.jit(lambda p, i, m: forward(CFG, p, i, m).logits)(pv["base"], ids, mask)
    np.testing.assert_allclose(res["logits"], logits, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- end to end

TINY = dict(task="maze-fo", data_envs=16, data_steps=24, epsilon=0.5, n_layer=1, n_head=2, n_embd=32,
            progress=False, evaluate=False)


def _changed(a, b) -> bool:
    return any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bc_ckpt")
    cfg = BCRunConfig(**TINY, num_updates=4, chunk=2, batch_size=8, checkpoint_dir=str(d), save_every=1)
    return cfg, train_bc(cfg)


def test_bc_trains_and_resumes_from_its_checkpoint(bc_run):
    cfg, out = bc_run
    assert np.isfinite(out["loss_last_chunk"]) and _finite(out["params"])
    again = train_bc(cfg)  # the directory holds step 4: nothing left to run, the state comes back
    for x, y in zip(jax.tree.leaves(out["params"]), jax.tree.leaves(again["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_filtered_bc_trains_on_successful_episodes_only():
    out = train_bc(BCRunConfig(**TINY, num_updates=2, chunk=2, batch_size=8, filter="last_reward"))
    assert 0 < out["data"]["kept_transitions"] < 16 * 24
    assert np.isfinite(out["loss_last_chunk"])


@pytest.mark.parametrize("algo", ["ilql", "mc"])
def test_value_learners_train_from_the_bc_model(bc_run, algo):
    cfg, bc = bc_run
    out = train_value(ValueRunConfig(algo=algo, **TINY, num_updates=4, chunk=2, batch_size=8), bc=bc)
    assert out["data"]["rows"] > 0 and np.isfinite(out["loss_last_chunk"]) and _finite(out["params"])
    assert _changed(out["params"]["base"], bc["params"])  # the base trains (it starts as the BC model)
    m = out["last_metrics"]
    if algo == "ilql":
        assert {"q1_loss", "q2_loss", "v_loss"} <= set(m)
    else:
        assert {"q_loss", "returns_mean"} <= set(m)
    with pytest.raises(ValueError, match="seed"):
        train_value(ValueRunConfig(algo=algo, **{**TINY, "seed": 3}, num_updates=2, chunk=2), bc=bc)


def test_value_model_base_is_the_bc_model_or_a_fresh_one(bc_run):
    _, bc = bc_run
    for init in ("bc", "scratch"):  # a negligible lr: the base stays (within allclose) as it started
        out = train_value(ValueRunConfig(algo="mc", **TINY, num_updates=2, chunk=2, batch_size=8, lr=1e-12,
                                         value_init=init), bc=bc)
        assert _changed(out["params"]["base"], bc["params"]) == (init == "scratch"), init
    with pytest.raises(ValueError, match="value_init must be one of"):
        ValueRunConfig(value_init="bc_filtered")


def test_value_model_can_start_from_a_gpt2_pretrained_on_the_transitions(bc_run):
    _, bc = bc_run
    out = train_value(ValueRunConfig(algo="ilql", **TINY, num_updates=2, chunk=2, batch_size=8, value_init="lm",
                                     lm_updates=4, lm_batch=8, lm_lr=1e-2), bc=bc)
    assert len(out["lm_losses"]) == 2 and out["lm_losses"][-1] < out["lm_losses"][0]
    assert np.isfinite(out["loss_last_chunk"]) and _changed(out["params"]["base"], bc["params"])


def test_bc_can_start_from_a_gpt2_pretrained_on_all_the_transitions(bc_run):
    _, bc = bc_run
    kw = dict(**TINY, num_updates=2, chunk=2, batch_size=8, lr=1e-12, filter="last_reward")
    fresh = train_bc(BCRunConfig(**kw))
    out = train_bc(BCRunConfig(**kw, init="lm", lm_updates=4, lm_batch=8, lm_lr=1e-2))
    # pretrained on every transition (the filter applies to BC only), then BC from it: a negligible lr keeps the
    # pretrained params, not the fresh ones
    assert len(out["lm_losses"]) == 2 and out["lm_losses"][-1] < out["lm_losses"][0]
    assert out["data"]["kept_transitions"] == fresh["data"]["kept_transitions"]
    assert _changed(out["params"], fresh["params"]) and fresh["lm_losses"] is None
    with pytest.raises(ValueError, match="init must be one of"):
        BCRunConfig(init="gpt2")
    with pytest.raises(ValueError, match="bc_init must be one of"):
        ValueRunConfig(bc_init="bc")
    with pytest.raises(ValueError, match="bc_init"):  # the given BC run started from scratch
        train_value(ValueRunConfig(algo="mc", **TINY, num_updates=2, chunk=2, bc_init="lm"), bc=bc)
    assert ValueRunConfig(bc_init="lm", lm_updates=300).bc_config().init == "lm"
    assert ValueRunConfig(bc_init="lm", lm_updates=300).bc_config().lm_updates == 300


def test_value_seed_moves_only_the_value_model_start(bc_run):
    _, bc = bc_run
    kw = dict(algo="mc", **TINY, num_updates=2, chunk=2, batch_size=8, value_init="scratch")
    runs = [train_value(ValueRunConfig(**kw, value_seed=s), bc=bc) for s in (None, TINY.get("seed", 0), 5)]
    leaves = [jax.tree.leaves(r["params"]) for r in runs]
    for x, y in zip(leaves[0], leaves[1]):  # value_seed == seed: the default run
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert _changed(runs[2]["params"]["base"], runs[0]["params"]["base"])
    facts = ("rows", "episodes", "mean_step_reward", "mean_return")  # same transitions (timings differ)
    assert {k: runs[2]["data"].get(k) for k in facts} == {k: runs[0]["data"].get(k) for k in facts}


@pytest.mark.parametrize("algo", ["ppo", "online_filtered_bc"])
def test_online_learners_train_from_the_bc_model(bc_run, algo):
    _, bc = bc_run
    cfg = OnlineRunConfig(algo=algo, **TINY, rounds=2, num_envs=8, train_bsize=8, epochs=1, updates_per_round=2,
                          round_steps=4 if algo == "ppo" else 8)
    out = train_online(cfg, bc=bc)
    assert len(out["rounds"]) == 2 and all(np.isfinite(r["loss"]) for r in out["rounds"])
    assert out["rounds"][-1]["env_steps"] == 8 * cfg.round_steps
    assert _finite(out["params"])
    if algo == "ppo":
        assert {"policy_loss", "value_loss", "kl"} <= set(out["rounds"][-1])
        assert _changed(out["params"]["base"], bc["params"])


def test_command_lines_parse_into_run_configs():
    from learners.loop import config_from_cli

    cfg = config_from_cli(ValueRunConfig, ["--algo", "mc", "--cql-weight", "1", "--bos", "false", "--eval-every", "3",
                                           "--value-init", "scratch"])
    assert (cfg.algo, cfg.cql_weight, cfg.bos, cfg.eval_every, cfg.lr, cfg.value_init) == ("mc", 1.0, False, 3, None,
                                                                                           "scratch")
    cfg = config_from_cli(BCRunConfig, ["--filter", "last_reward", "--checkpoint-dir", "/tmp/x",
                                        "--data-parallel", "1"])
    assert (cfg.filter, cfg.checkpoint_dir, cfg.data_parallel, cfg.num_updates) == ("last_reward", "/tmp/x", True, 1000)
    cfg = config_from_cli(OnlineRunConfig, ["--algo", "online_filtered_bc", "--rounds", "2"])
    assert (cfg.algo, cfg.rounds, cfg.num_envs) == ("online_filtered_bc", 2, None)
    with pytest.raises(ValueError, match="algo must be one of"):
        config_from_cli(OnlineRunConfig, ["--algo", "sac"])
