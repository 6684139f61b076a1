"""Env-steps/s of jaxlm-gym's vectorised envs, with gymnax CartPole-v1 as a reference.

What is measured, for each (env, obs_mode, num_envs):

* one jitted function ``run(key)`` resets ``num_envs`` envs, then ``jax.lax.scan``s
  ``steps`` steps of a uniform random policy (actions unpacked from as few
  ``jax.random.bits`` words as can be: a per-env ``randint`` would cost more than a
  cheap env's step and so measure the policy, not the env);
* the scan *consumes the whole observation*: every step adds the reward and the sum of
  every leaf of ``obs["symbolic"]`` (symbolic mode) or of ``obs["tokens"]`` and
  ``obs["length"]`` (tokens mode) to an accumulator, so XLA cannot drop the rendering;
* in tokens mode the actions are token ids (``action_token_table()[idx]``) that the env
  parses in-graph, i.e. the full text-in/text-out path;
* compile time (``lower().compile()``) is reported apart; after one untimed warm-up call,
  ``repeats`` calls with fresh keys are timed and the best (and median) of
  ``num_envs * steps / seconds`` is reported.

``--cpu-devices K`` (CPU only) splits the host into K XLA devices
(``jax_num_cpu_devices``) and shards the env batch over them (``make_vec(sharding=...)``):
each device runs its share of the batch as its own program on its own thread, instead of
one program whose kernels are each split over the cores.

Results go to a Markdown table on stdout, a JSON file (rows, machine, command line) and a
log-log plot of steps/s against num_envs.

    python benchmarks/throughput.py                      # full sweep (slow on CPU)
    python benchmarks/throughput.py --quick              # num_envs 1,64; smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax


def _argv_cpu_devices(argv) -> int:
    """``--cpu-devices`` from the command line, read before jaxlm_gym is imported:
    importing gymnax starts jax's backend, after which the CPU device count is fixed."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--cpu-devices=") else \
            (argv[i + 1] if arg == "--cpu-devices" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit():
            return int(value)
    return 1


if __name__ == "__main__" and (_count := _argv_cpu_devices(sys.argv[1:])) > 1:
    jax.config.update("jax_num_cpu_devices", _count)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxlm_gym  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CARTPOLE = "gymnax/CartPole-v1"


def _leaf_sum(tree) -> jax.Array:
    """Sum of every element of every leaf of ``tree``, as float32."""
    return sum((jnp.sum(x, dtype=jnp.float32) for x in jax.tree.leaves(tree)), jnp.float32(0))


def _random_actions(key, num_envs: int, num_actions: int) -> jax.Array:
    """Uniform random action indices, int32[num_envs], from as few random words as can be.

    A power-of-two ``num_actions`` takes log2(n) bits per env (one 32-bit draw serves 16
    envs of a 4-action task), exactly uniform and independent. Otherwise each env takes a
    16-bit chunk modulo n (bias below n / 65536). One draw per env would cost a third of a
    cheap env's whole step and so measure the policy, not the env.
    """
    width = (num_actions - 1).bit_length() if num_actions & (num_actions - 1) == 0 else 16
    width = max(width, 1)
    per_word = 32 // width
    words = jax.random.bits(key, (-(-num_envs // per_word),), jnp.uint32)
    shifts = jnp.arange(per_word, dtype=jnp.uint32) * width
    chunks = (words[:, None] >> shifts[None, :]) & jnp.uint32((1 << width) - 1)
    return (chunks.reshape(-1)[:num_envs] % num_actions).astype(jnp.int32)


def make_run_jaxlm(env_id: str, num_envs: int, obs_mode: str, steps: int, feedback: str | None = None,
                   sharding=None):
    """``run(key) -> float32``: reset + ``steps`` random steps of a jaxlm-gym VecEnv.

    ``feedback``: the LLF ``feedback_type`` (LLF tasks only). Tasks with continuous actions
    take uniform samples of their action space (symbolic mode) or a random one of their
    example action texts (tokens mode), which the env parses in-graph. ``sharding``: passed
    to ``make_vec`` (a ``Mesh`` that splits the env batch over devices)."""
    tokens = obs_mode == "tokens"
    config = {} if feedback is None else {"feedback_type": feedback}
    v = jaxlm_gym.make_vec(env_id, num_envs, obs_mode=obs_mode, action_mode="tokens" if tokens else "index",
                           sharding=sharding, **config)
    sample = None
    if tokens and v.discrete:
        table = jnp.asarray(v.action_token_table())
    elif tokens:
        texts = list(v.action_strings)
        width = max(len(v.tokenizer.encode(t)) for t in texts) + 1
        table = jnp.asarray(np.stack([v.encode_action(t, width) for t in texts]))
    else:
        table = None
        if not v.discrete:
            sample = jax.vmap(v.env.action_space(v.params).sample)
    n_act = int(table.shape[0]) if tokens else (v.num_actions if v.discrete else 0)

    def consume(obs):
        return _leaf_sum((obs["tokens"], obs["length"])) if tokens else _leaf_sum(obs["symbolic"])

    def run(key):
        key, k_reset = jax.random.split(key)
        obs, state = v.reset(k_reset)

        def body(carry, k):
            state, acc = carry
            k_act, k_step = jax.random.split(k)
            if sample is not None:
                action = sample(jax.random.split(k_act, num_envs))
            else:
                idx = _random_actions(k_act, num_envs, n_act)
                action = table[idx] if tokens else idx
            obs, state, reward, _, _, _ = v.step(k_step, state, action)
            return (state, acc + reward.sum() + consume(obs)), None

        (_, acc), _ = jax.lax.scan(body, (state, consume(obs)), jax.random.split(key, steps))
        return acc

    return run


def make_run_cartpole(num_envs: int, steps: int):
    """``run(key) -> float32``: the same loop on vmapped gymnax CartPole-v1."""
    import gymnax

    env, params = gymnax.make("CartPole-v1")
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    n_act = env.num_actions

    def run(key):
        key, k_reset = jax.random.split(key)
        obs, state = reset(jax.random.split(k_reset, num_envs), params)

        def body(carry, k):
            state, acc = carry
            k_act, k_step = jax.random.split(k)
            action = _random_actions(k_act, num_envs, n_act)
            obs, state, reward = step(jax.random.split(k_step, num_envs), state, action, params)[:3]
            return (state, acc + reward.sum() + _leaf_sum(obs)), None

        (_, acc), _ = jax.lax.scan(body, (state, _leaf_sum(obs)), jax.random.split(key, steps))
        return acc

    return run


def measure(run, num_envs: int, steps: int, repeats: int, seed: int = 0) -> dict:
    """Compile ``run`` apart, warm it up once, then time ``repeats`` calls with fresh keys."""
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(key).compile()
    compile_s = time.perf_counter() - t0
    compiled(jax.random.key(seed + 1)).block_until_ready()  # warm-up, not timed
    seconds = []
    for i in range(repeats):
        k = jax.random.key(seed + 2 + i)
        t0 = time.perf_counter()
        compiled(k).block_until_ready()
        seconds.append(time.perf_counter() - t0)
    rates = [num_envs * steps / s for s in seconds]
    return {"compile_s": compile_s, "seconds": seconds,
            "steps_per_s_best": max(rates), "steps_per_s_median": statistics.median(rates)}


def machine_info() -> dict:
    """Where the numbers were taken."""
    return {"processor": platform.processor(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (for the README)."""
    lines = ["| env | feedback | obs_mode | num_envs | compile_s | steps/s best | steps/s median |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        env = r["env"] + (f" ({r['cpu_devices']} CPU devices)" if r.get("cpu_devices", 1) > 1 else "")
        lines.append(f"| {env} | {r.get('feedback') or '-'} | {r['obs_mode']} | {r['num_envs']} "
                     f"| {r['compile_s']:.2f} "
                     f"| {r['steps_per_s_best']:,.0f} | {r['steps_per_s_median']:,.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> bool:
    """Log-log steps/s vs num_envs, one line per (env, obs_mode). False if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed; skipping the plot", file=sys.stderr)
        return False
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        name = r["env"] + (f" fb={r['feedback']}" if r.get("feedback") else "")
        series.setdefault((name, r["obs_mode"]), []).append((r["num_envs"], r["steps_per_s_best"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (env, mode), pts in series.items():
        xs, ys = zip(*sorted(pts))
        ax.plot(xs, ys, marker="o", linestyle="--" if env == CARTPOLE else "-", label=f"{env} ({mode})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("num_envs")
    ax.set_ylabel("env steps / s (best)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _csv(kind):
    """argparse type: a comma-separated list of ``kind``."""
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", type=_csv(str), default=None, help="comma-separated env ids (default: all registered)")
    p.add_argument("--num-envs", type=_csv(int), default=None, help="comma-separated batch sizes "
                   "(default: 1,64,1024,16384)")
    p.add_argument("--steps", type=int, default=100, help="steps per timed call (>= 100 unless --allow-short)")
    p.add_argument("--obs-mode", type=_csv(str), default=["symbolic", "tokens"], help="symbolic,tokens")
    p.add_argument("--feedback", type=_csv(str), default=["a"],
                   help="LLF feedback types to measure, e.g. a,n (LLF tasks only; default a)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row (best and median reported)")
    p.add_argument("--json", type=Path, default=RESULTS / "throughput.json")
    p.add_argument("--plot", type=Path, default=RESULTS / "throughput.png")
    p.add_argument("--no-cartpole", action="store_true", help="skip the gymnax CartPole-v1 reference rows")
    p.add_argument("--cpu-devices", type=int, default=1,
                   help="CPU only: split the host into this many XLA devices and shard the env batch over them")
    p.add_argument("--quick", action="store_true", help="smoke run: num_envs 1,64 and 100 steps")
    p.add_argument("--allow-short", action="store_true", help="allow --steps < 100 (tests)")
    p.add_argument("--table-from", type=Path, default=None,
                   help="print the Markdown table of a saved JSON result and exit (for the README)")
    args = p.parse_args(argv)
    if args.quick:
        args.num_envs, args.steps = [1, 64], 100
    args.num_envs = args.num_envs or [1, 64, 1024, 16384]
    args.envs = args.envs or jaxlm_gym.list_envs()
    unknown = sorted(set(args.envs) - set(jaxlm_gym.list_envs()))
    if unknown:
        p.error(f"unknown env(s) {unknown}; registered: {jaxlm_gym.list_envs()}")
    bad_modes = sorted(set(args.obs_mode) - {"symbolic", "tokens"})
    if bad_modes or not args.obs_mode:
        p.error(f"--obs-mode takes symbolic and/or tokens, got {args.obs_mode}")
    if any(n < 1 for n in args.num_envs):
        p.error("--num-envs must be positive")
    if args.steps < 1 or (args.steps < 100 and not args.allow_short):
        p.error(f"--steps must be >= 100 (got {args.steps}); pass --allow-short for smoke tests")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.cpu_devices < 1:
        p.error(f"--cpu-devices must be >= 1, got {args.cpu_devices}")
    odd = [n for n in args.num_envs if n % args.cpu_devices]
    if odd:
        p.error(f"--num-envs {odd} must be multiples of --cpu-devices {args.cpu_devices}")
    return args


def _cpu_mesh(count: int):
    """A one-axis ``Mesh`` over ``count`` CPU devices (None for 1). The devices are made
    when the script starts (``jax_num_cpu_devices``, see ``_argv_cpu_devices``)."""
    if count == 1:
        return None
    if jax.default_backend() != "cpu":
        raise SystemExit(f"--cpu-devices is for the CPU backend; this machine runs {jax.default_backend()}")
    devices = jax.devices("cpu")
    if len(devices) < count:
        raise SystemExit(f"--cpu-devices {count}: jax has {len(devices)} CPU device(s); run this script as a "
                         f"program, or set JAX_NUM_CPU_DEVICES={count} before jax starts")
    return jax.sharding.Mesh(devices[:count], ("envs",))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table_from is not None:
        saved = json.loads(args.table_from.read_text())
        print(markdown_table(saved["rows"]))
        m = saved["machine"]
        print(f"\n`{saved['command']}` on {m['backend']} ({', '.join(m['devices'])}), {m['cpu_count']} CPUs, "
              f"jax {m['jax']}")
        return 0
    mesh = _cpu_mesh(args.cpu_devices)
    jobs = [(env, fb, mode, n, lambda e=env, m=mode, n=n, fb=fb: make_run_jaxlm(e, n, m, args.steps, fb, mesh))
            for env in args.envs for fb in (args.feedback if env.startswith("llf-") else [None])
            for mode in args.obs_mode for n in args.num_envs]
    if not args.no_cartpole:
        jobs += [(CARTPOLE, None, "symbolic", n, lambda n=n: make_run_cartpole(n, args.steps))
                 for n in args.num_envs]
    rows = []
    for env, fb, mode, n, build in jobs:
        print(f"[bench] {env} {fb or ''} {mode} num_envs={n} ...", file=sys.stderr, flush=True)
        row = {"env": env, "feedback": fb, "obs_mode": mode, "num_envs": n, "steps": args.steps,
               "repeats": args.repeats, "cpu_devices": args.cpu_devices if env != CARTPOLE else 1}
        row.update(measure(build(), n, args.steps, args.repeats))
        rows.append(row)
        print(f"[bench]   compile {row['compile_s']:.2f}s, best {row['steps_per_s_best']:,.0f} steps/s",
              file=sys.stderr, flush=True)
    machine = machine_info()
    print(markdown_table(rows))
    print(f"\n{machine['backend']} ({', '.join(machine['devices'])}), {machine['cpu_count']} CPUs, "
          f"jax {machine['jax']}; random policy, {args.steps} steps, best of {args.repeats}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)])
    args.json.write_text(json.dumps({"command": command, "machine": machine, "rows": rows}, indent=2) + "\n")
    if plot(rows, args.plot, f"jaxlm-gym throughput ({machine['backend']}, {args.steps} steps)"):
        print(f"wrote {args.json} and {args.plot}", file=sys.stderr)
    else:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
