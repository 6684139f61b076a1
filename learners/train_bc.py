"""BC end to end on a token env: in-graph dataset -> jitted BC training chunks -> in-graph evaluation.

    python -m learners.train_bc --num-updates 2000 --metrics runs/bc.jsonl
    python -m learners.train_bc --task wordle --word-list PATH/wordle_official_400.txt --num-updates 2000
    python -m learners.train_bc --task text-nav-fo --num-updates 2000

Tasks: ``maze-fo``, ``maze-po``, ``wordle``, ``text-nav-fo`` and ``text-nav-po`` (the tasks with a dataset
expert, ``learners.datasets.EXPERTS``).

1. **Data**: ``learners.datasets.generate_dataset`` runs the reference recipe (the task's expert: BFS for
   maze, greedy information gain for Wordle, a shortest completion of the quest for Text-Nav, diluted with
   uniformly random actions (of all the task's actions, admissible or not) at rate ``epsilon``) over
   ``data_envs`` envs for ``data_steps`` steps, in one jitted scan, and ``learners.rollout.bc_batch`` lays the
   transitions out as ``[BOS] obs action`` rows in the model's compact vocabulary (``VocabMap``). The
   reference's FO BC trains on (state -> action) pairs with the prompt as ``bos_token + state``
   (``maze/bc/fully_observed_bc.py``); ``bos=True`` does the same. Wordle's observation is the whole
   ``ReformatWordleEnvironment`` history so far, so its rows are the per-action prefixes of the reference's
   whole-sequence BC (``wordle/bc/train_bc_gpt2.py``: the loss on every action given the text before it).
   ``word_list`` (Wordle): the word list file; the benchmark's is ``wordle_official_400.txt`` (431 words);
   None takes the registry's default (the official 2,315 / 12,972 lists, where the expert is slow).
2. **Model**: a Flax GPT-2 from ``learners.models`` trained from scratch (tiny by default); ``init="lm"`` first
   pretrains it on the data's transition texts (``learners.pretrain``), a stand-in for the pretrained GPT-2
   the reference fine-tunes.
3. **Training**: ``learners.common.make_update(learners.bc.bc_loss_fn)`` with the reference optimiser
   (AdamW b1 0.9, b2 0.95) and the task's BC preset (lr, weight decay, batch size; each can be overridden);
   ``chunk`` updates per jitted ``lax.scan``, minibatches drawn uniformly with replacement in-graph. A tqdm
   bar advances between chunks; metrics go to a JSON-lines file. ``checkpoint_dir``: orbax checkpoints
   (``learners.checkpoints``) at each evaluation (with its score: ``best_step``) and every ``save_every``
   chunks; rerunning on the same directory resumes. ``data_parallel``: the env batch and the minibatch rows
   split over every device on one mesh axis, parameters replicated (``learners.parallel``).
4. **Evaluation** (``evaluate_policy``): maze: the reference's protocol, every one of the 25 maze starts
   (``GroupedEnv``: one group per start, fixed through ``MazeParams.start``), ``rollouts`` episodes each,
   one jitted ``rollout`` of ``max_steps + 1`` steps (the longest episode, Failure step included), the first
   episode of every env scored; the mean return is normalised with ``jaxlm_gym.score``. The reference's
   final evaluation samples at temperature 1 with 32 rollouts per start (``maze/bc/eval_bc.py``);
   ``greedy=True`` gives the deterministic (one rollout per start) variant. Wordle has no starts (the hidden
   word is drawn at reset): ``EVAL_BLOCK x rollouts`` episodes of ``max_steps`` steps (the reference's
   ``text_env_eval`` runs 32 sampled rollouts); its score uses the natural bounds -6..0 with the training
   data's mean return as the average (``jaxlm_gym.score``: the reference has no Wordle constants).
   Text-Nav likewise: ``EVAL_BLOCK x rollouts`` episodes from random resets (uniform start room), 15 steps
   (the reference collector's cap, the env's ``max_steps_in_episode``), success from ``info["success"]``
   (won, not lost by eating the stale food), scores on the natural bounds 0..1 with the data's mean return
   (its success rate) as the average.

**Filtered BC** (``filter=``): the same driver on the transitions of the episodes a rule keeps
(``learners.datasets.filter_steps``): maze keeps the successful episodes (last reward 0, the goal), as the
reference's ``*_filtered_*.jsonl`` files; ``top_fraction`` keeps the best ``filter_fraction`` by return
(Wordle); Text-Nav keeps the won episodes (``filter_value=1``: last reward 1, the win; the reference has no
Text-Nav filtered file, so this is our reading). Unfinished episodes at the end of the data window are never
kept.

Deviations: the reference's evaluation policy (``GPT2PPOPolicy``) does not prepend the BOS it trained with;
here training and evaluation use the same prompt (``bos`` applies to both). Minibatches are sampled with
replacement rather than in shuffled epochs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import numpy as np
from flax.training import train_state

import jaxlm_gym
from learners.bc import FILTER_RULES, bc_loss_fn
from learners.common import make_optimizer, make_update
from learners.datasets import episode_facts, filter_steps
from learners.loop import (
    MetricsLog,
    config_from_cli,
    make_train_chunk,
    open_checkpointer,
    print_summary,
    run_chunks,
    save_final,
    task_data,
)
from learners.models import GPT2Config, init_params, make_apply_fn
from learners.parallel import data_mesh, env_sharding, make_data_parallel_chunk, replicate, shard_rows
from learners.presets import get_preset
from learners.pretrain import pretrain_lm, transition_rows
from learners.rollout import (
    GroupedEnv,
    bc_batch,
    first_episode_mask,
    first_episode_returns,
    make_token_policy,
    rollout,
    stack_params,
    stop_token_id,
)

TASKS = ("maze-fo", "maze-po", "wordle", "text-nav-fo", "text-nav-po")
#: Tasks evaluated on episodes from random resets (no fixed start cells as maze's).
RANDOM_RESET_TASKS = ("wordle", "text-nav-fo", "text-nav-po")
#: Evaluation episodes per "rollout" of the ``RANDOM_RESET_TASKS``.
EVAL_BLOCK = 32
#: BC model starts: a fresh GPT-2, or one pretrained on the data's transition texts (``learners.pretrain``).
BC_INITS = ("scratch", "lm")


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
    # model (GPT-2 over the task's compact vocabulary): "scratch" starts from a fresh initialisation, "lm" from a
    # GPT-2 first pretrained on the data's transition texts (``learners.pretrain``; lm_updates x lm_batch at lm_lr,
    # on all the data even for filtered BC), our stand-in for the reference's pretrained GPT-2
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    init: str = "scratch"
    lm_updates: int = 2000
    lm_batch: int = 64
    lm_lr: float = 1e-3
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
    evaluate: bool = True  # False: train only (no evaluation rollouts; score None)
    # filtered BC: None = plain BC; else a rule of learners.bc.FILTER_RULES applied to whole episodes
    filter: str | None = None
    filter_value: float = 0.0  # "last_reward": the last reward an episode must end with (maze goal: 0)
    filter_fraction: float = 0.1  # "top_fraction": the share of episodes kept (by return)
    # orbax checkpoints (saved at each evaluation with its score, and every save_every chunks); an existing
    # directory resumes from its latest step
    checkpoint_dir: str | None = None
    save_every: int | None = None
    # data-parallel over every device (learners.parallel): env batch and minibatch rows split on one axis
    data_parallel: bool = False
    # Wordle: the word list file (None: the registry's default lists)
    word_list: str | None = None

    def __post_init__(self):
        check_task(self)
        if self.init not in BC_INITS:
            raise ValueError(f"init must be one of {BC_INITS}, got {self.init!r}")
        for name in ("data_envs", "data_steps", "num_updates", "chunk", "eval_rollouts", "lm_updates", "lm_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.filter is not None and self.filter not in FILTER_RULES:
            raise ValueError(f"filter must be None or one of {FILTER_RULES}, got {self.filter!r}")
        if self.num_updates % self.chunk:
            raise ValueError(f"num_updates ({self.num_updates}) must be a multiple of chunk ({self.chunk})")


def check_task(cfg, tasks=TASKS) -> None:
    """A run config's ``task`` is one of ``tasks`` and its ``word_list`` is set only for Wordle."""
    if cfg.task not in tasks:
        raise ValueError(f"task must be one of {tasks} (the tasks with a dataset expert), got {cfg.task!r}")
    if getattr(cfg, "word_list", None) is not None and cfg.task != "wordle":
        raise ValueError(f"word_list is a Wordle option; task is {cfg.task!r}")


def task_config(cfg) -> dict:
    """``make_vec`` options of a run config's task (Wordle: ``word_list``)."""
    word_list = getattr(cfg, "word_list", None)
    return {} if word_list is None else {"word_list": word_list}


def bc_start_config(cfg, chunk: int = 100) -> BCRunConfig:
    """The BC run a later learner starts from: ``cfg``'s task, seed, data and model fields (``cfg.bc_init`` its
    start, with the ``lm_*`` pretraining fields), ``cfg.bc_updates`` updates in chunks of ``chunk`` (or one chunk
    when it does not divide them)."""
    return BCRunConfig(task=cfg.task, seed=cfg.seed, data_envs=cfg.data_envs, data_steps=cfg.data_steps,
                       epsilon=cfg.epsilon, bos=cfg.bos, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                       init=getattr(cfg, "bc_init", "scratch"),
                       **{k: getattr(cfg, k) for k in ("lm_updates", "lm_batch", "lm_lr") if hasattr(cfg, k)},
                       num_updates=cfg.bc_updates, chunk=chunk if cfg.bc_updates % chunk == 0 else cfg.bc_updates,
                       max_new_tokens=cfg.max_new_tokens, progress=cfg.progress,
                       word_list=getattr(cfg, "word_list", None))


# ----------------------------------------------------------------------------------------------------
# pieces


def maze_starts(vec_env) -> list[tuple[int, int]]:
    """The 25 start cells of the maze in the reference's order (``np.argwhere`` order, goal removed)."""
    goal = tuple(int(x) for x in np.asarray(vec_env.params.goal).reshape(-1))
    return [tuple(int(v) for v in c) for c in vec_env.env.free_cells if tuple(int(v) for v in c) != goal]


def make_eval_env(task: str, rollouts_per_start: int, **config):
    """The evaluation envs: maze: a ``GroupedEnv`` with one group of ``rollouts_per_start`` envs per start
    (starts fixed); Wordle and Text-Nav (``RANDOM_RESET_TASKS``): ``EVAL_BLOCK * rollouts_per_start`` envs
    (hidden word or start room drawn at reset)."""
    if task in RANDOM_RESET_TASKS:
        return jaxlm_gym.make_vec(task, EVAL_BLOCK * rollouts_per_start, obs_mode="tokens",
                                  action_mode="tokens", **config)
    base = jaxlm_gym.make_vec(task, rollouts_per_start, obs_mode="tokens", action_mode="tokens", **config)
    return GroupedEnv(base, stack_params(base.params, start=maze_starts(base)))


def evaluate_policy(eval_env, policy_fn, params, key, *, bos_id=None, history_len=None, average=None) -> dict:
    """The first-episode returns of every env of ``eval_env`` (``make_eval_env``) under ``policy_fn``: mean
    return (maze: the mean of the per-start means) and normalised score (``average``: the dataset average for
    tasks without a reference constant, see ``learners.loop.score_average``)."""
    grouped = isinstance(eval_env, GroupedEnv)
    base = eval_env.inner if grouped else eval_env
    # maze: the cap is checked before the action (L2), so the longest episode has one more step
    steps = int(np.asarray(base.params.max_steps_in_episode)) + (1 if base.id.startswith("maze") else 0)
    t0 = time.perf_counter()
    traj = rollout(eval_env, policy_fn, params, key, steps, bos_id=bos_id, history_len=history_len)
    returns, finished = first_episode_returns(traj)
    returns = np.asarray(jax.device_get(returns)).reshape(eval_env.groups if grouped else 1, -1)
    wall = time.perf_counter() - t0
    per_start = returns.mean(axis=1)
    valid = np.asarray(traj.info["valid_action"]) if "valid_action" in traj.info else None
    mean = float(per_start.mean())
    return {"mean_return": mean, "score": float(jaxlm_gym.score.normalize(base.id, mean, average)),
            "per_start_return": [float(x) for x in per_start], "finished": float(np.mean(finished)),
            "success": float(np.mean(jax.device_get(_first_success(traj)))),
            "valid_action_rate": None if valid is None else float(valid.mean()),
            "env_steps": int(steps * eval_env.num_envs), "wall_s": wall}


def _first_success(traj):
    """bool[N]: the first episode ended on the goal (terminated, not truncated). Wordle ends terminated after
    six tries too, so there it is read from ``info["solved"]``; Text-Nav also ends terminated when the stale
    food is eaten, so there from ``info["success"]``."""
    keep = first_episode_mask(traj.done)
    won = next((traj.info[k] for k in ("solved", "success") if k in traj.info), traj.terminated)
    return (won & keep).any(axis=0)


# ----------------------------------------------------------------------------------------------------
# driver


def train_bc(cfg: BCRunConfig) -> dict:
    """Run ``cfg`` end to end; returns a summary (losses, throughput, evaluation, score) and the params."""
    preset = get_preset("bc", cfg.task)
    lr = cfg.lr if cfg.lr is not None else preset.lr
    wd = cfg.weight_decay if cfg.weight_decay is not None else preset.weight_decay
    batch_size = cfg.batch_size if cfg.batch_size is not None else preset.batch_size
    max_new = cfg.max_new_tokens if cfg.max_new_tokens is not None else (preset.max_output_length or 8)
    log = MetricsLog(cfg.metrics_path)
    key = jax.random.PRNGKey(cfg.seed)
    k_data, k_init, k_train, k_eval = jax.random.split(key, 4)

    # ---- data
    mesh = data_mesh() if cfg.data_parallel else None
    data_env, traj, vocab, bos, data_stats = task_data(cfg.task, cfg.data_envs, cfg.data_steps, cfg.epsilon,
                                                       k_data, cfg.bos,
                                                       sharding=None if mesh is None else env_sharding(mesh),
                                                       **task_config(cfg))
    average = data_stats["score_average"]
    data = bc_batch(traj, vocab)
    width = data["input_ids"].shape[1]
    mcfg = GPT2Config(vocab_size=vocab.size, n_positions=max(64, width + max_new), n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head)
    params = lm_losses = None
    if cfg.init == "lm":  # pretrained on every transition's text, before any filtering
        t_lm = time.perf_counter()
        lm_rows = transition_rows(traj, vocab, mcfg.n_positions, drop_next_first=bos is not None)
        params, lm_losses = pretrain_lm(mcfg, lm_rows, jax.random.fold_in(k_init, 1), cfg.lm_updates, cfg.lm_batch,
                                        cfg.lm_lr, chunk=cfg.chunk, progress=cfg.progress,
                                        log=lambda **row: log(phase="lm_pretrain", **row))
        del lm_rows
        log(event="lm_pretrain", loss_first_chunk=lm_losses[0], loss_last_chunk=lm_losses[-1],
            wall_s=time.perf_counter() - t_lm)
    if cfg.filter is not None:
        # filtered BC: only the transitions of the episodes the rule keeps (time-major rows, as bc_batch)
        keep = filter_steps(episode_facts(traj.reward, traj.done, traj.terminated), cfg.filter,
                            last_reward_value=cfg.filter_value, fraction=cfg.filter_fraction).reshape(-1)
        if not keep.any():
            raise ValueError(f"filter {cfg.filter!r} kept no transition of the dataset")
        data = {k: v[np.flatnonzero(keep)] for k, v in data.items()}
        data_stats["kept_transitions"] = int(keep.sum())
        data_stats["kept_fraction"] = float(keep.mean())
    data = jax.block_until_ready(data)
    del traj
    log(event="data", **data_stats)

    # ---- model
    if params is None:
        params = init_params(mcfg, k_init)
    state = train_state.TrainState.create(apply_fn=make_apply_fn(mcfg), params=params,
                                          tx=make_optimizer(lr, wd))
    update = make_update(bc_loss_fn, None)
    keys = ("input_ids", "attention_mask", "action_mask")
    if mesh is None:
        chunk_fn = make_train_chunk(update, batch_size, cfg.chunk, keys=keys)
    else:
        data = {k: data[k] for k in keys}
        if data["input_ids"].shape[0] % mesh.devices.size == 0:  # else make_data_parallel_chunk replicates it
            data = shard_rows(data, mesh)
        state = replicate(state, mesh)
        chunk_fn = make_data_parallel_chunk(update, batch_size, cfg.chunk, mesh, keys=keys)
    ckpt = open_checkpointer(cfg.checkpoint_dir)

    stop = stop_token_id(data_env)
    policy = make_token_policy(mcfg, stop_token_id=stop, pad_token_id=data_env.pad_id, max_new_tokens=max_new,
                               vocab=vocab, greedy=cfg.greedy, temperature=cfg.temperature)
    eval_env = make_eval_env(cfg.task, cfg.eval_rollouts, **task_config(cfg))

    def eval_fn(st, c):
        return evaluate_policy(eval_env, policy, st.params, jax.random.fold_in(k_eval, c), bos_id=bos,
                               average=average)

    # ---- train
    name = "BC" if cfg.filter is None else "filtered BC"
    state, rows, evals, t_train = run_chunks(
        lambda st, k: chunk_fn(st, data, k), state, k_train, num_chunks=cfg.num_updates // cfg.chunk,
        chunk=cfg.chunk, log=log, desc=f"{name} {cfg.task}", progress=cfg.progress, eval_fn=eval_fn,
        eval_every=cfg.eval_every, checkpointer=ckpt, save_every=cfg.save_every, config=dataclasses.asdict(cfg))

    # ---- final evaluation
    if cfg.evaluate:
        ev = evaluate_policy(eval_env, policy, state.params, k_eval, bos_id=bos, average=average)
        evals.append({"step": cfg.num_updates, **ev})
        log(event="eval", step=cfg.num_updates, **{k: v for k, v in ev.items() if k != "per_start_return"})
    else:  # training only (tests)
        ev = {"score": None, "mean_return": None, "success": None}
    best_step = save_final(ckpt, cfg.num_updates, state, ev, dataclasses.asdict(cfg))
    # steady-state eval throughput (the first call above compiled)
    ev2 = evaluate_policy(eval_env, policy, state.params, jax.random.fold_in(k_eval, 10**6), bos_id=bos,
                          average=average) if cfg.evaluate else None
    updates_timed = cfg.num_updates - cfg.chunk
    summary = {
        "config": dataclasses.asdict(cfg), "lr": lr, "weight_decay": wd, "batch_size": batch_size,
        "model": dataclasses.asdict(mcfg), "vocab_size": vocab.size, "data": data_stats,
        "lm_losses": lm_losses,
        "loss_first_chunk": rows[0]["loss"] if rows else None,
        "loss_last_chunk": rows[-1]["loss"] if rows else None,
        "updates_per_s": updates_timed / t_train if t_train > 0 else None,
        "eval": {k: v for k, v in ev.items()}, "evals": evals,
        "eval_env_steps_per_s": None if ev2 is None else ev2["env_steps"] / ev2["wall_s"],
        "score": ev["score"], "mean_return": ev["mean_return"], "best_step": best_step,
    }
    log(event="summary", **{k: v for k, v in summary.items() if k not in ("evals", "eval")})
    log.close()
    summary["params"] = state.params
    summary["policy"] = policy
    summary["vocab"] = vocab
    return summary


def main(argv=None):
    print_summary(train_bc(config_from_cli(BCRunConfig, argv, __doc__.split("\n\n")[0])))


if __name__ == "__main__":
    main()
