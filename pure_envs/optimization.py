"""LLF-Bench optimization (``llf-optimization-<Function>-v0``), as a pure JAX core.

Facts follow LLF-Bench (``llfbench/envs/optimization/loss_descent.py`` and ``wrapper.py``,
spec llf-bench.md section 2.3): minimise a 2-D test function by proposing points x; the
episode starts at ``x0 ~ U[lo, hi]^2`` rounded to the function's print digits; each step is
invalid text, a stop, a hit (|f(x) - min_y| < 1e-2) or an ordinary proposal, with the rewards
of the spec's table divided by 100; hindsight feedback compares the move x - prev_x with the
gradient at prev_x, future feedback reads the gradient at x.

Text parsing is not the core's job: the (lead's, in-graph) parser turns the agent's text into
an action ``OptimizationAction(x=float32[2], kind=int32)`` with kind 0 = propose x, 1 = stop (a stop word
was found), 2 = invalid text. The reference's parser quirks live there: stop words
``reach``/``stay``/``stop`` match as substrings anywhere and win over coordinates (F2); the
coordinate regex rejects ``.5`` and ``+1`` (F6). The domain is never enforced (F6), here too.

Gradients come from ``jax.grad`` inside the jitted step, and the clip bound (the maximum of f
over the domain's 4 corners) is computed once at construction; the reference traces grad
eagerly twice per step and recomputes the corners every step (F8).

Precision: the reference evaluates the polynomial functions in float64 NumPy (and the
trigonometric ones in float32 JAX); here everything is float32. The thresholds (1e-2) and
print digits make the difference invisible in practice.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from .llf import LLFEnv


# ---------------------------------------------------------------------------- functions
# Each takes x (shape (2,)) and a NumPy-like module, so the corner maximum can be computed
# in float64 NumPy at construction and the step in float32 JAX.
def _booth(x, xp):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def _mccormick(x, xp):
    return xp.sin(x[0] + x[1]) + (x[0] - x[1]) ** 2 - 1.5 * x[0] + 2.5 * x[1] + 1


def _rosenbrock(x, xp):
    return (1 - x[0]) ** 2 + 1 * (x[1] - x[0] ** 2) ** 2  # a = 1, b = 1 (not 100), as the reference


def _six_hump_camel(x, xp):
    return (4 - 2.1 * x[0] ** 2 + x[0] ** 4 / 3) * x[0] ** 2 + x[0] * x[1] + (-4 + 4 * x[1] ** 2) * x[1] ** 2


def _bohachevsky(x, xp):  # the reference's choice 1
    return x[0] ** 2 + 2 * x[1] ** 2 - 0.3 * xp.cos(3 * math.pi * x[0]) - 0.4 * xp.cos(4 * math.pi * x[1]) + 0.7


def _rotated_hyper_ellipsoid(x, xp):
    return x[0] ** 2 + (x[0] ** 2 + x[1] ** 2)


def _matyas(x, xp):
    return 0.26 * (x[0] ** 2 + x[1] ** 2) - 0.48 * x[0] * x[1]


def _three_hump_camel(x, xp):
    return 2 * x[0] ** 2 - 1.05 * x[0] ** 4 + x[0] ** 6 / 6 + x[0] * x[1] + x[1] ** 2


#: name -> (f, lo, hi, min_y, argmins, print digits). Domain [lo, hi] for both coordinates.
FUNCTION_TABLE = {
    "Booth": (_booth, -10.0, 10.0, 0.0, ((1.0, 3.0),), 2),
    "McCormick": (_mccormick, -1.5, 4.0, -1.9133, ((-0.54719, -1.54719),), 4),
    "Rosenbrock": (_rosenbrock, -5.0, 10.0, 0.0, ((1.0, 1.0),), 2),
    "SixHumpCamel": (_six_hump_camel, -2.0, 2.0, -1.0316, ((0.0898, -0.7126), (-0.0898, 0.7126)), 4),
    "Bohachevsky": (_bohachevsky, -100.0, 100.0, 0.0, ((0.0, 0.0),), 4),
    "RotatedHyperEllipsoid": (_rotated_hyper_ellipsoid, -65.536, 65.536, 0.0, ((0.0, 0.0),), 2),
    "Matyas": (_matyas, -10.0, 10.0, 0.0, ((0.0, 0.0),), 4),
    "ThreeHumpCamel": (_three_hump_camel, -5.0, 5.0, 0.0, ((0.0, 0.0),), 4),
}
#: Function names in registry order; ``facts["function"]`` is an index into this tuple.
FUNCTIONS = tuple(FUNCTION_TABLE)

# Action kinds (``action["kind"]``).
PROPOSE, STOP, INVALID = 0, 1, 2
# ``fb_r`` cases.
R_INVALID, R_STOP_MISS, R_STOP_MIN, R_HIT, R_MISS = 1, 2, 3, 4, 5
# ``fb_hp``/``fb_hn``/``fb_fp``/``fb_fn`` cases.
FB_COORDS, FB_INVALID = 1, 2
# Per-coordinate ``fb_hp_i``/``fb_hn_i``: the direction of the move in coordinate i.
INCREASING, DECREASING, UNCHANGED = 1, 2, 3
# Per-coordinate ``fb_fp_i``/``fb_fn_i``: the word said ("smaller" / "larger" than x_i).
SMALLER, LARGER = 1, 2
# ``obs_kind``: which observation text the step has (the reference's observation).
OBS_NONE, OBS_START, OBS_STEP, OBS_HIT = 0, 1, 2, 3

#: ``max_steps_in_episode`` meaning "never truncate" (the reference never ends, F3).
NEVER = 2**31 - 1
#: The reference's displayed attempts budget (``horizon=10`` of ``LossLandscapeBase``).
REFERENCE_ATTEMPTS = 10
HIT_TOLERANCE = 1e-2


@struct.dataclass
class OptimizationState(environment.EnvState):
    """``time`` int32 (steps this episode, every kind); ``prev_x`` float32[2] (the current
    point: x0, then the last ordinary proposal); ``attempts`` int32 (the displayed counter);
    ``x0`` float32[2] (the episode's start)."""

    prev_x: jax.Array
    attempts: jax.Array
    x0: jax.Array


@struct.dataclass
class OptimizationAction:
    """The parsed action: ``x`` float32[2], ``kind`` int32 (``PROPOSE``, ``STOP``, ``INVALID``)."""

    x: jax.Array
    kind: jax.Array


@struct.dataclass
class OptimizationParams(environment.EnvParams):
    """Traced task parameters.

    ``max_steps_in_episode``: truncation (default: the ``horizon`` flag, or never).
    ``attempts``: the counter's start (default: ``horizon``, or the reference's 10).
    ``reward_scale``: factor on every reward (the reference divides by 100).
    """

    max_steps_in_episode: int = NEVER
    attempts: int = REFERENCE_ATTEMPTS
    reward_scale: float = 0.01


#: Fact name -> dtype kind ("i" int32, "f" float32).
FACT_TYPES = {
    "at_reset": "i", "fb_r": "i", "fb_hp": "i", "fb_hn": "i", "fb_fp": "i", "fb_fn": "i",
    "fb_hp_0": "i", "fb_hp_1": "i", "fb_hn_0": "i", "fb_hn_1": "i",
    "fb_fp_0": "i", "fb_fp_1": "i", "fb_fn_0": "i", "fb_fn_1": "i",
    "invalid": "i", "stopped": "i", "hit": "i", "obs_kind": "i",
    "x_0": "f", "x_1": "f", "prev_x_0": "f", "prev_x_1": "f", "y": "f", "attempts": "i",
    "function": "i", "x_low": "f", "x_high": "f", "min_y": "f", "attempts_total": "i", "digits": "i",
}


class Optimization(LLFEnv):
    """LLF-Bench optimization: drive a 2-D test function's output to its minimum.

    Static config: ``function`` (one of ``FUNCTIONS``); ``instruction_type`` ("b" only);
    ``feedback_type`` (see ``pure_envs.llf``); flags (reference behaviour by default):
      ``fix_stop_reward`` (False: a stop earns +f(prev_x) (F1), so stopping at a bad point
        pays more than any proposal; True: it earns what proposing prev_x again would,
        clip(-f(prev_x), -max_corner_y, -min_y) -- the stop no longer beats staying);
      ``fix_unchanged_coordinate`` (False: a coordinate with x_i == prev_x_i is called
        "decreasing" (F5) and, unless its gradient is 0, gets hindsight-negative feedback;
        True: it is called "unchanged" (``UNCHANGED``), judged by the same rule);
      ``horizon`` (None: the episode never ends and the attempts counter is display-only,
        starting at 10, shown before it decrements, counting ordinary proposals only (F3);
        an int H: truncate after H steps, and the counter shows the steps left, H - t);
      ``end_on_stop_or_hit`` (False: never terminated, as the reference's
        ``TerminalFreeWrapper`` (F3); True: a stop or a hit terminates, as the inner env's
        ``done``);
      ``paraphrase_instruction`` (False: the instruction is always its first wording, as the
        reference, whose instruction paraphrase never applies (F4); True: each reset draws
        one of the text layer's instruction wordings). Read by the text layer only;
      ``stop_words_anywhere`` (True: a stop word anywhere in the action text makes it a stop,
        even next to a point, as the reference (F2); False: a point in the text wins, and a
        stop word stops only a text with no point). Read by the text parser only.

    Observation (dict):
      symbolic: ``x`` float32[2] (the current point prev_x), ``y`` float32 (f(x)), ``grad``
        float32[2] (gradient of f at x).
      facts (scalars):
        ``at_reset`` int32: 1 on the reset observation.
        ``fb_r``: 1 ``R_INVALID`` (echo the invalid action), 2 ``R_STOP_MISS`` (stopped at
          prev_x, not the minimum), 3 ``R_STOP_MIN`` (stopped at prev_x, the minimum),
          4 ``R_HIT`` (the minimum is reached), 5 ``R_MISS`` (not reached yet); 0 at reset.
        ``fb_hp``, ``fb_hn``: 1 ``FB_COORDS`` when one or two coordinate sentences follow
          (read ``fb_hp_0``/``fb_hp_1`` resp. ``fb_hn_0``/``fb_hn_1``), else 0.
          ``fb_hp_i``/``fb_hn_i``: 0 no sentence for coordinate i, else the move's direction
          1 ``INCREASING``, 2 ``DECREASING``, 3 ``UNCHANGED`` (only with the F5 fix).
          Exactly one of hp_i, hn_i is set on an ordinary step: hp when sign(x_i - prev_x_i)
          == sign(-g_i), g = grad f(prev_x). Slots: the action echo (``x_0``, ``x_1``),
          ``prev_x_0``, ``prev_x_1`` (the point moved from; "the i-th number prev_x_i").
        ``fb_fp``, ``fb_fn``: 1 ``FB_COORDS`` (read ``fb_fp_i``/``fb_fn_i``), 2
          ``FB_INVALID`` (invalid text: fp asks for a valid action within (lo, hi); fn is the
          reference's self-contradictory warning against a valid action outside it (F7)),
          0 none. ``fb_fp_i``: 0 when g'_i == 0 (g' = grad f(x)), else the suggested
          direction 1 ``SMALLER`` (g'_i > 0) / 2 ``LARGER``; ``fb_fn_i``: 0 when g'_i == 0,
          else the direction warned against, 1 ``SMALLER`` (g'_i < 0) / 2 ``LARGER``.
          Slots: the action echo and ``x_i``.
        ``invalid``, ``stopped``, ``hit`` int32 flags of the step.
        ``obs_kind``: the observation text: 0 ``OBS_NONE`` (after invalid text or a stop;
          the reference's observation is None), 1 ``OBS_START`` (reset: x0, y, attempts,
          the next-x request and the ``x = [x1, x2]`` syntax), 2 ``OBS_STEP`` (y, attempts,
          request, syntax), 3 ``OBS_HIT`` (y = min_y and "the minimum is reached").
        ``x_0``, ``x_1`` float32: the proposal (reset: x0; stop / invalid: prev_x).
        ``prev_x_0``, ``prev_x_1`` float32: the point before the step (reset: x0).
        ``y`` float32: reset f(x0); proposal f(x); hit min_y (what the reference prints);
          stop / invalid f(prev_x).
        ``attempts`` int32: the counter as shown by this observation.
        Instruction / constant facts: ``function`` int32 (index into ``FUNCTIONS``),
        ``x_low``, ``x_high``, ``min_y`` float32, ``attempts_total`` int32 ("within N
        attempts"), ``digits`` int32 (print digits of x0).
      The reference echoes the raw action text ("You chose <text>") and, on invalid steps,
      the text itself; the core only has the parsed numbers (``x_0``, ``x_1``), so the text
      layer echoes the agent's text or writes ``x = [x_0, x_1]``.
    Action: ``OptimizationAction(x=float32[2], kind=int32)`` (``Optimization.action(x, kind)``)
      or the dict ``{"x": ..., "kind": ...}``; kind ``PROPOSE``/``STOP``/``INVALID`` (any
      other kind, or a proposal with a non-finite x, is invalid text). A bare int32 scalar
      ``k`` is read as kind ``k`` with x = prev_x (index mode: 0 re-proposes the current
      point, 1 stops, 2 = ``invalid_action`` is invalid text).
    Reward: float32, ``reward_scale`` (1/100) times: invalid -1; stop +f(prev_x) (F1; see
      ``fix_stop_reward``); hit -min_y; proposal clip(-f(x), -max f over the 4 domain
      corners, -min_y).
    Termination: never (see ``end_on_stop_or_hit``); truncated after
      ``max_steps_in_episode`` steps (default never, see ``horizon``).
    Info: ``success`` bool (stop with |f(prev_x) - min_y| < 1e-2, or a hit),
      ``valid_action`` bool, ``expert_action`` float32[2] (an argmin of f).
    State: ``OptimizationState``.
    """

    INSTRUCTION_TYPES = ("b",)
    FEEDBACK_TYPES = ("r", "hp", "hn", "fp", "fn")
    step_needs_key = False  # the step is deterministic; only the auto-reset draws

    def __init__(self, function: str = "Booth", instruction_type: str = "b", feedback_type="a",
                 fix_stop_reward: bool = False, fix_unchanged_coordinate: bool = False,
                 horizon: int | None = None, end_on_stop_or_hit: bool = False,
                 paraphrase_instruction: bool = False, stop_words_anywhere: bool = True):
        super().__init__(instruction_type, feedback_type)
        if not isinstance(paraphrase_instruction, (bool, np.bool_)):
            raise ValueError(f"paraphrase_instruction must be True or False, got {paraphrase_instruction!r}")
        if function not in FUNCTION_TABLE:
            raise ValueError(f"unknown optimization function {function!r}; valid functions: {list(FUNCTIONS)}")
        if horizon is not None and int(horizon) < 1:
            raise ValueError(f"horizon must be None (never end) or >= 1, got {horizon}")
        self.function = function
        self.function_id = FUNCTIONS.index(function)
        f, lo, hi, min_y, argmins, digits = FUNCTION_TABLE[function]
        self._f = f
        self.x_low, self.x_high, self.min_y, self.digits = float(lo), float(hi), float(min_y), int(digits)
        self.argmins = np.asarray(argmins, np.float32)
        # F8 fixed: the clip bound is a constant of the function, computed once (float64).
        self.max_corner_y = float(max(f(np.array([a, b], np.float64), np) for a in (lo, hi) for b in (lo, hi)))
        self.fix_stop_reward = bool(fix_stop_reward)
        self.fix_unchanged_coordinate = bool(fix_unchanged_coordinate)
        self.horizon = None if horizon is None else int(horizon)
        self.end_on_stop_or_hit = bool(end_on_stop_or_hit)
        self.paraphrase_instruction = bool(paraphrase_instruction)  # F4 flag (text layer)
        self.stop_words_anywhere = bool(stop_words_anywhere)  # F2 flag (the text parser)
        self._value_and_grad = jax.value_and_grad(self.f)
        self.fact_shapes = {k: () for k in FACT_TYPES}

    def f(self, x: jax.Array) -> jax.Array:
        """The function (float32), for x of shape (2,)."""
        return self._f(jnp.asarray(x, jnp.float32), jnp)

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> OptimizationParams:
        if self.horizon is None:
            return OptimizationParams()
        return OptimizationParams(max_steps_in_episode=self.horizon, attempts=self.horizon)

    @property
    def name(self) -> str:
        return f"llf-optimization-{self.function}"

    @property
    def num_actions(self) -> int:
        """Action kinds other than invalid text (propose, stop): ``invalid_action`` = 2."""
        return 2

    def action_space(self, params=None):
        return spaces.Dict({"x": spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32), "kind": spaces.Discrete(3)})

    def observation_space(self, params=None):
        inf = jnp.inf
        big = NEVER
        sym = {"x": spaces.Box(-inf, inf, (2,), jnp.float32), "y": spaces.Box(-inf, inf, (), jnp.float32),
               "grad": spaces.Box(-inf, inf, (2,), jnp.float32)}
        highs = {"at_reset": 1, "fb_r": R_MISS, "fb_hp": FB_COORDS, "fb_hn": FB_COORDS, "fb_fp": FB_INVALID,
                 "fb_fn": FB_INVALID, "fb_hp_0": UNCHANGED, "fb_hp_1": UNCHANGED, "fb_hn_0": UNCHANGED,
                 "fb_hn_1": UNCHANGED, "fb_fp_0": LARGER, "fb_fp_1": LARGER, "fb_fn_0": LARGER, "fb_fn_1": LARGER,
                 "invalid": 1, "stopped": 1, "hit": 1, "obs_kind": OBS_HIT, "function": len(FUNCTIONS) - 1,
                 "attempts_total": big, "digits": 4}
        facts = {}
        for k, t in FACT_TYPES.items():
            if k == "attempts":  # display-only counter, negative once past the budget (F3)
                facts[k] = spaces.Box(-big, big, (), jnp.int32)
            elif t == "i":
                facts[k] = spaces.Box(0, highs[k], (), jnp.int32)
            else:
                facts[k] = spaces.Box(-inf, inf, (), jnp.float32)
        return spaces.Dict({"symbolic": spaces.Dict(sym), "facts": spaces.Dict(facts)})

    def check_params(self, params: OptimizationParams) -> None:
        if int(params.max_steps_in_episode) < 1:
            raise ValueError(f"max_steps_in_episode must be >= 1, got {params.max_steps_in_episode}")

    def is_truncated(self, state: OptimizationState, params: OptimizationParams) -> jax.Array:
        return state.time >= params.max_steps_in_episode

    # ------------------------------------------------------------------ actions
    @staticmethod
    def action(x, kind=PROPOSE) -> OptimizationAction:
        """The action: ``Optimization.action([1.0, 3.0])``, ``Optimization.action(0, STOP)``."""
        x = jnp.broadcast_to(jnp.asarray(x, jnp.float32), (2,))
        return OptimizationAction(x=x, kind=jnp.asarray(kind, jnp.int32))

    # ------------------------------------------------------------------ dynamics
    def reset_env(self, key: jax.Array, params: OptimizationParams):
        scale = 10.0 ** self.digits
        u = jax.random.uniform(key, (2,), jnp.float32, self.x_low, self.x_high)
        # The reference rounds to its print digits (here to float32 precision: the last bit may
        # differ from the nearest float32, as XLA divides through the reciprocal).
        x0 = jnp.round(u * scale) / scale
        y0, g0 = self._value_and_grad(x0)
        attempts = jnp.asarray(params.attempts, jnp.int32)
        state = OptimizationState(time=jnp.int32(0), prev_x=x0, attempts=attempts, x0=x0)
        zero = jnp.int32(0)
        facts = {k: zero for k in ("fb_r", "fb_hp", "fb_hn", "fb_fp", "fb_fn", "fb_hp_0", "fb_hp_1", "fb_hn_0",
                                   "fb_hn_1", "fb_fp_0", "fb_fp_1", "fb_fn_0", "fb_fn_1", "invalid", "stopped",
                                   "hit")}
        facts.update(at_reset=1, obs_kind=OBS_START, x_0=x0[0], x_1=x0[1], prev_x_0=x0[0], prev_x_1=x0[1], y=y0,
                     attempts=attempts)
        return self._observe(facts, x0, y0, g0, params), state

    def step_env(self, key: jax.Array, state: OptimizationState, action, params: OptimizationParams):
        prev = state.prev_x
        if isinstance(action, dict):
            action = OptimizationAction(x=action["x"], kind=action["kind"])
        if isinstance(action, OptimizationAction):
            kind = jnp.asarray(action.kind, jnp.int32)
            x = jnp.asarray(action.x, jnp.float32).reshape(2)
        else:  # index mode: a kind alone, proposing the current point again
            kind = jnp.asarray(action, jnp.int32).reshape(())
            x = prev
        finite = jnp.all(jnp.isfinite(x))
        propose = (kind == PROPOSE) & finite
        stop = kind == STOP
        invalid = ~propose & ~stop
        x = jnp.where(propose, x, prev)

        y_prev, g_prev = self._value_and_grad(prev)  # g = grad f(prev_x)
        y_x, g_x = self._value_and_grad(x)  # g' = grad f(x)
        min_y = jnp.float32(self.min_y)
        hit = propose & (jnp.abs(y_x - min_y) < HIT_TOLERANCE)
        ordinary = propose & ~hit
        stop_at_min = jnp.abs(y_prev - min_y) < HIT_TOLERANCE
        success = hit | (stop & stop_at_min)

        def clipped(y):
            return jnp.clip(-y, -self.max_corner_y, -self.min_y)

        stop_reward = clipped(y_prev) if self.fix_stop_reward else y_prev  # F1: +f(prev_x)
        raw = jnp.where(invalid, -1.0, jnp.where(stop, stop_reward, jnp.where(hit, -min_y, clipped(y_x))))
        reward = (raw * params.reward_scale).astype(jnp.float32)

        # Hindsight: the move in each coordinate against -grad f(prev_x).
        delta = x - prev
        agree = jnp.sign(delta) == jnp.sign(-g_prev)
        still = UNCHANGED if self.fix_unchanged_coordinate else DECREASING  # F5: 0 counts as decreasing
        direction = jnp.where(delta > 0, INCREASING, jnp.where(delta < 0, DECREASING, still))
        hp = jnp.where(ordinary & agree, direction, 0)
        hn = jnp.where(ordinary & ~agree, direction, 0)
        # Future: the sign of grad f(x), where it is not 0.
        moving = ordinary & (g_x != 0)
        fp = jnp.where(moving, jnp.where(g_x > 0, SMALLER, LARGER), 0)
        fn = jnp.where(moving, jnp.where(g_x < 0, SMALLER, LARGER), 0)

        def case(per_coord):
            return jnp.where(invalid, FB_INVALID, jnp.where(jnp.any(per_coord > 0), FB_COORDS, 0))

        fb_r = jnp.where(invalid, R_INVALID,
                         jnp.where(stop, jnp.where(stop_at_min, R_STOP_MIN, R_STOP_MISS),
                                   jnp.where(hit, R_HIT, R_MISS)))

        # The attempts counter: the observation shows it, then it counts down.
        if self.horizon is None:  # reference: display-only, ordinary proposals only (F3)
            shown = state.attempts
            attempts = state.attempts - ordinary.astype(jnp.int32)
        else:  # the steps that are left
            attempts = jnp.asarray(params.max_steps_in_episode, jnp.int32) - (state.time + 1)
            shown = attempts
        new_x = jnp.where(ordinary, x, prev)
        new = state.replace(time=jnp.minimum(state.time + 1, NEVER), prev_x=new_x, attempts=attempts)

        y_fact = jnp.where(hit, min_y, jnp.where(propose, y_x, y_prev))
        obs_kind = jnp.where(ordinary, OBS_STEP, jnp.where(hit, OBS_HIT, OBS_NONE))
        facts = {
            "at_reset": 0, "fb_r": fb_r, "fb_hp": jnp.where(jnp.any(hp > 0), FB_COORDS, 0),
            "fb_hn": jnp.where(jnp.any(hn > 0), FB_COORDS, 0), "fb_fp": case(fp), "fb_fn": case(fn),
            "fb_hp_0": hp[0], "fb_hp_1": hp[1], "fb_hn_0": hn[0], "fb_hn_1": hn[1],
            "fb_fp_0": fp[0], "fb_fp_1": fp[1], "fb_fn_0": fn[0], "fb_fn_1": fn[1],
            "invalid": invalid, "stopped": stop, "hit": hit, "obs_kind": obs_kind,
            "x_0": x[0], "x_1": x[1], "prev_x_0": prev[0], "prev_x_1": prev[1], "y": y_fact, "attempts": shown,
        }
        y_now = jnp.where(ordinary, y_x, y_prev)
        g_now = jnp.where(ordinary, g_x, g_prev)
        obs = self._observe(facts, new_x, y_now, g_now, params)
        terminated = (stop | hit) if self.end_on_stop_or_hit else jnp.bool_(False)
        info = {"success": success, "valid_action": ~invalid,
                "expert_action": jnp.asarray(self.argmins[0], jnp.float32)}
        return obs, new, reward, terminated, info

    def _observe(self, facts: dict, x, y, grad, params) -> dict:
        facts = dict(facts)
        facts.update(function=self.function_id, x_low=self.x_low, x_high=self.x_high, min_y=self.min_y,
                     attempts_total=params.attempts, digits=self.digits)
        # Numbers that overflow float32 (far outside the domain) are shown saturated, not NaN.
        out = {k: jnp.nan_to_num(jnp.asarray(facts[k], jnp.float32)) if t == "f" else jnp.asarray(facts[k], jnp.int32)
               for k, t in FACT_TYPES.items()}
        # The text layer writes y in-graph and the host rebuilds the text from the returned fact.
        # XLA may evaluate f twice, fused into two consumers, rounding differently (FMA), so the
        # two texts could differ in the last digit. Dividing by a traced 1.0 (exact) materialises
        # y once: XLA does not duplicate a division into its consumers.
        out["y"] = out["y"] / (1.0 + 0.0 * out["attempts"].astype(jnp.float32))
        sym = {"x": jnp.asarray(x, jnp.float32), "y": jnp.nan_to_num(jnp.asarray(y, jnp.float32)),
               "grad": jnp.nan_to_num(jnp.asarray(grad, jnp.float32))}
        return {"symbolic": sym, "facts": out}
