"""Symbolic vs text observations of the same task, same algorithm (PPO): the seed's Appendix H question.

    python benchmarks/ablation.py --out benchmarks/results/ablation

(a) ``learners.ppo_mlp``: an MLP on the task's symbolic observation (``obs_mode="symbolic"``, index actions),
from scratch; (b) ``learners.train_online`` PPO: the GPT-2 token policy on the text observation
(``obs_mode="tokens"``, action text parsed in-graph), started from a BC model as the reference's maze PPO is.
Both learning curves are plotted against env steps on one PNG (one panel per task); the y axis is the
normalised score where the task has one (``jaxlm_gym.score``), else the mean episode return. The curves are
the returns of the episodes that ended during training (sampled actions), not separate evaluations.

The token policy runs on the maze tasks (``learners.train_online.TASKS``); every other registered core gets
the symbolic curve only (``--tasks``).
"""

from __future__ import annotations

import argparse
import json
import time

import jax

import jaxlm_gym
from learners.ppo_mlp import train_ppo_mlp
from learners.train_online import OnlineRunConfig, train_online

TOKEN_TASKS = ("maze-fo", "maze-po")
DEFAULT_TASKS = ("maze-fo", "maze-po", "wordle", "text-nav-fo", "text-nav-po", "llf-bandits-BanditTenArmedGaussian-v0",
                 "llf-gridworld-v0", "llf-optimization-Booth-v0", "llf-highway-parking-v0")


# Bandits and optimization never end in the reference (F3); the ablation gives them a horizon so that episode
# returns exist (the flag the README's defect table lists).
ENV_KWARGS = {"llf-bandits-": {"horizon": 10}, "llf-optimization-": {"horizon": 10}}


def _env_kwargs(task: str) -> dict | None:
    return next((kw for prefix, kw in ENV_KWARGS.items() if task.startswith(prefix)), None)


def _score(task: str, ret):
    if ret is None:
        return None
    try:
        return float(jaxlm_gym.score.normalize(task, ret))
    except (KeyError, ValueError):
        return None


def symbolic_curve(task: str, args) -> dict:
    t0 = time.perf_counter()
    out = train_ppo_mlp(task, num_envs=args.mlp_envs, num_steps=args.mlp_steps, num_updates=args.mlp_updates,
                        chunk=args.mlp_chunk, seed=args.seed, env_kwargs=_env_kwargs(task))
    pts = [{"env_steps": p["env_steps"], "mean_return": p["mean_return"],
            "score": p.get("score", _score(task, p["mean_return"]))} for p in out["curve"]]
    return {"task": task, "policy": "symbolic MLP", "curve": pts, "env_kwargs": _env_kwargs(task),
            "wall_s": time.perf_counter() - t0,
            "env_steps_per_s": out.get("env_steps_per_s")}


def token_curve(task: str, args) -> dict:
    t0 = time.perf_counter()
    cfg = OnlineRunConfig(algo="ppo", task=task, seed=args.seed, rounds=args.token_rounds, lr=args.token_lr,
                          bc_updates=args.bc_updates, progress=not args.no_progress)
    out = train_online(cfg)
    pts, steps = [], 0
    for r in out["rounds"]:
        steps += r["env_steps"]
        pts.append({"env_steps": steps, "mean_return": r["mean_episode_return"],
                    "score": _score(task, r["mean_episode_return"])})
    return {"task": task, "policy": "GPT-2 tokens (from BC)", "curve": pts, "wall_s": time.perf_counter() - t0,
            "env_steps_per_s": out["train_env_steps_per_s"], "bc_score_greedy": out["bc_score"],
            "final_score_greedy": out["score"]}


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results))
    cols = min(3, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        use_score = all(p["score"] is not None for r in results if r["task"] == task for p in r["curve"]
                        if p["mean_return"] is not None)
        for r in (r for r in results if r["task"] == task):
            pts = [p for p in r["curve"] if p["mean_return"] is not None]
            ax.plot([p["env_steps"] for p in pts], [p["score"] if use_score else p["mean_return"] for p in pts],
                    label=r["policy"], marker="." if len(pts) < 30 else None)
        ax.set_title(task, fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("env steps")
        ax.set_ylabel("normalised score" if use_score else "mean episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"PPO: symbolic MLP vs GPT-2 token policy ({jax.devices()[0].platform})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mlp-envs", type=int, default=64)
    p.add_argument("--mlp-steps", type=int, default=32)
    p.add_argument("--mlp-updates", type=int, default=200)
    p.add_argument("--mlp-chunk", type=int, default=10)
    p.add_argument("--token-rounds", type=int, default=30)
    p.add_argument("--token-lr", type=float, default=1e-4)
    p.add_argument("--bc-updates", type=int, default=1000)
    p.add_argument("--no-token", action="store_true", help="symbolic curves only")
    p.add_argument("--token-tasks", nargs="+", default=list(TOKEN_TASKS), choices=list(TOKEN_TASKS),
                   help="tasks that also get the token-policy curve")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="benchmarks/results/ablation", help="writes <out>.png and <out>.json")
    p.add_argument("--resume", action="store_true", help="keep the curves already in <out>.json, run the rest")
    args = p.parse_args(argv)
    known = set(jaxlm_gym.registry.list_envs())
    for task in args.tasks:
        if task not in known:
            raise SystemExit(f"unknown task {task!r}; registered: {sorted(known)}")
    results = []
    if args.resume:
        try:
            with open(args.out + ".json", encoding="utf-8") as f:
                results = [r for r in json.load(f) if r["task"] in args.tasks]
        except FileNotFoundError:
            pass
    done = {(r["task"], r["policy"]) for r in results}
    for task in args.tasks:
        if (task, "symbolic MLP") not in done:
            results.append(symbolic_curve(task, args))
        if task in args.token_tasks and not args.no_token and (task, "GPT-2 tokens (from BC)") not in done:
            results.append(token_curve(task, args))
        for r in results[-2:]:
            if r["task"] == task:
                last = r["curve"][-1]
                y = last["score"] if last["score"] is not None else last["mean_return"]
                print(f"{task:34} {r['policy']:24} last {y} at {last['env_steps']} env steps ({r['wall_s']:.0f} s)",
                      flush=True)
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        plot(results, args.out + ".png")


if __name__ == "__main__":
    main()
