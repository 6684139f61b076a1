"""Reproduce LMRL-Gym's Table 2 (normalised scores) with the in-graph learners -- skeleton: BC on maze.

    python benchmarks/reproduce_table2.py --tasks maze-fo --algos bc --num-updates 1000

Each run: in-graph dataset (BFS expert diluted at rate ``epsilon``; 0.98 gives the reference dataset's
average return, about -83 = score 50) -> GPT-2 trained from scratch with jitted chunks -> the reference's
evaluation, every one of the 25 maze starts. Two evaluations are reported: ``sampled`` is the reference's
final protocol (``maze/bc/eval_bc.py``: sampling at temperature 1, 32 rollouts per start); ``greedy`` is one
deterministic rollout per start. Also reported: the wall-clock of the run and env-steps/s while it ran (for
offline BC the env is stepped by the in-graph data generation and by the evaluation rollouts, where the GPT-2
policy generates every action).

Rows are written as JSON to ``--out``; the seed's scores are printed beside ours.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from learners.models import GPT2Config
from learners.rollout import make_token_policy, stop_token_id
from learners.train_bc import BCRunConfig, evaluate_maze, make_eval_env, train_bc

#: The seed paper's Table 2 (normalised scores), for comparison.
SEED_TABLE2 = {
    ("maze-fo", "bc"): 58.2, ("maze-fo", "filtered_bc"): 68.9, ("maze-fo", "mc"): 75.0,
    ("maze-fo", "ilql"): 99.9, ("maze-fo", "ppo"): 79.7,
    ("maze-po", "bc"): 53.1, ("maze-po", "ilql"): 76.3,
    ("wordle", "bc"): 79.9, ("wordle", "mc"): 94.9, ("wordle", "ilql"): 97.7,
}


def run_bc(task: str, args) -> dict:
    t0 = time.perf_counter()
    cfg = BCRunConfig(task=task, seed=args.seed, data_envs=args.data_envs, data_steps=args.data_steps,
                      epsilon=args.epsilon, num_updates=args.num_updates, chunk=args.chunk, lr=args.lr,
                      greedy=True, eval_rollouts=1, metrics_path=args.metrics, progress=not args.no_progress)
    out = train_bc(cfg)
    # the reference's final evaluation: sampling at temperature 1, ``rollouts`` episodes from every start
    mcfg = GPT2Config(**out["model"])
    env = make_eval_env(task, args.rollouts)
    bos = env.tokenizer.eos_id if cfg.bos else None
    policy = make_token_policy(mcfg, stop_token_id=stop_token_id(env), pad_token_id=env.pad_id,
                               max_new_tokens=out["config"]["max_new_tokens"] or 8, vocab=out["vocab"],
                               greedy=False, temperature=1.0)
    sampled = evaluate_maze(env, policy, out["params"], jax.random.PRNGKey(args.seed + 1), bos_id=bos)
    sampled2 = evaluate_maze(env, policy, out["params"], jax.random.PRNGKey(args.seed + 2), bos_id=bos)
    wall = time.perf_counter() - t0
    return {
        "task": task, "algo": "bc", "seed_score": SEED_TABLE2.get((task, "bc")),
        "score_sampled": sampled["score"], "return_sampled": sampled["mean_return"],
        "score_sampled_rerun": sampled2["score"],
        "score_greedy": out["score"], "return_greedy": out["mean_return"],
        "success_sampled": sampled["success"], "success_greedy": out["eval"]["success"],
        "data_mean_return": out["data"]["mean_return"], "data_score": out["data"]["score"],
        "epsilon": args.epsilon, "num_updates": args.num_updates, "loss_last": out["loss_last_chunk"],
        "updates_per_s": out["updates_per_s"],
        "data_env_steps_per_s": out["data"]["env_steps_per_s"],
        "eval_env_steps_per_s_greedy": out["eval_env_steps_per_s"],
        "eval_env_steps_per_s_sampled": sampled2["env_steps"] / sampled2["wall_s"],
        "wall_s": wall, "device": str(jax.devices()[0].platform),
    }


ALGOS = {"bc": run_bc}


def main(argv=None):
    p = argparse.ArgumentParser(description="Reproduce LMRL-Gym Table 2 rows (skeleton: BC on maze).")
    p.add_argument("--tasks", nargs="+", default=["maze-fo"])
    p.add_argument("--algos", nargs="+", default=["bc"], choices=sorted(ALGOS))
    p.add_argument("--epsilon", type=float, default=0.98)
    p.add_argument("--data-envs", type=int, default=1024)
    p.add_argument("--data-steps", type=int, default=128)
    p.add_argument("--num-updates", type=int, default=1000)
    p.add_argument("--chunk", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="default: the task's BC preset")
    p.add_argument("--rollouts", type=int, default=32, help="sampled rollouts per start (reference: 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", default=None, help="JSON-lines metrics file")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    rows = []
    for task in args.tasks:
        for algo in args.algos:
            rows.append(ALGOS[algo](task, args))
    print(f"{'task':8} {'algo':5} {'sampled':>8} {'greedy':>7} {'seed':>6} {'data':>6} {'wall s':>7} "
          f"{'data env-steps/s':>17} {'eval env-steps/s':>17}")
    for r in rows:
        seed = "-" if r["seed_score"] is None else f"{r['seed_score']:.1f}"
        print(f"{r['task']:8} {r['algo']:5} {r['score_sampled']:8.1f} {r['score_greedy']:7.1f} {seed:>6} "
              f"{r['data_score']:6.1f} {r['wall_s']:7.0f} {r['data_env_steps_per_s']:17.3g} "
              f"{r['eval_env_steps_per_s_sampled']:17.3g}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
