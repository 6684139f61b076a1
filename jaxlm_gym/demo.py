"""Demo: 4,096 maze-fo envs, text in and text out, BFS-optimal vs random, one jitted scan.

    python -m jaxlm_gym.demo [--num-envs 4096] [--steps 300] [--chunks 10] [--seed 0]

The first half of the envs follow the in-graph BFS-optimal policy, the second half a
uniform random policy. Both write their moves as *text* (token ids of "move up\\n", ...)
that the env parses in-graph; observations come back as token buffers. The rollout is
one jitted ``lax.scan``, run in chunks so a progress bar can move between them.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlm_gym


def build(num_envs: int, chunk: int):
    vec = jaxlm_gym.make_vec("maze-fo", num_envs, obs_mode="both", action_mode="tokens")
    table = jnp.asarray(vec.action_token_table())
    optimal_half = jnp.arange(num_envs) < num_envs // 2

    def policy(key, obs):
        sym = obs["symbolic"]
        best = jax.vmap(vec.env.optimal_action)(sym["position"], sym["goal"])
        rand = (jax.random.bits(key, (num_envs,), jnp.uint32) % 4).astype(jnp.int32)
        return table[jnp.where(optimal_half, best, rand)]  # action text as token ids

    def body(carry, key):
        obs, state, ret, stats = carry
        k_act, k_env = jax.random.split(key)
        obs, state, reward, term, trunc, _ = vec.step(k_env, state, policy(k_act, obs))
        ret = ret + reward
        done = term | trunc
        groups = jnp.stack([optimal_half, ~optimal_half])  # [2, N]
        stats = stats + jnp.stack([
            jnp.sum(groups * (done * ret), axis=1),  # returns of finished episodes
            jnp.sum(groups * done, axis=1),  # finished episodes
            jnp.sum(groups * (done & term), axis=1),  # ... that reached the goal
        ], axis=1)
        ret = jnp.where(done, 0.0, ret)
        return (obs, state, ret, stats), None

    @jax.jit
    def run_chunk(carry, key):
        return jax.lax.scan(body, carry, jax.random.split(key, chunk))[0]

    @jax.jit
    def start(key):
        obs, state = vec.reset(key)
        return obs, state, jnp.zeros((num_envs,), jnp.float32), jnp.zeros((2, 3), jnp.float32)

    return vec, start, run_chunk


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-envs", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.num_envs < 2 or args.steps < args.chunks or args.steps % args.chunks:
        ap.error("need --num-envs >= 2 and --steps a positive multiple of --chunks")
    from tqdm import tqdm

    chunk = args.steps // args.chunks
    vec, start, run_chunk = build(args.num_envs, chunk)
    print(f"{vec}: first half BFS-optimal, second half random; {args.steps} steps in one jitted scan")
    key = jax.random.key(args.seed)
    carry = start(key)
    texts = vec.decode(carry[0])
    half = args.num_envs // 2
    print(f"\nenv 0 (BFS) sees      : {texts[0]!r}\nenv {half} (random) sees : {texts[half]!r}")
    print(f"as {int(carry[0]['length'][0])} GPT-2 token ids: {np.asarray(carry[0]['tokens'][0][:12]).tolist()} ...\n")

    t0 = time.perf_counter()
    with tqdm(total=args.steps, unit="step", desc="compiling", leave=True) as bar:
        compiled = run_chunk.lower(carry, key).compile()
        compile_s = time.perf_counter() - t0
        bar.set_description("rolling out")
        t1 = time.perf_counter()
        for k in jax.random.split(key, args.chunks):
            carry = compiled(carry, k)
            jax.block_until_ready(carry)
            bar.update(chunk)
        run_s = time.perf_counter() - t1

    stats = np.asarray(carry[3])
    best = vec.env.optimal_returns(vec.params)
    print(f"\n{'policy':14s} {'episodes':>9s} {'success':>8s} {'mean return':>12s} {'normalised':>11s}")
    for name, (total, count, wins) in zip(["BFS-optimal", "random"], stats):
        mean = total / max(count, 1)
        print(f"{name:14s} {int(count):9d} {wins / max(count, 1):8.1%} {mean:12.2f} "
              f"{jaxlm_gym.score.normalize('maze-fo', mean):11.1f}")
    print(f"(returns of episodes finished within the run; mean optimal return over the 25 starts: "
          f"{np.mean(list(best.values())):.2f})")
    steps = args.num_envs * args.steps
    print(f"\n{steps:,} env-steps in {run_s:.2f} s = {steps / run_s:,.0f} env-steps/s "
          f"(text in, text out; compile {compile_s:.1f} s, {jax.default_backend()})")
    texts = vec.decode(carry[0])
    print(f"env 0 now sees: {texts[0]!r}")


if __name__ == "__main__":
    main()
