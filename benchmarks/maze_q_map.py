"""Where a maze value model goes wrong: its Q for each of the four moves at every start cell, against BFS.

The ILQL / MC decoding reads ``min(Q1, Q2)`` (MC: ``Q``) at the token after ``move``, where the four actions
(``move up\\n``, ``move down\\n``, ...) first differ. For each of the 25 starts this takes the first observation's
prompt (``[BOS] obs move``), reads the four Q values and marks the cell wrong when the move with the largest Q
does not shorten the BFS distance to the goal as much as the best move does. ``ilql_sweep.py`` stores the map
with each maze setting; the README's ILQL section quotes it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from learners.models import GPT2Config
from learners.models.heads import make_value_apply_fn
from learners.rollout import left_align
from learners.train_bc import make_eval_env, maze_starts
from pure_envs.maze import bfs_distances

MOVES = {" up": (-1, 0), " down": (1, 0), " left": (0, -1), " right": (0, 1)}


def q_map(task: str, model: dict, vocab, params, heads=("q1", "q2")) -> dict:
    """``{"cells": [...], "wrong": n}``: per start cell its BFS distance, each move's Q and the distance it
    leads to, and whether the largest Q is a shortest move. ``model``: the GPT-2 config fields; ``params``:
    the value model's (``base`` and the heads)."""
    if task != "maze-fo":
        raise ValueError(f"q_map reads maze-fo observations (position in the text), got {task!r}")
    env = make_eval_env(task, 1)
    base = env.inner
    tok = base.tokenizer
    goal = tuple(int(x) for x in np.asarray(base.params.goal).reshape(-1))
    layout = np.asarray(base.env.layout)
    dist = bfs_distances(layout, goal)
    obs, _ = env.reset(jax.random.PRNGKey(0))
    ids, mask = left_align(obs["tokens"], obs["length"], base.pad_id, tok.eos_id)
    n = ids.shape[0]
    ids = jnp.concatenate([ids, jnp.full((n, 1), tok.encode("move")[0], ids.dtype)], axis=1)
    mask = jnp.concatenate([mask, jnp.ones((n, 1), bool)], axis=1)
    apply_fn = make_value_apply_fn(GPT2Config(**model), tuple(heads))
    out = apply_fn(params, vocab.encode(ids), mask)
    q = out[heads[0]] if len(heads) == 1 else jnp.minimum(out[heads[0]], out[heads[1]])
    q = np.asarray(q[:, -1])
    move_ids = {m: vocab.model_id(tok.encode(m)[0]) for m in MOVES}
    cells, wrong = [], 0
    for i, (r, c) in enumerate(maze_starts(base)):
        to = {}
        for m, (dr, dc) in MOVES.items():
            rr, cc = r + dr, c + dc
            to[m] = int(dist[rr, cc]) if layout[rr, cc] == 0 else int(dist[r, c])  # a wall: stay
        vals = {m: float(q[i, move_ids[m]]) for m in MOVES}
        pick = max(vals, key=vals.get)
        ok = to[pick] == min(to.values())
        wrong += not ok
        cells.append({"cell": [r, c], "distance": int(dist[r, c]), "pick": pick.strip(), "ok": ok,
                      "q": {m.strip(): vals[m] for m in MOVES}, "leads_to": {m.strip(): to[m] for m in MOVES}})
    return {"cells": cells, "wrong": wrong}


def format_map(m: dict) -> str:
    lines = [f"argmax-Q move not a shortest move at {m['wrong']}/{len(m['cells'])} cells"]
    for c in m["cells"]:
        qs = " ".join(f"{k}:{v:6.2f}(d{c['leads_to'][k]})" for k, v in c["q"].items())
        lines.append(f"{tuple(c['cell'])!s:8} d={c['distance']:2d} {'ok ' if c['ok'] else 'BAD'} {c['pick']:5} {qs}")
    return "\n".join(lines)
