"""LLF-Bench ``llf-highway-parking-v0`` as a pure JAX core: highway-env 1.12.1 ``parking-v0``.

The dynamics, scene, reset, reward and episode end follow highway-env 1.12.1
(``envs/parking_env.py``, ``vehicle/kinematics.py``, ``vehicle/objects.py``,
``utils.are_polygons_intersecting``, ``envs/common/abstract.py``), checked step by step
against the installed package in ``tests/test_parking.py``. LLF-Bench's ``HighwayWrapper``
adds the feedback cases (``fb_*`` facts) and ``info["success"]``; its ``TextWrapper``
gives the invalid-action path (see ``Parking``).

Against the spec (llf-bench.md §2.4) 1.12.1 differs in one point, and 1.12.1 is followed:
the goal is drawn among **27** spots, not 28. The reset removes the ego vehicle's "closest
lane" (``get_closest_lane_index((0, 0), heading)``: the x = -2 spot of the row its start
heading points to) from the free spots before the draw. All other constants agree.

Details the spec leaves out, reproduced: outside [-40, 40] m/s the acceleration is clamped
(``min(a, 40 - v)`` / ``max(a, -40 - v)``) after the crash override; the spherical pre-check
before the polygon test uses radius sum + v dt (a negative speed shrinks it); a contact that
the swept separating-axis test predicts within the next substep stores an impact (the
push-out vector), which the next substep adds to the position while setting ``crashed`` (so
a crash can be reported one substep, possibly one policy step, after the contact); when
several walls predict contact, the last in the reference's order (y = -21, y = +21,
x = -35, x = +35) sets the impact.

Deviations (all below the reference's observable precision except the first):

* step 500 of an episode that also terminates on it: the reference returns
  ``terminated = truncated = True``; here only ``terminated`` (the gymnax contract of this
  package: an episode ends one way).
* float32 instead of float64, with float32 pairs for what accumulates (see the precision
  note in ``Parking``); the heading is kept in [-pi, pi] (the reference lets it grow; only
  its cos/sin are ever observed).
* speeds within 1e-9 m/s of +-40 count as beyond the limit: the reference's float64 sum of
  saturated increments lands just above 40 (40.00000000000001) and holds there; without the
  slack a float32-pair sum could land just below and overshoot by 1/3 m/s.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from .llf import LLFEnv

# --------------------------------------------------------------------------- constants (highway-env 1.12.1)
SIMULATION_FREQUENCY = 15  # Hz
POLICY_FREQUENCY = 5  # Hz
SUBSTEPS = SIMULATION_FREQUENCY // POLICY_FREQUENCY  # 3 explicit-Euler substeps per action
LENGTH, WIDTH = 5.0, 2.0  # Vehicle.LENGTH / WIDTH
MAX_SPEED, MIN_SPEED = 40.0, -40.0
ACCELERATION_RANGE = (-5.0, 5.0)  # ContinuousAction.ACCELERATION_RANGE
STEERING_RANGE = (-math.pi / 4, math.pi / 4)
SCALES = np.array([100.0, 100.0, 5.0, 5.0, 1.0, 1.0])  # KinematicsGoal scales, normalize=False
REWARD_WEIGHTS = (1.0, 0.3, 0.0, 0.0, 0.02, 0.02)
SUCCESS_GOAL_REWARD = 0.12
COLLISION_REWARD = -5.0
DURATION = 100  # seconds; truncated once time (+0.2 per step) >= 100, i.e. after 500 steps
MAX_STEPS = DURATION * POLICY_FREQUENCY
REWARD_P = 0.5

N_SPOTS = 14  # per row; spot index s < 14: upper row (lane "a"->"b"), s >= 14: lower row ("b"->"c")
SPOT_WIDTH, SPOT_Y_OFFSET, SPOT_LENGTH = 4.0, 10.0, 8.0
EGO_START = (0.0, 0.0)


def _spot_table() -> np.ndarray:
    """float64[28, 3]: (x, y, heading) of each spot centre, in the reference's lane order."""
    rows = []
    for sign in (1.0, -1.0):
        for k in range(N_SPOTS):
            x = (k + 1 - N_SPOTS // 2) * SPOT_WIDTH - SPOT_WIDTH / 2
            # lane.position(length / 2, 0) and lane.heading = arctan2 of the lane direction
            rows.append((x, sign * (SPOT_Y_OFFSET + SPOT_LENGTH / 2), math.atan2(sign, 0.0)))
    return np.array(rows)


SPOTS = _spot_table()
#: float64[28, 6]: the desired goal of each spot, scaled as the observation (vx = vy = 0).
GOAL_FEATURES = np.stack([SPOTS[:, 0], SPOTS[:, 1], 0 * SPOTS[:, 0], 0 * SPOTS[:, 0],
                          np.cos(SPOTS[:, 2]), np.sin(SPOTS[:, 2])], axis=1) / SCALES
#: The two spots the ego's start lane can be (x = -2, upper / lower row).
EGO_LANE_UP, EGO_LANE_DOWN = N_SPOTS // 2 - 1, N_SPOTS + N_SPOTS // 2 - 1


def _polygon(x, y, heading, length, width) -> np.ndarray:
    """RoadObject.polygon() in float64: the 4 corners (without the closing repeat)."""
    pts = np.array([[-length / 2, -width / 2], [-length / 2, width / 2],
                    [length / 2, width / 2], [length / 2, -width / 2]]).T
    c, s = np.cos(heading), np.sin(heading)
    return (np.array([[c, -s], [s, c]]) @ pts).T + np.array([x, y])


def _wall_tables():
    """Walls in the reference's ``road.objects`` order: y = -21, y = +21 (70 x 1), x = -35, x = +35
    (42 x 1, heading pi/2). Returns float64 (centres [4, 2], corners [4, 4, 2], edge normals
    [4, 4, 2], diagonals [4])."""
    w, h = 70.0, 42.0
    walls = [(0.0, -h / 2, 0.0, w, 1.0), (0.0, h / 2, 0.0, w, 1.0),
             (-w / 2, 0.0, np.pi / 2, h, 1.0), (w / 2, 0.0, np.pi / 2, h, 1.0)]
    centres, corners, normals, half_diag = [], [], [], []
    for x, y, hd, ln, wd in walls:
        poly = _polygon(x, y, hd, ln, wd)
        closed = np.vstack([poly, poly[:1]])
        nrm = []
        for j in range(4):
            p1, p2 = closed[j], closed[j + 1]
            n = np.array([-p2[1] + p1[1], p2[0] - p1[0]])
            nrm.append(n / np.linalg.norm(n))
        centres.append((x, y))
        corners.append(poly)
        normals.append(nrm)
        half_diag.append(np.sqrt(ln**2 + wd**2))
    return np.array(centres), np.array(corners), np.array(normals), np.array(half_diag)


WALL_CENTRES, WALL_CORNERS, WALL_NORMALS, WALL_DIAGONALS = _wall_tables()
VEHICLE_DIAGONAL = math.sqrt(LENGTH**2 + WIDTH**2)
#: Pre-check radius of each wall pair: (vehicle.diagonal + wall.diagonal) / 2.
PRECHECK_RADIUS = (VEHICLE_DIAGONAL + WALL_DIAGONALS) / 2

# 2*pi split in two float32 parts so that reducing the heading adds no drift (Cody-Waite).
_TWO_PI_HI = np.float32(2 * np.pi)
_TWO_PI_LO = np.float32(2 * np.pi - np.float64(_TWO_PI_HI))

OBS_KEYS = tuple(f"obs_{i}" for i in range(6))
ACHIEVED_KEYS = tuple(f"achieved_{i}" for i in range(6))
DESIRED_KEYS = tuple(f"desired_{i}" for i in range(6))
INT_FACTS = ("at_reset", "invalid", "fb_r", "fb_hp", "fb_hn")
FLOAT_FACTS = ("reward",) + OBS_KEYS + ACHIEVED_KEYS + DESIRED_KEYS


# --------------------------------------------------------------------------- float32-pair arithmetic
# The reference integrates in float64. Errors that repeat with the same sign every substep
# (a constant action gives the same heading increment each time) would drift in float32, so
# the quantities that accumulate (position, heading, speed) and the per-action constants
# (sin beta, acceleration) are float32 pairs hi + lo ("double-float", about 48 bits).
# Per-substep errors that vary with the heading (cos, sin) stay single float32.
def _pair(x: float) -> tuple[np.float32, np.float32]:
    hi = np.float32(x)
    return hi, np.float32(x - np.float64(hi))


def _rounded(p):
    """The product ``p``, rounded on its own. XLA:CPU contracts a multiply that feeds an add
    into one fused multiply-add (one rounding), and which product of a sum it fuses depends on
    the context; the select (``p`` for every input, NaN included) hides the multiply. Its
    other arm is not a constant, so that LLVM cannot fold the select into a subtraction."""
    return jnp.where(p == p, p, p + p)


def _two_sum(a, b):
    """s + e == a + b exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
    """s + e == a + b exactly, for |a| >= |b|."""
    s = a + b
    return s, b - (s - a)


def _split(a):
    """a = hi + lo with 12-bit halves (by masking the mantissa: no rounding involved)."""
    hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(a, jnp.uint32) & jnp.uint32(0xFFFFF000),
                                      jnp.float32)
    return hi, a - hi


def _two_prod(a, b):
    """(p, e) with p + e == a * b exactly, built from the exact products of 12-bit halves.

    Dekker's usual form subtracts the rounded product a * b; XLA (CPU and GPU) contracts a
    multiply feeding an add into an FMA, which would mix rounded and exact products there.
    Products of halves are exact, so contraction cannot change anything below."""
    ah, al = _split(a)
    bh, bl = _split(b)
    mid, mid_err = _two_sum(ah * bl, al * bh)
    p, e = _two_sum(ah * bh, mid)
    return _fast_two_sum(p, e + (mid_err + al * bl))


def _add(x, y):
    s, e = _two_sum(x[0], y[0])
    return _fast_two_sum(s, e + (x[1] + y[1]))


def _mul(x, y, fused: int):
    """x * y. ``fused``: the cross term that XLA may fuse into the sum as a multiply-add,
    x_hi y_lo (0) or x_lo y_hi (1); the other is rounded on its own (``_rounded``). XLA's own
    pick depends on the code around the call; each call pins the one its results have had."""
    p, e = _two_prod(x[0], y[0])
    cross = x[0] * y[1] + _rounded(x[1] * y[0]) if fused == 0 else _rounded(x[0] * y[1]) + x[1] * y[0]
    return _fast_two_sum(p, e + cross)


def _div(x, y):
    q = x[0] / y[0]
    r = _add(x, _neg(_mul(y, (q, 0.0 * q), 1)))
    return _fast_two_sum(q, r[0] / y[0])


def _sqrt(x):
    s = jnp.sqrt(x[0])
    r = _add(x, _neg(_two_prod(s, s)))
    return _fast_two_sum(s, r[0] / (2.0 * s))


def _neg(x):
    return (-x[0], -x[1])


def _value(x):
    return x[0] + x[1]


_PI_4 = _pair(math.pi / 4)
_INV_DT = _pair(1 / SIMULATION_FREQUENCY)  # dt
_YAW_GAIN = _pair(1 / ((LENGTH / 2) * SIMULATION_FREQUENCY))  # dt / (L / 2)
# sin x = x * sum_k (-1)^k x^2k / (2k+1)!, k <= 8: below 1e-16 for |x| <= pi/4. Terms k >= 3
# are below 5e-5, so float32 is enough for them.
_SIN_COEFFS = [_pair((-1) ** k / math.factorial(2 * k + 1)) for k in range(3)]
_SIN_TAIL = [np.float32((-1) ** k / math.factorial(2 * k + 1)) for k in range(3, 9)]
#: Speeds within this of +-40 m/s count as beyond the limit: the reference's saturated
#: increments (5 * (1/15) in float64) sum to 40.00000000000001, just over, and it holds there.
SPEED_LIMIT_SLACK = 1e-9


def _sin_pair(x):
    y = _mul(x, x, 1)
    tail = jnp.float32(_SIN_TAIL[-1]) + 0.0 * x[0]
    for c in _SIN_TAIL[-2::-1]:
        tail = tail * y[0] + c
    p = (tail, 0.0 * tail)
    for c in _SIN_COEFFS[::-1]:
        p = _add(_mul(y, p, 1), (jnp.float32(c[0]), jnp.float32(c[1])))
    return _mul(x, p, 1)


def _sin_beta(u):
    """sin(beta), beta = arctan(tan(delta) / 2), delta = pi/4 u, as a float32 pair.

    sin(arctan(t / 2)) = sin(delta) / sqrt(4 - 3 sin(delta)^2): one series, no tan/atan."""
    delta = _mul((u, 0.0 * u), (jnp.float32(_PI_4[0]), jnp.float32(_PI_4[1])), 1)
    s = _sin_pair(delta)
    four = (jnp.float32(4.0) + 0.0 * u, 0.0 * u)
    three_s2 = _mul((jnp.float32(3.0) + 0.0 * u, 0.0 * u), _mul(s, s, 1), 1)
    return _div(s, _sqrt(_add(four, _neg(three_s2))))


@struct.dataclass
class ParkingState(environment.EnvState):
    """Vehicle state, each continuous quantity a float32 pair (value = hi + lo, see ``_add``).

    ``time`` int32 (policy steps taken; invalid steps do not count), ``pos`` / ``pos_lo``
    float32[2] (m), ``heading`` / ``heading_lo`` float32 (rad, kept in [-pi, pi]; the reference
    lets it grow, only its cos/sin are observed), ``speed`` / ``speed_lo`` float32 (m/s),
    ``crashed`` bool, ``impact`` float32[2] + ``impact_pending`` bool (the reference's
    ``vehicle.impact``, added at the next substep), ``goal`` int32 (spot 0..27: 0..13 upper row
    left to right, 14..27 lower row).
    """

    pos: jax.Array
    pos_lo: jax.Array
    heading: jax.Array
    heading_lo: jax.Array
    speed: jax.Array
    speed_lo: jax.Array
    crashed: jax.Array
    impact: jax.Array
    impact_pending: jax.Array
    goal: jax.Array


@struct.dataclass
class ParkingParams(environment.EnvParams):
    """Traced task parameters (reference config names): ``max_steps_in_episode`` (duration 100 s
    at 5 Hz = 500), ``success_goal_reward`` 0.12, ``collision_reward`` -5, ``reward_weights``."""

    max_steps_in_episode: int = MAX_STEPS
    success_goal_reward: float = SUCCESS_GOAL_REWARD
    collision_reward: float = COLLISION_REWARD
    reward_weights: tuple = REWARD_WEIGHTS


class Parking(LLFEnv):
    """Park a car in a goal spot without touching the walls (highway-env ``parking-v0``).

    Scene: a 70 x 42 m lot closed by four walls (70 x 1 at y = +-21, 42 x 1 at x = +-35),
    28 spots 4 m wide and 8 m long in two rows (centres x = -26..26, y = +-14, heading
    +-pi/2). The ego car (5 x 2 m) starts at (0, 0), heading ~ U[0, 2pi), speed 0; the goal is
    one of the 27 spots other than the ego's start lane, uniformly (the reference's
    ``np_random.uniform`` / ``choice`` draws, made from the key).

    Dynamics: per action, 3 explicit-Euler substeps of 1/15 s of the kinematic bicycle model
    (beta = arctan(tan(delta) / 2); position += v (cos, sin)(heading + beta) dt; impact added;
    heading += v sin(beta) / 2.5 dt; v += a dt), then the swept separating-axis test against
    each wall. After a crash the inputs are steering 0, acceleration -v.

    Observation (dict):
      symbolic: ``observation``, ``achieved_goal``, ``desired_goal`` float32[6] each, the
        reference's dict: [x/100, y/100, vx/5, vy/5, cos h, sin h] (vx, vy = v (cos h, sin h)).
        ``achieved_goal`` equals ``observation``; ``desired_goal`` is the goal spot (v = 0).
      facts: int32 ``at_reset`` (1 on a reset observation), ``invalid`` (1 after a NaN action:
        the reference's parse-error feedback replaces every message), ``fb_r`` (1 after every
        valid step: the reward is stated), ``fb_hp`` (1 iff reward >= -0.12), ``fb_hn`` (1 iff
        crashed); float32 ``reward`` (the step's reward, 0 at reset and after an invalid step),
        ``obs_0..5``, ``achieved_0..5``, ``desired_0..5`` (the symbolic arrays, one number each).
    Action: float32[2], [throttle, steering] in [-1, 1] (clipped): acceleration = 5 u0 m/s^2,
      steering = pi/4 u1 rad. Any NaN = text that did not parse: the reference's TextWrapper
      never steps the env then, so the state (time included) is unchanged, reward 0, not
      terminated, not truncated, ``info["success"]`` False.
    Reward: float32, -(sum_i w_i |achieved_i - desired_i|)^0.5 with w = [1, 0.3, 0, 0, 0.02,
      0.02], plus -5 if crashed.
    Termination: terminated = crashed or success (goal term > -0.12); truncated after 500
      steps (the reference's ``time >= duration``, time += 0.2 per step, first true at step
      500) unless the episode terminates on that step (the reference then reports both flags;
      the gymnax contract here reports one).
    Info: ``success`` bool (the reference's ``is_success``), ``crashed`` bool.
    State: ``ParkingState``.
    Text flags (read by the text layer only): ``text_observation`` (False: the string API's
      ``observation`` is the numpy dict, as the reference (F22); True: our text of it) and
      ``normalized_action_text`` (False: the instruction states the physical action ranges,
      as the reference (F21); True: the [-1, 1] ranges the action really has).

    Precision: float32, with the accumulating position, heading and speed and the per-action
    sin(beta) and acceleration kept as float32 pairs (hi + lo, ~48 bits): a constant action
    adds the same rounding every substep, which plain float32 turns into a heading drift of
    ~1e-5 rad per 100 steps. Against highway-env's float64 the differential test measures at
    most ~2e-7 relative on the observation and reward over 500-step episodes at the speed
    limit. One exception: at the goal itself (weighted distance < ~1e-8) the square root
    magnifies rounding, so the reward reads ~-3e-5 where the reference reads ~-3e-9.
    """

    INSTRUCTION_TYPES = ("b",)
    FEEDBACK_TYPES = ("r", "hp", "hn")
    step_needs_key = False  # the dynamics are deterministic; only the auto-reset draws

    def __init__(self, instruction_type: str = "b", feedback_type="a", text_observation: bool = False,
                 normalized_action_text: bool = False):
        super().__init__(instruction_type, feedback_type)
        if not isinstance(text_observation, bool) or not isinstance(normalized_action_text, bool):
            raise ValueError("text_observation and normalized_action_text must be bools")
        # Text-layer flags (the core's dynamics do not read them):
        # F22: the reference's observation is the numpy dict (its text rendering is built and
        # discarded); True gives the string API our text of the observation instead.
        self.text_observation = text_observation
        # F21: the instruction gives the physical action ranges (+-5 m/s^2, +-pi/4 rad) although
        # actions are normalised to [-1, 1]; True states the [-1, 1] ranges.
        self.normalized_action_text = normalized_action_text
        self.fact_shapes = {k: () for k in INT_FACTS + FLOAT_FACTS}

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> ParkingParams:
        return ParkingParams()

    @property
    def name(self) -> str:
        return "llf-highway-parking"

    @property
    def num_actions(self) -> int:
        return 2  # action dimension (continuous)

    @property
    def invalid_action(self) -> np.ndarray:
        """The action standing for text that did not parse: float32[2] of NaN."""
        return np.full(2, np.nan, np.float32)

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def observation_space(self, params=None):
        vec = spaces.Box(-jnp.inf, jnp.inf, (6,), jnp.float32)
        sym = {"observation": vec, "achieved_goal": vec, "desired_goal": vec}
        facts = {k: spaces.Box(0, 1, (), jnp.int32) for k in INT_FACTS}
        facts.update({k: spaces.Box(-jnp.inf, jnp.inf, (), jnp.float32) for k in FLOAT_FACTS})
        facts["reward"] = spaces.Box(-jnp.inf, 0.0, (), jnp.float32)
        return spaces.Dict({"symbolic": spaces.Dict(sym), "facts": spaces.Dict(facts)})

    def is_terminated(self, state: ParkingState, params: ParkingParams) -> jax.Array:
        _, success = self._goal_reward(state, params)
        return state.crashed | success

    def is_truncated(self, state: ParkingState, params: ParkingParams) -> jax.Array:
        return (state.time >= params.max_steps_in_episode) & ~self.is_terminated(state, params)

    # ------------------------------------------------------------------ reset
    @staticmethod
    def ego_lane(heading) -> jax.Array:
        """Spot index of the ego's start lane (``get_closest_lane_index((0, 0), heading)``):
        the x = -2 spot of the row whose lane heading (+-pi/2) is nearer; ties go to the upper
        row, the first in the reference's lane order."""
        wrap = lambda a: jnp.mod(a + jnp.pi, 2 * jnp.pi) - jnp.pi  # utils.wrap_to_pi
        up = jnp.abs(wrap(heading - jnp.pi / 2)) <= jnp.abs(wrap(heading + jnp.pi / 2))
        return jnp.where(up, EGO_LANE_UP, EGO_LANE_DOWN).astype(jnp.int32)

    def reset_env(self, key: jax.Array, params: ParkingParams):
        k_heading, k_goal = jax.random.split(key)
        heading = 2.0 * jnp.pi * jax.random.uniform(k_heading, (), jnp.float32)
        excluded = self.ego_lane(heading)
        j = jax.random.randint(k_goal, (), 0, 2 * N_SPOTS - 1, jnp.int32)
        goal = j + (j >= excluded).astype(jnp.int32)
        h, h_lo = _reduce_heading(heading, jnp.float32(0.0))
        zero = jnp.float32(0.0)
        state = ParkingState(time=jnp.int32(0), pos=jnp.asarray(EGO_START, jnp.float32),
                             pos_lo=jnp.zeros(2, jnp.float32), heading=h, heading_lo=h_lo, speed=zero, speed_lo=zero,
                             crashed=jnp.bool_(False), impact=jnp.zeros(2, jnp.float32),
                             impact_pending=jnp.bool_(False), goal=goal)
        return self._observe(state, params, at_reset=True), state

    @staticmethod
    def state_from(x, y, heading, speed, goal, crashed=False) -> ParkingState:
        """Host helper: the state with the car at (x, y) m, ``heading`` rad (any value),
        ``speed`` m/s, goal spot ``goal`` (0..27), no pending impact, at time 0. Arguments are
        numbers or equal-shape numpy arrays (a batch of states); float64 values keep their low
        part in the float32 pairs."""
        def pair(v):
            v = np.asarray(v, np.float64)
            hi = v.astype(np.float32)
            return jnp.asarray(hi), jnp.asarray((v - hi.astype(np.float64)).astype(np.float32))

        heading = np.mod(np.asarray(heading, np.float64) + np.pi, 2 * np.pi) - np.pi
        (px, px_lo), (py, py_lo), (h, h_lo), (v, v_lo) = pair(x), pair(y), pair(heading), pair(speed)
        shape = np.shape(px)
        return ParkingState(time=jnp.zeros(shape, jnp.int32), pos=jnp.stack([px, py], -1),
                            pos_lo=jnp.stack([px_lo, py_lo], -1), heading=h, heading_lo=h_lo, speed=v,
                            speed_lo=v_lo, crashed=jnp.broadcast_to(jnp.asarray(crashed, jnp.bool_), shape),
                            impact=jnp.zeros(shape + (2,), jnp.float32),
                            impact_pending=jnp.zeros(shape, jnp.bool_),
                            goal=jnp.broadcast_to(jnp.asarray(goal, jnp.int32), shape))

    # ------------------------------------------------------------------ step
    def step_env(self, key: jax.Array, state: ParkingState, action, params: ParkingParams):
        action = jnp.asarray(action, jnp.float32).reshape(2)
        invalid = jnp.any(jnp.isnan(action))
        u = jnp.clip(jnp.where(invalid, 0.0, action), -1.0, 1.0)
        # utils.lmap(u, [-1, 1], [-5, 5]) = 5 u and lmap(u, [-1, 1], [-pi/4, pi/4]) = pi/4 u,
        # evaluated exactly (the reference's float64 rounding is far below float32's)
        acceleration = _two_prod(jnp.float32(ACCELERATION_RANGE[1]), u[0])
        sin_beta = _sin_beta(u[1])
        # The substeps run on the car's quantities one array each (``_Car``), not on the
        # state's 2-vectors: a [2]-shaped result makes XLA evaluate everything it depends on
        # once per component. A loop, not unrolled: one copy of the substep keeps compiles short.
        car = jax.lax.fori_loop(0, SUBSTEPS, lambda _, c: _substep(c, acceleration, sin_beta), _Car.of(state))
        s = car.into(state)
        s = s.replace(time=state.time + 1)
        goal_reward, success = self._goal_reward(s, params)
        reward = goal_reward + params.collision_reward * s.crashed.astype(jnp.float32)
        terminated = s.crashed | success

        new = jax.tree.map(lambda old, nw: jnp.where(invalid, old, nw), state, s)
        reward = jnp.where(invalid, 0.0, reward).astype(jnp.float32)
        terminated = terminated & ~invalid
        success = success & ~invalid
        valid = ~invalid
        facts = {"invalid": invalid, "fb_r": valid,
                 "fb_hp": valid & (reward >= -params.success_goal_reward),
                 "fb_hn": valid & new.crashed}
        obs = self._observe(new, params, at_reset=False, reward=reward, step_facts=facts)
        info = {"success": success, "crashed": new.crashed}
        return obs, new, reward, terminated, info

    def _features(self, s: ParkingState) -> jax.Array:
        c, sn = jnp.cos(s.heading), jnp.sin(s.heading)
        c, sn = c - sn * s.heading_lo, sn + c * s.heading_lo
        v = s.speed + s.speed_lo
        raw = jnp.stack([s.pos[0] + s.pos_lo[0], s.pos[1] + s.pos_lo[1], v * c, v * sn, c, sn])
        return raw / jnp.asarray(SCALES, jnp.float32)

    def _goal_reward(self, s: ParkingState, params: ParkingParams):
        achieved = self._features(s)
        desired = jnp.asarray(GOAL_FEATURES, jnp.float32)[s.goal]
        weights = jnp.asarray(params.reward_weights, jnp.float32)
        r = -jnp.power(jnp.sum(jnp.abs(achieved - desired) * weights), REWARD_P)
        return r, r > -params.success_goal_reward

    def _observe(self, s: ParkingState, params, at_reset: bool, reward=0.0, step_facts=None) -> dict:
        achieved = self._features(s)
        desired = jnp.asarray(GOAL_FEATURES, jnp.float32)[s.goal]
        step_facts = step_facts or {}
        facts = {"at_reset": jnp.int32(at_reset)}
        for k in INT_FACTS[1:]:
            facts[k] = jnp.asarray(step_facts.get(k, False), jnp.int32)
        facts["reward"] = jnp.asarray(reward, jnp.float32)
        for i in range(6):
            facts[OBS_KEYS[i]] = achieved[i]
            facts[ACHIEVED_KEYS[i]] = achieved[i]
            facts[DESIRED_KEYS[i]] = desired[i]
        sym = {"observation": achieved, "achieved_goal": achieved, "desired_goal": desired}
        return {"symbolic": sym, "facts": facts}

    # ------------------------------------------------------------------ helpers
    def features(self, state: ParkingState) -> jax.Array:
        """float32[6]: the scaled observation of ``state`` (as the reference's ``observation``)."""
        return self._features(state)


class _Car(NamedTuple):
    """The continuous state during a step, one array (over the batch) per quantity: position,
    heading and speed as float32 pairs (hi, lo), ``crashed``, the pending impact (x, y)."""

    x: jax.Array
    x_lo: jax.Array
    y: jax.Array
    y_lo: jax.Array
    heading: jax.Array
    heading_lo: jax.Array
    speed: jax.Array
    speed_lo: jax.Array
    crashed: jax.Array
    impact_x: jax.Array
    impact_y: jax.Array
    impact_pending: jax.Array

    @staticmethod
    def of(s: ParkingState) -> "_Car":
        return _Car(s.pos[0], s.pos_lo[0], s.pos[1], s.pos_lo[1], s.heading, s.heading_lo, s.speed, s.speed_lo,
                    s.crashed, s.impact[0], s.impact[1], s.impact_pending)

    def into(self, s: ParkingState) -> ParkingState:
        """``s`` with this car's quantities (time and goal kept)."""
        return s.replace(pos=jnp.stack([self.x, self.y]), pos_lo=jnp.stack([self.x_lo, self.y_lo]),
                         heading=self.heading, heading_lo=self.heading_lo, speed=self.speed,
                         speed_lo=self.speed_lo, crashed=self.crashed,
                         impact=jnp.stack([self.impact_x, self.impact_y]), impact_pending=self.impact_pending)


def _substep(car: _Car, acceleration, sin_beta) -> _Car:
    """One ``Vehicle.step(1/15)`` followed by ``handle_collisions`` with each wall."""
    v = (car.speed, car.speed_lo)
    zero = 0.0 * car.speed
    # clip_actions: after a crash steering 0 and acceleration -v; then the speed limit
    sin_beta = (jnp.where(car.crashed, zero, sin_beta[0]), jnp.where(car.crashed, zero, sin_beta[1]))
    acc = (jnp.where(car.crashed, -v[0], acceleration[0]), jnp.where(car.crashed, -v[1], acceleration[1]))
    over = (car.speed - MAX_SPEED) + car.speed_lo > -SPEED_LIMIT_SLACK
    under = (car.speed - MIN_SPEED) + car.speed_lo < SPEED_LIMIT_SLACK
    room_up = ((MAX_SPEED - car.speed), -car.speed_lo)  # MAX_SPEED - v (exact first part near the limit)
    room_down = ((MIN_SPEED - car.speed), -car.speed_lo)
    gap_up = _value(_add(acc, _neg(room_up)))  # > 0: acc exceeds the room left
    gap_down = _value(_add(acc, _neg(room_down)))
    take_up = over & (gap_up > 0)
    take_down = ~over & under & (gap_down < 0)
    acc = tuple(jnp.where(take_up, ru, jnp.where(take_down, rd, a))
                for a, ru, rd in zip(acc, room_up, room_down))

    sb = _value(sin_beta)
    cb = jnp.sqrt(1.0 - sb * sb)  # cos(beta) >= 0.89
    c, sn = jnp.cos(car.heading), jnp.sin(car.heading)
    c, sn = c - sn * car.heading_lo, sn + c * car.heading_lo
    # velocity direction cos/sin(heading + beta), times v dt, plus a pending impact. Which
    # product XLA fuses into the sum (an FMA) is pinned: the one the 2-vector form chose.
    speed = _value(v)
    move_x = speed * (c * cb - _rounded(sn * sb)) / SIMULATION_FREQUENCY
    move_y = speed * (c * sb + _rounded(sn * cb)) / SIMULATION_FREQUENCY
    move_x = move_x + jnp.where(car.impact_pending, car.impact_x, 0.0)
    move_y = move_y + jnp.where(car.impact_pending, car.impact_y, 0.0)
    x, x_lo = _add((car.x, car.x_lo), (move_x, zero))
    y, y_lo = _add((car.y, car.y_lo), (move_y, zero))
    yaw = _mul(_mul(v, sin_beta, 0), (jnp.float32(_YAW_GAIN[0]), jnp.float32(_YAW_GAIN[1])), 1)
    h, h_lo = _reduce_heading(*_add((car.heading, car.heading_lo), yaw))
    v2, v2_lo = _add(v, _mul(acc, (jnp.float32(_INV_DT[0]), jnp.float32(_INV_DT[1])), 1))
    hit, will, impact_x, impact_y = _wall_collisions(x, y, h, v2)
    return _Car(x, x_lo, y, y_lo, h, h_lo, v2, v2_lo, car.crashed | car.impact_pending | hit, impact_x, impact_y,
                will)


def _reduce_heading(h, h_lo):
    """Reduce a heading pair to about [-pi, pi] (subtracting 2 pi in two parts)."""
    k = jnp.round(h / _TWO_PI_HI)
    h2 = h - k * _TWO_PI_HI  # exact for |k| <= 1 (Sterbenz)
    return _fast_two_sum(h2, h_lo - k * _TWO_PI_LO)


def _interval_distance(min_a, max_a, min_b, max_b):
    """utils.interval_distance (negative when the intervals overlap)."""
    return jnp.where(min_a < min_b, min_b - max_a, min_a - max_b)


_CAR_CORNERS = np.array([[-LENGTH / 2, -WIDTH / 2], [-LENGTH / 2, WIDTH / 2],
                         [LENGTH / 2, WIDTH / 2], [LENGTH / 2, -WIDTH / 2]], np.float32)  # RoadObject.polygon()
assert set(np.abs(WALL_NORMALS).ravel()) == {0.0, 1.0}  # walls are axis-aligned: see _wall_collisions


def _wall_collisions(x, y, heading, speed):
    """``Vehicle.handle_collisions(wall, dt)`` against the 4 walls, in the reference's order.

    Returns, per env, ``hit`` (bool: a wall intersects the car now), ``will`` (bool: a wall
    will within the next substep) and the push-out vector ``(impact_x, impact_y)`` of the
    last wall that will (0 when none). Each wall gets the reference's spherical pre-check
    (radius sum + speed * dt; a negative speed shrinks it) and the swept separating-axis test
    over the car's 4 and the wall's 4 edge normals, in the reference's order.

    Written on per-env scalars, every intermediate one array over the batch: batched 2-vector
    dot products and min/max over 4 corners ran as tiny batched kernels on CPU (10 ms per
    substep at 16,384 envs, 20x this). The car's projections on its own axes are shared by the
    walls; the walls are axis-aligned, so the car's projections on theirs are its corners'
    x or y. The arithmetic rounds as those dot products did on XLA:CPU, so results are bit
    for bit the same: corners and the walls' projections as two separately rounded products
    summed (``_rounded``), the car's projections and displacement as a fused multiply-add."""
    c, s = jnp.cos(heading), jnp.sin(heading)
    # ly * s is exact (ly = +-1): only lx * c needs rounding on its own
    corners = [((_rounded(lx * c) - ly * s) + x, (_rounded(lx * s) + ly * c) + y) for lx, ly in _CAR_CORNERS]
    xs, ys = [p for p, _ in corners], [q for _, q in corners]
    on_u = [_rounded(c * p) + s * q for p, q in corners]  # on u = (c, s): fma(s, q, c p)
    on_w = [c * q - _rounded(s * p) for p, q in corners]  # on w = (-s, c)
    disp_x, disp_y = speed * c / SIMULATION_FREQUENCY, speed * s / SIMULATION_FREQUENCY  # velocity * dt (no slip)
    disp_u = _rounded(c * disp_x) + s * disp_y
    disp_w = c * disp_y - _rounded(s * disp_x)
    lo, hi = functools.partial(functools.reduce, jnp.minimum), functools.partial(functools.reduce, jnp.maximum)
    u_lo, u_hi, w_lo, w_hi = lo(on_u), hi(on_u), lo(on_w), hi(on_w)
    x_lo, x_hi, y_lo, y_hi = lo(xs), hi(xs), lo(ys), hi(ys)
    centre_x = (((xs[0] + xs[1]) + xs[2]) + xs[3]) * 0.25
    centre_y = (((ys[0] + ys[1]) + ys[2]) + ys[3]) * 0.25

    hit = will = jnp.zeros(jnp.shape(speed), bool)
    impact_x = impact_y = jnp.zeros(jnp.shape(speed), jnp.float32)
    for corners_w, normals_w, centre_w, radius in zip(WALL_CORNERS.astype(np.float32),
                                                      WALL_NORMALS.astype(np.float32),
                                                      WALL_CENTRES.astype(np.float32),
                                                      PRECHECK_RADIUS.astype(np.float32)):
        wall_u = [_rounded(c * p) + _rounded(s * q) for p, q in corners_w]
        wall_w = [_rounded(c * q) - _rounded(s * p) for p, q in corners_w]
        wu_lo, wu_hi, ww_lo, ww_hi = lo(wall_u), hi(wall_u), lo(wall_w), hi(wall_w)
        # per axis: (car interval, wall interval, displacement along it, the axis), car's normals
        # -u, w, u, -w first (projections on -a are those on a negated)
        axes = [(-u_hi, -u_lo, -wu_hi, -wu_lo, -disp_u, (-c, -s)),
                (w_lo, w_hi, ww_lo, ww_hi, disp_w, (-s, c)),
                (u_lo, u_hi, wu_lo, wu_hi, disp_u, (c, s)),
                (-w_hi, -w_lo, -ww_hi, -ww_lo, -disp_w, (s, -c))]
        for n in normals_w:
            car_lo, car_hi, d = (x_lo, x_hi, disp_x) if n[0] != 0 else (y_lo, y_hi, disp_y)
            if n.sum() < 0:
                car_lo, car_hi, d = -car_hi, -car_lo, -d
            proj = corners_w @ n
            axes.append((car_lo, car_hi, proj.min(), proj.max(), d, (n[0], n[1])))
        hit_w = will_w = True
        for k, (a_lo, a_hi, b_lo, b_hi, d, axis) in enumerate(axes):
            hit_w = hit_w & (_interval_distance(a_lo, a_hi, b_lo, b_hi) <= 0)
            dist = _interval_distance(jnp.where(d < 0, a_lo + d, a_lo), jnp.where(d < 0, a_hi, a_hi + d), b_lo, b_hi)
            will_w = will_w & (dist <= 0)
            # the first axis with the smallest |distance| gives the push-out direction
            if k == 0:
                gap, ax, ay = jnp.abs(dist), axis[0], axis[1]
            else:
                closer = jnp.abs(dist) < gap
                gap, ax, ay = (jnp.where(closer, jnp.abs(dist), gap), jnp.where(closer, axis[0], ax),
                               jnp.where(closer, axis[1], ay))
        # pointing from the wall's centre towards the car's
        wall_centre = corners_w.mean(0)
        towards = (_rounded((centre_x - wall_centre[0]) * ax) + _rounded((centre_y - wall_centre[1]) * ay)) > 0
        ax, ay = jnp.where(towards, ax, -ax), jnp.where(towards, ay, -ay)
        ex, ey = centre_w[0] - x, centre_w[1] - y
        near = ~(jnp.sqrt(_rounded(ex * ex) + _rounded(ey * ey)) > radius + speed / SIMULATION_FREQUENCY)
        hit = hit | (hit_w & near)
        will_w = will_w & near
        will = will | will_w
        # when several walls will intersect, the last one sets the impact
        impact_x, impact_y = jnp.where(will_w, gap * ax, impact_x), jnp.where(will_w, gap * ay, impact_y)
    return hit, will, impact_x, impact_y
