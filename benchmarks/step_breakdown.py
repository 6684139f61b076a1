"""Where a tokens-mode step of one env spends its time, in the setting of ``throughput.py``
(random actions, the whole observation consumed by a sum, best of a few calls):

* ``write floor``: a program that only writes a buffer of the env's width (int32 tokens and a
  bool mask, one trivial function of a per-env counter per position) and sums it: what any
  tokens observation of that width costs at least;
* ``core step`` / ``core reset``: the symbolic core's ``step_env`` (no auto-reset) and
  ``reset_env``, vmapped over the batch;
* ``symbolic VecEnv step`` and ``tokens VecEnv step``: the whole step exactly as
  ``throughput.py`` times it (its ``make_run_jaxlm``: in tokens mode the actions are token ids
  that the env parses), averaged over ``--steps`` steps;
* for tasks whose episodes all end on the same step when started together (gridworld's
  truncation at 20): a ``plain`` tokens step (no env done) and the ``all-done`` step (every env
  resets: the core reset plus the reset text with the instruction), each one jitted step (index
  actions) timed on its own from a state 1 and ``h - 1`` steps in, ``h`` being the first step on
  which some env is done.

Discrete-action tasks only.

    python benchmarks/step_breakdown.py --env llf-gridworld-v0 --json benchmarks/results/step_breakdown_gridworld.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jaxlm_gym  # noqa: E402
from benchmarks.throughput import _leaf_sum, _random_actions, machine_info, make_run_jaxlm, measure  # noqa: E402


def per_step(run, steps: int, repeats: int) -> float:
    """Seconds per step of ``run`` (a scan of ``steps`` steps), best of ``repeats`` timed calls."""
    return min(measure(run, 1, steps, repeats)["seconds"]) / steps


def scan_run(body, init, steps: int):
    def run(key):
        return jax.lax.scan(body, init, jax.random.split(key, steps))[0][1]
    return run


def breakdown(env_id: str, num_envs: int, steps: int, repeats: int, feedback: str | None) -> dict:
    n = num_envs
    config = {} if feedback is None else {"feedback_type": feedback}
    tok = jaxlm_gym.make_vec(env_id, n, obs_mode="tokens", action_mode="index", **config)
    sym = jaxlm_gym.make_vec(env_id, n, obs_mode="symbolic", action_mode="index", **config)
    if not tok.discrete:
        raise ValueError(f"{env_id} has continuous actions; step_breakdown takes discrete-action tasks only")
    env, params, num_actions = tok.env, tok.params, tok.env.num_actions
    width = int(tok.text.max_tokens)
    out = {"env": env_id, "feedback": feedback, "num_envs": n, "width": width, "ms": {}}
    ms = out["ms"]

    def floor_body(carry, k):
        count, acc = carry
        count = count + jax.random.randint(k, (n,), 0, 1 << 16)
        pos = jnp.arange(width, dtype=jnp.int32)
        tokens = (count[:, None] * 31 + pos[None, :]) % 50257
        mask = pos[None, :] < (count[:, None] % width)
        return (count, acc + _leaf_sum((tokens, mask))), None
    ms["write floor"] = per_step(scan_run(floor_body, (jnp.zeros(n, jnp.int32), 0.0), steps), steps, repeats)

    _, sym_state = jax.jit(sym.reset)(jax.random.key(0))
    core_state = sym.core_state(sym_state)

    def core_step_body(carry, k):
        s, acc = carry
        a = _random_actions(k, n, num_actions)
        o, s, r, _, _ = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(jax.random.split(k, n), s, a, params)
        return (s, acc + _leaf_sum(o["symbolic"]) + r.sum()), None
    ms["core step"] = per_step(scan_run(core_step_body, (core_state, 0.0), steps), steps, repeats)

    def core_reset_body(carry, k):
        o, s = jax.vmap(env.reset_env, in_axes=(0, None))(jax.random.split(k, n), params)
        return (carry[0], carry[1] + _leaf_sum(o["symbolic"]) + _leaf_sum(s)), None
    reset_steps = max(steps // 10, 2)
    ms["core reset"] = per_step(scan_run(core_reset_body, (0, 0.0), reset_steps), reset_steps, repeats)

    for mode in ("symbolic", "tokens"):
        ms[f"{mode} VecEnv step"] = per_step(make_run_jaxlm(env_id, n, mode, steps, feedback), steps, repeats)

    def body(carry, k):
        s, acc = carry
        o, s, r, term, trunc, _ = tok.step(k, s, _random_actions(k, n, num_actions))
        return (s, acc + _leaf_sum((o["tokens"], o["length"])) + r.sum()), jnp.any(term | trunc)

    _, state = jax.jit(tok.reset)(jax.random.key(0))
    advance = jax.jit(lambda s, key, m: jax.lax.scan(body, (s, 0.0), jax.random.split(key, m))[0][0],
                      static_argnums=2)
    any_done = jax.jit(lambda key: jax.lax.scan(body, (state, 0.0), jax.random.split(key, steps))[1])(
        jax.random.key(0))
    h = int(jnp.argmax(any_done)) + 1 if bool(any_done.any()) else 0
    out["first_done_step"] = h
    out["steps_with_a_done_env"] = int(any_done.sum())
    if h >= 2:
        # One jitted step timed on its own, from a state h - 1 steps in (the next step ends
        # every episode) and from one a step in (no env ends).
        one = jax.jit(lambda s, key: body((s, 0.0), key)[0][1])
        for name, m in (("tokens plain step", 1), ("tokens all-done step", h - 1)):
            start = advance(state, jax.random.key(1), m)
            jax.block_until_ready(one(start, jax.random.key(2)))
            best = float("inf")
            for i in range(3 * repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(one(start, jax.random.key(3 + i)))
                best = min(best, time.perf_counter() - t0)
            ms[name] = best
        # A lone jitted step pays for its outputs apart from any scan, so read the two
        # against each other: what the resets and the reset text add to a step.
        ms["all-done extra over plain"] = ms["tokens all-done step"] - ms["tokens plain step"]
    out["ms"] = {k: v * 1e3 for k, v in ms.items()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="llf-gridworld-v0")
    p.add_argument("--num-envs", type=int, default=16384)
    p.add_argument("--steps", type=int, default=100, help="steps per timed scan (the throughput benchmark's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--feedback", default="a", help="LLF feedback_type; 'none' for other tasks")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    feedback = None if args.feedback == "none" else args.feedback
    out = breakdown(args.env, args.num_envs, args.steps, args.repeats, feedback)
    out["machine"] = machine_info()
    out["command"] = "python benchmarks/step_breakdown.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{out['env']}, {out['num_envs']} envs, text width {out['width']} tokens")
    print("| part | ms per step | env-steps/s |\n|---|---:|---:|")
    for name, v in out["ms"].items():
        rate = "—" if name.endswith("over plain") else f"{out['num_envs'] / v * 1e3:,.0f}"
        print(f"| {name} | {v:.2f} | {rate} |")
    if out["first_done_step"]:
        print(f"(first step with a done env: {out['first_done_step']}; steps with a done env: "
              f"{out['steps_with_a_done_env']} of {args.steps})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
