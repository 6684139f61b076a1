"""LMRL-Gym Text-Nav (fully and partially observed), as a pure JAX core.

Facts follow LMRL-Gym (``llm_rl_scripts/text_nav/env/{env.py,make_game.py}``): a TextWorld
house of 8 rooms (bedroom -west-> living room -west-> dining room -west-> kitchen -west->
backyard; kitchen -north-> garden; living room -south-> office; office -east-> bathroom;
bedroom -south-> bathroom), three tables (bedroom, living room, dining room), a closed
chest (office) and a closed fridge (kitchen), seven portable objects (stale food and
fresh food on the living-room table, a bowl on the bedroom table, a coffee cup and a
plate on the dining table, utensils in the chest, a fruit in the fridge; the two foods
and the fruit are edible), a uniform start room, and TextWorld's rules (``take``,
``take X from S/C``, ``drop``, ``put X on S``, ``insert X into C``, ``open``/``close``,
``eat``, ``go``; ``examine``/``look``/``inventory`` are removed as in the reference).
The win quest is "stale food in the fridge and the fridge closed" (score 1); eating the
stale food loses (score 0). The action set is every command the admissible-commands
list can ever contain, in sorted (= display) order.
"""

from __future__ import annotations

import functools
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from .base import TextEnv

# ---------------------------------------------------------------------------- world

ROOMS = ("bedroom", "living room", "dining room", "kitchen", "backyard", "garden", "office", "bathroom")
DIRS = ("north", "south", "east", "west")
# EXITS[room, dir] = destination room, -1 for none.
EXITS = np.full((8, 4), -1, np.int32)
for _a, _d, _b in [(0, 3, 1), (1, 3, 2), (2, 3, 3), (3, 3, 4), (3, 0, 5), (1, 1, 6), (6, 2, 7), (0, 1, 7)]:
    EXITS[_a, _d] = _b
    EXITS[_b, {0: 1, 1: 0, 2: 3, 3: 2}[_d]] = _a

#: Portable objects, in alphabetical order (the order of the admissible commands).
OBJECTS = ("bowl", "coffee cup", "fresh food", "fruit", "plate", "stale food", "utensils")
NUM_OBJECTS = len(OBJECTS)
EDIBLE = np.array([0, 0, 1, 1, 0, 1, 0], bool)
STALE = OBJECTS.index("stale food")
FURNITURE_KINDS = ("table", "chest", "fridge")  # kind 0 is a supporter, 1 and 2 containers
CONTAINERS = ("chest", "fridge")  # container index = kind - 1

# Object locations: 0..7 the floor of that room, then the inventory, the five pieces of
# furniture, and "eaten".
INV = 8
BEDROOM_TABLE, LIVING_TABLE, DINING_TABLE, CHEST, FRIDGE = 9, 10, 11, 12, 13
EATEN = 14
NUM_LOCATIONS = 15
#: The piece of furniture in each room (-1: none), and its kind (-1: none).
FURNITURE = np.array([BEDROOM_TABLE, LIVING_TABLE, DINING_TABLE, FRIDGE, -1, -1, CHEST, -1], np.int32)
FURNITURE_KIND = np.array([0, 0, 0, 2, -1, -1, 1, -1], np.int32)
FURNITURE_ROOM = {BEDROOM_TABLE: 0, LIVING_TABLE: 1, DINING_TABLE: 2, FRIDGE: 3, CHEST: 6}
START_LOCATIONS = np.array([BEDROOM_TABLE, DINING_TABLE, LIVING_TABLE, FRIDGE, DINING_TABLE, LIVING_TABLE, CHEST],
                           np.int32)

# Command kinds.
GO, OPEN, CLOSE, TAKE, TAKE_FROM, DROP, EAT, INSERT, PUT = range(9)


def _commands() -> list[tuple[str, int, int, int]]:
    """Every command the admissible list can hold: (text, kind, object, argument)."""
    out = [(f"go {d}", GO, 0, i) for i, d in enumerate(DIRS)]
    for ci, c in enumerate(CONTAINERS):
        out += [(f"open {c}", OPEN, 0, ci), (f"close {c}", CLOSE, 0, ci)]
    for o, name in enumerate(OBJECTS):
        out += [(f"take {name}", TAKE, o, 0), (f"drop {name}", DROP, o, 0), (f"put {name} on table", PUT, o, 0)]
        out += [(f"take {name} from {f}", TAKE_FROM, o, k) for k, f in enumerate(FURNITURE_KINDS)]
        out += [(f"insert {name} into {c}", INSERT, o, ci) for ci, c in enumerate(CONTAINERS)]
        if EDIBLE[o]:
            out.append((f"eat {name}", EAT, o, 0))
    return sorted(out)  # TextWorld sorts its admissible commands


_CMDS = _commands()
#: The command texts (without the policy's trailing newline), sorted.
COMMANDS = tuple(c[0] for c in _CMDS)
NUM_COMMANDS = len(COMMANDS)
CMD_KIND = np.array([c[1] for c in _CMDS], np.int32)
CMD_OBJ = np.array([c[2] for c in _CMDS], np.int32)
CMD_ARG = np.array([c[3] for c in _CMDS], np.int32)

# ---------------------------------------------------------------------------- text facts
# ``lead``: the narrative's first part.
LEAD_NONE, LEAD_OBJECTIVE, LEAD_UNKNOWN, LEAD_WON, LEAD_LOST = range(5)
LEAD_RESPONSE = 5  # + command index: the reply to a command (not used for go / open)
LEAD_OPEN = LEAD_RESPONSE + NUM_COMMANDS  # + container * 128 + contents mask
NUM_LEADS = LEAD_OPEN + 2 * 128
# ``narrative``: ``lead`` when the room is not described, else NUM_LEADS + variant *
# ROOM_STATES + ROOM_BASE[room] + fstate (variant 1: at reset, after the objective).
# fstate: a table's contents mask; a container's 0 (closed) or 1 + contents mask; 0 for a
# room without furniture.
ROOM_SIZES = np.array([128, 128, 128, 129, 1, 1, 129, 1], np.int32)
ROOM_BASE = np.concatenate([[0], np.cumsum(ROOM_SIZES)[:-1]]).astype(np.int32)
ROOM_STATES = int(ROOM_SIZES.sum())
NUM_NARRATIVES = NUM_LEADS + 2 * ROOM_STATES
# ``floor``: mask - 1 of the objects on the floor (with ``floor_on``: the room is described
# and its floor is not empty).
# ``adm_a``: room * 256 + open * 128 + inventory mask (commands close .. put), FO + 2048
# after a step (the inventory line first);
# ``take_on`` and ``take_<o>`` (see ``TextNav.observe``): the commands take ..., which
# always follow ``go``.
RUNNING, WON, LOST = 0, 1, 2

_BITS = 1 << np.arange(NUM_OBJECTS, dtype=np.int32)


@struct.dataclass
class TextNavState(environment.EnvState):
    """``time`` int32 (agent steps, invalid ones included), ``room`` int32 (index into
    ``ROOMS``), ``location`` int32[7] (per object of ``OBJECTS``: 0..7 floor of that room,
    8 inventory, 9/10/11 bedroom/living/dining table, 12 chest, 13 fridge, 14 eaten),
    ``opened`` int32[2] (chest, fridge), ``status`` int32 (0 running, 1 won, 2 lost),
    ``lead`` int32 (what the narrative starts with, a text fact), ``show_room`` bool (the
    narrative describes the room: at reset and after ``go``)."""

    room: jax.Array
    location: jax.Array
    opened: jax.Array
    status: jax.Array
    lead: jax.Array
    show_room: jax.Array


@struct.dataclass
class TextNavParams(environment.EnvParams):
    """Traced task parameters.

    ``max_steps_in_episode``: agent steps before truncation (the reference env has no
    limit; its data collector stopped at 15). ``start``: start room index, -1 uniform.
    """

    max_steps_in_episode: int = 15
    start: int = -1
    reward_win: float = 1.0
    reward_lose: float = 0.0


class TextNav(TextEnv):
    """LMRL-Gym Text-Nav: carry the stale food to the fridge and close it.

    Static config: ``observability`` ("fo" or "po"): FO adds the decorative room text and,
    after every step, the inventory line (as the reference's ``display_location`` and
    ``display_inventory``); PO hides both.

    Observation (dict):
      symbolic: ``room`` int32, ``location`` int32[7] (see ``TextNavState``), ``opened``
        int32[2], ``inventory`` int32[7] (0/1), ``admissible`` int32[67] (0/1, per
        command of ``COMMANDS``), ``status`` int32 (0 running, 1 won, 2 lost).
      facts: int32 scalars ``narrative`` (reply, or room description), ``floor_on``/``floor``
        (objects on the floor of a described room), ``adm_a``/``take_on``/``take_<o>`` (the
        admissible-command list: the commands before ``take``, then one fact per object;
        FO's ``adm_a`` also picks the inventory line, shown from the first step on). See
        the constants above for the codes.
    Action: int32 scalar, index into ``COMMANDS`` (67 commands, sorted); 67 (or any other
      value) is text that is no command. A command that is not admissible in the current
      state takes the same path: the parser's reply, reward 0, nothing changes.
    Reward: float32; ``reward_win`` (1) on the step that closes the fridge with the stale
      food inside, else 0 (the reference returns TextWorld's cumulative score, which is
      the same sequence here: the score only changes on the terminating step).
    Termination: terminated on winning or on eating the stale food; truncated after
      ``max_steps_in_episode`` steps (never on a terminating step).
    Info: ``valid_action`` bool (the command was admissible), ``admissible`` bool[67] (after
      the step), ``success`` bool (this step won: terminated by the win quest, not the loss).
    State: ``TextNavState``.
    """

    step_needs_key = False  # the game is deterministic; only the reset draws

    def __init__(self, observability: str = "fo"):
        super().__init__()
        if observability not in ("fo", "po"):
            raise ValueError(f"observability must be 'fo' or 'po', got {observability!r}")
        self.observability = observability
        keys = ("narrative", "floor_on", "floor", "adm_a", "take_on")
        keys += tuple(f"take_{o}" for o in range(NUM_OBJECTS))
        self.fact_shapes = {k: () for k in keys}
        self._policy = optimal_policy_table()

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> TextNavParams:
        return TextNavParams()

    @property
    def name(self) -> str:
        return f"text-nav-{self.observability}"

    @property
    def num_actions(self) -> int:
        return NUM_COMMANDS

    def action_space(self, params=None):
        return spaces.Discrete(NUM_COMMANDS)

    def observation_space(self, params=None):
        sym = {
            "room": spaces.Discrete(8),
            "location": spaces.Box(0, NUM_LOCATIONS - 1, (NUM_OBJECTS,), jnp.int32),
            "opened": spaces.Box(0, 1, (2,), jnp.int32),
            "inventory": spaces.Box(0, 1, (NUM_OBJECTS,), jnp.int32),
            "admissible": spaces.Box(0, 1, (NUM_COMMANDS,), jnp.int32),
            "status": spaces.Discrete(3),
        }
        top = {"narrative": NUM_NARRATIVES - 1, "floor": 126,
               "adm_a": (2 if self.observability == "fo" else 1) * 2048 - 1}
        facts = {k: spaces.Box(-1 if k.startswith("take_") and k != "take_on" else 0,
                               top.get(k, 7 if k.startswith("take_") and k != "take_on" else 1), (), jnp.int32)
                 for k in self.fact_shapes}
        return spaces.Dict({"symbolic": spaces.Dict(sym), "facts": spaces.Dict(facts)})

    def check_params(self, params: TextNavParams) -> None:
        start = int(np.asarray(params.start))
        if not -1 <= start < 8:
            raise ValueError(f"start must be -1 (uniform) or a room index 0..7 {list(ROOMS)}, got {start}")

    def is_truncated(self, state: TextNavState, params: TextNavParams) -> jax.Array:
        return jnp.logical_and(state.time >= params.max_steps_in_episode, state.status == RUNNING)

    # ------------------------------------------------------------------ dynamics
    def reset_env(self, key: jax.Array, params: TextNavParams):
        drawn = (jax.random.bits(key, (), jnp.uint32) % 8).astype(jnp.int32)
        start = jnp.asarray(params.start, jnp.int32)
        room = jnp.where(start >= 0, start, drawn)
        state = TextNavState(time=jnp.int32(0), room=room, location=jnp.asarray(START_LOCATIONS),
                             opened=jnp.zeros((2,), jnp.int32), status=jnp.int32(RUNNING),
                             lead=jnp.int32(LEAD_OBJECTIVE), show_room=jnp.bool_(True))
        return self.observe(key, state, None, params), state

    def step_env(self, key: jax.Array, state: TextNavState, action, params: TextNavParams):
        a = jnp.asarray(action, jnp.int32)
        in_range = (a >= 0) & (a < NUM_COMMANDS)
        ac = jnp.clip(a, 0, NUM_COMMANDS - 1)
        row = ((state.room * 4 + state.opened[0] * 2 + state.opened[1]) * NUM_LOCATIONS
               + state.location[jnp.asarray(CMD_OBJ)[ac]])
        ok = in_range & jnp.asarray(ADMISSIBLE_TABLE.reshape(-1, NUM_COMMANDS))[row, ac]
        kind, obj, arg = jnp.asarray(CMD_KIND)[ac], jnp.asarray(CMD_OBJ)[ac], jnp.asarray(CMD_ARG)[ac]
        room, loc, opened = state.room, state.location, state.opened
        furn = jnp.asarray(FURNITURE)[room]
        new_room = jnp.where(ok & (kind == GO), jnp.asarray(EXITS)[room, arg], room)
        flip = ok & ((kind == OPEN) | (kind == CLOSE))
        new_opened = jnp.where(flip & (jnp.arange(2) == arg), (kind == OPEN).astype(jnp.int32), opened)
        dest = jnp.select([(kind == TAKE) | (kind == TAKE_FROM), kind == DROP, kind == EAT],
                          [jnp.int32(INV), room, jnp.int32(EATEN)], furn)
        moves = ok & (kind >= TAKE)
        new_loc = jnp.where(moves & (jnp.arange(NUM_OBJECTS) == obj), dest, loc)
        won = (new_loc[STALE] == FRIDGE) & (new_opened[1] == 0)
        lost = new_loc[STALE] == EATEN
        status = jnp.where(won, WON, jnp.where(lost, LOST, RUNNING)).astype(jnp.int32)
        contents = jnp.sum(jnp.where(new_loc == CHEST + arg, jnp.asarray(_BITS), 0))
        lead = jnp.select(
            [~ok, kind == GO, won, lost, kind == OPEN],
            [jnp.int32(LEAD_UNKNOWN), jnp.int32(LEAD_NONE), jnp.int32(LEAD_WON), jnp.int32(LEAD_LOST),
             LEAD_OPEN + arg * 128 + contents],
            LEAD_RESPONSE + ac).astype(jnp.int32)
        new = state.replace(time=state.time + 1, room=new_room, location=new_loc, opened=new_opened,
                            status=status, lead=lead, show_room=ok & (kind == GO))
        reward = jnp.where(won, params.reward_win, jnp.where(lost, params.reward_lose, 0.0)).astype(jnp.float32)
        obs = self.observe(key, new, a, params)
        info = {"valid_action": ok, "admissible": obs["symbolic"]["admissible"].astype(bool), "success": won}
        return obs, new, reward, won | lost, info

    def observe(self, key, state: TextNavState, action, params) -> dict:
        room, loc, opened = state.room, state.location, state.opened
        adm = admissible_mask(room, loc, opened)
        bits = jnp.asarray(_BITS)
        inv_mask = jnp.sum(jnp.where(loc == INV, bits, 0))
        floor_mask = jnp.sum(jnp.where(loc == room, bits, 0))
        furn = jnp.asarray(FURNITURE)[room]
        fkind = jnp.asarray(FURNITURE_KIND)[room]
        furn_mask = jnp.sum(jnp.where(loc == furn, bits, 0))
        is_cont = fkind >= 1
        room_open = jnp.where(is_cont, opened[jnp.clip(fkind - 1, 0, 1)], 0)
        fstate = jnp.where(fkind < 0, 0, jnp.where(is_cont, jnp.where(room_open == 1, 1 + furn_mask, 0), furn_mask))
        variant = (state.lead == LEAD_OBJECTIVE).astype(jnp.int32)
        described = NUM_LEADS + variant * ROOM_STATES + jnp.asarray(ROOM_BASE)[room] + fstate
        reachable = (fkind == 0) | (room_open == 1)
        s = jnp.where(loc == room, 1, jnp.where((loc == furn) & reachable, 2, 0))
        facts = {
            "narrative": jnp.where(state.show_room, described, state.lead),
            "floor_on": state.show_room & (floor_mask > 0),
            "floor": jnp.maximum(floor_mask - 1, 0),
            "adm_a": room * 256 + room_open * 128 + inv_mask,
            "take_on": jnp.any(s > 0),
        }
        # take_<o>: -1 (no take command for o), else variant * 4 + (0 from the floor,
        # 1 + kind from the room's furniture); variant 1 when an earlier take precedes it.
        t = jnp.where(s == 1, 0, 1 + jnp.maximum(fkind, 0))
        earlier = (jnp.cumsum(s > 0) - (s > 0)) > 0
        take = jnp.where(s > 0, earlier.astype(jnp.int32) * 4 + t, -1)
        facts.update({f"take_{o}": take[o] for o in range(NUM_OBJECTS)})
        if self.observability == "fo":  # + 2048: with the inventory line (after a step)
            facts["adm_a"] = facts["adm_a"] + jnp.where(state.time > 0, 2048, 0)
        facts = {k: jnp.asarray(v, jnp.int32) for k, v in facts.items()}
        sym = {"room": room, "location": loc, "opened": opened, "inventory": (loc == INV).astype(jnp.int32),
               "admissible": adm.astype(jnp.int32), "status": state.status}
        return {"symbolic": sym, "facts": facts}

    # ------------------------------------------------------------------ helpers
    def optimal_action(self, state: TextNavState) -> jax.Array:
        """In-graph optimal command (int32): a lookup in the BFS policy table."""
        return jnp.asarray(self._policy)[state.room, state.location[STALE], state.opened[0], state.opened[1]]


def admissible_mask(room, location, opened) -> jax.Array:
    """bool[67]: which commands are admissible (in-graph, one env): one gather from
    ``ADMISSIBLE_TABLE`` (a command's admissibility depends only on the room, the two
    container flags and the location of its own object)."""
    oloc = location[jnp.asarray(CMD_OBJ)]
    row = (room * 4 + opened[0] * 2 + opened[1]) * NUM_LOCATIONS
    return jnp.asarray(ADMISSIBLE_TABLE.reshape(-1, NUM_COMMANDS))[row + oloc, jnp.arange(NUM_COMMANDS)]


# ---------------------------------------------------------------------------- host model
# The same rules in plain Python, for the text tables and the BFS.


def admissible_py(room: int, location, opened) -> list[int]:
    """Indices (sorted = display order) of the admissible commands of a state."""
    fk, furn = int(FURNITURE_KIND[room]), int(FURNITURE[room])
    out = []
    for a in range(NUM_COMMANDS):
        k, o, g = int(CMD_KIND[a]), int(CMD_OBJ[a]), int(CMD_ARG[a])
        lo = int(location[o])
        if k == GO:
            ok = EXITS[room, g] >= 0
        elif k in (OPEN, CLOSE):
            ok = fk == g + 1 and bool(opened[g]) == (k == CLOSE)
        elif k == TAKE:
            ok = lo == room
        elif k == TAKE_FROM:
            ok = fk == g and lo == furn and (fk == 0 or bool(opened[fk - 1]))
        elif k in (DROP, EAT):
            ok = lo == INV
        elif k == INSERT:
            ok = lo == INV and fk == g + 1 and bool(opened[g])
        else:
            ok = lo == INV and fk == 0
        if ok:
            out.append(a)
    return out


def apply_py(room: int, location, opened, a: int):
    """The state after admissible command ``a``: (room, location tuple, opened tuple)."""
    k, o, g = int(CMD_KIND[a]), int(CMD_OBJ[a]), int(CMD_ARG[a])
    location, opened = list(location), list(opened)
    if k == GO:
        room = int(EXITS[room, g])
    elif k in (OPEN, CLOSE):
        opened[g] = int(k == OPEN)
    elif k in (TAKE, TAKE_FROM):
        location[o] = INV
    elif k == DROP:
        location[o] = room
    elif k == EAT:
        location[o] = EATEN
    else:
        location[o] = int(FURNITURE[room])
    return room, tuple(location), tuple(opened)


def _admissible_table() -> np.ndarray:
    """bool[8, 2, 2, 15, 67]: [room, chest open, fridge open, location of the command's
    object, command] -> admissible."""
    table = np.zeros((8, 2, 2, NUM_LOCATIONS, NUM_COMMANDS), bool)
    for room, c0, c1, lo in [(r, a, b, lo) for r in range(8) for a in range(2) for b in range(2)
                             for lo in range(NUM_LOCATIONS)]:
        table[room, c0, c1, lo, admissible_py(room, [lo] * NUM_OBJECTS, (c0, c1))] = True
    return table


ADMISSIBLE_TABLE = _admissible_table()


def _abstract_states():
    """(room, stale-food location, chest open, fridge open): the part of the state the
    quest depends on. The other objects never enable or block a command on the stale
    food, a room or a container (TextWorld has no carrying limit here), so shortest
    paths in this abstraction are shortest paths of the full game."""
    return [(r, lo, a, b) for r in range(8) for lo in range(NUM_LOCATIONS) for a in range(2) for b in range(2)]


def _abstract_moves(s) -> list[tuple[int, tuple]]:
    """(command, next abstract state) for every admissible command that matters."""
    room, sl, c0, c1 = s
    loc = [EATEN] * NUM_OBJECTS  # the other objects out of the way
    loc[STALE] = sl
    out = []
    for a in admissible_py(room, loc, (c0, c1)):
        r, lo, op = apply_py(room, loc, (c0, c1), a)
        out.append((a, (r, lo[STALE], op[0], op[1])))
    return out


def _won(s) -> bool:
    return s[1] == FRIDGE and s[3] == 0


def optimal_lengths() -> dict[int, int]:
    """Fewest steps to win from the start state of every room (host BFS)."""
    out = {}
    for start in range(8):
        s0 = (start, int(START_LOCATIONS[STALE]), 0, 0)
        dist = {s0: 0}
        queue = deque([s0])
        while queue:
            s = queue.popleft()
            if _won(s):
                out[start] = dist[s]
                break
            for _, t in _abstract_moves(s):
                if t not in dist and t[1] != EATEN:
                    dist[t] = dist[s] + 1
                    queue.append(t)
    return out


@functools.lru_cache(maxsize=None)
def optimal_policy_table() -> np.ndarray:
    """int32[8, 15, 2, 2]: an optimal command for each abstract state (0 where the game
    cannot be won any more), by backward value iteration over the abstraction."""
    states = list(_abstract_states())
    far = 10**6
    dist = {s: (0 if _won(s) else far) for s in states}
    nxt = {s: [(a, t) for a, t in _abstract_moves(s) if t[1] != EATEN] for s in states}
    changed = True
    while changed:
        changed = False
        for s in states:
            if _won(s):
                continue
            best = min((dist[t] + 1 for _, t in nxt[s]), default=far)
            if best < dist[s]:
                dist[s], changed = best, True
    table = np.zeros((8, NUM_LOCATIONS, 2, 2), np.int32)
    for s in states:
        if 0 < dist[s] < far:
            table[s] = min((dist[t], a) for a, t in nxt[s])[1]
    table.setflags(write=False)
    return table


def walkthrough(start: int) -> list[str]:
    """The reference's walkthrough: shortest path to the living room, take the stale food,
    shortest path to the kitchen, open, insert, close."""

    def path(a, b):
        prev = {a: None}
        queue = deque([a])
        while queue:
            r = queue.popleft()
            for d in range(4):
                t = int(EXITS[r, d])
                if t >= 0 and t not in prev:
                    prev[t] = (r, d)
                    queue.append(t)
        out = []
        while prev[b] is not None:
            b, d = prev[b]
            out.append(f"go {DIRS[d]}")
        return out[::-1]

    return (path(start, 1) + ["take stale food from table"] + path(1, 3)
            + ["open fridge", "insert stale food into fridge", "close fridge"])
