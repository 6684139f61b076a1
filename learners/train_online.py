"""Online learners end to end on a maze token env: PPO and online filtered BC. Each round (env rollout by the
GPT-2 policy, targets, updates) is one jitted program; the host loop between rounds shows progress, logs JSON
lines and evaluates.

    python -m learners.train_online --algo ppo --rounds 50
    python -m learners.train_online --algo online_filtered_bc --rounds 50

Both start from a BC model (``train_bc``; trained here first with ``bc_updates`` updates unless a BC run is
passed), as the reference's maze scripts start from their BC checkpoint.

**PPO** (``learners.ppo``). The envs run on across rounds (``round_steps`` steps each; the env auto-resets),
so every round is ``num_envs x round_steps`` transitions, laid out one per row ``[BOS] obs action``. The policy
(temperature 1) and its value head (``learners.models.heads``, a linear head on the policy's own trunk) score
every action token; the frozen initial policy gives the KL penalty (``-kl_coef * (log pi - log pi_init)`` on
every action token, env reward on each action's last token). GAE runs per env over the round's action tokens
in time order (gamma per action token), cut at episode ends, bootstrapped from V at the next prompt after the
round; advantages are whitened over the round. Then ``epochs`` passes of shuffled minibatches of
``train_bsize`` rows through ``learners.ppo.ppo_loss_fn`` (clipped policy and value losses). The KL
coefficient is fixed, or adapted between rounds (``learners.ppo.adaptive_kl_coef``) when the preset sets
``kl_target``/``kl_horizon``.

**Online filtered BC** (``learners.bc``). Every round resets ``num_envs`` envs and rolls them for
``round_steps`` steps (default: the maze horizon + 1, so every env finishes its first episode, i.e. a round is
``num_envs`` rollouts as the reference's ``n_rollouts``); the preset's rule keeps whole finished episodes
(maze: last reward 0, reached the goal; Wordle: the top 30 % by return), and ``updates_per_round`` BC updates
draw minibatches from the kept transitions (uniformly, in-graph).

Deviations: PPO rounds are windows of continuing envs rather than ``n_rollouts`` whole episodes (the usual
vectorised-PPO layout; it keeps every generated token useful); online filtered BC takes a fixed number of
updates per round rather than one epoch over a variable number of kept episodes (fixed shapes). A resumed
run (``checkpoint_dir``) restores the learner's state but starts its envs afresh.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

import jaxlm_gym
from learners.bc import bc_loss_fn
from learners.common import aligned_mask, make_optimizer, make_update, token_logprobs
from learners.datasets import episode_facts, keep_steps
from learners.loop import MetricsLog, config_from_cli, open_checkpointer, print_summary, run_chunks, save_final
from learners.models import GPT2Config, forward
from learners.models.heads import init_policy_value, make_policy_value_apply_fn
from learners.ppo import adaptive_kl_coef, gae, kl_k3, kl_penalized_rewards, last_real_value, ppo_loss_fn, whiten
from learners.presets import get_preset
from learners.rollout import (
    _start_prompt,
    bc_batch,
    make_token_policy,
    scan_env,
    stop_token_id,
)
from learners.train_bc import BCRunConfig, bc_start_config, check_task, evaluate_policy, make_eval_env, train_bc

#: The online learners run on maze (Wordle's offline rows are wired; its online runs are not yet).
TASKS = ("maze-fo", "maze-po")

ALGOS = ("ppo", "online_filtered_bc")


@dataclass(frozen=True)
class OnlineRunConfig:
    """One PPO or online filtered BC run. ``None`` fields take the task's preset (``learners.presets``)."""

    algo: str = "ppo"
    task: str = "maze-fo"
    seed: int = 0
    # BC start (trained first when no BC run is given): data and model as train_bc
    data_envs: int = 1024
    data_steps: int = 128
    epsilon: float = 0.98
    bos: bool = True
    bc_updates: int = 1000
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    # rounds
    rounds: int = 50
    num_envs: int | None = None  # None: the preset's n_rollouts (128)
    round_steps: int | None = None  # None: PPO 8; online filtered BC: the maze horizon + 1
    epochs: int = 2  # PPO passes over a round
    updates_per_round: int = 8  # online filtered BC
    # optimisation (None = preset)
    lr: float | None = None
    train_bsize: int | None = None
    init_kl_coef: float | None = None
    gamma: float | None = None
    # decoding and evaluation
    max_new_tokens: int | None = None
    eval_rollouts: int = 1
    eval_every: int | None = None  # in rounds
    metrics_path: str | None = None
    progress: bool = True
    evaluate: bool = True  # False: train only (no evaluation rollouts; score None)
    # orbax checkpoints at each evaluation (with its score) and every save_every chunks; resumes if present
    checkpoint_dir: str | None = None
    save_every: int | None = None

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        check_task(self, TASKS)
        for name in ("rounds", "epochs", "updates_per_round", "bc_updates", "eval_rollouts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_envs", "round_steps", "train_bsize"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")

    def bc_config(self) -> BCRunConfig:
        return bc_start_config(self)

# ----------------------------------------------------------------------------------------------------
# PPO round pieces (pure)


def episode_returns_in_window(acc: jax.Array, reward: jax.Array, done: jax.Array):
    """Running per-env returns across rounds: ``acc [N]`` carried in, ``reward, done [S, N]``. Returns the new
    ``acc`` and the sum and count of the returns of the episodes that ended in the window."""

    def body(a, x):
        r, d = x
        a = a + r
        return jnp.where(d, 0.0, a), jnp.where(d, a, 0.0)

    acc, finished = jax.lax.scan(body, acc, (reward, done))
    return acc, finished.sum(), done.sum()


def ppo_targets(apply_fn, config: GPT2Config, params, ref_params, rows: dict, shape: tuple[int, int],
                last_value: jax.Array, *, gamma: float, lam: float, kl_coef, whiten_advantages: bool) -> dict:
    """GAE targets of a round. ``rows``: ``bc_batch`` of the ``[S, N]`` trajectory (time-major rows);
    ``last_value [N]``: V at each env's prompt after the round. Returns the aligned ``[S*N, W-1]`` arrays the
    PPO loss reads and the round's KL (k3)."""
    s, n = shape
    ids, attn = rows["input_ids"], rows["attention_mask"]
    out = apply_fn(params, ids, attn)
    logprobs = token_logprobs(out["logits"][:, :-1], ids[:, 1:])
    ref_logprobs = token_logprobs(forward(config, ref_params, ids, attn).logits[:, :-1], ids[:, 1:])
    mask = aligned_mask(rows)
    rewards = kl_penalized_rewards(rows["rewards"][:, 1:], logprobs, ref_logprobs, mask, kl_coef)
    values = out["values"][:, :-1]
    width = ids.shape[1]
    last_tok = jnp.max(jnp.where(rows["action_mask"], jnp.arange(width), 0), axis=1)
    token_dones = ((jnp.arange(width)[None] == last_tok[:, None]) & rows["done"][:, None])[:, 1:]

    def env_major(x):  # [S*N, L] time-major rows -> [N, S*L], each env's tokens in time order
        return x.reshape(s, n, -1).transpose(1, 0, 2).reshape(n, -1)

    def back(x):
        return x.reshape(n, s, -1).transpose(1, 0, 2).reshape(s * n, -1)

    adv, ret = gae(env_major(rewards), env_major(values), env_major(mask), last_value, gamma=gamma, lam=lam,
                   token_dones=env_major(token_dones))
    adv, ret = back(adv), back(ret)
    if whiten_advantages:
        adv = whiten(adv, mask)
    return {"old_logprobs": jax.lax.stop_gradient(logprobs), "old_values": jax.lax.stop_gradient(values),
            "advantages": jax.lax.stop_gradient(adv), "returns": jax.lax.stop_gradient(ret),
            "kl": kl_k3(logprobs, ref_logprobs, mask)}


def ppo_epochs(update, state, batch: dict, key, *, epochs: int, bsize: int):
    """``epochs`` passes of shuffled minibatches of ``bsize`` rows (a tail shorter than ``bsize`` is skipped)."""
    m = batch["input_ids"].shape[0]
    n_mb = m // bsize
    if n_mb < 1:
        raise ValueError(f"a round has {m} rows, fewer than train_bsize={bsize}")

    def epoch(state, k):
        perm = jax.random.permutation(k, m)[: n_mb * bsize].reshape(n_mb, bsize)

        def mb(state, idx):
            return update(state, {k2: v[idx] for k2, v in batch.items()})

        return jax.lax.scan(mb, state, perm)

    state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, epochs))
    return state, jax.tree.map(lambda x: x.reshape(-1), metrics)


# ----------------------------------------------------------------------------------------------------
# driver


def train_online(cfg: OnlineRunConfig, bc: dict | None = None) -> dict:
    """Run ``cfg``; ``bc``: a ``train_bc`` summary on the same task (trained here when None)."""
    t_start = time.perf_counter()
    if bc is None:
        bc = train_bc(cfg.bc_config())
    elif bc["config"]["task"] != cfg.task:
        raise ValueError(f"the BC run is on {bc['config']['task']!r}, this run on {cfg.task!r}")
    mcfg = GPT2Config(**bc["model"])
    vocab = bc["vocab"]
    max_new = bc["config"]["max_new_tokens"] or get_preset("bc", cfg.task).max_output_length or 8
    bos_on = bc["config"]["bos"]
    log = MetricsLog(cfg.metrics_path)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 11)
    k_init, k_train, k_eval = jax.random.split(key, 3)

    if cfg.algo == "ppo":
        preset = get_preset("ppo", cfg.task)
        over = {k: getattr(cfg, k) for k in ("lr", "train_bsize", "init_kl_coef", "gamma")
                if getattr(cfg, k) is not None}
        preset = dataclasses.replace(preset, **over)
        num_envs = cfg.num_envs or preset.n_rollouts
        round_steps = cfg.round_steps or 8
        lr, bsize = preset.lr, preset.train_bsize
    else:
        fpreset = get_preset("online_filtered_bc", cfg.task)
        preset = fpreset
        num_envs = cfg.num_envs or fpreset.n_rollouts
        lr = cfg.lr if cfg.lr is not None else fpreset.bc.lr
        bsize = cfg.train_bsize or fpreset.bc.batch_size

    env = jaxlm_gym.make_vec(cfg.task, num_envs, obs_mode="tokens", action_mode="tokens")
    if cfg.algo == "online_filtered_bc":
        round_steps = cfg.round_steps or int(np.asarray(env.params.max_steps_in_episode)) + 1
    bos = env.tokenizer.eos_id if bos_on else None
    stop = stop_token_id(env)
    sampler = make_token_policy(mcfg, stop_token_id=stop, pad_token_id=env.pad_id, max_new_tokens=max_new,
                                vocab=vocab, greedy=False, temperature=1.0)
    greedy = make_token_policy(mcfg, stop_token_id=stop, pad_token_id=env.pad_id, max_new_tokens=max_new,
                               vocab=vocab, greedy=True)

    if cfg.algo == "ppo":
        apply_fn = make_policy_value_apply_fn(mcfg)
        params = init_policy_value(mcfg, k_init, bc["params"], preset.value_head_bias_init)
        state = train_state.TrainState.create(apply_fn=apply_fn, params=params,
                                              tx=make_optimizer(lr, preset.weight_decay, preset.grad_accum_steps))
        ref_params = bc["params"]
        update = make_update(ppo_loss_fn, preset)

        def act(p, prompt, pmask, k, _o, _s):
            return sampler(p["base"], prompt, pmask, k)

        @jax.jit
        def init_carry(k):
            obs, st = env.reset(k)
            prompt, pmask = _start_prompt(env, obs, None, bos)
            return (st, prompt, pmask), jnp.zeros((num_envs,), jnp.float32)

        @jax.jit
        def round_fn(ts, carry, kl_coef, k):
            (env_carry, acc) = carry
            k_roll, k_upd = jax.random.split(k)
            traj, env_carry = scan_env(env, act, ts.params, k_roll, round_steps, bos_id=bos, carry=env_carry)
            rows = bc_batch(traj, vocab)
            _, prompt, pmask = env_carry
            v_next = ts.apply_fn(ts.params, vocab.encode(prompt), pmask)["values"]
            last_v = last_real_value(v_next, pmask)
            tg = ppo_targets(ts.apply_fn, mcfg, ts.params, ref_params, rows, (round_steps, num_envs), last_v,
                             gamma=preset.gamma, lam=preset.lam, kl_coef=kl_coef,
                             whiten_advantages=preset.whiten_advantages)
            batch = {k2: rows[k2] for k2 in ("input_ids", "attention_mask", "action_mask")}
            batch.update({k2: tg[k2] for k2 in ("old_logprobs", "old_values", "advantages", "returns")})
            ts, metrics = ppo_epochs(update, ts, batch, k_upd, epochs=cfg.epochs, bsize=bsize)
            acc, ret_sum, n_done = episode_returns_in_window(acc, traj.reward, traj.done)
            metrics = {k2: v.mean() for k2, v in metrics.items()}
            metrics.update(kl=tg["kl"], episode_return_sum=ret_sum, episodes=n_done,
                           success=traj.terminated.sum(), env_steps=jnp.asarray(round_steps * num_envs))
            return ts, (env_carry, acc), metrics

        carry = init_carry(jax.random.fold_in(k_train, 2**31))
        kl_state = {"coef": float(preset.init_kl_coef)}

        def chunk_fn(st, k):
            nonlocal carry
            st, carry, m = round_fn(st, carry, jnp.float32(kl_state["coef"]), k)
            if preset.adaptive_kl:
                kl_state["coef"] = adaptive_kl_coef(kl_state["coef"], float(m["kl"]), round_steps * num_envs,
                                                    preset.kl_target, preset.kl_horizon)
            return st, jax.tree.map(lambda x: x[None], m)

        def policy_params(st):
            return st.params["base"]
    else:
        state = train_state.TrainState.create(apply_fn=lambda p, i, m: forward(mcfg, p, i, m).logits,
                                              params=jax.tree.map(jnp.array, bc["params"]),
                                              tx=make_optimizer(lr, fpreset.bc.weight_decay))
        update = make_update(bc_loss_fn, None)

        def act(p, prompt, pmask, k, _o, _s):
            return sampler(p, prompt, pmask, k)

        @jax.jit
        def round_fn(ts, k):
            k_roll, k_upd = jax.random.split(k)
            traj, _ = scan_env(env, act, ts.params, k_roll, round_steps, bos_id=bos)
            facts = episode_facts(traj.reward, traj.done, traj.terminated)
            keep = keep_steps(facts, fpreset.rule, last_reward_value=fpreset.last_reward_value,
                              fraction=fpreset.fraction)
            rows = bc_batch(traj, vocab)
            w = keep.reshape(-1).astype(jnp.float32)
            m = w.shape[0]
            p = w / jnp.maximum(w.sum(), 1.0)

            def one(ts, k2):
                idx = jax.random.choice(k2, m, (bsize,), p=jnp.where(w.sum() > 0, p, 1.0 / m))
                batch = {k3: rows[k3][idx] for k3 in ("input_ids", "attention_mask", "action_mask")}
                batch["weights"] = w[idx]
                return update(ts, batch)

            ts, metrics = jax.lax.scan(one, ts, jax.random.split(k_upd, cfg.updates_per_round))
            metrics = {k2: v.mean() for k2, v in metrics.items()}
            first = facts["last"] & (jnp.cumsum(traj.done, axis=0) == 1)  # each env's first episode end
            metrics.update(episode_return_sum=(facts["ep_return"] * first).sum(), episodes=first.sum(),
                           success=(facts["success"] & first).sum(), kept_rows=w.sum(),
                           env_steps=jnp.asarray(round_steps * num_envs))
            return ts, metrics

        def chunk_fn(st, k):
            st, m = round_fn(st, k)
            return st, jax.tree.map(lambda x: x[None], m)

        def policy_params(st):
            return st.params

    eval_env = make_eval_env(cfg.task, cfg.eval_rollouts)

    def eval_fn(st, c):
        return evaluate_policy(eval_env, greedy, policy_params(st), jax.random.fold_in(k_eval, c), bos_id=bos)

    def extra(m):
        n = float(np.sum(m["episodes"]))
        out = {"mean_episode_return": float(np.sum(m["episode_return_sum"])) / n if n else None}
        if cfg.algo == "ppo":
            out["kl_coef"] = kl_state["coef"]
        return out

    ckpt = open_checkpointer(cfg.checkpoint_dir)
    state, rows, evals, t_train = run_chunks(
        chunk_fn, state, k_train, num_chunks=cfg.rounds, chunk=1, log=log,
        desc=f"{cfg.algo} {cfg.task}", progress=cfg.progress, eval_fn=eval_fn, eval_every=cfg.eval_every,
        extra_metrics=extra, checkpointer=ckpt, save_every=cfg.save_every, config=dataclasses.asdict(cfg))

    if cfg.evaluate:
        ev = evaluate_policy(eval_env, greedy, policy_params(state), k_eval, bos_id=bos)
        evals.append({"step": cfg.rounds, **ev})
        log(event="eval", step=cfg.rounds, **{k: v for k, v in ev.items() if k != "per_start_return"})
    else:  # training only (tests)
        ev = {"score": None, "mean_return": None, "success": None}
    best_step = save_final(ckpt, cfg.rounds, state, ev, dataclasses.asdict(cfg))
    env_steps = round_steps * num_envs
    summary = {
        "config": dataclasses.asdict(cfg), "preset": dataclasses.asdict(preset), "lr": lr, "train_bsize": bsize,
        "num_envs": num_envs, "round_steps": round_steps, "model": dataclasses.asdict(mcfg),
        "rounds": rows, "evals": evals, "eval": ev, "score": ev["score"], "mean_return": ev["mean_return"],
        "bc_score": bc["score"],
        # env-steps/s while training: every round steps the env num_envs x round_steps times, with the GPT-2
        # policy generating every action, plus the update (first round excluded: compile)
        "train_env_steps_per_s": env_steps * (cfg.rounds - 1) / t_train if t_train > 0 else None,
        "wall_s": time.perf_counter() - t_start, "best_step": best_step,
    }
    log(event="summary", **{k: v for k, v in summary.items() if k not in ("evals", "eval", "rounds")})
    log.close()
    summary.update(params=state.params, policy=greedy, policy_params=policy_params(state), vocab=vocab, bc=bc)
    return summary


def main(argv=None):
    print_summary(train_online(config_from_cli(OnlineRunConfig, argv, __doc__.split("\n\n")[0])))


if __name__ == "__main__":
    main()
