"""LMRL-Gym Maze (fully and partially observed), as a pure JAX core.

Facts follow LMRL-Gym (``llm_rl_scripts/maze/env``): the 10x13 double-T layout, goal
(8, 6), a uniform start over the other 25 free cells, moves left/right/up/down, reward 0
on reaching the goal, -4 for text that is no move, -1 otherwise (bumping a wall
included), and the 100-step limit whose 101st step answers "Failure" with -1.
"""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from .base import TextEnv

LAYOUTS = {
    # 1 = wall, 0 = free; row 0 is the top.
    "double_t": np.array(
        [
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
            [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1],
            [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1],
            [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1],
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
            [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        ],
        np.int32,
    ),
}
DEFAULT_GOAL = {"double_t": (8, 6)}

#: Action order of the reference's action dict: move left, right, up, down.
MOVES = np.array([[0, -1], [0, 1], [-1, 0], [1, 0]], np.int32)
#: Wall-bit order of the reference's sentence: right, left, above, below.
WALL_DIRS = np.array([[0, 1], [0, -1], [-1, 0], [1, 0]], np.int32)

# Kinds of observation text in the window (the ``kind`` / ``pair_kind`` facts).
EMPTY, DESCRIBE, SUCCESS, FAILURE = 0, 1, 2, 3
NO_ACTION = 4  # ``pair_action`` of an empty pair
# ``status`` of a state / symbolic observation.
RUNNING, WON, TIMED_OUT = 0, 1, 2

FO_WINDOW, PO_WINDOW = 1, 40
# The window is one leading observation ("first") and then (action, observation) pairs,
# right-aligned: that is how the reference's ``(history + [action, obs])[-last_k:]`` looks.
FIRST_FO = ("kind", "walls", "pos_r", "pos_c", "goal_r", "goal_c")
FIRST_PO = ("kind", "walls")


@struct.dataclass
class MazeState(environment.EnvState):
    """``time`` int32 (steps taken, invalid ones included), ``pos``/``goal`` int32[2]
    (row, col), ``status`` int32 (0 running, 1 won, 2 timed out), ``window`` dict of
    int32 facts: the observation window (see ``Maze``)."""

    pos: jax.Array
    goal: jax.Array
    status: jax.Array
    window: dict


@struct.dataclass
class MazeParams(environment.EnvParams):
    """Traced task parameters.

    ``start``: (row, col), or (-1, -1) for a uniform start over the free non-goal cells.
    ``goal``: (row, col) of the goal; must be a free cell.
    """

    max_steps_in_episode: int = 100
    start: tuple = (-1, -1)
    goal: tuple = (8, 6)
    reward_goal: float = 0.0
    reward_move: float = -1.0
    reward_invalid: float = -4.0
    reward_timeout: float = -1.0


class Maze(TextEnv):
    """LMRL-Gym maze: walk to the goal of a fixed grid.

    Static config: ``observability`` ("fo" or "po"); ``layout`` ("double_t");
    ``window`` (texts kept in the observation: 1 for FO, 40 for PO, as the reference's
    ``last_k``); ``wipe_history_on_invalid`` (reference defect L1, default True: after
    text that is no move, the PO window keeps only the newest observation; False keeps
    the window as it was, the invalid turn left out); ``failure_step`` (reference
    defect L2, default True: the time limit is checked at the start of a step, so step
    101 answers "Failure" with -1 and no move; False truncates right after step 100).

    The window of W texts is a leading observation ("first", present until the window
    overflows when W is even) and M = (W - 1) // 2 or W // 2 (action, observation) pairs,
    newest last; FO (W = 1) has no pairs.

    Observation (dict):
      symbolic (FO): ``position`` int32[2], ``goal`` int32[2], ``walls`` int32[4] (0/1:
        right, left, above, below), ``status`` int32 (0 running, 1 success, 2 failure).
      symbolic (PO): ``walls`` int32[4], ``status`` int32, and the window as symbols:
        ``first_kind`` int32, ``first_walls`` int32[4], ``pair_action`` int32[M],
        ``pair_kind`` int32[M], ``pair_walls`` int32[M, 4]. Kinds: 0 empty,
        1 observation, 2 success, 3 failure.
      facts: ``kind``, ``walls`` (bit code 0..15) int32 scalars of the first text, FO
        also ``pos_r pos_c goal_r goal_c``; with pairs, int32[M] ``pair_action`` (4 in
        an empty pair) and ``pair_<key>`` for each of those.
    Action: int32 scalar, 0 left, 1 right, 2 up, 3 down; 4 (or any other value) is text
      that is no move.
    Reward: float32; 0 on reaching the goal, -4 invalid, -1 otherwise, -1 on the
      Failure step.
    Termination: terminated on reaching the goal; truncated on the Failure step (or,
      with ``failure_step=False``, after ``max_steps_in_episode`` steps).
    State: ``MazeState``.
    """

    step_needs_key = False  # moves are deterministic; only the auto-reset draws

    def __init__(self, observability: str = "fo", layout: str = "double_t", window: int | None = None,
                 wipe_history_on_invalid: bool = True, failure_step: bool = True):
        super().__init__()
        if observability not in ("fo", "po"):
            raise ValueError(f"observability must be 'fo' or 'po', got {observability!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; valid layouts: {sorted(LAYOUTS)}")
        self.observability = observability
        self.layout_name = layout
        self.layout = LAYOUTS[layout]
        self.window = int(window if window is not None else (FO_WINDOW if observability == "fo" else PO_WINDOW))
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self.wipe_history_on_invalid = bool(wipe_history_on_invalid)
        self.failure_step = bool(failure_step)
        self.pairs = (self.window - 1) // 2 if self.window % 2 else self.window // 2
        self.first_keys = FIRST_FO if observability == "fo" else FIRST_PO
        self.fact_shapes = {k: () for k in self.first_keys}
        self.pair_keys = ("pair_action",) + tuple("pair_" + k for k in self.first_keys) if self.pairs else ()
        self.fact_shapes.update({k: (self.pairs,) for k in self.pair_keys})
        self.free_cells = np.argwhere(self.layout == 0).astype(np.int32)  # argwhere order, as the reference
        self.distances = all_pairs_distances(self.layout)
        self.wall_codes = wall_codes(self.layout)  # one lookup instead of four per call

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> MazeParams:
        return MazeParams(goal=DEFAULT_GOAL[self.layout_name])

    @property
    def name(self) -> str:
        return f"maze-{self.observability}"

    @property
    def num_actions(self) -> int:
        return 4

    def action_space(self, params=None):
        return spaces.Discrete(4)

    def observation_space(self, params=None):
        h, w = self.layout.shape
        big = max(h, w)
        if self.observability == "fo":
            sym = {
                "position": spaces.Box(0, big, (2,), jnp.int32),
                "goal": spaces.Box(0, big, (2,), jnp.int32),
                "walls": spaces.Box(0, 1, (4,), jnp.int32),
                "status": spaces.Discrete(3),
            }
        else:
            sym = {
                "walls": spaces.Box(0, 1, (4,), jnp.int32),
                "status": spaces.Discrete(3),
                "first_kind": spaces.Discrete(4),
                "first_walls": spaces.Box(0, 1, (4,), jnp.int32),
                "pair_action": spaces.Box(0, 4, (self.pairs,), jnp.int32),
                "pair_kind": spaces.Box(0, 3, (self.pairs,), jnp.int32),
                "pair_walls": spaces.Box(0, 1, (self.pairs, 4), jnp.int32),
            }
        facts = {k: spaces.Box(0, 15 if "walls" in k else big, shape, jnp.int32)
                 for k, shape in self.fact_shapes.items()}
        return spaces.Dict({"symbolic": spaces.Dict(sym), "facts": spaces.Dict(facts)})

    def check_params(self, params: MazeParams) -> None:
        """Host-side check of concrete params (start and goal on free cells)."""
        free = {tuple(int(v) for v in c) for c in self.free_cells}
        goal = tuple(int(v) for v in np.asarray(params.goal).reshape(-1))
        if goal not in free:
            raise ValueError(f"goal {goal} is not a free cell of {self.layout_name!r}; free cells: {sorted(free)}")
        start = tuple(int(v) for v in np.asarray(params.start).reshape(-1))
        if start != (-1, -1) and (start not in free or start == goal):
            raise ValueError(f"start {start} must be (-1, -1) (uniform) or a free cell other than the goal "
                             f"{goal}; free cells: {sorted(free)}")

    def is_truncated(self, state: MazeState, params: MazeParams) -> jax.Array:
        if self.failure_step:
            return state.status == TIMED_OUT
        return jnp.logical_and(state.time >= params.max_steps_in_episode, state.status != WON)

    # ------------------------------------------------------------------ dynamics
    def _walls(self, pos: jax.Array) -> jax.Array:
        """Wall bit code at ``pos`` (bit i set: wall in direction i of WALL_DIRS)."""
        return jnp.asarray(self.wall_codes)[pos[0], pos[1]]

    def _first(self, kind, pos, goal) -> dict:
        values = {"kind": kind, "walls": self._walls(pos), "pos_r": pos[0], "pos_c": pos[1],
                  "goal_r": goal[0], "goal_c": goal[1]}
        return {k: jnp.asarray(values[k], jnp.int32) for k in self.first_keys}

    def _only(self, first: dict) -> dict:
        """A window holding one observation and no pairs."""
        window = dict(first)
        window.update({k: jnp.full((self.pairs,), NO_ACTION if k == "pair_action" else 0, jnp.int32)
                       for k in self.pair_keys})
        return window

    def _append(self, window: dict, action, kind, pos, goal) -> dict:
        """The window after an (action, observation) pair, oldest texts dropped."""
        obs = self._first(kind, pos, goal)
        if not self.pairs:
            return obs
        pair = {"pair_action": jnp.asarray(action, jnp.int32), **{"pair_" + k: v for k, v in obs.items()}}
        out = {k: jnp.concatenate([window[k][1:], pair[k][None]]) for k in self.pair_keys}
        if self.window % 2:
            # W = 2M + 1 texts: once the oldest pair leaves, its observation leads.
            full = window["pair_kind"][0] != EMPTY
            lead = {k: window["pair_" + k][0] for k in self.first_keys}
        else:
            # W = 2M texts: with M pairs there is no room left for a leading observation.
            full = out["pair_kind"][0] != EMPTY
            lead = {k: jnp.int32(0) for k in self.first_keys}  # kind 0 = EMPTY
        out.update({k: jnp.where(full, lead[k], window[k]) for k in self.first_keys})
        return out

    def reset_env(self, key: jax.Array, params: MazeParams):
        free = jnp.asarray(self.free_cells)
        goal = jnp.asarray(params.goal, jnp.int32)
        # Uniform over the free cells other than the goal: draw among n-1 and skip it. One
        # 32-bit draw modulo 25 (bias < 1e-8) costs a third of ``randint``, which splits
        # the key and draws twice.
        goal_idx = jnp.argmax(jnp.all(free == goal, axis=1))
        j = (jax.random.bits(key, (), jnp.uint32) % (free.shape[0] - 1)).astype(jnp.int32)
        drawn = free[j + (j >= goal_idx)]
        given = jnp.asarray(params.start, jnp.int32)
        pos = jnp.where(given[0] >= 0, given, drawn)
        state = MazeState(time=jnp.int32(0), pos=pos, goal=goal, status=jnp.int32(RUNNING),
                          window=self._only(self._first(DESCRIBE, pos, goal)))
        return self.observe(key, state, None, params), state

    def step_env(self, key: jax.Array, state: MazeState, action, params: MazeParams):
        a = jnp.asarray(action, jnp.int32)
        valid = (a >= 0) & (a < 4)
        timeout = jnp.logical_and(state.time >= params.max_steps_in_episode, self.failure_step)
        h, w = self.layout.shape
        cand = state.pos + jnp.where(valid, jnp.asarray(MOVES)[jnp.clip(a, 0, 3)], 0)
        cand = jnp.clip(cand, 0, jnp.asarray([h - 1, w - 1]))
        blocked = jnp.asarray(self.layout)[cand[0], cand[1]] == 1
        pos = jnp.where(blocked | timeout, state.pos, cand)
        won = jnp.all(pos == state.goal) & ~timeout
        reward = jnp.where(timeout, params.reward_timeout,
                           jnp.where(won, params.reward_goal,
                                     jnp.where(valid, params.reward_move, params.reward_invalid)))
        kind = jnp.where(timeout, FAILURE, jnp.where(won, SUCCESS, DESCRIBE))
        appended = self._append(state.window, jnp.clip(a, 0, 3), kind, pos, state.goal)
        only = self._only(self._first(kind, pos, state.goal))
        after_invalid = only if self.wipe_history_on_invalid else state.window
        window = jax.tree.map(lambda o, ap, inv: jnp.where(timeout, o, jnp.where(valid, ap, inv)),
                              only, appended, after_invalid)
        status = jnp.where(timeout, TIMED_OUT, jnp.where(won, WON, RUNNING)).astype(jnp.int32)
        new = state.replace(time=state.time + 1, pos=pos, status=status, window=window)
        info = {"valid_action": valid}
        return (self.observe(key, new, a, params), new, reward.astype(jnp.float32), won, info)

    def observe(self, key, state: MazeState, action, params) -> dict:
        bits = (self._walls(state.pos) >> jnp.arange(4, dtype=jnp.int32)) & 1
        if self.observability == "fo":
            sym = {"position": state.pos, "goal": state.goal, "walls": bits, "status": state.status}
        else:
            w = state.window
            unpack = lambda code: (code[..., None] >> jnp.arange(4, dtype=jnp.int32)) & 1  # noqa: E731
            sym = {"walls": bits, "status": state.status, "first_kind": w["kind"], "first_walls": unpack(w["walls"]),
                   "pair_action": w["pair_action"], "pair_kind": w["pair_kind"],
                   "pair_walls": unpack(w["pair_walls"])}
        return {"symbolic": sym, "facts": dict(state.window)}

    # ------------------------------------------------------------------ helpers
    def optimal_action(self, position: jax.Array, goal: jax.Array) -> jax.Array:
        """In-graph BFS-optimal move (int32) from ``position`` toward ``goal``."""
        h, w = self.layout.shape
        table = jnp.asarray(self.distances)[goal[0] * w + goal[1]]
        nb = jnp.clip(position[None, :] + jnp.asarray(MOVES), 0, jnp.asarray([h - 1, w - 1]))
        d = table[nb[:, 0], nb[:, 1]]
        return jnp.argmin(d).astype(jnp.int32)

    def optimal_returns(self, params: MazeParams | None = None) -> dict[tuple[int, int], float]:
        """Return of the BFS-optimal policy from every start cell (host, exact)."""
        params = self.default_params if params is None else params
        goal = tuple(int(x) for x in params.goal)
        dist = bfs_distances(self.layout, goal)
        out = {}
        for r, c in self.free_cells:
            if (r, c) == goal:
                continue
            d = int(dist[r, c])
            out[(int(r), int(c))] = float((d - 1) * params.reward_move + params.reward_goal)
        return out


_FAR = 10**6


def bfs_distances(layout: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
    """Moves needed from every cell to ``goal`` (walls and unreachable cells: 10**6)."""
    h, w = layout.shape
    dist = np.full((h, w), _FAR, np.int32)
    if layout[goal] != 0:
        return dist
    dist[goal] = 0
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            nr, nc = r + dr, c + dc
            if 0 <= nr < h and 0 <= nc < w and layout[nr, nc] == 0 and dist[nr, nc] == _FAR:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


def wall_codes(layout: np.ndarray) -> np.ndarray:
    """int32[H, W]: the wall bit code of every cell (outside the grid counts as wall)."""
    h, w = layout.shape
    padded = np.pad(layout, 1, constant_values=1)
    codes = np.zeros((h, w), np.int32)
    for i, (dr, dc) in enumerate(WALL_DIRS):
        codes |= padded[1 + dr: 1 + dr + h, 1 + dc: 1 + dc + w].astype(np.int32) << i
    return codes


def all_pairs_distances(layout: np.ndarray) -> np.ndarray:
    """int32[H*W, H, W]: ``bfs_distances`` for every goal cell (row-major)."""
    h, w = layout.shape
    return np.stack([bfs_distances(layout, (r, c)) for r in range(h) for c in range(w)])
