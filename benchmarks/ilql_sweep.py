"""ILQL (or MC returns): several training settings from one BC model, each scored at several decoding betas.

    python benchmarks/ilql_sweep.py --out benchmarks/results/ilql_sweep_maze_fo.json \
        --configs '[{"num_updates": 4000, "batch_size": 64, "cql_weight": 1.0, "polyak_alpha": 0.02}]' \
        --betas 8 16 32

The BC model, the dataset and the evaluation are ``reproduce_table2.py``'s (its defaults: 1,024 envs x 128
steps of the BFS expert diluted at 0.98, a 2-layer 64-wide GPT-2, 1,000 BC updates; sampling at temperature 1,
32 rollouts from each of the 25 starts, two seeds). ``--configs`` is a JSON list of ``ValueRunConfig`` fields
(``num_updates``, ``batch_size``, ``cql_weight``, ``polyak_alpha``, ``lr``, ``tau``, ``value_init``,
``value_seed`` (another value-model start on the same data), ...; ``"algo": "mc"`` trains MC returns instead of
ILQL and decodes with its one Q head). ``--task`` takes every task of ``reproduce_table2``
(maze-po, wordle, text-nav-fo/po: their data, evaluation and score average as there); ``--n-layer``/``--n-embd``/
``--n-head`` size the BC model, which the value model copies; ``--bc-init lm`` pretrains it on the data's
transition texts first.
The reference decodes
with beta 8 while training and 16 in its evaluation script (``maze/ilql/eval_ilql.py``); the decoding
``pi_beta + beta * min(Q1, Q2)`` needs no retraining to change beta, so each model is scored at every beta.
Rows are written to ``--out`` after every setting; on maze-fo each row also holds ``q_map`` (``maze_q_map.py``:
the four moves' Q at every start cell and the cells where the largest Q is not a shortest move).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reproduce_table2 as table2  # noqa: E402
from maze_q_map import format_map, q_map  # noqa: E402

from learners.models import GPT2Config  # noqa: E402
from learners.train_bc import train_bc  # noqa: E402
from learners.train_value import ValueRunConfig, train_value  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="ILQL / MC settings x decoding betas from one BC model.")
    p.add_argument("--task", default="maze-fo", choices=list(table2.EPSILON))
    p.add_argument("--bc-updates", type=int, default=1000)
    p.add_argument("--epsilon", type=float, default=None, help=f"dataset dilution; default per task {table2.EPSILON}")
    p.add_argument("--wordle-word-list", default=str(table2.WORDLE_WORDS), help="Wordle's word list")
    p.add_argument("--configs", required=True, help="JSON list of ValueRunConfig fields, one object per setting")
    p.add_argument("--betas", type=float, nargs="+", default=[8.0, 16.0, 32.0])
    p.add_argument("--rollouts", type=int, default=32, help="sampled rollouts per start (reference: 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-envs", type=int, default=1024, help="dataset size: envs x 128 steps (reproduce_table2's)")
    p.add_argument("--n-layer", type=int, default=2, help="GPT-2 layers of the BC (and so the value) model")
    p.add_argument("--n-embd", type=int, default=64, help="GPT-2 width")
    p.add_argument("--n-head", type=int, default=2, help="GPT-2 attention heads")
    p.add_argument("--bc-init", default="scratch", choices=table2.BC_INITS,
                   help="the BC model's start (reproduce_table2's --bc-init); every config gets it as bc_init")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    configs = json.loads(a.configs)
    args = types.SimpleNamespace(seed=a.seed, data_envs=a.data_envs, data_steps=128, epsilon=a.epsilon,
                                 num_updates=a.bc_updates, chunk=100, lr=None, metrics=None, no_progress=True,
                                 rollouts=a.rollouts, bc_init=a.bc_init,
                                 wordle_word_list=a.wordle_word_list)
    epsilon = table2._epsilon(a.task, args)
    t0 = time.perf_counter()
    bc = train_bc(table2._bc_cfg(a.task, args, n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head))
    print(f"BC: {time.perf_counter() - t0:.0f} s, greedy score {bc['score']:.1f}", flush=True)
    average = bc["data"]["score_average"]
    rows = []
    for c in configs:
        t1 = time.perf_counter()
        c = dict(c)
        algo = c.pop("algo", "ilql")
        cfg = ValueRunConfig(algo=algo, task=a.task, seed=a.seed, data_envs=args.data_envs,
                             data_steps=args.data_steps, epsilon=epsilon, chunk=args.chunk, greedy=True,
                             eval_rollouts=table2.GREEDY_ROLLOUTS.get(a.task, 1), progress=False,
                             bc_init=a.bc_init,
                             **table2._task_config(a.task, args), **c)
        out = train_value(cfg, bc=bc)
        row = {"algo": algo, "task": a.task, "config": c, "bc_updates": a.bc_updates,
               "model": {"n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head},
               "train_s": time.perf_counter() - t1,
               # env-steps/s while training: for these offline learners, the in-graph data generation
               "data_env_steps_per_s": out["data"].get("env_steps_per_s"),
               "score_greedy": out["score"], "loss_last": out["loss_last_chunk"], "sampled": {}}
        if out.get("lm_losses"):  # value_init "lm": the pretraining's first and last chunk losses
            row["lm_loss_first_last"] = [out["lm_losses"][0], out["lm_losses"][-1]]
        heads = ("q1", "q2") if algo == "ilql" else ("q",)
        if a.task == "maze-fo":  # where the Q argmax goes wrong, cell by cell
            row["q_map"] = q_map(a.task, out["model"], out["vocab"], out["params"], heads=heads)
            print(format_map(row["q_map"]), flush=True)
        for beta in a.betas:
            s = table2._sampled(a.task, args, GPT2Config(**out["model"]), out["vocab"],
                                bc["config"]["max_new_tokens"] or 8, cfg.bos, out["policy_params"],
                                value_heads=heads, beta=beta, average=average)
            row["sampled"][str(beta)] = {"score": s["score_sampled"], "score_rerun": s["score_sampled_rerun"],
                                         "success": s["success_sampled"],
                                         "return": s["return_sampled"],
                                         "per_start_return": s["per_start_return_sampled"],
                                         "valid_action_rate": s["valid_action_rate_sampled"]}
            print(f"{c} beta {beta:g}: score {s['score_sampled']:.1f} / {s['score_sampled_rerun']:.1f}, "
                  f"success {s['success_sampled']:.2f}, valid actions {s['valid_action_rate_sampled']:.2f}", flush=True)
        rows.append(row)
        with open(a.out, "w", encoding="utf-8") as f:
            command = shlex.join(["python", "benchmarks/ilql_sweep.py", *(sys.argv[1:] if argv is None else argv)])
            json.dump({"command": command, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
