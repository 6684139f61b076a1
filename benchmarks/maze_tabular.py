"""What BC, filtered BC and MC returns can reach on maze FO's dataset at best: their tabular versions.

    python benchmarks/maze_tabular.py --seeds 0 1 2 --betas 4 8 16 32 --json benchmarks/results/maze_tabular_fo.json

On maze FO the observation is the cell (its walls follow from it), so a learner that reads the text perfectly
and fits its loss exactly on the dataset becomes a table over (cell, move), made from the very transitions
``reproduce_table2.py`` trains on (same seed, same in-graph recipe: 1,024 envs x 128 steps, BFS diluted at
0.98):

- **BC**: the dataset's move frequencies in each cell (the cross-entropy minimiser);
- **filtered BC**: the same over the steps of the successful episodes (the filtered-BC rule: last reward 0);
- **MC returns**: ``Q(cell, move)`` = the mean of the returns the MC learner regresses on (discounted per
  action token, gamma 0.99, the complete episodes only, read at the move's direction token, as
  ``train_value.value_batch`` lays them out), decoded as the reference does: ``pi ~ pi_BC * exp(beta * Q)``.

Each policy is scored exactly, not sampled: a backward pass over the 100-step limit (the 101st step is the
Failure step, -1) gives the expected return from each of the 25 starts, and their mean is normalised with
the reference's constants, the quantity the sampled evaluation (32 rollouts per start) estimates. Invalid
text cannot happen here, and a cell none of a table's steps visited gets uniform moves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jaxlm_gym  # noqa: E402
from learners.datasets import complete_episode_mask, episode_facts, filter_steps  # noqa: E402
from learners.loop import task_data  # noqa: E402
from pure_envs.maze import MOVES  # noqa: E402

_POS = re.compile(r"current position is at position ([0-9 ]+), ([0-9 ]+)\.")


def _rows_index(rows: np.ndarray, decode) -> tuple[np.ndarray, list]:
    """Each row's index into its unique rows, and ``decode`` of every unique row."""
    uniq, inv = np.unique(rows, axis=0, return_inverse=True)
    return inv.reshape(-1), [decode(u) for u in uniq]


def dataset_tables(seed: int, data_envs: int = 1024, data_steps: int = 128, epsilon: float = 0.98,
                   gamma: float = 0.99) -> dict:
    """The tables of one training seed's dataset (``train_bc``'s data key for ``seed``).

    Returns ``cells`` (the free cells, row order of the tables), ``bc``, ``fbc`` (move counts ``[C, 4]``),
    ``q`` (mean direction-token return ``[C, 4]``, NaN where no complete step), ``q_count`` and the data's
    facts."""
    k_data = jax.random.split(jax.random.PRNGKey(seed), 4)[0]
    env, traj, _vocab, bos, stats = task_data("maze-fo", data_envs, data_steps, epsilon, k_data, True)
    tok = env.tokenizer
    host = jax.device_get(traj)
    t_len, n = host.reward.shape

    def position(row):
        m = _POS.search(tok.decode([int(x) for x in row if x >= 0]))
        return (int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", "")))

    prompts = np.where(host.prompt_mask, host.prompt_tokens, -1).reshape(t_len * n, -1)
    cell_of_row, positions = _rows_index(prompts, position)
    table = np.asarray(env.action_token_table(host.action_tokens.shape[-1]))
    acts = host.action_tokens.reshape(t_len * n, -1)
    move = np.full(t_len * n, -1)
    for i, row in enumerate(table):
        move[(acts == row).all(-1)] = i
    if (move < 0).any():
        raise ValueError("a dataset action is none of the maze's four moves")
    cells = sorted((int(r), int(c)) for r, c in env.env.free_cells)  # the goal included (never a prompt's cell)
    cidx = np.asarray([cells.index(p) for p in positions])[cell_of_row]

    # returns at the direction token (the action's second token): gamma^(k-2) (r + gamma (1 - done) G_next),
    # G_next the next step's return at its first token, gamma^(k-1) (r' + ...), as train_value.step_bootstraps
    k = host.action_mask.sum(-1).astype(np.float64)
    reward, done = host.reward.astype(np.float64), host.done.astype(bool)
    g_first = np.zeros((t_len, n))
    g_dir = np.zeros((t_len, n))
    nxt = np.zeros(n)
    for t in range(t_len - 1, -1, -1):
        inner = reward[t] + gamma * np.where(done[t], 0.0, nxt)
        g_first[t] = gamma ** (k[t] - 1) * inner
        g_dir[t] = gamma ** (k[t] - 2) * inner
        nxt = g_first[t]
    complete = np.asarray(complete_episode_mask(traj.done)).reshape(-1)
    keep = filter_steps(episode_facts(traj.reward, traj.done, traj.terminated), "last_reward",
                        last_reward_value=0.0).reshape(-1)

    c = len(cells)
    bc = np.zeros((c, 4))
    fbc = np.zeros((c, 4))
    qsum = np.zeros((c, 4))
    qn = np.zeros((c, 4))
    np.add.at(bc, (cidx, move), 1)
    np.add.at(fbc, (cidx[keep], move[keep]), 1)
    np.add.at(qsum, (cidx[complete], move[complete]), g_dir.reshape(-1)[complete])
    np.add.at(qn, (cidx[complete], move[complete]), 1)
    with np.errstate(invalid="ignore"):
        q = qsum / qn
    return {"cells": cells, "bc": bc, "fbc": fbc, "q": q, "q_count": qn, "data_score": stats["score"],
            "tokens_per_move": sorted(set(k.reshape(-1).astype(int).tolist()))}


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Rows of counts as distributions; an all-zero row becomes uniform."""
    s = counts.sum(-1, keepdims=True)
    return np.where(s > 0, counts / np.where(s > 0, s, 1), 1.0 / counts.shape[-1])


def mc_policy(bc_counts: np.ndarray, q: np.ndarray, beta: float) -> np.ndarray:
    """``pi ~ pi_BC * exp(beta * Q)`` per cell (moves without a Q estimate keep weight 0 unless none has one)."""
    pi = normalise_rows(bc_counts)
    z = np.where(np.isnan(q), -np.inf, beta * np.nan_to_num(q, nan=0.0))
    z = z - np.max(np.where(np.isfinite(z), z, -1e300), axis=-1, keepdims=True)
    w = pi * np.exp(z)
    return normalise_rows(w)


def expected_returns(policy: np.ndarray, cells: list, env=None) -> dict:
    """Exact expected return of ``policy`` ``[C, 4]`` (over ``cells``) from every start, under the maze's
    rules: -1 a move (a bump included), 0 on reaching the goal, and after 100 moves the Failure step, -1."""
    env = env if env is not None else jaxlm_gym.make("maze-fo")[0]
    params = env.default_params
    goal = tuple(int(x) for x in params.goal)
    layout = env.layout
    index = {p: i for i, p in enumerate(cells)}
    nxt = np.zeros((len(cells), 4), int)
    for p, i in index.items():
        for a, (dr, dc) in enumerate(MOVES):
            q = (p[0] + dr, p[1] + dc)
            nxt[i, a] = index[q] if layout[q] == 0 else i
    won = np.asarray([cells[j] == goal for j in range(len(cells))])
    reward = np.where(won[nxt], params.reward_goal, params.reward_move)
    v = np.full(len(cells), float(params.reward_timeout))  # time 100: the Failure step
    for _ in range(int(params.max_steps_in_episode)):
        v = (policy * (reward + np.where(won[nxt], 0.0, v[nxt]))).sum(-1)
    return {p: float(v[i]) for p, i in index.items() if p != goal}


def score_of(policy: np.ndarray, cells: list, env=None) -> tuple[float, float]:
    """(normalised score, mean return) over the 25 starts."""
    ret = float(np.mean(list(expected_returns(policy, cells, env).values())))
    return jaxlm_gym.score.normalize("maze-fo", ret), ret


def main(argv=None):
    p = argparse.ArgumentParser(description="Tabular BC / filtered BC / MC returns on maze FO's dataset.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--betas", type=float, nargs="+", default=[4.0, 8.0, 16.0, 32.0])
    p.add_argument("--epsilon", type=float, default=0.98)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    env = jaxlm_gym.make("maze-fo")[0]
    rows = []
    for seed in a.seeds:
        t = dataset_tables(seed, epsilon=a.epsilon)
        row = {"seed": seed, "epsilon": a.epsilon, "data_score": t["data_score"],
               "tokens_per_move": t["tokens_per_move"],
               "bc": score_of(normalise_rows(t["bc"]), t["cells"], env)[0],
               "filtered_bc": score_of(normalise_rows(t["fbc"]), t["cells"], env)[0],
               "mc": {str(b): score_of(mc_policy(t["bc"], t["q"], b), t["cells"], env)[0] for b in a.betas},
               "mc_greedy": score_of(mc_policy(t["bc"], t["q"], 1e4), t["cells"], env)[0]}
        rows.append(row)
        mc = ", ".join(f"beta {b}: {s:.1f}" for b, s in row["mc"].items())
        print(f"seed {seed}: data {row['data_score']:.1f}  BC {row['bc']:.1f}  filtered BC "
              f"{row['filtered_bc']:.1f}  MC {mc}, argmax Q {row['mc_greedy']:.1f}", flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"command": "python benchmarks/maze_tabular.py " + " ".join(sys.argv[1:] if argv is None
                                                                                   else argv), "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
