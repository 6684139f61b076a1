"""PPO with an MLP on the *symbolic* observation: the symbolic baseline of the symbolic-vs-text ablation.

``train_ppo_mlp(env_id, ...)`` trains a PureJaxRL-style PPO agent on
``jaxlm_gym.make_vec(env_id, num_envs, obs_mode="symbolic", action_mode="index")``. One PPO update --
a rollout of ``num_steps`` steps of all ``num_envs`` envs (auto-reset inside ``VecEnv.step``), GAE,
then ``update_epochs`` x ``num_minibatches`` clipped PPO steps -- is one pure function; ``chunk`` updates
run per call of one jitted ``lax.scan`` (compiled once, ahead of time), and the host loop between chunks
logs a curve point (and optionally a tqdm bar and JSON-lines metrics). The token-policy side of the
ablation lives elsewhere (``learners/ppo.py`` losses, ``benchmarks/ablation.py``).

**Observation.** Every leaf of ``obs["symbolic"]`` (dict order = sorted keys, as ``jax.tree.leaves``)
is reshaped to ``[num_envs, -1]``, cast to float32 (bool -> 0/1, ints -> their value) and concatenated:
e.g. maze-fo gives ``goal(2) + position(2) + status(1) + walls(4)`` = 9 floats. No one-hot encoding.
``normalize_obs=True`` (off by default) additionally whitens the inputs with running mean/variance
statistics (updated on every observed batch, clipped to +-10), for tasks with large raw values
(optimization's ``y``, big domains).

**Network.** Plain ``jnp`` (``init_params`` / ``apply_params``): an actor MLP (``hidden``, tanh,
orthogonal init with gain sqrt 2, 0.01-gain output layer) and a separate critic MLP of the same widths
(gain-1 value layer). The init runs on the host in NumPy (seeded by ``seed``) and the optimiser sees one
flat parameter vector: both keep the CPU compile short. **Policy heads** (from
``env.action_space(params)``):

- ``Discrete``: a categorical over the ``num_actions`` real actions. The index ``num_actions`` (the
  task's "invalid text" action) is never sampled.
- ``Box``: a diagonal Gaussian with a state-independent learned log-std (init 0). The sampled (raw)
  action is what the log-probabilities use; the env receives it clipped to ``[low, high]`` (a no-op for
  unbounded boxes such as optimization's ``x``).
- ``Dict`` (optimization: ``{"x": Box(2), "kind": Discrete(3)}``): a Gaussian over all Box leaves and
  a categorical over ``env.num_actions`` values of the single Discrete leaf (propose / stop, not the
  invalid-text kind); the log-probability is the sum of both.

**Returns and bootstrapping.** ``VecEnv.step`` auto-resets; the observation before the reset is
``info["final_observation"]``. The TD target of step t is ``r_t + gamma * (1 - terminated_t) * V(s')``
with ``s'`` the next observation, or the final observation when the episode ended at t: truncation
(time limits) bootstraps from the value of the final observation, termination does not. The GAE
recursion is cut at every episode end (``terminated | truncated``). Advantages are whitened per
minibatch; the value loss is clipped as in PureJaxRL; Adam (eps 1e-5) after global-norm clipping.

**What is logged.** Per chunk, a curve point ``{"update", "env_steps", "mean_return", "score",
"episodes", "mean_reward"}``: ``mean_return`` is the mean return of the episodes that *finished* during
the chunk (per-env running returns live in the scan carry; None when none finished -- e.g. LLF tasks
whose episodes never end unless a ``horizon`` is passed in ``env_kwargs``), ``score`` its LMRL-Gym
normalised score (``jaxlm_gym.score``) where the id has constants, else None; ``episodes`` how many
finished; ``mean_reward`` the mean per-step reward of the chunk (the signal for never-ending tasks).
``metrics_path`` appends those points plus chunk-mean losses (policy, value, entropy, approx KL,
clip fraction) as JSON lines.

**Speed** (maze-fo, defaults, the shared 2-core CPU under load): ~65k env steps/s after a ~9 s compile;
normalised score 91 after 110 updates (225k steps), 100 (the BFS optimum) by update 200 (16 s in all).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from gymnax.environments import spaces

import jaxlm_gym
from jaxlm_gym import score as score_lib

OBS_CLIP = 10.0  # normalised observations are clipped to +-OBS_CLIP
NORM_EPS = 1e-8


# ---------------------------------------------------------------------------- observation
def flatten_obs(symbolic: Any) -> jax.Array:
    """float32 ``[N, D]``: every leaf of a batched symbolic observation, flattened and concatenated
    (leaves in ``jax.tree.leaves`` order, i.e. sorted dict keys)."""
    leaves = jax.tree.leaves(symbolic)
    return jnp.concatenate([jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32) for x in leaves], axis=-1)


class ObsStats(NamedTuple):
    """Running mean / variance of the flat observation (``count`` float32 scalar)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def _init_stats(dim: int) -> ObsStats:
    return ObsStats(jnp.zeros((dim,), jnp.float32), jnp.ones((dim,), jnp.float32), jnp.zeros((), jnp.float32))


def _update_stats(stats: ObsStats, x: jax.Array) -> ObsStats:
    """Merge a batch ``x [N, D]`` into the running statistics (parallel Welford)."""
    b_mean, b_var, b_count = x.mean(0), x.var(0), jnp.float32(x.shape[0])
    delta = b_mean - stats.mean
    total = stats.count + b_count
    mean = stats.mean + delta * b_count / total
    m2 = stats.var * stats.count + b_var * b_count + delta**2 * stats.count * b_count / total
    return ObsStats(mean, m2 / total, total)


def _normalize(x: jax.Array, stats: ObsStats | None) -> jax.Array:
    if stats is None:
        return x
    return jnp.clip((x - stats.mean) * jax.lax.rsqrt(stats.var + NORM_EPS), -OBS_CLIP, OBS_CLIP)


def _raveller(tree):
    """``(flat, unravel)``: the float32 leaves of ``tree`` as one vector, and the in-graph inverse."""
    leaves, treedef = jax.tree.flatten(tree)
    shapes = [np.shape(x) for x in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0] + sizes)
    flat = jnp.asarray(np.concatenate([np.ravel(x).astype(np.float32) for x in leaves]))

    def unravel(v):
        return jax.tree.unflatten(treedef, [v[o:o + n].reshape(s) for o, n, s in zip(offsets, sizes, shapes)])

    return flat, unravel


# ---------------------------------------------------------------------------- action heads
class ActionLayout(NamedTuple):
    """How the policy's ``(d, c)`` pair maps to the env's action.

    ``n_cat``: categories of the categorical head (0: none); ``n_cont``: dims of the Gaussian (0: none);
    ``kind``: "discrete", "box" or "dict"; ``cat_key``: the Dict key of the Discrete leaf;
    ``boxes``: ``(key, shape, low, high)`` per Box leaf (key None for a bare Box), flattened in order.
    """

    kind: str
    n_cat: int
    n_cont: int
    cat_key: str | None
    boxes: tuple

    def to_env(self, d: jax.Array, c: jax.Array) -> Any:
        """The env action of a batch: ``d int32 [N]``, ``c float32 [N, n_cont]`` (raw, unclipped)."""
        if self.kind == "discrete":
            return d
        out, start = {}, 0
        for key, shape, low, high in self.boxes:
            size = int(np.prod(shape))
            part = jnp.clip(c[:, start:start + size], low.reshape(-1), high.reshape(-1))
            out[key] = part.reshape((c.shape[0], *shape))
            start += size
        if self.kind == "box":
            return out[None]
        if self.cat_key is not None:
            out[self.cat_key] = d
        return out


def action_layout(vec) -> ActionLayout:
    """The policy heads for ``vec``'s action space (see the module docstring)."""
    space = vec.env.action_space(vec.params)
    if isinstance(space, spaces.Discrete):
        return ActionLayout("discrete", int(vec.num_actions), 0, None, ())

    def box(key, sp):
        shape = tuple(int(s) for s in sp.shape)
        low = np.broadcast_to(np.asarray(sp.low, np.float32), shape).astype(np.float32)
        high = np.broadcast_to(np.asarray(sp.high, np.float32), shape).astype(np.float32)
        return key, shape, low, high

    if isinstance(space, spaces.Box):
        b = box(None, space)
        return ActionLayout("box", 0, int(np.prod(b[1])), None, (b,))
    if isinstance(space, spaces.Dict):
        boxes, cats = [], []
        for key in sorted(space.spaces):
            sp = space.spaces[key]
            if isinstance(sp, spaces.Box):
                boxes.append(box(key, sp))
            elif isinstance(sp, spaces.Discrete):
                cats.append(key)
            else:
                msg = f"{vec.id}: unsupported action sub-space {key!r} ({type(sp).__name__}); supported: Box, Discrete"
                raise ValueError(msg)  # noqa: TRY004  (bad config: ValueError, the house rule)
        if len(cats) > 1:
            raise ValueError(f"{vec.id}: action Dict has Discrete leaves {cats}; supported: at most one")
        n_cat = int(vec.num_actions) if cats else 0
        return ActionLayout("dict", n_cat, sum(int(np.prod(b[1])) for b in boxes), cats[0] if cats else None,
                            tuple(boxes))
    raise ValueError(f"{vec.id}: unsupported action space {type(space).__name__}; supported: Discrete, Box, "
                     "Dict of Box and one Discrete")


def _orthogonal(rng: np.random.Generator, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """An orthogonal ``[n_in, n_out]`` matrix times ``scale`` (the usual PPO init), drawn on the host."""
    a = rng.standard_normal((max(n_in, n_out), min(n_in, n_out)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return (scale * (q if n_in >= n_out else q.T)).astype(np.float32)


def init_params(seed: int, obs_dim: int, n_cat: int, n_cont: int, hidden: Sequence[int]) -> dict:
    """Actor-critic parameters (numpy float32): ``actor`` and ``critic`` lists of ``(w, b)`` hidden layers
    (orthogonal, gain sqrt 2), ``value`` ``(w [h, 1], b)`` (gain 1), ``logits`` ``(w [h, n_cat], b)`` and/or
    ``mean`` ``(w [h, n_cont], b)`` (gain 0.01) and ``log_std`` ``[n_cont]`` (0). Host-side init: an
    in-graph orthogonal init (QR) costs seconds of compile on CPU."""
    rng = np.random.default_rng(seed)

    def dense(n_in, n_out, scale):
        return _orthogonal(rng, n_in, n_out, scale), np.zeros((n_out,), np.float32)

    def trunk():
        widths = (obs_dim, *hidden)
        return [dense(i, o, math.sqrt(2)) for i, o in itertools.pairwise(widths)]

    params = {"actor": trunk(), "critic": trunk(), "value": dense(hidden[-1], 1, 1.0)}
    if n_cat:
        params["logits"] = dense(hidden[-1], n_cat, 0.01)
    if n_cont:
        params["mean"] = dense(hidden[-1], n_cont, 0.01)
        params["log_std"] = np.zeros((n_cont,), np.float32)
    return params


def apply_params(params: dict, x: jax.Array):
    """Separate tanh MLPs for actor and critic. Returns ``(logits [N, n_cat] | None, mean [N, n_cont] |
    None, log_std [n_cont] | None, value [N])``."""
    def trunk(layers, h):
        for w, b in layers:
            h = jnp.tanh(h @ w + b)
        return h

    a = trunk(params["actor"], x)
    logits = a @ params["logits"][0] + params["logits"][1] if "logits" in params else None
    mean = a @ params["mean"][0] + params["mean"][1] if "mean" in params else None
    log_std = params.get("log_std")
    w, b = params["value"]
    value = (trunk(params["critic"], x) @ w + b)[..., 0]
    return logits, mean, log_std, value


def _log_prob_entropy(out, d, c):
    """Joint log-probability of ``(d, c)`` and the policy's entropy, per env."""
    logits, mean, log_std, _ = out
    logp = jnp.zeros(d.shape, jnp.float32)
    ent = jnp.zeros(d.shape, jnp.float32)
    if logits is not None:
        lp_all = jax.nn.log_softmax(logits)
        logp += jnp.take_along_axis(lp_all, d[:, None], axis=-1)[:, 0]
        ent += -(jnp.exp(lp_all) * lp_all).sum(-1)
    if mean is not None:
        z = (c - mean) * jnp.exp(-log_std)
        logp += (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        ent += (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum() * jnp.ones(d.shape, jnp.float32)
    return logp, ent


def _sample(out, key, n: int, n_cont: int, deterministic: bool = False):
    """``(d int32 [N], c float32 [N, n_cont])`` from the heads (mode when ``deterministic``)."""
    logits, mean, log_std, _ = out
    kd, kc = jax.random.split(key)
    d = jnp.zeros((n,), jnp.int32)
    c = jnp.zeros((n, n_cont), jnp.float32)
    if logits is not None:
        d = (jnp.argmax(logits, -1) if deterministic else jax.random.categorical(kd, logits)).astype(jnp.int32)
    if mean is not None:
        c = mean if deterministic else mean + jnp.exp(log_std) * jax.random.normal(kc, mean.shape)
    return d, c


# ---------------------------------------------------------------------------- training
class Transition(NamedTuple):
    obs: jax.Array
    d: jax.Array
    c: jax.Array
    logp: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_value: jax.Array  # V(final observation): the bootstrap of a truncated episode


def gae_targets(reward, value, final_value, terminated, done, last_value, *, gamma: float, lam: float):
    """Per-step GAE over a ``[T, N]`` rollout with auto-reset; returns ``(advantages, returns)``.

    ``value``: V(s_t); ``final_value``: V of the observation before the auto-reset (read where ``done``);
    ``last_value [N]``: V of the observation after the last step. The next value of step t is
    ``final_value[t]`` where the episode ended at t, else ``value[t + 1]``; ``terminated`` zeroes the
    bootstrap (truncation keeps it) and ``done`` cuts the GAE recursion.
    """
    next_values = jnp.concatenate([value[1:], last_value[None]], axis=0)
    next_values = jnp.where(done, final_value, next_values)
    not_term = 1.0 - terminated.astype(jnp.float32)
    not_done = 1.0 - done.astype(jnp.float32)
    deltas = reward + gamma * not_term * next_values - value

    def body(adv, x):
        delta, nd = x
        adv = delta + gamma * lam * nd * adv
        return adv, adv

    _, adv = jax.lax.scan(body, jnp.zeros_like(last_value), (deltas, not_done), reverse=True)
    return adv, adv + value


class Runner(NamedTuple):
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array  # raw flat observation [N, D]
    ep_return: jax.Array  # running return of each env's current episode [N]
    stats: ObsStats
    key: jax.Array


def _pos_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_args(num_envs, num_steps, num_updates, update_epochs, num_minibatches, lr, gamma, gae_lambda, clip,
                vf_coef, ent_coef, hidden, chunk, max_grad_norm):
    for name, v in (("num_envs", num_envs), ("num_steps", num_steps), ("num_updates", num_updates),
                    ("update_epochs", update_epochs), ("num_minibatches", num_minibatches), ("chunk", chunk)):
        _pos_int(name, v)
    batch = num_envs * num_steps
    if batch % num_minibatches:
        valid = [m for m in range(1, batch + 1) if batch % m == 0]
        shown = valid if len(valid) <= 12 else valid[:12] + ["..."]
        raise ValueError(f"num_envs * num_steps = {batch} must be divisible by num_minibatches="
                         f"{num_minibatches}; valid num_minibatches: {shown}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    for name, v in (("gamma", gamma), ("gae_lambda", gae_lambda)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    for name, v in (("vf_coef", vf_coef), ("ent_coef", ent_coef)):
        if not v >= 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
    if (not isinstance(hidden, (tuple, list)) or not hidden
            or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hidden)):
        raise ValueError(f"hidden must be a non-empty tuple of positive ints (layer widths), got {hidden!r}")


def train_ppo_mlp(env_id: str, *, num_envs: int = 64, num_steps: int = 32, num_updates: int = 200,
                  update_epochs: int = 4, num_minibatches: int = 4, lr: float = 2.5e-4, gamma: float = 0.99,
                  gae_lambda: float = 0.95, clip: float = 0.2, vf_coef: float = 0.5, ent_coef: float = 0.01,
                  hidden: Sequence[int] = (64, 64), seed: int = 0, chunk: int = 10, env_kwargs: dict | None = None,
                  progress: bool = False, metrics_path: str | None = None, max_grad_norm: float | None = 0.5,
                  normalize_obs: bool = False, compiler_options: dict | None = None) -> dict:
    """Train PPO with an MLP on ``env_id``'s symbolic observation (see the module docstring).

    ``env_kwargs``: options/params for ``make_vec`` (e.g. ``{"horizon": 10}`` for LLF tasks that never end).
    ``max_grad_norm``: global-norm gradient clip (None: off). ``normalize_obs``: running observation
    whitening. ``compiler_options``: XLA options for the update program (e.g.
    ``{"xla_backend_optimization_level": 0}`` halves CPU compile time and CPU throughput; for tests).
    ``chunk``: updates per jitted call (a host log point each); the last chunk may be partial (the same
    compiled program skips the surplus updates). Returns a dict: ``curve`` (list of curve points),
    ``params`` (the actor-critic's parameter tree, numpy; see ``init_params``), ``obs_stats``
    (``ObsStats`` or None), ``policy`` (``policy(params, symbolic_obs, key, deterministic=False) -> env
    action`` for a batch of symbolic observations; pure, jittable),
    ``wall_s`` (the whole call), ``compile_s``, ``env_steps_per_s`` (training throughput, compile
    excluded), ``traces`` (times the update program was traced: 1), ``config``.
    """
    hidden = tuple(hidden) if isinstance(hidden, list) else hidden
    _check_args(num_envs, num_steps, num_updates, update_epochs, num_minibatches, lr, gamma, gae_lambda, clip,
                vf_coef, ent_coef, hidden, chunk, max_grad_norm)
    t_start = time.perf_counter()
    env_kwargs = dict(env_kwargs or {})
    vec = jaxlm_gym.make_vec(env_id, num_envs, obs_mode="symbolic", action_mode="index", **env_kwargs)
    layout = action_layout(vec)
    n_cont = layout.n_cont
    chunk = min(chunk, num_updates)
    batch = num_envs * num_steps
    mb_size = batch // num_minibatches

    tx = optax.adam(lr, eps=1e-5)
    if max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    key = jax.random.key(seed)
    obs_dim = int(jax.eval_shape(lambda k: flatten_obs(vec.reset(k)[0]["symbolic"]), key).shape[-1])
    # The optimiser works on one flat parameter vector: a few big ops instead of a few per leaf
    # (a faster compile); ``unravel`` rebuilds the parameter tree.
    params_np = init_params(seed, obs_dim, layout.n_cat, n_cont, hidden)
    params0, unravel = _raveller(params_np)

    def apply(flat, x):
        return apply_params(unravel(flat), x)

    norm = (lambda x, s: _normalize(x, s)) if normalize_obs else (lambda x, s: x)

    @jax.jit  # one program for the setup (the eager env reset would dispatch many small programs)
    def setup(key, params):
        key, k_reset = jax.random.split(key)
        obs, env_state = vec.reset(k_reset)
        flat = flatten_obs(obs["symbolic"])
        stats = _update_stats(_init_stats(obs_dim), flat) if normalize_obs else _init_stats(obs_dim)
        return Runner(params, tx.init(params), env_state, flat, jnp.zeros((num_envs,), jnp.float32), stats, key)

    def rollout_step(carry, _):
        params, env_state, obs, ep_ret, stats, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        x = norm(obs, stats)
        out = apply(params, x)
        d, c = _sample(out, k_act, num_envs, n_cont)
        logp, _ = _log_prob_entropy(out, d, c)
        obs2, env_state, reward, term, trunc, info = vec.step(k_env, env_state, layout.to_env(d, c))
        flat2 = flatten_obs(obs2["symbolic"])
        final = flatten_obs(info["final_observation"]["symbolic"])
        if normalize_obs:
            stats = _update_stats(stats, flat2)
        final_value = apply(params, norm(final, stats))[3]
        reward = reward.astype(jnp.float32)
        done = jnp.logical_or(term, trunc)
        ep_ret = ep_ret + reward
        finished = (jnp.where(done, ep_ret, 0.0).sum(), done.sum())
        ep_ret = jnp.where(done, 0.0, ep_ret)
        tr = Transition(x, d, c, logp, out[3], reward, term, done, final_value)
        return (params, env_state, flat2, ep_ret, stats, key), (tr, finished)

    def loss_fn(params, mb):
        traj, adv, ret = mb
        out = apply(params, traj.obs)
        logp, ent = _log_prob_entropy(out, traj.d, traj.c)
        value = out[3]
        log_ratio = logp - traj.logp
        ratio = jnp.exp(log_ratio)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg1 = ratio * adv
        pg2 = jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv
        pg_loss = -jnp.minimum(pg1, pg2).mean()
        v_clipped = traj.value + jnp.clip(value - traj.value, -clip, clip)
        v_loss = 0.5 * jnp.maximum((value - ret) ** 2, (v_clipped - ret) ** 2).mean()
        entropy = ent.mean()
        loss = pg_loss + vf_coef * v_loss - ent_coef * entropy
        return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy,
                      "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
                      "clipfrac": (jnp.abs(ratio - 1.0) > clip).mean()}

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(runner: Runner):
        key, k_roll, k_perm = jax.random.split(runner.key, 3)
        carry = (runner.params, runner.env_state, runner.obs, runner.ep_return, runner.stats, k_roll)
        carry, (traj, finished) = jax.lax.scan(rollout_step, carry, None, num_steps)
        _, env_state, obs, ep_ret, stats, _ = carry
        last_value = apply(runner.params, norm(obs, stats))[3]
        adv, ret = gae_targets(traj.reward, traj.value, traj.final_value, traj.terminated, traj.done, last_value,
                               gamma=gamma, lam=gae_lambda)
        data = jax.tree.map(lambda x: x.reshape((batch, *x.shape[2:])), (traj, adv, ret))

        def epoch(state, k):
            params, opt_state = state
            perm = jax.random.permutation(k, batch)
            mbs = jax.tree.map(lambda x: x[perm].reshape((num_minibatches, mb_size, *x.shape[1:])), data)

            def minibatch(state, mb):
                params, opt_state = state
                (_, m), grads = grad_fn(params, mb)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), m

            return jax.lax.scan(minibatch, (params, opt_state), mbs)

        (params, opt_state), losses = jax.lax.scan(epoch, (runner.params, runner.opt_state),
                                                   jax.random.split(k_perm, update_epochs))
        metrics = {k: v.mean() for k, v in losses.items()}
        metrics["return_sum"] = finished[0].sum()
        metrics["episodes"] = finished[1].sum().astype(jnp.int32)
        metrics["reward_sum"] = traj.reward.sum()
        return Runner(params, opt_state, env_state, obs, ep_ret, stats, key), metrics

    traces = [0]

    def run_chunk(runner: Runner, n_active):
        traces[0] += 1  # Python side effect: runs once per trace

        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(update, runner)[1])

        def body(runner, i):
            # a partial last chunk runs the same program and skips the surplus updates
            return jax.lax.cond(i < n_active, update, lambda r: (r, zeros), runner)

        return jax.lax.scan(body, runner, jnp.arange(chunk))

    runner = setup(key, params0)
    t0 = time.perf_counter()
    lowered = jax.jit(run_chunk).lower(runner, jnp.int32(chunk))
    compiled = lowered.compile(compiler_options) if compiler_options else lowered.compile()
    compile_s = time.perf_counter() - t0

    has_score = env_id in score_lib.NORMALIZATION
    curve, done_updates, run_s = [], 0, 0.0
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(metrics_path, "a")) if metrics_path else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=num_updates, desc=f"ppo-mlp {env_id}", unit="upd"))
        while done_updates < num_updates:
            n = min(chunk, num_updates - done_updates)
            t0 = time.perf_counter()
            runner, m = compiled(runner, jnp.int32(n))
            m = jax.device_get(m)
            run_s += time.perf_counter() - t0
            done_updates += n
            episodes = int(m["episodes"][:n].sum())
            mean_return = float(m["return_sum"][:n].sum() / episodes) if episodes else None
            point = {"update": done_updates, "env_steps": done_updates * batch, "mean_return": mean_return,
                     "score": (score_lib.normalize(env_id, mean_return) if has_score and mean_return is not None
                               else None),
                     "episodes": episodes, "mean_reward": float(m["reward_sum"][:n].sum() / (n * batch))}
            curve.append(point)
            if sink is not None:
                losses = {k: float(np.mean(m[k][:n])) for k in
                          ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
                sink.write(json.dumps({"env_id": env_id, **point, **losses, "time_s": time.perf_counter() - t_start})
                           + "\n")
                sink.flush()
            if bar is not None:
                bar.update(n)
                bar.set_postfix(ret=mean_return, score=point["score"])

    final_stats = runner.stats if normalize_obs else None

    def policy(params, symbolic_obs, key, deterministic: bool = False, obs_stats: ObsStats | None = final_stats):
        """The env action (batched) of the trained policy for a batch of symbolic observations."""
        x = flatten_obs(symbolic_obs)
        if normalize_obs:
            x = _normalize(x, obs_stats)
        out = apply_params(params, x)
        return layout.to_env(*_sample(out, key, x.shape[0], n_cont, deterministic))

    config = {"env_id": env_id, "num_envs": num_envs, "num_steps": num_steps, "num_updates": num_updates,
              "update_epochs": update_epochs, "num_minibatches": num_minibatches, "lr": lr, "gamma": gamma,
              "gae_lambda": gae_lambda, "clip": clip, "vf_coef": vf_coef, "ent_coef": ent_coef,
              "hidden": list(hidden), "seed": seed, "chunk": chunk, "env_kwargs": env_kwargs,
              "max_grad_norm": max_grad_norm, "normalize_obs": normalize_obs, "obs_dim": obs_dim,
              "action_kind": layout.kind, "n_categories": layout.n_cat, "n_continuous": n_cont}
    return {"curve": curve, "params": unravel(np.asarray(runner.params)), "obs_stats": final_stats,
            "policy": policy, "wall_s": time.perf_counter() - t_start, "compile_s": compile_s,
            "env_steps_per_s": done_updates * batch / run_s if run_s > 0 else None,
            "traces": traces[0], "config": config}
