"""Reproduce LMRL-Gym's Table 2 (normalised scores) with the in-graph learners on maze, Wordle and Text-Nav.

    python benchmarks/reproduce_table2.py --tasks maze-fo --out benchmarks/results/table2_maze_fo.json
    python benchmarks/reproduce_table2.py --tasks wordle --algos bc filtered_bc mc ilql
    python benchmarks/reproduce_table2.py --tasks text-nav-fo text-nav-po --algos bc filtered_bc mc ilql

Algorithms: ``bc``, ``filtered_bc`` (the same data's successful episodes), ``mc`` and ``ilql`` (value model
from the BC model, decoding ``pi_beta + beta * Q``), ``ppo`` and ``online_filtered_bc`` (online, from the BC
model). BC is trained once per task and shared by the algorithms that start from it.

Each run: in-graph dataset (the task's expert diluted at rate ``epsilon``) -> GPT-2 trained from scratch
with jitted chunks -> the reference's evaluation. Two evaluations are reported: ``sampled`` is the
reference's final protocol (sampling at temperature 1, 32 rollouts per maze start, ``maze/bc/eval_bc.py``);
``greedy`` is one deterministic rollout per start.

- Maze: BFS expert; epsilon 0.98 gives the reference dataset's average return, about -83 = score 50;
  evaluation from every one of the 25 starts.
- Wordle: the greedy information-gain expert (``learners.datasets.wordle_expert``) on the benchmark's
  431-word list (``--wordle-word-list``, default ``../shared/data/lmrl-gym/wordle_official_400.txt`` beside
  the repository); epsilon 0.5 by default (our choice: the reference mixes random consistent words with
  random words at a rate its scripts do not fix). Evaluation: ``32 x rollouts`` episodes from random hidden
  words (sampled: 1,024; greedy: 256, ``GREEDY_ROLLOUTS``). Scores: the reference has no Wordle constants;
  spec §12's natural bounds -6..0 with the training data's own mean return as the average (so the data
  scores 50). 0 is out of reach (the undiluted expert averages about -1.9), so Wordle scores stay well below
  100 and are not on the seed's scale. Filtered BC keeps the top 10 % of episodes by return (the
  reference's ``create_percent_bc_data``).
- Text-Nav (FO, PO): the shortest-completion expert (``learners.datasets.text_nav_expert``, the reference's
  walkthrough from any state); epsilon 0.5 by default (our choice; the reference's 200-episode
  "partial-walkthrough" collector fixes no rate): each step a uniformly random one of the 67 commands with
  probability 0.5, which leaves about 55 % of the data's episodes won within the 15-step cap. Evaluation as
  Wordle's, from random start rooms (sampled: 1,024 episodes; greedy: 256), success = won. Scores: no
  reference constants; spec §12's natural bounds 0..1 with the data's mean return (its success rate) as the
  average, so the data scores 50 and a policy that always wins scores 100 (the undiluted expert does).
  Filtered BC keeps the won episodes (our preset: the reference has no Text-Nav filtered file).
- The online algorithms (``ppo``, ``online_filtered_bc``) are maze-only.

Also reported: the wall-clock of the run and env-steps/s while it ran (for offline BC the env is stepped by
the in-graph data generation and by the evaluation rollouts, where the GPT-2 policy generates every action).

Rows are written as JSON to ``--out``; the seed's scores are printed beside ours.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax

from learners.models import GPT2Config
from learners.presets import get_preset
from learners.rollout import make_token_policy, make_value_policy, stop_token_id
from learners.train_bc import BC_INITS, BCRunConfig, evaluate_policy, make_eval_env, train_bc
from learners.train_online import OnlineRunConfig, train_online
from learners.train_value import VALUE_INITS, ValueRunConfig, train_value

#: The seed paper's Table 2 (normalised scores), for comparison.
SEED_TABLE2 = {
    ("maze-fo", "bc"): 58.2, ("maze-fo", "filtered_bc"): 68.9, ("maze-fo", "mc"): 75.0,
    ("maze-fo", "ilql"): 99.9, ("maze-fo", "ppo"): 79.7,
    ("maze-po", "bc"): 53.1, ("maze-po", "ilql"): 76.3,
    ("wordle", "bc"): 79.9, ("wordle", "mc"): 94.9, ("wordle", "ilql"): 97.7,
}


#: Default dataset dilution per task (``--epsilon`` overrides).
EPSILON = {"maze-fo": 0.98, "maze-po": 0.98, "wordle": 0.5, "text-nav-fo": 0.5, "text-nav-po": 0.5}
ONLINE_TASKS = ("maze-fo", "maze-po")
#: ``eval_rollouts`` of the greedy evaluation (maze: 1 per start; Wordle: 8 x 32 = 256 random hidden words;
#: Text-Nav: 256 random start rooms).
GREEDY_ROLLOUTS = {"wordle": 8, "text-nav-fo": 8, "text-nav-po": 8}
#: The benchmark's Wordle list, read from the reference data beside the repository.
WORDLE_WORDS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "lmrl-gym" / "wordle_official_400.txt"


def _epsilon(task, args) -> float:
    return args.epsilon if args.epsilon is not None else EPSILON[task]


def _task_config(task, args) -> dict:
    """``word_list`` for Wordle runs (the configs' field), nothing for maze."""
    if task != "wordle":
        return {}
    path = pathlib.Path(args.wordle_word_list)
    if not path.is_file():
        raise SystemExit(f"Wordle word list not found: {path} (pass --wordle-word-list PATH to "
                         f"wordle_official_400.txt, the benchmark's 431-word list)")
    return {"word_list": str(path)}


def _sampled(task: str, args, mcfg, vocab, max_new: int, bos_on: bool, params, value_heads=None, beta=None,
             average=None):
    """The reference's final evaluation: sampling at temperature 1, ``rollouts`` episodes from every start.
    Two seeds; returns (score, rerun score, mean return, success, env-steps/s of the rerun). ``average``: the
    dataset average of tasks without reference constants (``learners.loop.score_average``)."""
    env = make_eval_env(task, args.rollouts, **_task_config(task, args))
    bos = env.tokenizer.eos_id if bos_on else None
    common = dict(stop_token_id=stop_token_id(env), pad_token_id=env.pad_id, max_new_tokens=max_new, vocab=vocab,
                  greedy=False, temperature=1.0)
    if value_heads is None:
        policy = make_token_policy(mcfg, **common)
    else:
        policy = make_value_policy(mcfg, beta=beta, heads=value_heads, **common)
    a = evaluate_policy(env, policy, params, jax.random.PRNGKey(args.seed + 1), bos_id=bos, average=average)
    b = evaluate_policy(env, policy, params, jax.random.PRNGKey(args.seed + 2), bos_id=bos, average=average)
    return {"score_sampled": a["score"], "score_sampled_rerun": b["score"], "return_sampled": a["mean_return"],
            "success_sampled": a["success"], "eval_env_steps_per_s_sampled": b["env_steps"] / b["wall_s"],
            "per_start_return_sampled": a["per_start_return"], "valid_action_rate_sampled": a["valid_action_rate"]}


def _bc_cfg(task, args, **kw) -> BCRunConfig:
    return BCRunConfig(task=task, seed=args.seed, data_envs=args.data_envs, data_steps=args.data_steps,
                       epsilon=_epsilon(task, args), num_updates=args.num_updates, chunk=args.chunk, lr=args.lr,
                       greedy=True, eval_rollouts=GREEDY_ROLLOUTS.get(task, 1), metrics_path=args.metrics,
                       progress=not args.no_progress, init=args.bc_init,
                       **_task_config(task, args), **kw)


def _row(task, algo, out, args, t0, **extra) -> dict:
    return {"task": task, "algo": algo, "seed_score": SEED_TABLE2.get((task, algo)),
            "score_greedy": out["score"], "return_greedy": out["mean_return"],
            "success_greedy": out["eval"]["success"],
            "valid_action_rate_greedy": out["eval"].get("valid_action_rate"), "wall_s": time.perf_counter() - t0,
            "device": str(jax.devices()[0].platform), **extra}


def run_bc(task: str, args, filtered: bool = False) -> dict:
    """BC, or filtered BC (the episodes of the same data the task's filtered-BC preset keeps: maze the
    successful ones, Wordle the top 10 % by return, Text-Nav the won ones) with ``filtered``."""
    t0 = time.perf_counter()
    kw = {}
    if filtered:
        pre = get_preset("filtered_bc", task)
        kw = dict(filter=pre.rule, filter_value=pre.last_reward_value, filter_fraction=pre.fraction)
    cfg = _bc_cfg(task, args, **kw)
    out = train_bc(cfg)
    if not filtered:
        _BC_RUNS[task] = out
    sampled = _sampled(task, args, GPT2Config(**out["model"]), out["vocab"], out["config"]["max_new_tokens"] or 8,
                       cfg.bos, out["params"], average=out["data"]["score_average"])
    return _row(task, "filtered_bc" if filtered else "bc", out, args, t0, **sampled,
                data_mean_return=out["data"]["mean_return"], data_score=out["data"]["score"],
                score_average=out["data"]["score_average"],
                kept_fraction=out["data"].get("kept_fraction"), epsilon=cfg.epsilon,
                num_updates=args.num_updates, loss_last=out["loss_last_chunk"], updates_per_s=out["updates_per_s"],
                data_env_steps_per_s=out["data"]["env_steps_per_s"],
                train_env_steps_per_s=out["data"]["env_steps_per_s"],
                eval_env_steps_per_s_greedy=out["eval_env_steps_per_s"])


def _bc_for(task, args) -> dict:
    """The task's BC run (the ``bc`` row's, or trained here without its row's sampled evaluation)."""
    if task not in _BC_RUNS:
        _BC_RUNS[task] = train_bc(_bc_cfg(task, args))
    return _BC_RUNS[task]


def run_value(task: str, args, algo: str) -> dict:
    bc = _bc_for(task, args)
    t0 = time.perf_counter()
    cfg = ValueRunConfig(algo=algo, task=task, seed=args.seed, data_envs=args.data_envs, data_steps=args.data_steps,
                         epsilon=_epsilon(task, args), num_updates=args.value_updates, chunk=args.chunk,
                         batch_size=args.value_batch, beta=args.beta, cql_weight=args.cql_weight,
                         polyak_alpha=args.polyak_alpha, lr=args.value_lr, value_init=args.value_init,
                         bc_init=args.bc_init,
                         greedy=True, eval_rollouts=GREEDY_ROLLOUTS.get(task, 1),
                         metrics_path=args.metrics,
                         progress=not args.no_progress, **_task_config(task, args))
    out = train_value(cfg, bc=bc)
    heads = ("q1", "q2") if algo == "ilql" else ("q",)
    sampled = _sampled(task, args, GPT2Config(**out["model"]), out["vocab"], bc["config"]["max_new_tokens"] or 8,
                       cfg.bos, out["policy_params"], value_heads=heads, beta=out["beta"],
                       average=out["data"]["score_average"])
    return _row(task, algo, out, args, t0, **sampled, beta=out["beta"], num_updates=args.value_updates,
                batch_size=out["batch_size"], bc_score_greedy=out["bc_score"], loss_last=out["loss_last_chunk"],
                updates_per_s=out["updates_per_s"], train_env_steps_per_s=out["data"]["env_steps_per_s"],
                eval_env_steps_per_s_greedy=out["eval_env_steps_per_s"])


def run_online(task: str, args, algo: str) -> dict:
    bc = _bc_for(task, args)
    t0 = time.perf_counter()
    cfg = OnlineRunConfig(algo=algo, task=task, seed=args.seed, data_envs=args.data_envs,
                          data_steps=args.data_steps, epsilon=_epsilon(task, args), rounds=args.rounds,
                          lr=args.online_lr, metrics_path=args.metrics, progress=not args.no_progress)
    out = train_online(cfg, bc=bc)
    sampled = _sampled(task, args, GPT2Config(**out["model"]), out["vocab"], bc["config"]["max_new_tokens"] or 8,
                       cfg.bos, out["policy_params"])
    return _row(task, algo, out, args, t0, **sampled, rounds=args.rounds, num_envs=out["num_envs"],
                round_steps=out["round_steps"], lr=out["lr"], bc_score_greedy=out["bc_score"],
                train_env_steps_per_s=out["train_env_steps_per_s"])


_BC_RUNS: dict = {}

ALGOS = {
    "bc": run_bc,
    "filtered_bc": lambda task, args: run_bc(task, args, filtered=True),
    "mc": lambda task, args: run_value(task, args, "mc"),
    "ilql": lambda task, args: run_value(task, args, "ilql"),
    "ppo": lambda task, args: run_online(task, args, "ppo"),
    "online_filtered_bc": lambda task, args: run_online(task, args, "online_filtered_bc"),
}


def main(argv=None):
    p = argparse.ArgumentParser(description="Reproduce LMRL-Gym Table 2 rows on maze, Wordle and Text-Nav.")
    p.add_argument("--tasks", nargs="+", default=["maze-fo"], choices=list(EPSILON))
    p.add_argument("--algos", nargs="+", default=["bc", "filtered_bc", "mc", "ilql", "ppo"], choices=list(ALGOS))
    p.add_argument("--epsilon", type=float, default=None,
                   help=f"dataset dilution; default per task {EPSILON}")
    p.add_argument("--wordle-word-list", default=str(WORDLE_WORDS),
                   help="Wordle's word list (default: the benchmark's wordle_official_400.txt beside the repo)")
    p.add_argument("--data-envs", type=int, default=1024)
    p.add_argument("--data-steps", type=int, default=128)
    p.add_argument("--num-updates", type=int, default=1000)
    p.add_argument("--chunk", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="BC lr; default: the task's BC preset")
    p.add_argument("--value-updates", type=int, default=2000, help="MC / ILQL updates")
    p.add_argument("--value-batch", type=int, default=None, help="MC / ILQL batch; default: the preset's (32)")
    p.add_argument("--value-lr", type=float, default=None, help="MC / ILQL lr; default: the task's preset")
    p.add_argument("--bc-init", default="scratch", choices=BC_INITS,
                   help="BC (and filtered BC) model's start: scratch, or lm: first pretrained on the data's "
                        "transition texts (learners.pretrain; the reference fine-tunes a pretrained GPT-2)")
    p.add_argument("--value-init", default="bc", choices=VALUE_INITS,
                   help="MC / ILQL value model's GPT-2 base: a copy of the BC model (bc, the reference), a fresh one "
                        "(scratch) or one pretrained on the data's transition texts (lm); see the README's maze FO "
                        "section")
    p.add_argument("--beta", type=float, default=None, help="decoding beta; default: the preset's (maze: 8)")
    p.add_argument("--cql-weight", type=float, default=None,
                   help="MC / ILQL CQL weight; default: the preset's (maze: 0; see the README on why we use 1)")
    p.add_argument("--polyak-alpha", type=float, default=None,
                   help="ILQL target step; default: the preset's (0.005; see the README on why we use 0.05)")
    p.add_argument("--rounds", type=int, default=40, help="PPO / online filtered BC rounds")
    p.add_argument("--online-lr", type=float, default=None, help="PPO / online filtered BC lr; default: preset")
    p.add_argument("--rollouts", type=int, default=32, help="sampled rollouts per start (reference: 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", default=None, help="JSON-lines metrics file")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    online = sorted({"ppo", "online_filtered_bc"} & set(args.algos))
    offline_only = [t for t in args.tasks if t not in ONLINE_TASKS]
    if online and offline_only:
        p.error(f"{online} run on {ONLINE_TASKS} only, not on {offline_only}")
    for task in args.tasks:
        _task_config(task, args)  # a missing word list fails before any training

    rows = []
    for task in args.tasks:
        for algo in args.algos:
            rows.append(ALGOS[algo](task, args))
            r = rows[-1]
            print(f"[{task} {algo}] sampled {r['score_sampled']:.1f} greedy {r['score_greedy']:.1f} "
                  f"({r['wall_s']:.0f} s)", flush=True)
            if args.out:  # after every row, so a long run keeps what it finished
                with open(args.out, "w", encoding="utf-8") as f:
                    json.dump(rows, f, indent=1)
    print("| task | algorithm | ours, sampled | ours, greedy | seed | wall s | train env-steps/s | eval env-steps/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        seed = "-" if r["seed_score"] is None else f"{r['seed_score']:.1f}"
        tr = r.get("train_env_steps_per_s")
        print(f"| {r['task']} | {r['algo']} | {r['score_sampled']:.1f} | {r['score_greedy']:.1f} | {seed} | "
              f"{r['wall_s']:.0f} | {'-' if tr is None else f'{tr:.3g}'} | {r['eval_env_steps_per_s_sampled']:.3g} |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
