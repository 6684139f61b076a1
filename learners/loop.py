"""Pieces every training driver shares: jitted chunks of updates, the host loop around them (progress bar,
JSON-lines metrics, periodic evaluation, checkpoints) and the in-graph data recipe.

A driver's work is a sequence of *chunks*: one jitted call runs ``chunk`` updates as a ``lax.scan`` (offline
learners draw their minibatches in-graph; online learners also roll the env out in the same program). Between
chunks the host advances a tqdm bar, writes a metrics row and, every ``eval_every`` chunks, evaluates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

import jaxlm_gym
from learners.datasets import generate_dataset, task_expert
from learners.rollout import VocabMap, first_episode_returns


def make_train_chunk(update, batch_size: int, chunk: int, keys: Sequence[str] | None = None):
    """``chunk(state, data, key) -> (state, metrics)``: ``chunk`` updates on minibatches of ``batch_size`` rows
    drawn uniformly (with replacement) in-graph from ``data`` (dict of ``[M, ...]`` arrays), one jitted
    ``lax.scan``; metrics are stacked ``[chunk]``. ``keys``: the data fields a batch carries (default: all)."""

    def one(carry, key):
        state, data = carry
        m = next(iter(data.values())).shape[0]
        idx = jax.random.randint(key, (batch_size,), 0, m)
        batch = {k: data[k][idx] for k in (keys if keys is not None else data)}
        state, metrics = update(state, batch)
        return (state, data), metrics

    @jax.jit
    def run(state, data, key):
        (state, _), metrics = jax.lax.scan(one, (state, data), jax.random.split(key, chunk))
        return state, metrics

    return run


class MetricsLog:
    """Append JSON lines to ``path`` (nothing when ``path`` is None); one row per call."""

    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (open for the whole run)

    def __call__(self, **row):
        if self.f:
            self.f.write(json.dumps(row, default=float) + "\n")
            self.f.flush()

    def close(self):
        if self.f:
            self.f.close()


def run_chunks(chunk_fn: Callable, state, key, *, num_chunks: int, chunk: int, log: MetricsLog,
               desc: str, progress: bool = True, eval_fn: Callable | None = None, eval_every: int | None = None,
               after_chunk: Callable | None = None, extra_metrics: Callable | None = None,
               checkpointer=None, save_every: int | None = None, config: dict | None = None):
    """The host loop: ``state, metrics = chunk_fn(state, fold_in(key, c))`` for ``c < num_chunks``.

    Logs the chunk's mean metrics (``event="train"``); every ``eval_every`` chunks (not the last one) calls
    ``eval_fn(state, c) -> dict`` and logs it (``event="eval"``); ``after_chunk(state, c, row)`` runs last.

    ``checkpointer`` (a ``learners.checkpoints.Checkpointer``): the state is saved at every evaluation (with
    its ``score``, so ``best_step()`` is the best evaluated state) and every ``save_every`` chunks; a
    directory that already holds a checkpoint *resumes*: the latest state is restored and the loop goes on
    from the chunk after it (chunk ``c`` draws its key from ``fold_in(key, c)`` either way, so a resumed run
    follows the same key sequence). Steps are counted in updates (``(c + 1) * chunk``).
    Returns ``(state, rows, evals, seconds of the chunks after the first run here)`` (that one compiles).
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_chunks * chunk, desc=desc, unit="upd")
    rows, evals = [], []
    t_train = 0.0
    start = 0
    if checkpointer is not None and checkpointer.latest_step() is not None:
        last = checkpointer.latest_step()
        state = checkpointer.restore(state, last)
        start = min(last // chunk, num_chunks)
        log(event="resume", step=last)
        if bar is not None:
            bar.update(start * chunk)
    for c in range(start, num_chunks):
        t0 = time.perf_counter()
        state, metrics = chunk_fn(state, jax.random.fold_in(key, c))
        metrics = jax.device_get(metrics)
        dt = time.perf_counter() - t0
        if c > start:
            t_train += dt
        row = {k: float(np.mean(v)) for k, v in metrics.items() if np.ndim(v) >= 1 or np.isscalar(v)}
        if extra_metrics is not None:
            row.update(extra_metrics(metrics))
        row = {"step": (c + 1) * chunk, **row, "chunk_wall_s": dt}
        rows.append(row)
        log(event="train", **row)
        if bar is not None:
            bar.update(chunk)
            if "loss" in row:
                bar.set_postfix(loss=f"{row['loss']:.4f}")
        if eval_fn is not None and eval_every and (c + 1) % eval_every == 0 and c + 1 < num_chunks:
            ev = eval_fn(state, c)
            evals.append({"step": row["step"], **ev})
            log(event="eval", step=row["step"], **{k: v for k, v in ev.items() if k != "per_start_return"})
            if checkpointer is not None:
                checkpointer.save(row["step"], state, metrics=_scalars(ev), config=config)
        elif checkpointer is not None and save_every and (c + 1) % save_every == 0:
            checkpointer.save(row["step"], state, metrics={"loss": row.get("loss")}, config=config)
        if after_chunk is not None:
            after_chunk(state, c, row)
    if bar is not None:
        bar.close()
    return state, rows, evals, t_train


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) or v is None}


def save_final(checkpointer, step: int, state, ev: dict, config: dict | None = None) -> int | None:
    """Save the final state with its evaluation (``checkpointer`` may be None); returns the best step."""
    if checkpointer is None:
        return None
    if checkpointer.latest_step() != step:
        checkpointer.save(step, state, metrics=_scalars(ev), config=config)
    return checkpointer.best_step()


def open_checkpointer(directory: str | None):
    """A ``learners.checkpoints.Checkpointer`` on ``directory`` (None: no checkpoints)."""
    if directory is None:
        return None
    from learners.checkpoints import Checkpointer
    return Checkpointer(directory)


def config_from_cli(cls, argv=None, description: str | None = None):
    """A run-config dataclass from the command line: one ``--flag-name`` per field, typed from the field's
    annotation (``bool`` takes true/false/1/0/yes/no; ``int``/``float``, optional or not; anything else is a
    string); defaults are the dataclass's."""
    p = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if kind == "bool":
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=f.default)
        elif kind.startswith("float"):
            p.add_argument(flag, type=float, default=f.default)
        elif kind.startswith("int"):
            p.add_argument(flag, type=int, default=f.default)
        else:
            p.add_argument(flag, type=str, default=f.default)
    args = p.parse_args(argv)
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def print_summary(out: dict, skip: Sequence[str] = ("params", "policy", "policy_params", "vocab", "bc", "evals",
                                                   "rounds")) -> None:
    """The JSON-able part of a driver's summary, on stdout."""
    print(json.dumps({k: v for k, v in out.items() if k not in skip}, indent=1, default=str))


# ----------------------------------------------------------------------------------------------------
# The data recipe


def score_average(task: str, data_mean_return: float | None) -> float | None:
    """The dataset average a ``task``'s scores are normalised with: None (the reference's constant) for tasks
    that have one, else the training data's mean return (``jaxlm_gym.score.NATURAL_BOUNDS`` tasks: Wordle, Text-Nav)."""
    return None if task in jaxlm_gym.score.NORMALIZATION else data_mean_return


def task_data(task: str, data_envs: int, data_steps: int, epsilon: float, key, bos: bool = True, sharding=None,
              **config):
    """The reference dataset recipe on ``task`` (the task's expert, ``learners.datasets.EXPERTS``: BFS for
    maze, greedy information gain for Wordle, a shortest completion of the quest for Text-Nav, diluted at
    rate ``epsilon``), in-graph. ``config``: the task's options for ``make_vec`` (e.g. Wordle's ``word_list``).

    Returns ``(data_env, traj, vocab, bos_id, stats)``: the tokens vec env, the ``Trajectory``
    ``[data_steps, data_envs]`` (env batch placed by ``sharding``, e.g. ``learners.parallel.env_sharding``),
    the env's compact ``VocabMap``, the BOS id (GPT-2's EOS, or None) and the data's statistics (mean return
    of the first episodes, the average scores are normalised with (``score_average``) and the data's score,
    throughput).
    """
    data_env = jaxlm_gym.make_vec(task, data_envs, obs_mode="tokens", action_mode="tokens", sharding=sharding,
                                  **config)
    expert = task_expert(data_env)  # before the vocab: a task without an expert fails here, fast
    bos_id = data_env.tokenizer.eos_id if bos else None
    vocab = VocabMap.for_env(data_env)
    t0 = time.perf_counter()
    traj = jax.block_until_ready(generate_dataset(data_env, expert, key, data_steps, epsilon, bos_id=bos_id))
    wall_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(generate_dataset(data_env, expert, jax.random.fold_in(key, 1), data_steps, epsilon,
                                           bos_id=bos_id))
    run = time.perf_counter() - t0
    n_trans = data_steps * data_envs
    first_ret, first_done = jax.device_get(first_episode_returns(traj))
    mean = float(first_ret[first_done].mean()) if first_done.any() else None
    average = score_average(task, mean)
    score = None if mean is None else float(jaxlm_gym.score.normalize(task, mean, average))
    stats = {"transitions": n_trans, "episodes": int(np.asarray(traj.done).sum()),
             "mean_step_reward": float(np.asarray(traj.reward).mean()),
             # the data's average return (each env's first episode) and its score
             "mean_return": mean, "first_episodes_finished": float(first_done.mean()),
             "score_average": average, "score": score,
             "transitions_per_min": n_trans / run * 60, "env_steps_per_s": n_trans / run,
             "gen_wall_s_with_compile": wall_compile}
    return data_env, traj, vocab, bos_id, stats
