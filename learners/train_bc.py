"""BC end to end on a token env: in-graph dataset -> jitted BC training chunks -> in-graph evaluation.

    python -m learners.train_bc --num-updates 2000 --metrics runs/bc.jsonl

1. **Data**: ``learners.datasets.generate_dataset`` runs the reference recipe (BFS expert diluted with
   uniformly random actions at rate ``epsilon``) over ``data_envs`` envs for ``data_steps`` steps, in one
   jitted scan, and ``learners.rollout.bc_batch`` lays the transitions out as ``[BOS] obs action`` rows in
   the model's compact vocabulary (``VocabMap``). The reference's FO BC trains on (state -> action) pairs
   with the prompt as ``bos_token + state`` (``maze/bc/fully_observed_bc.py``); ``bos=True`` does the same.
2. **Model**: a Flax GPT-2 from ``learners.models`` trained from scratch (tiny by default).
3. **Training**: ``learners.common.make_update(learners.bc.bc_loss_fn)`` with the reference optimiser
   (AdamW b1 0.9, b2 0.95) and the task's BC preset (lr, weight decay, batch size; each can be overridden);
   ``chunk`` updates per jitted ``lax.scan``, minibatches drawn uniformly with replacement in-graph. A tqdm
   bar advances between chunks; metrics go to a JSON-lines file.
4. **Evaluation** (``evaluate_maze``): the reference's protocol, every one of the 25 maze starts
   (``GroupedEnv``: one group per start, fixed through ``MazeParams.start``), ``rollouts`` episodes each,
   one jitted ``rollout`` of ``max_steps + 1`` steps (the longest episode, Failure step included), the first
   episode of every env scored; the mean return is normalised with ``jaxlm_gym.score``. The reference's
   final evaluation samples at temperature 1 with 32 rollouts per start (``maze/bc/eval_bc.py``);
   ``greedy=True`` gives the deterministic (one rollout per start) variant.

Deviations: the reference's evaluation policy (``GPT2PPOPolicy``) does not prepend the BOS it trained with;
here training and evaluation use the same prompt (``bos`` applies to both). Minibatches are sampled with
replacement rather than in shuffled epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass

import jax
import numpy as np
from flax.training import train_state

import jaxlm_gym
from learners.bc import bc_loss_fn
from learners.common import make_optimizer, make_update
from learners.datasets import generate_dataset, maze_expert
from learners.models import GPT2Config, init_params, make_apply_fn
from learners.presets import get_preset
from learners.rollout import (
    GroupedEnv,
    VocabMap,
    bc_batch,
    first_episode_mask,
    first_episode_returns,
    make_token_policy,
    rollout,
    stack_params,
    stop_token_id,
)

TASKS = ("maze-fo", "maze-po")


@dataclass(frozen=True)
class BCRunConfig:
    """One BC run. ``None`` optimiser fields take the task's BC preset (``learners.presets``)."""

    task: str = "maze-fo"
    seed: int = 0
    # data (in-graph recipe)
    data_envs: int = 1024
    data_steps: int = 128
    epsilon: float = 0.5
    bos: bool = True
    # model (GPT-2 from scratch over the task's compact vocabulary)
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    # optimisation
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    num_updates: int = 1000
    chunk: int = 100
    # decoding and evaluation
    max_new_tokens: int | None = None  # None: the preset's max_output_length
    greedy: bool = True
    temperature: float = 1.0
    eval_rollouts: int = 1  # per start
    eval_every: int | None = None  # in chunks; None = only at the end
    metrics_path: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("data_envs", "data_steps", "num_updates", "chunk", "eval_rollouts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.num_updates % self.chunk:
            raise ValueError(f"num_updates ({self.num_updates}) must be a multiple of chunk ({self.chunk})")


# ----------------------------------------------------------------------------------------------------
# pieces


def maze_starts(vec_env) -> list[tuple[int, int]]:
    """The 25 start cells of the maze in the reference's order (``np.argwhere`` order, goal removed)."""
    goal = tuple(int(x) for x in np.asarray(vec_env.params.goal).reshape(-1))
    return [tuple(int(v) for v in c) for c in vec_env.env.free_cells if tuple(int(v) for v in c) != goal]


def make_eval_env(task: str, rollouts_per_start: int, **config) -> GroupedEnv:
    """``GroupedEnv`` with one group of ``rollouts_per_start`` envs per maze start (starts fixed)."""
    base = jaxlm_gym.make_vec(task, rollouts_per_start, obs_mode="tokens", action_mode="tokens", **config)
    return GroupedEnv(base, stack_params(base.params, start=maze_starts(base)))


def evaluate_maze(eval_env: GroupedEnv, policy_fn, params, key, *, bos_id=None, history_len=None) -> dict:
    """Every start x ``rollouts`` first-episode returns under ``policy_fn``; mean return and normalised score."""
    steps = int(np.asarray(eval_env.inner.params.max_steps_in_episode)) + 1
    t0 = time.perf_counter()
    traj = rollout(eval_env, policy_fn, params, key, steps, bos_id=bos_id, history_len=history_len)
    returns, finished = first_episode_returns(traj)
    returns = np.asarray(jax.device_get(returns)).reshape(eval_env.groups, -1)
    wall = time.perf_counter() - t0
    per_start = returns.mean(axis=1)
    valid = np.asarray(traj.info["valid_action"]) if "valid_action" in traj.info else None
    mean = float(per_start.mean())
    return {"mean_return": mean, "score": float(jaxlm_gym.score.normalize(eval_env.id, mean)),
            "per_start_return": [float(x) for x in per_start], "finished": float(np.mean(finished)),
            "success": float(np.mean(jax.device_get(_first_success(traj)))),
            "valid_action_rate": None if valid is None else float(valid.mean()),
            "env_steps": int(steps * eval_env.num_envs), "wall_s": wall}


def _first_success(traj):
    """bool[N]: the first episode ended on the goal (terminated, not truncated)."""
    keep = first_episode_mask(traj.done)
    return (traj.terminated & keep).any(axis=0)


def make_train_chunk(update, batch_size: int, chunk: int):
    """``chunk(state, data, key) -> (state, metrics)``: ``chunk`` updates on minibatches drawn in-graph from
    ``data`` (dict of ``[M, ...]`` arrays), one jitted ``lax.scan``; metrics are stacked ``[chunk]``."""

    def one(carry, key):
        state, data = carry
        m = data["input_ids"].shape[0]
        idx = jax.random.randint(key, (batch_size,), 0, m)
        batch = {k: data[k][idx] for k in ("input_ids", "attention_mask", "action_mask")}
        state, metrics = update(state, batch)
        return (state, data), metrics

    @jax.jit
    def run(state, data, key):
        (state, _), metrics = jax.lax.scan(one, (state, data), jax.random.split(key, chunk))
        return state, metrics

    return run


class _Log:
    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (open for the whole run)

    def __call__(self, **row):
        if self.f:
            self.f.write(json.dumps(row) + "\n")
            self.f.flush()

    def close(self):
        if self.f:
            self.f.close()


# ----------------------------------------------------------------------------------------------------
# driver


def train_bc(cfg: BCRunConfig) -> dict:
    """Run ``cfg`` end to end; returns a summary (losses, throughput, evaluation, score) and the params."""
    preset = get_preset("bc", cfg.task)
    lr = cfg.lr if cfg.lr is not None else preset.lr
    wd = cfg.weight_decay if cfg.weight_decay is not None else preset.weight_decay
    batch_size = cfg.batch_size if cfg.batch_size is not None else preset.batch_size
    max_new = cfg.max_new_tokens if cfg.max_new_tokens is not None else (preset.max_output_length or 8)
    log = _Log(cfg.metrics_path)
    key = jax.random.PRNGKey(cfg.seed)
    k_data, k_init, k_train, k_eval = jax.random.split(key, 4)

    # ---- data
    data_env = jaxlm_gym.make_vec(cfg.task, cfg.data_envs, obs_mode="tokens", action_mode="tokens")
    bos = data_env.tokenizer.eos_id if cfg.bos else None
    vocab = VocabMap.for_env(data_env)
    expert = maze_expert(data_env)
    t0 = time.perf_counter()
    traj = generate_dataset(data_env, expert, k_data, cfg.data_steps, cfg.epsilon, bos_id=bos)
    data = jax.block_until_ready(bc_batch(traj, vocab))
    data_wall = time.perf_counter() - t0  # compile included
    t0 = time.perf_counter()
    jax.block_until_ready(generate_dataset(data_env, expert, jax.random.fold_in(k_data, 1), cfg.data_steps,
                                           cfg.epsilon, bos_id=bos))
    data_run = time.perf_counter() - t0
    n_trans = cfg.data_steps * cfg.data_envs
    done = np.asarray(traj.done)
    first_ret, first_done = jax.device_get(first_episode_returns(traj))
    data_mean = float(first_ret[first_done].mean()) if first_done.any() else None
    data_stats = {"transitions": n_trans, "episodes": int(done.sum()),
                  "mean_step_reward": float(np.asarray(traj.reward).mean()),
                  # the data's average return (each env's first episode, uniform starts) and its score
                  "mean_return": data_mean, "first_episodes_finished": float(first_done.mean()),
                  "score": None if data_mean is None else float(jaxlm_gym.score.normalize(cfg.task, data_mean)),
                  "transitions_per_min": n_trans / data_run * 60, "env_steps_per_s": n_trans / data_run,
                  "gen_wall_s_with_compile": data_wall}
    del traj
    log(event="data", **data_stats)

    # ---- model
    width = data["input_ids"].shape[1]
    mcfg = GPT2Config(vocab_size=vocab.size, n_positions=max(64, width + max_new), n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head)
    params = init_params(mcfg, k_init)
    state = train_state.TrainState.create(apply_fn=make_apply_fn(mcfg), params=params,
                                          tx=make_optimizer(lr, wd))
    update = make_update(bc_loss_fn, None)
    chunk_fn = make_train_chunk(update, batch_size, cfg.chunk)

    stop = stop_token_id(data_env)
    policy = make_token_policy(mcfg, stop_token_id=stop, pad_token_id=data_env.pad_id, max_new_tokens=max_new,
                               vocab=vocab, greedy=cfg.greedy, temperature=cfg.temperature)
    eval_env = make_eval_env(cfg.task, cfg.eval_rollouts)

    # ---- train
    n_chunks = cfg.num_updates // cfg.chunk
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.num_updates, desc=f"BC {cfg.task}", unit="upd")
    losses, evals = [], []
    t_train = 0.0
    for c in range(n_chunks):
        t0 = time.perf_counter()
        state, metrics = chunk_fn(state, data, jax.random.fold_in(k_train, c))
        metrics = jax.device_get(metrics)
        dt = time.perf_counter() - t0
        if c > 0:  # the first chunk carries the compile
            t_train += dt
        loss = float(np.mean(metrics["loss"]))
        losses.append(loss)
        step = (c + 1) * cfg.chunk
        log(event="train", step=step, loss=loss, loss_last=float(metrics["loss"][-1]),
            grad_norm=float(np.mean(metrics["grad_norm"])), chunk_wall_s=dt)
        if bar is not None:
            bar.update(cfg.chunk)
            bar.set_postfix(loss=f"{loss:.4f}")
        if cfg.eval_every and (c + 1) % cfg.eval_every == 0 and c + 1 < n_chunks:
            ev = evaluate_maze(eval_env, policy, state.params, jax.random.fold_in(k_eval, c), bos_id=bos)
            evals.append({"step": step, **ev})
            log(event="eval", step=step, **{k: v for k, v in ev.items() if k != "per_start_return"})
    if bar is not None:
        bar.close()

    # ---- final evaluation
    ev = evaluate_maze(eval_env, policy, state.params, k_eval, bos_id=bos)
    evals.append({"step": cfg.num_updates, **ev})
    log(event="eval", step=cfg.num_updates, **{k: v for k, v in ev.items() if k != "per_start_return"})
    # steady-state eval throughput (the first call above compiled)
    ev2 = evaluate_maze(eval_env, policy, state.params, jax.random.fold_in(k_eval, 10**6), bos_id=bos)
    updates_timed = cfg.num_updates - cfg.chunk
    summary = {
        "config": dataclasses.asdict(cfg), "lr": lr, "weight_decay": wd, "batch_size": batch_size,
        "model": dataclasses.asdict(mcfg), "vocab_size": vocab.size, "data": data_stats,
        "loss_first_chunk": losses[0], "loss_last_chunk": losses[-1],
        "updates_per_s": updates_timed / t_train if t_train > 0 else None,
        "eval": {k: v for k, v in ev.items()}, "evals": evals,
        "eval_env_steps_per_s": ev2["env_steps"] / ev2["wall_s"],
        "score": ev["score"], "mean_return": ev["mean_return"],
    }
    log(event="summary", **{k: v for k, v in summary.items() if k not in ("evals", "eval")})
    log.close()
    summary["params"] = state.params
    summary["policy"] = policy
    summary["vocab"] = vocab
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    fields = {f.name: f for f in dataclasses.fields(BCRunConfig)}
    for name, f in fields.items():
        flag = "--" + name.replace("_", "-")
        if f.type in ("bool",):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=f.default)
        elif name in ("lr", "weight_decay", "temperature", "epsilon"):
            p.add_argument(flag, type=float, default=f.default)
        elif name in ("task", "metrics_path"):
            p.add_argument(flag, type=str, default=f.default)
        else:
            p.add_argument(flag, type=int, default=f.default)
    args = p.parse_args(argv)
    cfg = BCRunConfig(**{k: getattr(args, k) for k in fields})
    out = train_bc(cfg)
    print(json.dumps({k: v for k, v in out.items() if k not in ("params", "policy", "vocab", "evals")}, indent=1,
                     default=str))


if __name__ == "__main__":
    main()
