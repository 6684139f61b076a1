"""benchmarks/maze_q_map.py: the per-cell Q diagnostic reads the right token and counts wrong cells as BFS says."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys

import jax
import numpy as np

import jaxlm_gym
from learners.models import GPT2Config
from learners.models.heads import init_value_model
from learners.rollout import VocabMap

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
# the double T maze of spec §2: free cells and BFS distances to the goal (8, 6), written out by hand
DIST = {(1, 1): 12, (1, 2): 11, (1, 3): 10, (1, 4): 11, (1, 5): 12, (1, 7): 12, (1, 8): 11, (1, 9): 10, (1, 10): 11,
        (1, 11): 12, (2, 3): 9, (3, 3): 8, (4, 3): 7, (2, 9): 9, (3, 9): 8, (4, 9): 7, (5, 3): 6, (5, 4): 5, (5, 5): 4,
        (5, 6): 3, (5, 7): 4, (5, 8): 5, (5, 9): 6, (6, 6): 2, (7, 6): 1, (8, 6): 0}


def _module():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("maze_q_map", BENCH / "maze_q_map.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _shortest(cell, move):
    dr, dc = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}[move]
    nxt = (cell[0] + dr, cell[1] + dc)
    to = DIST.get(nxt, DIST[cell])
    best = min(DIST.get((cell[0] + a, cell[1] + b), DIST[cell]) for a, b in ((-1, 0), (1, 0), (0, -1), (0, 1)))
    return to == best


def test_q_map_counts_the_cells_where_one_fixed_move_is_not_shortest():
    mod = _module()
    env = jaxlm_gym.make_vec("maze-fo", 1, obs_mode="tokens", action_mode="tokens")
    vocab = VocabMap.for_env(env)
    cfg = GPT2Config.tiny(vocab_size=vocab.size)
    params = init_value_model(cfg, jax.random.PRNGKey(0), heads=("q1", "q2", "v"))
    # the last layer is zero-initialised: a bias alone makes Q the same at every cell, largest for " left"
    left = vocab.model_id(env.tokenizer.encode(" left")[0])
    for h in ("q1", "q2"):
        bias = np.zeros(vocab.size, np.float32)
        bias[left] = 1.0
        params[h]["dense2"]["bias"] = jax.numpy.asarray(bias)
    m = mod.q_map("maze-fo", dataclasses.asdict(cfg), vocab, params)
    assert len(m["cells"]) == 25
    assert {tuple(c["cell"]) for c in m["cells"]} == set(DIST) - {(8, 6)}
    assert all(c["pick"] == "left" and c["q"]["left"] == 1.0 and c["q"]["up"] == 0.0 for c in m["cells"])
    for c in m["cells"]:
        assert c["distance"] == DIST[tuple(c["cell"])]
        assert c["ok"] == _shortest(tuple(c["cell"]), "left")
    assert m["wrong"] == sum(not _shortest(cell, "left") for cell in DIST if cell != (8, 6))
    assert "cells" in mod.format_map(m).splitlines()[0]
