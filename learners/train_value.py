"""ILQL and MC returns end to end on a token env (maze, Wordle, Text-Nav): in-graph dataset -> value model
trained from the BC model -> evaluation with value-guided decoding.

    python -m learners.train_value --algo ilql --num-updates 2000
    python -m learners.train_value --algo mc --task text-nav-fo --epsilon 0.5

1. **BC first.** As the reference, the value model's GPT-2 base starts from the BC model (``value_init="bc"``;
   ``"scratch"`` starts it from a fresh initialisation, which lifts maze FO ILQL on most training seeds with
   our from-scratch BC models, not on all: see the README; ``"lm"`` starts it from a GPT-2 pretrained on the
   data's transition texts, ``learners.pretrain``), and the frozen BC model is ``pi_beta`` at decoding time.
   ``train_value(cfg, bc=...)`` takes a finished ``train_bc`` run (same task, seed and data settings); without
   one it trains BC first with ``cfg.bc_updates`` updates.
2. **Data.** The same in-graph dataset as BC (same key, so the same transitions), laid out one transition per
   row ``[BOS] obs action`` (``value_batch``):
   - ILQL: each row also carries the *next* row's prompt (``next_input_ids``), so ``Q(s, a)`` bootstraps from
     ``V(s')`` at the next state's last prompt token (the reference's ``TextTrajectoryChain``), zeroed when the
     transition ended the episode (``next_dones``). The last step of the window has no next state: dropped.
   - MC: discounted returns-to-go per action token over the whole episode (gamma per action token), so rows
     of episodes unfinished at the end of the window are dropped.
3. **Training.** ``learners.ilql.make_ilql_update`` (double Q, expectile V, Polyak targets, CQL) or
   ``learners.common.make_update(learners.mc.mc_loss_fn)`` with the task's preset (overridable), ``chunk``
   updates per jitted scan; tqdm bar and JSON-lines metrics between chunks.
4. **Evaluation.** ``learners.rollout.make_value_policy``: ``pi_beta_logits + beta * min(Q1, Q2)`` (MC:
   ``+ beta * Q``) per generated token, as BC's (``learners.train_bc.evaluate_policy``: the 25 maze starts, or
   Wordle / Text-Nav episodes from random resets).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from learners.common import aligned_mask, make_optimizer, make_update
from learners.datasets import episode_facts
from learners.ilql import ILQLState, make_ilql_update
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
from learners.mc import mc_loss_fn, returns_to_go
from learners.models import GPT2Config
from learners.models.heads import ILQL_HEADS, MC_HEADS, init_value_model, make_value_apply_fn
from learners.presets import get_preset
from learners.pretrain import pretrain_lm, transition_rows
from learners.rollout import Trajectory, VocabMap, bc_batch, make_value_policy, stop_token_id
from learners.train_bc import (
    BC_INITS,
    BCRunConfig,
    bc_start_config,
    check_task,
    evaluate_policy,
    make_eval_env,
    task_config,
    train_bc,
)

ALGOS = ("ilql", "mc")
VALUE_INITS = ("bc", "scratch", "lm")


@dataclass(frozen=True)
class ValueRunConfig:
    """One ILQL or MC run. ``None`` fields take the task's preset (``learners.presets``)."""

    algo: str = "ilql"
    task: str = "maze-fo"
    seed: int = 0
    # data (must match the BC run's to reuse its dataset)
    data_envs: int = 1024
    data_steps: int = 128
    epsilon: float = 0.98
    bos: bool = True
    # BC model (trained first when no BC run is given; bc_init: its start, ``BCRunConfig.init``, pretrained with
    # the lm_* fields below when "lm")
    bc_updates: int = 1000
    bc_init: str = "scratch"
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    # the value model's GPT-2 base: "bc" copies the BC model (the reference), "scratch" starts from a fresh
    # initialisation, "lm" from a GPT-2 pretrained on the data's transition texts (``learners.pretrain``;
    # lm_updates x lm_batch at lm_lr); pi_beta is the BC model in every case
    value_init: str = "bc"
    lm_updates: int = 2000
    lm_batch: int = 64
    lm_lr: float = 1e-3
    # key of the value model's initialisation and minibatch order (None: ``seed``); the data, the BC model and
    # the evaluation keep ``seed``'s keys, so two runs differing only here train on the same transitions
    value_seed: int | None = None
    # optimisation and loss (None = preset)
    lr: float | None = None
    batch_size: int | None = None
    gamma: float | None = None
    tau: float | None = None
    cql_weight: float | None = None
    polyak_alpha: float | None = None  # ILQL target-network step (preset 0.005)
    num_updates: int = 1000
    chunk: int = 100
    # decoding and evaluation
    beta: float | None = None
    max_new_tokens: int | None = None
    greedy: bool = True
    temperature: float = 1.0
    eval_rollouts: int = 1
    eval_every: int | None = None
    metrics_path: str | None = None
    progress: bool = True
    evaluate: bool = True  # False: train only (no evaluation rollouts; score None)
    # orbax checkpoints at each evaluation (with its score) and every save_every chunks; resumes if present
    checkpoint_dir: str | None = None
    save_every: int | None = None
    # Wordle: the word list file (None: the registry's default lists)
    word_list: str | None = None

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        check_task(self)
        if self.bc_init not in BC_INITS:
            raise ValueError(f"bc_init must be one of {BC_INITS}, got {self.bc_init!r}")
        if self.value_init not in VALUE_INITS:
            raise ValueError(f"value_init must be one of {VALUE_INITS}, got {self.value_init!r}")
        for name in ("data_envs", "data_steps", "num_updates", "chunk", "eval_rollouts", "bc_updates", "lm_updates",
                     "lm_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_updates % self.chunk:
            raise ValueError(f"num_updates ({self.num_updates}) must be a multiple of chunk ({self.chunk})")

    def preset(self):
        """The task's preset with this run's overrides."""
        p = get_preset(self.algo, self.task)
        over = {k: getattr(self, k) for k in ("lr", "batch_size", "gamma", "beta", "tau", "cql_weight", "polyak_alpha")
                if getattr(self, k) is not None and hasattr(p, k)}
        return dataclasses.replace(p, **over)

    def bc_config(self) -> BCRunConfig:
        return bc_start_config(self, self.chunk)

# ----------------------------------------------------------------------------------------------------
# data layout


def step_bootstraps(reward: jax.Array, done: jax.Array, n_action_tokens: jax.Array, gamma: float) -> jax.Array:
    """``[T, N]``: for each step, the discounted return at the first action token of the *next* step of its
    episode (0 after the episode's last step); ``gamma`` applies once per action token.

    With ``G(t)`` the return at step ``t``'s first action token and ``k_t`` its action's token count,
    ``G(t) = gamma^(k_t - 1) * (r_t + gamma * (1 - done_t) * G(t + 1))``. The window's last step gets 0.
    """

    def body(g_next, x):
        r, d, k = x
        boot = jnp.where(d, 0.0, g_next)
        g = gamma ** (jnp.maximum(k, 1) - 1).astype(jnp.float32) * (r + gamma * boot)
        return g, boot

    n = reward.shape[1]
    _, boots = jax.lax.scan(body, jnp.zeros((n,), jnp.float32),
                            (reward.astype(jnp.float32), done.astype(bool), n_action_tokens), reverse=True)
    return boots


def value_batch(traj: Trajectory, vocab: VocabMap, algo: str, gamma: float) -> dict[str, np.ndarray]:
    """The rows ``algo`` trains on (see the module docstring), as host arrays, time-major row order.

    Both: ``input_ids``, ``attention_mask``, ``action_mask``, ``rewards`` ``[M, W]`` (``bc_batch``'s layout).
    ILQL adds ``next_input_ids``, ``next_attention_mask`` ``[M, P]`` and ``next_dones [M]``; MC adds aligned
    ``returns [M, W - 1]``.
    """
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    t_len, n = traj.reward.shape
    rows = bc_batch(traj, vocab)
    base = {k: rows[k] for k in ("input_ids", "attention_mask", "action_mask", "rewards")}
    if algo == "ilql":
        keep = (t_len - 1) * n  # time-major: the last step's rows are the tail
        p = traj.prompt_tokens.shape[-1]
        out = {k: v[:keep] for k, v in base.items()}
        out["next_input_ids"] = vocab.encode(traj.prompt_tokens[1:]).reshape(-1, p).astype(jnp.int32)
        out["next_attention_mask"] = traj.prompt_mask[1:].reshape(-1, p)
        out["next_dones"] = traj.done[:-1].reshape(-1)
        out["dones"] = out["next_dones"]
        return jax.device_get(out)
    boots = step_bootstraps(traj.reward, traj.done, traj.action_mask.sum(-1), gamma).reshape(-1)
    mask = aligned_mask(base)
    returns = returns_to_go(base["rewards"][:, 1:], mask, gamma, boots)
    complete = np.asarray(episode_facts(traj.reward, traj.done, traj.terminated)["complete"]).reshape(-1)
    idx = np.flatnonzero(complete)
    host = jax.device_get({**base, "returns": returns})
    return {k: v[idx] for k, v in host.items()}


# ----------------------------------------------------------------------------------------------------
# driver


def train_value(cfg: ValueRunConfig, bc: dict | None = None) -> dict:
    """Run ``cfg``; ``bc``: a ``train_bc`` summary with the same task, seed and data settings (trained here
    when None). Returns a summary with the evaluation, throughput and the params."""
    t_start = time.perf_counter()
    preset = cfg.preset()
    batch_size = preset.batch_size or 32  # MC presets give no batch size; the Maze ILQL one (32) is used
    beta = preset.beta if preset.beta is not None else 8.0
    if bc is None:
        bc = train_bc(cfg.bc_config())
    else:
        bcc = bc["config"]
        for f in ("task", "seed", "data_envs", "data_steps", "epsilon", "bos", "word_list"):
            if bcc.get(f) != getattr(cfg, f):
                raise ValueError(f"the BC run's {f}={bcc[f]!r} differs from this run's {getattr(cfg, f)!r}")
        if bcc.get("init", "scratch") != cfg.bc_init:
            raise ValueError(f"the BC run's init={bcc.get('init')!r} differs from this run's bc_init={cfg.bc_init!r}")
    mcfg = GPT2Config(**bc["model"])
    vocab = bc["vocab"]
    max_new = bc["config"]["max_new_tokens"] or get_preset("bc", cfg.task).max_output_length or 8
    log = MetricsLog(cfg.metrics_path)
    key = jax.random.PRNGKey(cfg.seed)
    k_data, _k_init, _k_train, _k_eval = jax.random.split(key, 4)  # the BC run's data key
    k_init, k_train, k_eval = jax.random.split(jax.random.fold_in(key, 7), 3)
    if cfg.value_seed is not None:  # same data and evaluation, another value-model start and batch order
        k_init, k_train, _ = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(cfg.value_seed), 7), 3)

    # ---- data: the BC run's transitions
    data_env, traj, _vocab, bos, data_stats = task_data(cfg.task, cfg.data_envs, cfg.data_steps, cfg.epsilon,
                                                        k_data, cfg.bos, **task_config(cfg))
    average = data_stats["score_average"]
    data = value_batch(traj, vocab, cfg.algo, preset.gamma)
    lm_params = lm_losses = None  # the "lm" base (None: a fresh one unless value_init is "bc")
    if cfg.value_init == "lm":  # pretrain the value model's GPT-2 on the transition texts
        t_lm = time.perf_counter()
        lm_rows = transition_rows(traj, vocab, mcfg.n_positions, drop_next_first=bos is not None)
        lm_params, lm_losses = pretrain_lm(mcfg, lm_rows, jax.random.fold_in(k_init, 1), cfg.lm_updates,
                                           cfg.lm_batch, cfg.lm_lr, chunk=cfg.chunk, progress=cfg.progress,
                                           log=lambda **row: log(phase="lm_pretrain", **row))
        del lm_rows
        log(event="lm_pretrain", loss_first_chunk=lm_losses[0], loss_last_chunk=lm_losses[-1],
            wall_s=time.perf_counter() - t_lm)
    del traj
    data_stats = {**data_stats, "rows": int(data["input_ids"].shape[0])}
    log(event="data", **data_stats)

    # ---- value model from the BC model
    heads = ILQL_HEADS if cfg.algo == "ilql" else MC_HEADS
    apply_fn = make_value_apply_fn(mcfg, heads)
    params = init_value_model(mcfg, k_init, bc["params"] if cfg.value_init == "bc" else lm_params, heads)
    tx = make_optimizer(preset.lr, preset.weight_decay, preset.grad_accum_steps)
    if cfg.algo == "ilql":
        state = ILQLState.create(apply_fn=apply_fn, params=params, tx=tx)
        update = make_ilql_update(preset)
    else:
        state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=tx)
        update = make_update(mc_loss_fn, preset)
    chunk_fn = make_train_chunk(update, batch_size, cfg.chunk)

    policy = make_value_policy(mcfg, beta=beta, stop_token_id=stop_token_id(data_env), pad_token_id=data_env.pad_id,
                               max_new_tokens=max_new, vocab=vocab, heads=heads[:-1] if cfg.algo == "ilql" else heads,
                               greedy=cfg.greedy, temperature=cfg.temperature)
    eval_env = make_eval_env(cfg.task, cfg.eval_rollouts, **task_config(cfg))

    def policy_params(st):
        return {"pi_beta": bc["params"], "value": st.params}

    def eval_fn(st, c):
        return evaluate_policy(eval_env, policy, policy_params(st), jax.random.fold_in(k_eval, c), bos_id=bos,
                               average=average)

    data = jax.device_put(data)
    ckpt = open_checkpointer(cfg.checkpoint_dir)
    state, rows, evals, t_train = run_chunks(
        lambda st, k: chunk_fn(st, data, k), state, k_train, num_chunks=cfg.num_updates // cfg.chunk,
        chunk=cfg.chunk, log=log, desc=f"{cfg.algo.upper()} {cfg.task}", progress=cfg.progress, eval_fn=eval_fn,
        eval_every=cfg.eval_every, checkpointer=ckpt, save_every=cfg.save_every, config=dataclasses.asdict(cfg))

    if cfg.evaluate:
        ev = evaluate_policy(eval_env, policy, policy_params(state), k_eval, bos_id=bos, average=average)
        evals.append({"step": cfg.num_updates, **ev})
        log(event="eval", step=cfg.num_updates, **{k: v for k, v in ev.items() if k != "per_start_return"})
    else:  # training only (tests)
        ev = {"score": None, "mean_return": None, "success": None}
    best_step = save_final(ckpt, cfg.num_updates, state, ev, dataclasses.asdict(cfg))
    ev2 = evaluate_policy(eval_env, policy, policy_params(state), jax.random.fold_in(k_eval, 10**6), bos_id=bos,
                          average=average) if cfg.evaluate else None
    updates_timed = cfg.num_updates - cfg.chunk
    summary = {
        "config": dataclasses.asdict(cfg), "preset": dataclasses.asdict(preset), "batch_size": batch_size,
        "beta": beta, "model": dataclasses.asdict(mcfg), "data": data_stats,
        "loss_first_chunk": rows[0]["loss"] if rows else None,
        "loss_last_chunk": rows[-1]["loss"] if rows else None, "last_metrics": rows[-1] if rows else None,
        "updates_per_s": updates_timed / t_train if t_train > 0 else None,
        "eval": ev, "evals": evals,
        "eval_env_steps_per_s": None if ev2 is None else ev2["env_steps"] / ev2["wall_s"],
        "score": ev["score"], "mean_return": ev["mean_return"], "bc_score": bc["score"],
        "wall_s": time.perf_counter() - t_start, "best_step": best_step, "lm_losses": lm_losses,
    }
    log(event="summary", **{k: v for k, v in summary.items() if k not in ("evals", "eval")})
    log.close()
    summary.update(params=state.params, policy=policy, policy_params=policy_params(state), vocab=vocab, bc=bc)
    return summary


def main(argv=None):
    print_summary(train_value(config_from_cli(ValueRunConfig, argv, __doc__.split("\n\n")[0])))


if __name__ == "__main__":
    main()
