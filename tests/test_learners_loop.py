"""The in-graph learning loop on maze-fo: GPT-2 token rollouts (one jitted scan), the in-graph dataset recipe,
the reference's maze jsonl files, and BC training that makes the policy write valid moves.

Sized for 2 CPU cores: a 2-layer, width-64 GPT-2 over the task's compact vocabulary and a few envs. Every
jitted entry point is shared through module fixtures so that each compiles once.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training import train_state

import jaxlm_gym
from learners.bc import bc_loss_fn
from learners.common import make_optimizer, make_update
from learners.datasets import (
    complete_episode_mask,
    episodes_to_trajectory,
    generate_dataset,
    maze_expert,
    read_maze_jsonl,
    trajectory_episodes,
    write_maze_jsonl,
)
from learners.models import GPT2Config, init_params, make_apply_fn
from learners.rollout import (
    GroupedEnv,
    VocabMap,
    append_tokens,
    bc_batch,
    left_align,
    make_token_policy,
    rollout,
    stack_params,
    stop_token_id,
)
from learners.train_bc import make_train_chunk, maze_starts
from pure_envs.maze import bfs_distances

N_ENVS, STEPS, MAX_NEW = 4, 3, 4
MOVES = ("move left\n", "move right\n", "move up\n", "move down\n")


@pytest.fixture(scope="module")
def env():
    return jaxlm_gym.make_vec("maze-fo", N_ENVS, obs_mode="tokens", action_mode="tokens")


@pytest.fixture(scope="module")
def setup(env):
    vocab = VocabMap.for_env(env)
    cfg = GPT2Config.tiny(vocab_size=vocab.size, n_positions=64)
    bos = env.tokenizer.eos_id
    policy = make_token_policy(cfg, stop_token_id=stop_token_id(env), pad_token_id=env.pad_id,
                               max_new_tokens=MAX_NEW, vocab=vocab, greedy=True)
    counted = chex.assert_max_traces(policy, n=1)  # traced once per compile: the scan body, never unrolled
    return {"vocab": vocab, "cfg": cfg, "bos": bos, "policy": counted}


@pytest.fixture(scope="module")
def data(env):
    """eps-diluted expert data (eps 0.5), 16 envs x 48 steps."""
    big = jaxlm_gym.make_vec("maze-fo", 16, obs_mode="tokens", action_mode="tokens")
    traj = generate_dataset(big, maze_expert(big), jax.random.PRNGKey(3), 48, 0.5, bos_id=big.tokenizer.eos_id)
    return big, traj


# ----------------------------------------------------------------------------------------------------


def test_vocab_map_and_stop_token(env, setup):
    vocab = setup["vocab"]
    assert stop_token_id(env) == 198  # "\n" in GPT-2 BPE, the reference's EOS
    assert vocab.size % 8 == 0 and int(vocab.ids[0]) == env.pad_id
    table = env.action_token_table()
    np.testing.assert_array_equal(np.asarray(vocab.decode(vocab.encode(jnp.asarray(table)))), table)
    # every piece of the observation text maps into the compact vocabulary and back
    texts = (("The goal is at position 8, 6. Your current position is at position 1, 1 1. There are walls to your "
              "right, above you, below you.\n"),
             "The goal is at position 8, 6. Your current position is at position 5, 6. There is a wall above you.\n",
             "Success\n")
    for text in texts:
        ids = np.asarray(env.tokenizer.encode(text))
        assert np.isin(ids, vocab.ids).all()
        np.testing.assert_array_equal(np.asarray(vocab.decode(vocab.encode(jnp.asarray(ids)))), ids)
    unknown = vocab.encode(jnp.asarray([50000]))  # not a maze token: reads as pad
    assert int(vocab.decode(unknown)[0]) == env.pad_id


def test_prompt_buffers():
    pad = 0
    tokens = jnp.asarray([[5, 6, 7, 0], [8, 0, 0, 0]])
    left, mask = left_align(tokens, jnp.asarray([3, 1]), pad, bos_id=9)
    np.testing.assert_array_equal(left, [[0, 9, 5, 6, 7], [0, 0, 0, 9, 8]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    # append keeps the newest H tokens, left-padded
    seg = jnp.asarray([[1, 2, 0], [3, 0, 0]])
    out, omask = append_tokens(left, mask, seg, seg != 0, pad)
    np.testing.assert_array_equal(out, [[5, 6, 7, 1, 2], [0, 0, 9, 8, 3]])  # row 0 overflows: BOS drops out
    np.testing.assert_array_equal(omask, [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])


def test_rollout_is_one_scan_with_right_shapes(env, setup):
    params = init_params(setup["cfg"], jax.random.PRNGKey(0))
    traj = rollout(env, setup["policy"], params, jax.random.PRNGKey(1), STEPS, bos_id=setup["bos"])
    params2 = jax.tree.map(lambda x: x * 1.01, params)
    traj2 = rollout(env, setup["policy"], params2, jax.random.PRNGKey(2), STEPS, bos_id=setup["bos"])
    jax.block_until_ready(traj2)  # no retrace (assert_max_traces would raise)
    p = env.max_tokens + 1
    chex.assert_shape([traj.prompt_tokens, traj.prompt_mask], (STEPS, N_ENVS, p))
    chex.assert_shape([traj.action_tokens, traj.action_mask], (STEPS, N_ENVS, MAX_NEW + 1))
    chex.assert_shape([traj.action, traj.reward, traj.done, traj.terminated, traj.truncated], (STEPS, N_ENVS))
    assert traj.prompt_tokens.dtype == jnp.int32 and traj.action_tokens.dtype == jnp.int32
    assert traj.reward.dtype == jnp.float32 and traj.done.dtype == jnp.bool_
    # the prompt is [BOS] + the env's observation text
    text = env.tokenizer.decode([int(t) for t, m in zip(traj.prompt_tokens[0, 0], traj.prompt_mask[0, 0]) if m][1:])
    assert text.startswith("The goal is at position 8, 6. Your current position is at position ")
    # every action ends with the stop token (generated or appended) and the env parsed the generated text
    amask = np.asarray(traj.action_mask)
    last = np.asarray(traj.action_tokens)[np.arange(STEPS)[:, None], np.arange(N_ENVS)[None], amask.sum(-1) - 1]
    assert (last == 198).all()
    for t in range(STEPS):
        for i in range(N_ENVS):
            written = env.tokenizer.decode([int(x) for x, m in zip(traj.action_tokens[t, i], amask[t, i]) if m])
            want = MOVES.index(written) if written in MOVES else 4
            assert int(traj.action[t, i]) == want
            assert float(traj.reward[t, i]) in ((-4.0,) if want == 4 else (-1.0, 0.0))


def test_dataset_expert_is_optimal_and_tokens_are_the_envs(data):
    env, _ = data
    # epsilon is traced: the same compiled scan as the fixture's eps-0.5 data
    eps0 = generate_dataset(env, maze_expert(env), jax.random.PRNGKey(0), 48, 0.0, bos_id=env.tokenizer.eos_id)
    assert eps0.prompt_tokens.shape == (48, 16, env.max_tokens + 1)
    done = np.asarray(eps0.done)
    assert done.any(axis=0).all()
    # with no dilution every episode reaches the goal on a shortest path: success rate 100 %
    assert (np.asarray(eps0.terminated) == done).all() and not np.asarray(eps0.truncated).any()
    dist = bfs_distances(env.env.layout, (8, 6))
    episodes = trajectory_episodes(env, eps0, bos_id=env.tokenizer.eos_id)
    assert len(episodes) >= 16
    for ep in episodes:
        r, c = _pos(ep[0]["state"])
        assert sum(s["reward"] for s in ep) == -(dist[r, c] - 1) and len(ep) == dist[r, c]
    assert (np.asarray(eps0.reward)[done] == 0.0).all()
    # action tokens are the canonical ones of the parsed action
    table = env.action_token_table()
    np.testing.assert_array_equal(np.asarray(eps0.action_tokens), table[np.asarray(eps0.action)])


def _pos(state: str) -> tuple[int, int]:
    """(row, col) from an FO observation ("... at position 1, 1 1. ..." -> (1, 11))."""
    r, c = state.split("position is at position ")[1].split(".")[0].split(",")
    return int("".join(r.split())), int("".join(c.split()))


def test_dilution_rate(data):
    big, traj = data
    act = np.asarray(traj.action).reshape(-1)
    assert (act < 4).all()  # random moves are valid moves
    dist = bfs_distances(big.env.layout, (8, 6))
    moves = np.asarray([[0, -1], [0, 1], [-1, 0], [1, 0]])
    hits = []
    eps = trajectory_episodes(big, traj, bos_id=big.tokenizer.eos_id, complete_only=False)
    for ep in eps:
        for step in ep:
            r, c = _pos(step["state"])
            dr, dc = moves[MOVES.index(step["action"])]
            hits.append(dist[r + dr, c + dc] == dist[r, c] - 1)
    # eps 0.5: the expert's move is taken with probability 1 - eps + eps / 4 = 62.5 %
    assert abs(np.mean(hits) - 0.625) < 0.06, np.mean(hits)


def test_jsonl_round_trip_fo(data, tmp_path):
    big, traj = data
    bos = big.tokenizer.eos_id
    episodes = trajectory_episodes(big, traj, bos_id=bos)
    assert episodes and all(ep[-1]["done"] for ep in episodes)
    path = tmp_path / "fully_observed_maze_data.jsonl"
    assert write_maze_jsonl(path, episodes, "fo") == len(episodes)
    back = read_maze_jsonl(path)
    assert back == episodes
    assert back[0][0]["action"] in MOVES and back[0][0]["state"].endswith(".\n")
    flat = episodes_to_trajectory(big, back, bos_id=bos)
    # the same transitions, env by env: compare with the generated arrays
    keep = np.asarray(complete_episode_mask(traj.done))
    order = [(t, i) for i in range(traj.reward.shape[1]) for t in range(traj.reward.shape[0]) if keep[t, i]]
    ts, is_ = np.asarray(order).T
    for name in ("prompt_tokens", "prompt_mask", "action_tokens", "action_mask", "action", "reward", "done"):
        np.testing.assert_array_equal(np.asarray(getattr(flat, name)), np.asarray(getattr(traj, name))[ts, is_],
                                      err_msg=name)


def test_jsonl_po_text_history(tmp_path):
    po = jaxlm_gym.make_vec("maze-po", 2, obs_mode="tokens", action_mode="tokens")
    traj = generate_dataset(po, maze_expert(po), jax.random.PRNGKey(5), 30, 0.9)
    episodes = trajectory_episodes(po, traj, complete_only=False)
    path = tmp_path / "partially_observed_maze_data.jsonl"
    write_maze_jsonl(path, episodes, "po")
    line = path.read_text().splitlines()[0]
    import json
    obj = json.loads(line)
    assert set(obj) == {"text_history", "rewards", "dones"}
    assert len(obj["text_history"]) == len(obj["rewards"]) == 2 * len(episodes[0])
    assert obj["text_history"][1] in MOVES and obj["rewards"][0] == 0.0
    back = read_maze_jsonl(path, window=40)
    # the reader rebuilds each step's 40-text window exactly as the env rendered it
    assert [s["state"] for ep in back for s in ep] == [s["state"] for ep in episodes for s in ep]


def test_grouped_env_fixes_the_25_starts():
    base = jaxlm_gym.make_vec("maze-fo", 2, obs_mode="tokens", action_mode="tokens")
    starts = maze_starts(base)
    assert len(starts) == 25 and (8, 6) not in starts and starts[0] == (1, 1)
    ge = GroupedEnv(base, stack_params(base.params, start=starts))
    assert ge.num_envs == 50 and ge.pad_id == base.pad_id
    _, state = jax.jit(ge.reset)(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(state.pos), np.repeat(np.asarray(starts), 2, axis=0))


def test_bc_loss_decreases_and_policy_writes_moves(env, setup, data):
    _, traj = data
    vocab, cfg = setup["vocab"], setup["cfg"]
    batch = bc_batch(traj, vocab)
    assert batch["input_ids"].shape == (48 * 16, env.max_tokens + 1 + 3)
    # rewards sit on each action's last token
    np.testing.assert_allclose(np.asarray(batch["rewards"]).sum(1), np.asarray(traj.reward).reshape(-1))
    data_arrays = {k: batch[k] for k in ("input_ids", "attention_mask", "action_mask")}
    state = train_state.TrainState.create(apply_fn=make_apply_fn(cfg), params=init_params(cfg, jax.random.PRNGKey(1)),
                                          tx=make_optimizer(3e-3, 1e-3))
    chunk = make_train_chunk(make_update(bc_loss_fn, None), 32, 30)
    state, m1 = chunk(state, data_arrays, jax.random.PRNGKey(0))
    state, m2 = chunk(state, data_arrays, jax.random.PRNGKey(1))
    first, last = float(np.mean(m1["loss"][:5])), float(np.mean(m2["loss"][-5:]))
    assert last < 0.5 * first, (first, last)
    # 60 updates: the greedy policy now writes the task's move strings (the env parses them as moves)
    out = rollout(env, setup["policy"], state.params, jax.random.PRNGKey(9), STEPS, bos_id=setup["bos"])
    valid = np.asarray(out.action) < 4
    assert valid.mean() >= 0.75, np.asarray(out.action)
