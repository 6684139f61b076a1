"""LLF-Bench optimization core: functions and their minima, x0 domain and rounding, every step
outcome of the spec's table (rewards / 100), the stop-reward defect F1 and its fix, gradient
feedback against jax.grad, F5 and its fix, the corner maximum, horizon / termination flags,
jit/vmap consistency (spec llf-bench.md 2.3).

The functions are written again here, in plain Python from the spec's table, as the oracle."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pure_envs import optimization as opt
from pure_envs.optimization import FUNCTIONS, NEVER, Optimization

# name -> (f, lo, hi, min_y, argmins, digits), from the spec's table.
SPEC = {
    "Booth": (lambda a, b: (a + 2 * b - 7) ** 2 + (2 * a + b - 5) ** 2, -10, 10, 0, [(1, 3)], 2),
    "McCormick": (lambda a, b: math.sin(a + b) + (a - b) ** 2 - 1.5 * a + 2.5 * b + 1, -1.5, 4, -1.9133,
                  [(-0.54719, -1.54719)], 4),
    "Rosenbrock": (lambda a, b: (1 - a) ** 2 + (b - a * a) ** 2, -5, 10, 0, [(1, 1)], 2),
    "SixHumpCamel": (lambda a, b: (4 - 2.1 * a * a + a ** 4 / 3) * a * a + a * b + (-4 + 4 * b * b) * b * b, -2, 2,
                     -1.0316, [(0.0898, -0.7126), (-0.0898, 0.7126)], 4),
    "Bohachevsky": (lambda a, b: a * a + 2 * b * b - 0.3 * math.cos(3 * math.pi * a) - 0.4 * math.cos(4 * math.pi * b)
                    + 0.7, -100, 100, 0, [(0, 0)], 4),
    "RotatedHyperEllipsoid": (lambda a, b: a * a + (a * a + b * b), -65.536, 65.536, 0, [(0, 0)], 2),
    "Matyas": (lambda a, b: 0.26 * (a * a + b * b) - 0.48 * a * b, -10, 10, 0, [(0, 0)], 4),
    "ThreeHumpCamel": (lambda a, b: 2 * a * a - 1.05 * a ** 4 + a ** 6 / 6 + a * b + b * b, -5, 5, 0, [(0, 0)], 4),
}
N = 4096


@functools.cache
def _env(function="Booth", **config):
    return Optimization(function, **config)


def _transition(env):
    # The transition alone (no auto-reset), run eagerly: the op-by-op kernels are shared by
    # every env of this file, where a jit would compile once per env (compiles dominate).
    return env.step_env


def _state(env, prev, attempts=10, time=0):
    prev = jnp.asarray(prev, jnp.float32)
    return opt.OptimizationState(time=jnp.int32(time), prev_x=prev, attempts=jnp.int32(attempts), x0=prev)


def _step(env, prev, action, params=None, **state_kw):
    """``(obs, state, reward, terminated, info)`` of one step from ``prev``."""
    params = env.default_params if params is None else params
    out = _transition(env)(jax.random.key(0), _state(env, prev, **state_kw), action, params)
    return jax.tree.map(np.asarray, out)


def _at(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _facts(obs):
    return {k: v.item() for k, v in obs["facts"].items()}


def test_functions_and_bad_config():
    assert FUNCTIONS == tuple(SPEC)
    with pytest.raises(ValueError, match="Rosenbrock"):
        Optimization("Ackley")
    with pytest.raises(ValueError, match="supported"):
        Optimization("Booth", instruction_type="p")
    with pytest.raises(ValueError, match="horizon"):
        Optimization("Booth", horizon=0)
    assert Optimization.INSTRUCTION_TYPES == ("b",)
    assert Optimization.FEEDBACK_TYPES == ("r", "hp", "hn", "fp", "fn")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_values_minimum_corners(name):
    f, lo, hi, min_y, argmins, digits = SPEC[name]
    env = _env(name)
    assert (env.x_low, env.x_high, env.min_y, env.digits) == (lo, hi, min_y, digits)
    rng = np.random.default_rng(0)
    pts = rng.uniform(lo, hi, (64, 2)).astype(np.float32)
    got = np.asarray(jax.vmap(env.f)(pts))
    want = np.array([f(float(a), float(b)) for a, b in pts])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4 * max(1.0, np.abs(want).max() * 1e-3))
    for a in argmins:
        assert abs(float(env.f(jnp.array(a))) - min_y) < 1e-3  # the spec's min_y is rounded
    # The clip bound: max f over the 4 corners, a constant computed once at construction (F8 fix).
    corners = max(f(a, b) for a in (lo, hi) for b in (lo, hi))
    assert isinstance(env.max_corner_y, float)
    assert env.max_corner_y == pytest.approx(corners, rel=1e-9)


@pytest.mark.parametrize("name", ["Booth", "McCormick", "RotatedHyperEllipsoid", "Bohachevsky"])
def test_reset_x0_domain_rounding_and_facts(name):
    f, lo, hi, min_y, _, digits = SPEC[name]
    env = _env(name)
    obs, st = jax.vmap(env.reset_env, (0, None))(jax.random.split(jax.random.key(0), N), env.default_params)  # eager
    x0 = np.asarray(st.prev_x)
    assert x0.shape == (N, 2) and x0.dtype == np.float32
    assert (x0 >= lo).all() and (x0 <= hi).all()
    # Rounded to the print digits: x0 is a multiple of 10^-digits, to float32 precision (XLA
    # divides by a constant through its reciprocal, so the last bit may differ).
    grid = np.round(x0.astype(np.float64) * 10 ** digits) / 10 ** digits
    assert (np.abs(x0 - grid) <= 1.01 * np.abs(np.spacing(x0))).all()
    last_digit = np.round(x0.astype(np.float64) * 10 ** digits).astype(np.int64) % 10
    assert len(np.unique(last_digit)) == 10  # and not on a coarser grid
    # Uniform on [lo, hi]^2.
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    assert abs(x0.mean() - mid) < 0.05 * half and abs(x0.std() - half / math.sqrt(3)) < 0.05 * half
    F = {k: np.asarray(v) for k, v in obs["facts"].items()}
    assert (F["at_reset"] == 1).all() and (F["obs_kind"] == opt.OBS_START).all()
    for k in ("fb_r", "fb_hp", "fb_hn", "fb_fp", "fb_fn", "invalid", "stopped", "hit"):
        assert (F[k] == 0).all(), k
    np.testing.assert_array_equal(F["x_0"], x0[:, 0])
    np.testing.assert_array_equal(F["prev_x_1"], x0[:, 1])
    np.testing.assert_allclose(F["y"][:16], [f(float(a), float(b)) for a, b in x0[:16]], rtol=1e-4, atol=1e-3)
    assert (F["attempts"] == 10).all() and (F["attempts_total"] == 10).all() and (F["digits"] == digits).all()
    assert (F["function"] == FUNCTIONS.index(name)).all()
    np.testing.assert_allclose(F["x_low"], lo)
    np.testing.assert_allclose(F["x_high"], hi)
    np.testing.assert_allclose(F["min_y"], min_y)
    np.testing.assert_array_equal(obs["symbolic"]["x"], x0)


# ----------------------------------------------------------------------------- step outcomes

def test_invalid_text():
    env = _env("Booth")
    for action in (Optimization.action([1.0, 2.0], opt.INVALID), Optimization.action([1.0, 2.0], 7),
                   Optimization.action([np.nan, 2.0]), Optimization.action([np.inf, 0.0]), jnp.int32(2)):
        obs, st, r, te, info = _step(env, [4.0, -2.0], action)
        F = _facts(obs)
        assert r == pytest.approx(-0.01) and not info["success"] and not info["valid_action"]
        assert not te
        assert F["fb_r"] == opt.R_INVALID and F["fb_fp"] == F["fb_fn"] == opt.FB_INVALID
        assert F["fb_hp"] == F["fb_hn"] == 0
        assert all(F[f"fb_{k}_{i}"] == 0 for k in ("hp", "hn", "fp", "fn") for i in (0, 1))
        assert F["invalid"] == 1 and F["stopped"] == F["hit"] == 0 and F["obs_kind"] == opt.OBS_NONE
        np.testing.assert_array_equal(st.prev_x, [4.0, -2.0])
        assert st.attempts == 10 and st.time == 1
        assert F["y"] == pytest.approx(SPEC["Booth"][0](4, -2))
        assert np.isfinite(obs["symbolic"]["y"]) and np.isfinite(obs["symbolic"]["grad"]).all()


@pytest.mark.parametrize("fix", [False, True])
def test_stop_reward_f1_and_fix(fix):
    env = _env("Booth", fix_stop_reward=fix)
    f = SPEC["Booth"][0]
    obs, st, r, te, info = _step(env, [2.0, 2.0], Optimization.action([9.0, 9.0], opt.STOP))
    y = f(2, 2)  # 9
    # F1: the reference pays +f(prev_x); the fix pays what a proposal of prev_x would.
    assert r == pytest.approx(-y / 100 if fix else y / 100)
    F = _facts(obs)
    assert F["fb_r"] == opt.R_STOP_MISS and F["stopped"] == 1 and F["obs_kind"] == opt.OBS_NONE
    assert not info["success"] and not te
    assert (F["prev_x_0"], F["prev_x_1"]) == (2.0, 2.0) and F["y"] == pytest.approx(y)
    assert all(F[f"fb_{k}"] == 0 for k in ("hp", "hn", "fp", "fn"))
    np.testing.assert_array_equal(st.prev_x, [2.0, 2.0])
    assert st.attempts == 10
    # Stopping at (near) the minimum is a success: |f(prev_x) - min_y| < 1e-2.
    obs, st, r, te, info = _step(env, [1.0, 3.0], Optimization.action([0.0, 0.0], opt.STOP))
    assert info["success"] and _facts(obs)["fb_r"] == opt.R_STOP_MIN and r == pytest.approx(0.0, abs=1e-6)
    # The index-mode stop (a bare kind) is the same step.
    obs2, *_ = _step(env, [1.0, 3.0], jnp.int32(opt.STOP))
    assert _facts(obs2) == _facts(obs)


def test_stop_reward_mccormick_sign():
    """With min_y < 0 the F1 reward at the minimum is +min_y; the fix gives -min_y."""
    for fix, sign in ((False, 1), (True, -1)):
        env = _env("McCormick", fix_stop_reward=fix)
        y = float(env.f(jnp.array([-0.54719, -1.54719])))
        _, _, r, _, info = _step(env, [-0.54719, -1.54719], Optimization.action([0, 0], opt.STOP))
        assert info["success"] and r == pytest.approx(sign * y / 100, rel=1e-5)


@pytest.mark.parametrize("name", ["Booth", "McCormick", "SixHumpCamel"])
def test_hit(name):
    min_y, argmins = SPEC[name][3], SPEC[name][4]
    env = _env(name)
    prev = [0.5, 0.5]
    for a in argmins:
        obs, st, r, te, info = _step(env, prev, Optimization.action(a))
        F = _facts(obs)
        assert info["success"] and info["valid_action"] and not te
        assert r == pytest.approx(-min_y / 100)
        assert F["fb_r"] == opt.R_HIT and F["hit"] == 1 and F["obs_kind"] == opt.OBS_HIT
        assert F["y"] == pytest.approx(min_y)  # the reference prints min_y, not f(x)
        assert all(F[f"fb_{k}"] == 0 for k in ("hp", "hn", "fp", "fn"))
        # prev_x changes only on ordinary steps, and the counter does not move.
        np.testing.assert_array_equal(st.prev_x, prev)
        assert st.attempts == 10
        assert (F["x_0"], F["x_1"]) == pytest.approx(a)
    # Just outside the tolerance is an ordinary step.
    near = (1.0, 3.0 + 0.0224)  # Booth: f = 5 * 0.0224^2 ~ 0.0025 < 1e-2: still a hit
    assert _step(_env("Booth"), prev, Optimization.action(near))[4]["success"]
    far = (1.0, 3.05)  # f = 5 * 0.05^2 = 0.0125 > 1e-2
    obs, _, r, *_ , info = _step(_env("Booth"), prev, Optimization.action(far))
    assert not info["success"] and _facts(obs)["fb_r"] == opt.R_MISS and r == pytest.approx(-0.0125 / 100, rel=1e-3)


def test_ordinary_step_reward_clip_and_counter():
    env = _env("Booth")
    f = SPEC["Booth"][0]
    obs, st, r, _, info = _step(env, [0.0, 0.0], Optimization.action([2.0, -1.0]))
    F = _facts(obs)
    assert r == pytest.approx(-f(2, -1) / 100) and not info["success"] and info["valid_action"]
    assert F["fb_r"] == opt.R_MISS and F["obs_kind"] == opt.OBS_STEP and F["y"] == pytest.approx(f(2, -1))
    assert F["attempts"] == 10 and st.attempts == 9  # shown before the decrement (F3)
    np.testing.assert_array_equal(st.prev_x, [2.0, -1.0])
    assert (F["prev_x_0"], F["prev_x_1"]) == (0.0, 0.0) and (F["x_0"], F["x_1"]) == (2.0, -1.0)
    np.testing.assert_allclose(obs["symbolic"]["x"], [2.0, -1.0])
    np.testing.assert_allclose(obs["symbolic"]["grad"], jax.grad(env.f)(jnp.array([2.0, -1.0])))
    # Outside the domain (never enforced, F6): the reward is clipped at -max over the corners.
    obs, st, r, *_ = _step(env, [0.0, 0.0], Optimization.action([1000.0, -1000.0]))
    assert r == pytest.approx(-env.max_corner_y / 100) and env.max_corner_y == pytest.approx(2594.0)
    np.testing.assert_array_equal(st.prev_x, [1000.0, -1000.0])


def test_attempts_counter_is_display_only_and_never_ends():
    env = _env("Rosenbrock")
    params = env.default_params
    assert params.max_steps_in_episode == NEVER and params.reward_scale == pytest.approx(0.01)
    kinds = jnp.array([0, 0, 2, 1, 0] + [0] * 10, jnp.int32)
    xs = jnp.stack([jnp.linspace(-4.0, 4.0, 15), jnp.linspace(3.0, -3.0, 15)], 1)

    def body(s, a):
        obs, s, _, te, tr, _ = env.step(jax.random.key(0), s, {"x": a[0], "kind": a[1]}, params)
        return s, (obs["facts"]["attempts"], te, tr)

    _, st = env.reset(jax.random.key(0), params)
    shown, te, tr = jax.jit(lambda s: jax.lax.scan(body, s, (xs, kinds))[1])(st)
    # Ordinary steps show 10, 9, ...; invalid / stop steps do not count; it goes below 0.
    assert list(np.asarray(shown)) == [10, 9, 8, 8, 8] + list(range(7, -3, -1))
    assert not np.asarray(te).any() and not np.asarray(tr).any()


def test_horizon_and_end_on_stop_or_hit_flags():
    env = Optimization("Booth", horizon=3)
    params = env.default_params
    assert params.max_steps_in_episode == 3 and params.attempts == 3

    def body(s, k):
        obs, s, _, te, tr, _ = env.step(k, s, Optimization.action([5.0, 5.0]), params)
        return s, (obs["facts"]["attempts"], obs["facts"]["at_reset"], te, tr)

    obs, st = env.reset(jax.random.key(0), params)
    assert int(obs["facts"]["attempts"]) == 3
    shown, at_reset, te, tr = jax.jit(lambda s: jax.lax.scan(body, s, jax.random.split(jax.random.key(1), 6))[1])(st)
    # The counter shows the steps left; the 3rd step truncates and auto-resets.
    np.testing.assert_array_equal(tr, [False, False, True] * 2)
    np.testing.assert_array_equal(shown, [2, 1, 3, 2, 1, 3])
    np.testing.assert_array_equal(at_reset, [0, 0, 1, 0, 0, 1])
    assert not np.asarray(te).any()
    end = _env("Booth", end_on_stop_or_hit=True)
    assert _step(end, [0.0, 0.0], Optimization.action([1.0, 3.0]))[3]  # hit
    assert _step(end, [0.0, 0.0], jnp.int32(opt.STOP))[3]
    assert not _step(end, [0.0, 0.0], Optimization.action([2.0, 2.0]))[3]
    assert not _step(end, [0.0, 0.0], jnp.int32(opt.INVALID))[3]


# ----------------------------------------------------------------------------- gradient feedback

def _expected_feedback(env, prev, x, fix_f5=False):
    """hp/hn/fp/fn per coordinate from jax.grad, by the spec's rules."""
    g = np.asarray(jax.grad(env.f)(jnp.asarray(prev, jnp.float32)))
    g2 = np.asarray(jax.grad(env.f)(jnp.asarray(x, jnp.float32)))
    out = {}
    for i in (0, 1):
        d = np.float32(x[i]) - np.float32(prev[i])
        direction = opt.INCREASING if d > 0 else opt.DECREASING if d < 0 else (
            opt.UNCHANGED if fix_f5 else opt.DECREASING)
        good = np.sign(d) == np.sign(-g[i])
        out[f"fb_hp_{i}"] = direction if good else 0
        out[f"fb_hn_{i}"] = 0 if good else direction
        out[f"fb_fp_{i}"] = 0 if g2[i] == 0 else (opt.SMALLER if g2[i] > 0 else opt.LARGER)
        out[f"fb_fn_{i}"] = 0 if g2[i] == 0 else (opt.SMALLER if g2[i] < 0 else opt.LARGER)
    for k in ("hp", "hn", "fp", "fn"):
        out[f"fb_{k}"] = opt.FB_COORDS if out[f"fb_{k}_0"] or out[f"fb_{k}_1"] else 0
    return out


POINTS = [  # (function, prev_x, x)
    ("Booth", (0.0, 0.0), (1.0, 0.0)),
    ("Booth", (0.0, 0.0), (-1.0, 5.0)),
    ("Booth", (5.0, 5.0), (4.0, 6.0)),
    ("Rosenbrock", (-2.0, 3.0), (-1.5, 3.5)),
    ("Rosenbrock", (2.0, 1.0), (2.0, 2.0)),
    ("McCormick", (3.0, -1.0), (2.5, -1.2)),
    ("SixHumpCamel", (1.0, 1.0), (0.5, -0.5)),
    ("Bohachevsky", (10.0, -20.0), (9.0, -19.0)),
    ("RotatedHyperEllipsoid", (0.0, 5.0), (0.0, 3.0)),
    ("Matyas", (3.0, -2.0), (3.5, -2.0)),
    ("ThreeHumpCamel", (-2.0, 1.0), (-1.0, 1.0)),
]


@pytest.mark.parametrize("name,prev,x", POINTS)
def test_gradient_feedback_against_jax_grad(name, prev, x):
    env = _env(name)
    obs, *_ = _step(env, prev, Optimization.action(x))
    F = _facts(obs)
    if F["hit"]:
        pytest.skip("a hit has no gradient feedback")
    want = _expected_feedback(env, prev, x)
    assert {k: F[k] for k in want} == want
    assert F["fb_r"] == opt.R_MISS
    # Exactly one hindsight sentence per coordinate.
    for i in (0, 1):
        assert (F[f"fb_hp_{i}"] > 0) != (F[f"fb_hn_{i}"] > 0)


def test_hand_checked_booth_signs():
    """Booth at prev (0, 0): g = (-34, -38); at x = (1, 0): g' = (-24, -30)."""
    obs, *_ = _step(_env("Booth"), [0.0, 0.0], Optimization.action([1.0, 0.0]))
    F = _facts(obs)
    assert F["fb_hp_0"] == opt.INCREASING and F["fb_hn_0"] == 0  # increasing x1 lowers y
    assert F["fb_hn_1"] == opt.DECREASING and F["fb_hp_1"] == 0  # F5: unchanged x2 called "decreasing"
    assert F["fb_fp_0"] == F["fb_fp_1"] == opt.LARGER  # g' < 0: choose larger numbers
    assert F["fb_fn_0"] == F["fb_fn_1"] == opt.SMALLER  # ... and avoid smaller ones


def test_f5_unchanged_coordinate_and_fix():
    # RotatedHyperEllipsoid: grad = (4 x1, 2 x2). From (0, 5) to (0, 3): Δ = (0, -2), g = (0, 10).
    for fix, word in ((False, opt.DECREASING), (True, opt.UNCHANGED)):
        env = _env("RotatedHyperEllipsoid", fix_unchanged_coordinate=fix)
        F = _facts(_step(env, [0.0, 5.0], Optimization.action([0.0, 3.0]))[0])
        assert F["fb_hp_0"] == word and F["fb_hn_0"] == 0  # Δ = 0 and g = 0: sign(0) == sign(-0)
        assert F["fb_hp_1"] == opt.DECREASING  # Δ < 0 against g > 0
        assert F["fb_fp_0"] == F["fb_fn_0"] == 0  # g'_0 = 0 at x = (0, 3): no future sentence
        assert F["fb_fp_1"] == opt.SMALLER and F["fb_fn_1"] == opt.LARGER
        # Δ = 0 where g != 0: hindsight-negative (F5: "decreasing"; fixed: "unchanged").
        F = _facts(_step(env, [2.0, 5.0], Optimization.action([2.0, 3.0]))[0])
        assert F["fb_hn_0"] == word and F["fb_hp_0"] == 0


def test_jit_vmap_consistency_and_single_trace():
    env = _env("SixHumpCamel")
    params = env.default_params
    obs, st = jax.jit(jax.vmap(env.reset, (0, None)))(jax.random.split(jax.random.key(3), 8), params)
    rng = np.random.default_rng(1)
    actions = {"x": jnp.asarray(rng.uniform(-2, 2, (8, 2)), jnp.float32),
               "kind": jnp.asarray([0, 0, 0, 1, 2, 0, 5, 0], jnp.int32)}
    keys = jax.random.split(jax.random.key(4), 8)
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(env.step, n=1))
    batch = jax.jit(jax.vmap(env.step, (0, 0, 0, None)))(keys, st, actions, params)
    for i in range(8):
        one = step(keys[i], _at(st, i), _at(actions, i), params)
        chex.assert_trees_all_close(one, _at(batch, i), rtol=1e-6, atol=1e-6)
    # Observations lie in the declared space.
    space = env.observation_space(params)
    for part in ("symbolic", "facts"):
        for k, sp in space.spaces[part].spaces.items():
            x = np.asarray(batch[0][part][k])
            assert x.shape[1:] == tuple(sp.shape) and x.dtype == sp.dtype, k
            assert (x >= np.asarray(sp.low)).all() and (x <= np.asarray(sp.high)).all(), k
    assert set(obs["facts"]) == set(env.fact_shapes)
    assert env.action_space(params).contains(Optimization.action([0.0, 0.0]))
