"""LLF-Bench bandits core: payout tables, per-episode redraw (F14), arm permutation, best arm,
pull statistics, feedback cases, invalid text, no termination / horizon (spec llf-bench.md 2.1).

XLA compiles dominate this file's time, so every batched call goes through one compiled
vmapped ``reset``/``step`` per env, at one batch size ``N``."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pure_envs.bandits import NEVER, VARIANTS, Bandits

# The spec's payout table: variant -> (arms, p, r); "U" = U(0, 1) per arm, "N" = Gaussian means.
TABLE = {
    "TwoArmedDeterministicFixed": (2, [1, 0], [1, 1]),
    "TwoArmedHighLowFixed": (2, [0.8, 0.2], [1, 1]),
    "TwoArmedHighHighFixed": (2, [0.8, 0.9], [1, 1]),
    "TwoArmedLowLowFixed": (2, [0.1, 0.2], [1, 1]),
    "TenArmedRandomFixed": (10, "U", [1] * 10),
    "TenArmedUniformDistributedReward": (10, [1] * 10, "U"),
    "TenArmedRandomRandom": (10, "U", "U"),
    "TenArmedGaussian": (10, [1] * 10, "N"),
}
N = 8192  # batch of envs of every batched call


@functools.cache
def _env(variant, **config):
    return Bandits(variant, **config)


def _resets(env, seed=0, params=None):
    """N resets, run eagerly (op-by-op kernels are shared by every env of this file, where a
    jit would compile once per env; compiles dominate)."""
    params = env.default_params if params is None else params
    return jax.vmap(env.reset_env, (0, None))(jax.random.split(jax.random.key(seed), N), params)


def _steps(env, st, actions, seed=1, params=None):
    """N transitions ``(obs, state, reward, terminated, info)``, eagerly, without auto-reset."""
    params = env.default_params if params is None else params
    return jax.vmap(env.step_env, (0, 0, 0, None))(jax.random.split(jax.random.key(seed), N), st, actions, params)


def _at(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def _one_state(env, seed=11):
    """N copies of one reset state (one bandit, one arm order)."""
    _, st = _resets(env, seed)
    return jax.tree.map(lambda x: jnp.broadcast_to(x[0], x.shape), st)


def test_variants_and_bad_config():
    assert set(VARIANTS) == set(TABLE)
    with pytest.raises(ValueError, match="TenArmedGaussian"):
        Bandits("ThreeArmed")
    with pytest.raises(ValueError, match="supported"):
        Bandits("TenArmedGaussian", instruction_type="x")
    with pytest.raises(ValueError):
        Bandits("TenArmedGaussian", feedback_type="zz")
    with pytest.raises(ValueError, match="horizon"):
        Bandits("TenArmedGaussian", horizon=0)
    assert Bandits("BanditTwoArmedLowLowFixed").variant == "TwoArmedLowLowFixed"
    assert Bandits.INSTRUCTION_TYPES == ("b", "p", "c")
    assert Bandits.FEEDBACK_TYPES == ("r", "hp", "hn", "fp", "fn")
    for v in VARIANTS:
        env = Bandits(v, instruction_type="c", feedback_type="m")
        assert env.num_actions == TABLE[v][0] and env.invalid_action == TABLE[v][0]
        assert env.action_space().n == TABLE[v][0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_payout_tables(variant):
    """What a reset draws (the reference's constructor), per variant."""
    n, p_spec, r_spec = TABLE[variant]
    env = _env(variant)
    env.check_params(env.default_params)
    p, r = jax.vmap(env._draw_tables)(jax.random.split(jax.random.key(0), 2048))  # eager: shared op cache
    p, r = np.asarray(p), np.asarray(r)
    assert p.shape == r.shape == (2048, n) and p.dtype == r.dtype == np.float32
    if isinstance(p_spec, list):
        np.testing.assert_allclose(p, np.broadcast_to(p_spec, p.shape))
    else:
        assert (p >= 0).all() and (p < 1).all() and abs(p.mean() - 0.5) < 0.02 and abs(p.var() - 1 / 12) < 0.01
    if isinstance(r_spec, list):
        np.testing.assert_allclose(r, np.broadcast_to(r_spec, r.shape))
    elif r_spec == "U":
        assert (r >= 0).all() and (r < 1).all() and abs(r.mean() - 0.5) < 0.02 and abs(r.var() - 1 / 12) < 0.01
    else:  # Gaussian means ~ N(0, 1)
        assert abs(r.mean()) < 0.03 and abs(r.std() - 1) < 0.03
    dp = env.default_params
    assert dp.p.shape == dp.r.shape == (n,) and dp.max_steps_in_episode == NEVER


def test_two_armed_tables_and_best_internal_arm():
    """The two-armed tables: expected values p*r and the internal argmax, whatever the order."""
    want = {"TwoArmedDeterministicFixed": ([1, 0], 0), "TwoArmedHighLowFixed": ([0.8, 0.2], 0),
            "TwoArmedHighHighFixed": ([0.8, 0.9], 1), "TwoArmedLowLowFixed": ([0.1, 0.2], 1)}
    for v, (ev, best) in want.items():
        params = _env(v).default_params
        np.testing.assert_allclose(params.p * params.r, ev, rtol=1e-6)
        assert int(np.argmax(np.asarray(params.p * params.r))) == best
    env = _env("TwoArmedHighLowFixed")
    obs, st = _np(_resets(env))
    np.testing.assert_allclose(st.p, np.broadcast_to([0.8, 0.2], st.p.shape))
    assert (st.perm[np.arange(N), st.best_arm] == 0).all()
    # The permutation hides the layout: the best arm is external 0 or 1 half the time each.
    assert abs(st.best_arm.mean() - 0.5) < 0.03
    np.testing.assert_allclose(obs["facts"]["best_reward"], 0.8, rtol=1e-6)
    np.testing.assert_allclose(obs["facts"]["hint_reward"], 0.2, rtol=1e-6)
    assert (obs["facts"]["hint_arm"] == 1 - st.best_arm).all()


def test_reset_redraws_tables_f14_and_permutation_is_uniform():
    env = _env("TenArmedRandomRandom")
    obs, st = _np(_resets(env))
    n = env.n_arms
    # F14: every episode has its own tables.
    assert len({tuple(row) for row in st.p[:64]}) == 64
    # Expected values per external arm, best arm, facts.
    ev = np.take_along_axis(st.p * st.r, st.perm, 1)
    np.testing.assert_allclose(np.asarray(jax.vmap(Bandits.expected)(st)), ev, rtol=1e-6)
    assert (st.perm[np.arange(N), st.best_arm] == (st.p * st.r).argmax(1)).all()
    assert (ev[np.arange(N), st.best_arm] == ev.max(1)).all()
    f = obs["facts"]
    assert (f["best_arm"] == st.best_arm).all()
    np.testing.assert_allclose(f["best_reward"], ev.max(1), rtol=1e-6)
    np.testing.assert_allclose(f["hint_reward"], ev[np.arange(N), f["hint_arm"]], rtol=1e-6)
    assert (f["variant"] == VARIANTS.index("TenArmedRandomRandom")).all()
    assert (f["n_arms"] == n).all() and (f["max_arm"] == n - 1).all()
    # The permutation is a permutation, and uniform: where internal arm 0 lands, and the
    # position of the best arm, are uniform over the n external indices.
    assert (np.sort(st.perm, 1) == np.arange(n)).all()
    for positions in (np.argmax(st.perm == 0, 1), st.best_arm):
        counts = np.bincount(positions, minlength=n)
        chi2 = ((counts - N / n) ** 2 / (N / n)).sum()
        assert chi2 < 30, counts  # 9 degrees of freedom: P(chi2 > 30) < 1e-3


def test_reset_facts_and_hint_arm():
    env = _env("TenArmedGaussian", instruction_type="p")
    obs, st = _np(_resets(env))
    f = obs["facts"]
    assert (f["at_reset"] == 1).all()
    for k in ("fb_r", "fb_hp", "fb_hn", "fb_fp", "fb_fn", "invalid", "reward"):
        assert (f[k] == 0).all(), k
    assert (f["arm"] == env.n_arms).all()
    assert (f["hint_arm"] != st.best_arm).all()
    # The hint is uniform over the non-best arms: its offset from the best arm is uniform on 1..n-1.
    offsets = np.bincount((f["hint_arm"] - st.best_arm) % env.n_arms, minlength=env.n_arms)
    assert offsets[0] == 0 and offsets[1:].min() > N / 9 * 0.85 and offsets[1:].max() < N / 9 * 1.15
    sym = obs["symbolic"]
    assert (sym["last_arm"] == env.n_arms).all() and (sym["pulls"] == 0).all() and (sym["reward_sum"] == 0).all()
    assert set(f) == set(env.fact_shapes)


def test_success_and_feedback_cases_for_every_arm():
    env = _env("TenArmedRandomRandom")
    n = env.n_arms
    _, st = _resets(env)
    actions = jnp.arange(N, dtype=jnp.int32) % n
    obs, _, r, te, info = _np(_steps(env, st, actions))
    a = np.asarray(actions)
    st = _np(st)
    best = st.best_arm == a
    f = obs["facts"]
    np.testing.assert_array_equal(info["success"], best)
    assert 0.05 < best.mean() < 0.15
    np.testing.assert_array_equal(f["fb_hp"], best.astype(np.int32))
    np.testing.assert_array_equal(f["fb_hn"], (~best).astype(np.int32))
    assert (f["fb_r"] == 1).all() and (f["fb_fp"] == 1).all() and (f["fb_fn"] == 1).all()
    assert (f["at_reset"] == 0).all() and (f["invalid"] == 0).all() and (f["arm"] == a).all()
    np.testing.assert_array_equal(f["reward"], r)
    ev = np.asarray(jax.vmap(Bandits.expected)(st))
    np.testing.assert_allclose(f["best_reward"], ev.max(1), rtol=1e-6)
    np.testing.assert_allclose(f["fn_reward"], ev[np.arange(N), f["fn_arm"]], rtol=1e-6)
    assert (f["fn_arm"] != st.best_arm).all()
    assert not te.any()
    assert (obs["symbolic"]["last_arm"] == a).all()


def test_fn_arm_is_uniform_over_non_best_arms():
    env = _env("TenArmedRandomRandom")
    st = _one_state(env)
    obs, *_ = _np(_steps(env, st, jnp.zeros((N,), jnp.int32), seed=4))
    counts = np.bincount(obs["facts"]["fn_arm"], minlength=10)
    best = int(st.best_arm[0])
    assert counts[best] == 0
    others = np.delete(counts, best)
    assert others.min() > N / 9 * 0.85 and others.max() < N / 9 * 1.15


@pytest.mark.parametrize("variant", ["TwoArmedHighLowFixed", "TenArmedRandomRandom", "TenArmedGaussian"])
def test_pull_statistics(variant):
    """Mean payout of each external arm ~ p*r (p*mean); payouts are r or 0 (Gaussian: N(mean, 1))."""
    env = _env(variant, instruction_type="p") if variant == "TenArmedGaussian" else _env(variant)
    n = env.n_arms
    st = _one_state(env)
    actions = jnp.arange(N, dtype=jnp.int32) % n
    _, new, r, *_ = _np(_steps(env, st, actions, seed=100))
    assert r.dtype == np.float32
    ev = np.asarray(Bandits.expected(_at(st, 0)))
    r_ext = np.asarray(st.r[0])[np.asarray(st.perm[0])]
    a = np.asarray(actions)
    m = N // n
    for arm in range(n):
        ra = r[a == arm]
        if variant == "TenArmedGaussian":
            assert abs(ra.mean() - ev[arm]) < 4.5 / np.sqrt(m) and abs(ra.std() - 1) < 0.1
        else:
            assert set(np.unique(ra)) <= {0.0, np.float32(r_ext[arm])}
            assert abs(ra.mean() - ev[arm]) < 4.5 * 0.5 / np.sqrt(m) + 1e-6
    np.testing.assert_array_equal(new.pulls, np.eye(n, dtype=np.int32)[a])
    np.testing.assert_array_equal(new.reward_sum.sum(-1), r)


def test_invalid_text_is_not_a_pull():
    env = _env("TwoArmedHighLowFixed")
    _, st = _resets(env)
    actions = jnp.asarray(np.resize([2, -1, 7, 99], N), jnp.int32)  # n = invalid_action, and others
    obs, new, r, te, info = _np(_steps(env, st, actions))
    st = _np(st)
    f = obs["facts"]
    assert (r == 0.0).all() and not info["success"].any() and not info["valid_action"].any()
    assert (f["invalid"] == 1).all() and (f["arm"] == 2).all()
    for k in ("fb_r", "fb_hp", "fb_hn", "fb_fp", "fb_fn", "at_reset"):
        assert (f[k] == 0).all(), k
    assert not te.any()
    # The env was not stepped: same tables, permutation, best arm; no pull counted.
    for k in ("p", "r", "perm", "best_arm", "hint_arm", "pulls", "reward_sum"):
        np.testing.assert_array_equal(getattr(new, k), getattr(st, k))
    assert (new.time == 1).all()


def test_fixed_tables_without_redraw():
    fixed = _env("TenArmedRandomFixed", redraw_each_episode=False)
    params = fixed.default_params
    _, st = _np(_resets(fixed))
    np.testing.assert_array_equal(st.p, np.broadcast_to(params.p, st.p.shape))
    assert len({tuple(row) for row in st.perm[:64]}) > 32  # the arm order is still fresh per reset
    # default_params is deterministic (table_seed); draw_params gives other fixed bandits,
    # one per env when vmapped.
    np.testing.assert_array_equal(fixed.default_params.p, params.p)
    assert not np.array_equal(Bandits("TenArmedRandomFixed", table_seed=1).default_params.p, params.p)
    many = jax.vmap(fixed.draw_params)(jax.random.split(jax.random.key(9), 4))
    assert many.p.shape == (4, 10) and len({tuple(row) for row in np.asarray(many.p)}) == 4
    other = _at(many, 1)
    _, st2 = _np(_resets(fixed, params=other))
    np.testing.assert_array_equal(st2.p, np.broadcast_to(other.p, st2.p.shape))
    # Custom tables for a two-armed variant go through the params.
    two = _env("TwoArmedHighLowFixed")
    custom = two.default_params.replace(p=jnp.array([0.1, 0.7]))
    _, st3 = _np(_resets(two, params=custom))
    assert (st3.perm[np.arange(N), st3.best_arm] == 1).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        two.check_params(two.default_params.replace(p=jnp.array([1.5, 0.0])))
    with pytest.raises(ValueError, match=r"float32\[2\]"):
        two.check_params(two.default_params.replace(p=jnp.zeros(3)))


def test_never_terminates_and_horizon_flag():
    def run(env, params, steps=8):
        def body(s, k):
            obs, s, _, te, tr, _ = env.step(k, s, jnp.int32(0), params)
            return s, (te, tr, s.time, obs["facts"]["at_reset"])

        _, st = env.reset(jax.random.key(0), params)
        return jax.lax.scan(body, st, jax.random.split(jax.random.key(1), steps))[1]

    env = _env("TwoArmedHighHighFixed")
    params = env.default_params
    assert params.max_steps_in_episode == NEVER
    run_ref = jax.jit(functools.partial(run, env))
    te, tr, time, _ = run_ref(params)
    assert not np.asarray(te).any() and not np.asarray(tr).any()
    np.testing.assert_array_equal(time, np.arange(1, 9))
    # The params override truncates the same compiled env (the contract suite relies on it).
    te, tr, *_ = run_ref(params.replace(max_steps_in_episode=2))
    np.testing.assert_array_equal(tr, [False, True] * 4)
    h = Bandits("TwoArmedHighHighFixed", horizon=3)
    assert h.default_params.max_steps_in_episode == 3
    te, tr, time, at_reset = jax.jit(functools.partial(run, h))(h.default_params)
    assert not np.asarray(te).any()
    np.testing.assert_array_equal(tr, [False, False, True] * 2 + [False, False])
    np.testing.assert_array_equal(time, [1, 2, 0, 1, 2, 0, 1, 2])  # auto-reset after the 3rd step
    np.testing.assert_array_equal(at_reset, [0, 0, 1, 0, 0, 1, 0, 0])


def test_jit_vmap_consistency_single_trace_and_spaces():
    from gymnax.environments import spaces

    env = _env("TenArmedGaussian", instruction_type="p")
    params = env.default_params
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(env.step, n=1))
    _, st = _resets(env, seed=2)
    vstep = jax.jit(jax.vmap(env.step, (0, 0, 0, None)))
    space = env.observation_space(params)
    for t in range(2):
        acts = (jnp.arange(N, dtype=jnp.int32) + t) % (env.n_arms + 1)
        keys = jax.random.split(jax.random.key(10 + t), N)
        batch = vstep(keys, st, acts, params)
        for i in range(3):
            o, s, r, te, tr, info = step(keys[i], _at(st, i), acts[i], params)
            bo, bs, br, bte, btr, binfo = _at(batch, i)
            chex.assert_trees_all_close((o, s, r, te, tr, info["success"]),
                                        (bo, bs, br, bte, btr, binfo["success"]), rtol=1e-6, atol=1e-6)
            for part in ("symbolic", "facts"):
                for k, sp in space.spaces[part].spaces.items():
                    x = np.asarray(o[part][k])
                    if isinstance(sp, spaces.Discrete):
                        assert x.shape == () and 0 <= x < sp.n, k
                    else:
                        assert x.shape == tuple(sp.shape) and x.dtype == sp.dtype, k
                        assert (x >= np.asarray(sp.low)).all() and (x <= np.asarray(sp.high)).all(), k
        st = batch[1]
