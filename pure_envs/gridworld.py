"""LLF-Bench ``llf-gridworld-v0`` as a pure JAX core (symbolic part; the text is written
by the text layer from the facts below).

Facts follow LLF-Bench (``llfbench/envs/gridworld/``, spec ``llf-bench.md`` §2.2): a house of
20 rooms grown as a tree from a root at (0, 0). Rooms are popped in creation order (a FIFO
queue); a popped room draws ``k = randint(1, len(free) - 1)`` of its door-less directions
(``free`` has 4 directions for the root, 3 for every other room, whose only door at pop time
leads back to its parent) with ``random.sample`` (a uniform random subset of size k, in random
order) and creates one room per chosen direction, in that order, at the adjacent coordinate,
with a two-way door, until there are 20 rooms. Room types are uniform over 7 and a room is
named ``<type>-<k>`` with a per-type counter in creation order. Nothing checks whether a
coordinate is already taken (defect F11): rooms overlap, the world is a tree with compass
labels. Objects, goal, start, dynamics and feedback: see ``Gridworld``.

Randomness. The reference's Python ``random`` draws become key draws with the same
distribution: room types are i.i.d. (drawn up front: the growth draws never depend on them);
``random.sample`` of ``k`` out of the free directions is the first ``k`` of the free
directions sorted by i.i.d. uniform ranks; ``random.shuffle`` + one ``random.random() < 0.25``
per visited room + ``random.choice`` of a remaining object is: visit the rooms in a uniform
order, each room takes with an i.i.d. probability 1/4, and the j-th taker in visiting order
(j < 5) gets the j-th object of a uniform order of the 5 objects; ``random.choice`` of a list
is an argmax of uniform scores over a mask. All uniforms come from one ``random.split``
call (``_random_words``); integers are ``floor(u * n)`` (24-bit uniforms, relative bias
< 1e-6).

Layout generation is vectorised (no loop over rooms): with ``c_p = 1 + k_0 + ... + k_p``,
room ``i >= 1`` is child number ``i - c_{p-1}`` of pop ``p = #{q : c_q <= i}``. A child's
compass angle (N, E, S, W = 0..3) relative to its parent's is a fixed offset (the root's
children: their angle; others: 2 + one of the three offsets 1..3 that are not the door back),
so angles, coordinates and depths are sums over ancestors, by pointer jumping (five
rounds of gathers along the 1st, 2nd, 4th, ... ancestor), as is each room's ancestor set
(a 20-bit mask), which gives the tree distances to the goal, the gold directions and the
optimal path. A room's children are consecutive rooms (pops run in creation order), so its
doors are selects over its at most 3 children. Sorts and scatters are written as
compare-selects over these small axes (fewer kernels, faster compiles; axes of up to 8 are
unrolled). A batch of 16,384 layouts takes ~39 ms on 2 cores (65 ms with the 20x20
ancestor matrix products and 20-way selects this replaced; same layouts for every key). With
``check_occupancy=True`` the growth is a ``lax.fori_loop`` over the 19 pops (occupancy
depends on earlier rooms); with the flag off that loop gives exactly the vectorised layout
for the same key (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from .llf import LLFEnv

# ---------------------------------------------------------------------------- world

#: Action index -> direction (the reference's ``Scene.DIRECTIONS``).
DIRECTIONS = ("north", "east", "west", "south")
NORTH, EAST, WEST, SOUTH = range(4)
#: The opposite of each action direction.
OPPOSITE = np.array([SOUTH, WEST, EAST, NORTH], np.int32)
#: (dx, dy) per action direction: x grows to the east, y to the north (the reference's pos).
DIR_DELTA = np.array([[0, 1], [1, 0], [-1, 0], [0, -1]], np.int32)
#: Compass angle (N, E, S, W = 0, 1, 2, 3; +2 is the opposite) -> action direction.
ANGLE_TO_DIR = np.array([NORTH, EAST, SOUTH, WEST], np.int32)

ROOM_TYPES = ("kitchen", "bedroom", "lobby", "toilet", "balcony", "corridor", "drawing room")
OBJECTS = ("lamp", "table", "couch", "television", "fridge")
TREASURE = "treasure"

NUM_ROOMS = 20
NUM_DIRS = 4
#: Longest possible optimal path (a chain of 20 rooms).
MAX_PATH = NUM_ROOMS - 1
#: Most children of one room (the root's ``randint(1, 3)``; others have at most 2).
MAX_KIDS = 3
#: Pops the growth can need (each pop creates at least one room when nothing is occupied).
NUM_POPS = NUM_ROOMS - 1
#: Room name index = type * NUM_ROOMS + (k - 1), i.e. an index into ``ROOM_NAMES``.
ROOM_NAMES = tuple(f"{t}-{k}" for t in ROOM_TYPES for k in range(1, NUM_ROOMS + 1))
NUM_NAMES = len(ROOM_NAMES)

# ``obs_kind`` fact: what the observation text is.
OBS_ROOM, OBS_BLOCKED, OBS_NONE = 0, 1, 2
# ``path_ord`` fact: the ordinal of each path sentence.
ORD_FIRST, ORD_NEXT, ORD_FINAL = 0, 1, 2
# Feedback cases (``fb_<kind>``; 0 = the reference's field is None this step).
HP_NOOP, HP_FOLLOWED, HP_SHOULD = 1, 2, 3
HN_NOOP, HN_AVOIDED, HN_TOOK = 1, 2, 3
F_NOOP, F_ADVICE = 1, 2

_BIG = 1 << 20


def room_name_index(type_index: int, k: int) -> int:
    """Index into ``ROOM_NAMES`` of room ``<type>-<k>`` (k from 1)."""
    return type_index * NUM_ROOMS + k - 1


# ---------------------------------------------------------------------------- state


@struct.dataclass
class Layout:
    """One generated house (all int32 unless said). ``num_rooms``: rooms that exist (20,
    fewer only if growth stalled with ``check_occupancy``); rooms ``>= num_rooms`` have no
    doors and are never the goal or the start. ``parent`` [20] (-1 for the root and absent
    rooms), ``dir`` [20] (action direction from the parent to the room, -1 root/absent),
    ``adj`` [20, 4] (room behind the door in each action direction, -1 none), ``door_order``
    [20, 4] (a room's door directions in the reference's insertion order: for a non-root room
    the door back to its parent, then its children in creation order; -1 padded), ``pos``
    [20, 2] (x east, y north), ``room_type`` [20], ``name`` [20] (index into ``ROOM_NAMES``),
    ``obj`` [20] (index into ``OBJECTS``, -1 none; the treasure is not in it), ``goal``,
    ``dist`` [20] (doors to the goal; large for absent rooms), ``gold`` [20] (action direction
    toward the goal, -1 at the goal and for absent rooms), ``start``, ``path_dir``/``path_room``
    [19] (the optimal path from the start: move t goes ``path_dir[t]`` into ``path_room[t]``;
    -1 beyond its length), ``path_len`` (= ``dist[start]``), ``partial_u`` float32 (the
    reference's U(0.4, 0.6) draw of the partial instruction)."""

    num_rooms: jax.Array
    parent: jax.Array
    dir: jax.Array
    adj: jax.Array
    door_order: jax.Array
    pos: jax.Array
    room_type: jax.Array
    name: jax.Array
    obj: jax.Array
    goal: jax.Array
    dist: jax.Array
    gold: jax.Array
    start: jax.Array
    path_dir: jax.Array
    path_room: jax.Array
    path_len: jax.Array
    partial_u: jax.Array


@struct.dataclass
class GridworldState(environment.EnvState):
    """``time`` int32 (agent steps; an invalid action does not count unless
    ``count_invalid_steps``), ``room`` int32 (current room, 0..19), ``visited`` bool (the goal
    has been entered: the reference's ``goal_prev_visited``), and the layout: ``num_rooms``
    int32, ``adj`` int32[20, 4], ``door_order`` int32[20, 4], ``name`` int32[20], ``obj``
    int32[20], ``goal`` int32, ``gold`` int32[20], ``start`` int32, ``path_dir`` int32[19],
    ``path_room`` int32[19], ``path_len`` int32, ``path_intro`` int32 and ``path_shown`` int32
    (what the instruction shows, see ``Gridworld``)."""

    room: jax.Array
    visited: jax.Array
    num_rooms: jax.Array
    adj: jax.Array
    door_order: jax.Array
    name: jax.Array
    obj: jax.Array
    goal: jax.Array
    gold: jax.Array
    start: jax.Array
    path_dir: jax.Array
    path_room: jax.Array
    path_len: jax.Array
    path_intro: jax.Array
    path_shown: jax.Array


@struct.dataclass
class GridworldParams(environment.EnvParams):
    """Traced task parameters.

    ``max_steps_in_episode``: the reference's ``horizon`` (20): truncated when ``t >= 20``.
    ``min_goal_dist`` / ``max_goal_dist``: the start is uniform over the rooms at distance
    ``min_goal_dist < d < max_goal_dist`` from the goal (reference: ``4 < d < horizon - 5``),
    else over all non-goal rooms. The reference derives the upper bound from the horizon;
    here it is its own parameter so that a shorter time limit leaves the layouts unchanged.
    """

    max_steps_in_episode: int = 20
    min_goal_dist: int = 4
    max_goal_dist: int = 15


# ---------------------------------------------------------------------------- generation


_DRAW_SIZES = {"u_k": (NUM_POPS,), "u_rank": (NUM_POPS, NUM_DIRS), "u_type": (NUM_ROOMS,), "u_visit": (NUM_ROOMS,),
               "u_take": (NUM_ROOMS,), "u_obj": (len(OBJECTS),), "u_goal": (), "u_start": (NUM_ROOMS,),
               "u_partial": ()}
_NUM_DRAWS = sum(int(np.prod(v)) for v in _DRAW_SIZES.values())


def uniform_from_bits(bits: jax.Array) -> jax.Array:
    """float32 in [0, 1) from uint32 bits (24 random bits, exact in float32)."""
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)


def _random_words(key: jax.Array, n: int) -> jax.Array:
    """uint32[n] random words, from ONE ``random.split`` call: each threefry hash of a split
    gives two words (a key), where ``random.bits`` XORs them into one. A layout takes
    ~180 words, so this halves the hashes of a reset (which took ~28 % of the layout
    generator's time; 16,384 layouts ~11 % faster). Other key kinds (``rbg``) give their
    own key words."""
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    per_key = int(np.prod((jax.random.key_data(key) if typed else key).shape))  # 2 for threefry
    keys = jax.random.split(key, -(-n // per_key))
    return (jax.random.key_data(keys) if typed else keys).reshape(-1)[:n].astype(jnp.uint32)


def _draws(key: jax.Array) -> dict:
    """Every random draw of one layout, as uniforms in [0, 1) from one ``random.split``
    call (``_random_words``; each separate ``jax.random`` call adds a threefry kernel and
    seconds of compile time). Integers are ``floor(u * n)``, uniform up to 2^-24 relative
    error for n <= 20."""
    u = uniform_from_bits(_random_words(key, _NUM_DRAWS))
    out, at = {}, 0
    for name, shape in _DRAW_SIZES.items():
        n = int(np.prod(shape))
        out[name] = u[at:at + n].reshape(shape)
        at += n
    return {
        "u_k": out["u_k"],  # k of each pop
        "u_rank": out["u_rank"],  # random.sample order
        "room_type": jnp.floor(out["u_type"] * len(ROOM_TYPES)).astype(jnp.int32),
        "u_visit": out["u_visit"],  # random.shuffle of the rooms
        "u_take": out["u_take"],  # random.random() < 0.25
        "u_obj": out["u_obj"],  # random.choice order of the objects
        "u_goal": out["u_goal"],
        "u_start": out["u_start"],
        "partial_u": 0.4 + 0.2 * out["u_partial"],  # the reference's 0.4 + random() * 0.2
    }


def _num_children(u, n_free):
    """The reference's ``randint(1, n_free - 1)`` from a uniform ``u`` (at least 1)."""
    m = jnp.maximum(n_free - 1, 1)
    return jnp.minimum(1 + jnp.floor(u * m).astype(jnp.int32), m)


def _grow_vectorised(u_k, u_rank):
    """The reference's growth without occupancy check, with no loop: returns ``parent``
    [20], ``inc`` [20] (compass angle relative to the parent's), ``num_rooms``."""
    p = jnp.arange(NUM_POPS)
    first_free = jnp.where(p == 0, 0, 1)  # offset 0 of a non-root room is the door back
    k = _num_children(u_k, NUM_DIRS - first_free)
    c = 1 + jnp.cumsum(k)  # rooms after pop p if nothing stopped it
    i = jnp.arange(NUM_ROOMS)
    pop = jnp.sum(c[None, :] <= i[:, None], axis=1)  # the pop that creates room i (i >= 1)
    pop = jnp.minimum(pop, NUM_POPS - 1)
    c_prev = jnp.where(pop == 0, 1, c[jnp.maximum(pop - 1, 0)])
    slot = i - c_prev
    valid = jnp.arange(NUM_DIRS)[None, :] >= first_free[:, None]
    rank = _rank(jnp.where(valid, u_rank, 2.0))  # [19, 4]: place of each offset in the sample
    off = _pick_where(rank[pop] == slot[:, None], jnp.arange(NUM_DIRS)[None, :], 0)
    inc = jnp.where(pop == 0, off, (off + 2) % 4)
    root = i == 0
    return jnp.where(root, -1, pop).astype(jnp.int32), jnp.where(root, 0, inc).astype(jnp.int32), jnp.int32(NUM_ROOMS)


def _grow_sequential(u_k, u_rank, check_occupancy: bool):
    """The growth as the reference's queue loop (``lax.fori_loop`` over the pops).

    With ``check_occupancy`` a popped room's candidate directions are its door-less
    directions whose adjacent cell holds no room yet; it draws ``k = randint(1, max(n - 1,
    1))`` of its ``n`` candidates (as the reference when nothing is occupied: n = 4 for the
    root, 3 otherwise; 1 when a single candidate is left) and a room with no candidate gets
    no child (the reference's ``continue``). If every queued room runs out of candidates the
    house stays smaller than 20 rooms (``num_rooms``)."""
    ang_delta = jnp.asarray(DIR_DELTA[ANGLE_TO_DIR])
    i = jnp.arange(NUM_ROOMS)

    def body(p, carry):
        count, parent, angle, pos = carry
        active = (p < count) & (count < NUM_ROOMS)
        offs = jnp.arange(NUM_DIRS)
        valid = offs >= jnp.where(p == 0, 0, 1)
        absolute = jnp.where(p == 0, offs, (angle[p] + 2 + offs) % 4)
        if check_occupancy:
            target = pos[p][None, :] + ang_delta[absolute]  # [4, 2]
            same = jnp.all(pos[None, :, :] == target[:, None, :], axis=-1) & (i < count)[None, :]
            valid = valid & ~jnp.any(same, axis=1)
        n = jnp.sum(valid)
        k = _num_children(u_k[p], n)
        order = jnp.argsort(jnp.where(valid, u_rank[p], 2.0))
        for j in range(NUM_DIRS - 1):  # at most 3 children (the root)
            make = active & (j < k) & (j < n) & (count < NUM_ROOMS)
            idx = jnp.minimum(count, NUM_ROOMS - 1)
            a = absolute[order[j]]
            parent = parent.at[idx].set(jnp.where(make, p, parent[idx]))
            angle = angle.at[idx].set(jnp.where(make, a, angle[idx]))
            pos = pos.at[idx].set(jnp.where(make, pos[p] + ang_delta[a], pos[idx]))
            count = count + make.astype(jnp.int32)
        return count, parent, angle, pos

    init = (jnp.int32(1), jnp.full((NUM_ROOMS,), -1, jnp.int32), jnp.zeros((NUM_ROOMS,), jnp.int32),
            jnp.zeros((NUM_ROOMS, 2), jnp.int32))
    count, parent, angle, _ = jax.lax.fori_loop(0, NUM_POPS, body, init)
    inc = jnp.where(parent >= 0, (angle - angle[jnp.maximum(parent, 0)]) % 4, 0)
    return parent, inc.astype(jnp.int32), count


def _less(u, a: int, b: int):
    """bool: entry ``b`` comes before entry ``a`` in ascending order (ties by index)."""
    return (u[..., b] < u[..., a]) | ((u[..., b] == u[..., a]) & (b < a))


def _rank(u):
    """int32: place of each entry in ascending order along the last axis (ties by index);
    a sort without a sort kernel (cheaper to compile for these tiny sizes). Short axes are
    unrolled: a reduction over a minor axis of 4 ran ~10x slower on XLA:CPU than the
    elementwise ops it becomes."""
    n = u.shape[-1]
    if n <= 8:
        return jnp.stack([sum(_less(u, a, b).astype(jnp.int32) for b in range(n) if b != a)
                          if n > 1 else jnp.zeros(u.shape[:-1], jnp.int32) for a in range(n)], -1)
    return jnp.sum(_before(u), axis=-1).astype(jnp.int32)


def _before(u):
    """bool[..., n, n]: ``[a, b]`` entry b comes before entry a in ascending order along
    the last axis of ``u`` (ties by index)."""
    j = jnp.arange(u.shape[-1])
    return (u[..., None, :] < u[..., :, None]) | ((u[..., None, :] == u[..., :, None]) & (j[None, :] < j[:, None]))


def _pick_where(mask, values, default):
    """The value where ``mask`` holds along the last axis (at most one place), else default."""
    mask, values = jnp.broadcast_arrays(mask, values)
    if mask.shape[-1] <= 8:  # unrolled, as in ``_rank``
        out = jnp.full(mask.shape[:-1], default, jnp.int32)
        for j in range(mask.shape[-1]):
            out = jnp.where(mask[..., j], values[..., j], out)
        return out.astype(jnp.int32)
    return jnp.where(jnp.any(mask, -1), jnp.sum(jnp.where(mask, values, 0), -1), default).astype(jnp.int32)


def _bit(mask, i):
    """bool: bit ``i`` of the int32 ``mask``."""
    return ((mask >> i) & 1) == 1


def _chain_sums(jumps, vals):
    """int32[20, K]: the sums of ``vals`` (int32[20, K]) over each room and all its
    ancestors, by pointer jumping along ``jumps`` (the 1st, 2nd, 4th, 8th and 16th
    ancestor of every room, -1 none; see ``_jumps``): after round r a room's sum covers
    itself and its 2^(r+1) - 1 nearest ancestors. Five gathers of 20 rows, where the
    ancestor matrix it replaces took five 20x20 matrix products (a third of a reset)."""
    acc = vals
    for p in jumps:
        acc = acc + jnp.where((p >= 0)[:, None], acc[jnp.maximum(p, 0)], 0)
    return acc


def _jumps(parent):
    """The 2^r-th ancestor of every room (-1 none) for r = 0..4 (19 edges at most)."""
    out = [parent]
    for _ in range(4):
        p = out[-1]
        out.append(jnp.where(p >= 0, p[jnp.maximum(p, 0)], -1))
    return out


def generate_layout(key: jax.Array, params: GridworldParams, check_occupancy: bool = False,
                    sequential: bool = False) -> Layout:
    """One house, goal and start (in-graph; vmap it for many). ``sequential`` runs the loop
    growth even without ``check_occupancy`` (a test oracle: same layout as the default)."""
    d = _draws(key)
    if check_occupancy or sequential:
        parent, inc, count = _grow_sequential(d["u_k"], d["u_rank"], check_occupancy)
    else:
        parent, inc, count = _grow_vectorised(d["u_k"], d["u_rank"])
    i = jnp.arange(NUM_ROOMS)
    exists = i < count
    has_parent = parent >= 0
    # Sums over each room and its ancestors: ``anc`` (bit j: room j is the room or one of
    # its ancestors; the chain's bits are distinct, so their sum is their union), the depth
    # and the compass angle; then the coordinates from each room's step.
    jumps = _jumps(parent)
    sums = _chain_sums(jumps, jnp.stack([jnp.left_shift(1, i), jnp.ones_like(i), inc], 1).astype(jnp.int32))
    anc, depth, angle = sums[:, 0], sums[:, 1] - 1, sums[:, 2] % 4
    dirs = jnp.where(has_parent, jnp.asarray(ANGLE_TO_DIR)[angle], -1)
    dsafe = jnp.maximum(dirs, 0)
    opp = jnp.asarray(OPPOSITE)[dsafe]
    delta = jnp.where(has_parent[:, None], jnp.asarray(DIR_DELTA)[dsafe], 0).astype(jnp.int32)
    pos = _chain_sums(jumps, delta)

    # Doors: two-way. Rooms are popped in creation order and a pop's children are created
    # one after another, so room r's children are rooms ``first[r] + s`` for slots
    # s < ``nkids[r]`` (at most 3: the root's); each door is then a select over 3 slots
    # rather than over all 20 rooms.
    nkids = jnp.sum(parent[None, :] == i[:, None], axis=1)
    first = 1 + jnp.sum((parent[None, :] >= 0) & (parent[None, :] < i[:, None]), axis=1)
    kids = jnp.minimum(first[:, None] + jnp.arange(MAX_KIDS)[None, :], NUM_ROOMS - 1)  # [r, s]
    kid_on = jnp.arange(MAX_KIDS)[None, :] < nkids[:, None]
    kid_dir = jnp.where(kid_on, dsafe[kids], -1)
    back = has_parent[:, None] & (opp[:, None] == jnp.arange(NUM_DIRS)[None, :])  # [r, d]: door to the parent
    d4 = jnp.arange(NUM_DIRS)[None, :, None]
    adj = jnp.where(back, parent[:, None], _pick_where(kid_dir[:, None, :] == d4, kids[:, None, :], -1))
    # Door order: the door back to the parent first, then the children by creation (= slot).
    col = jnp.arange(MAX_KIDS)[None, :] + (i[:, None] > 0)  # [r, s]: the child's place in the list
    door_order = _pick_where(kid_on[:, None, :] & (col[:, None, :] == d4), kid_dir[:, None, :], -1)
    door_order = jnp.where((jnp.arange(NUM_DIRS)[None, :] == 0) & has_parent[:, None], opp[:, None], door_order)

    # Names: per-type counter in creation order.
    rtype = d["room_type"]
    # (rooms j <= i of i's type: a compare-sum; a cumsum over [20, 7] and a gather cost ~10x)
    k = jnp.sum((rtype[None, :] == rtype[:, None]) & (i[None, :] <= i[:, None]), axis=1)
    name = (rtype * NUM_ROOMS + k - 1).astype(jnp.int32)

    # Objects: rooms visited in a uniform order; each takes the next object of a uniform order
    # of the 5 objects with probability 1/4 while objects remain (the take draws are i.i.d., so
    # drawing them per room instead of per visit slot is the same distribution).
    # Room j is visited before room i when its visiting draw is smaller (ties by index).
    take = (d["u_take"] < 0.25) & exists
    before = jnp.sum(take[None, :] & _before(d["u_visit"]), axis=1)  # earlier takers
    obj_rank = _rank(d["u_obj"])
    obj = _pick_where(obj_rank[None, :] == before[:, None], jnp.arange(len(OBJECTS))[None, :], -1)
    obj = jnp.where(take & (before < len(OBJECTS)), obj, -1)

    # Goal, tree distances and gold directions.
    goal = jnp.minimum(jnp.floor(d["u_goal"] * count).astype(jnp.int32), count - 1)
    common = jax.lax.population_count(anc & anc[goal])  # common ancestors (with self) of i and goal
    dist = jnp.where(exists, depth + depth[goal] - 2 * (common - 1), _BIG)
    above_goal = _bit(anc[goal], i)  # i is the goal or one of its ancestors
    down = _pick_where(kid_on & above_goal[kids], kid_dir, -1)  # to the child toward the goal
    gold = jnp.where(above_goal, down, jnp.where(has_parent, opp, -1))
    gold = jnp.where((i == goal) | ~exists, -1, gold).astype(jnp.int32)

    # Start: uniform over 4 < d < 15, else over every non-goal room.
    cand = exists & (dist > params.min_goal_dist) & (dist < params.max_goal_dist) & (i != goal)
    mask = jnp.where(jnp.any(cand), cand, exists & (i != goal))
    start = jnp.argmax(jnp.where(mask, d["u_start"], -1.0)).astype(jnp.int32)

    # Optimal path: up from the start to the common ancestor, then down to the goal.
    on_s, on_g = _bit(anc[start], i), above_goal
    lca_depth = common[start] - 1
    up_len = depth[start] - lca_depth
    place = jnp.where(on_s & ~on_g, depth[start] - depth,
                      jnp.where(on_s & on_g & (depth == lca_depth), up_len,
                                jnp.where(on_g & ~on_s, up_len + depth - lca_depth, -1)))
    path_len = dist[start]
    t = jnp.arange(MAX_PATH)
    on_path = t < path_len
    at = place[None, :] == t[:, None]  # [t, room]: room reached after t moves
    path_room = jnp.where(on_path, _pick_where(place[None, :] == t[:, None] + 1, i[None, :], -1), -1)
    path_dir = jnp.where(on_path, _pick_where(at, gold[None, :], -1), -1)
    return Layout(num_rooms=count, parent=parent, dir=dirs.astype(jnp.int32), adj=adj, door_order=door_order,
                  pos=pos, room_type=rtype.astype(jnp.int32), name=name, obj=obj, goal=goal,
                  dist=dist.astype(jnp.int32), gold=gold, start=start, path_dir=path_dir.astype(jnp.int32),
                  path_room=path_room.astype(jnp.int32), path_len=path_len.astype(jnp.int32),
                  partial_u=d["partial_u"])


def path_ordinals(path_len, fix_path_ordinals: bool = False):
    """int32[19]: ordinal label of each move sentence of the path description.

    Reference (F10): move 0 gets the opening ordinal, the last move (if not move 0) the
    continuation ordinal, every move in between the closing ordinal together with a mention
    of the treasure. Fixed: the last move gets the closing ordinal with the treasure (also
    when it is the only move), move 0 of a longer path the opening one, the others the
    continuation ordinal."""
    t = jnp.arange(MAX_PATH)
    last = t == path_len - 1
    if fix_path_ordinals:
        lab = jnp.where(last, ORD_FINAL, jnp.where(t == 0, ORD_FIRST, ORD_NEXT))
    else:
        lab = jnp.where(t == 0, ORD_FIRST, jnp.where(last, ORD_NEXT, ORD_FINAL))
    return jnp.where(t < path_len, lab, -1).astype(jnp.int32)


def instruction_path_counts(instruction_type: str, path_len, partial_u):
    """(intro shown 0/1, move sentences shown) of the instruction. The reference's path
    description is a list [announcement, move 1, ..., move L]; "c" shows all of it, "p" its
    first ``floor((L + 1) * u)`` entries (u ~ U(0.4, 0.6)), "b" none."""
    if instruction_type == "b":
        return jnp.int32(0), jnp.int32(0)
    if instruction_type == "c":
        return jnp.int32(1), jnp.asarray(path_len, jnp.int32)
    n_sent = jnp.floor((path_len + 1).astype(jnp.float32) * partial_u).astype(jnp.int32)
    return (n_sent >= 1).astype(jnp.int32), jnp.maximum(n_sent - 1, 0).astype(jnp.int32)


# ---------------------------------------------------------------------------- env

#: (low, high, shape) of every fact (all int32 except ``reward``, float32). Door and path
#: facts are small arrays (one row per door / per move): one leaf each rather than 65 scalar
#: leaves, which halves the step's compile time.
FACTS = {
    "at_reset": (0, 1, ()), "invalid": (0, 1, ()), "obs_kind": (0, 2, ()), "room_name": (0, NUM_NAMES - 1, ()),
    "room_object": (-1, len(OBJECTS) - 1, ()), "room_treasure": (0, 1, ()), "num_doors": (0, NUM_DIRS, ()),
    "action": (-1, NUM_DIRS - 1, ()),
    "door_dir": (-1, NUM_DIRS - 1, (NUM_DIRS,)), "door_name": (-1, NUM_NAMES - 1, (NUM_DIRS,)),
    "fb_r": (0, 1, ()), "fb_hp": (0, 3, ()), "fb_hn": (0, 3, ()), "fb_fp": (0, 2, ()), "fb_fn": (0, 2, ()),
    "reward": (0.0, 1.0, ()),
    "old_room_name": (-1, NUM_NAMES - 1, ()), "old_gold": (-1, 3, ()), "hn_avoid": (-1, 3, ()),
    "new_room_name": (-1, NUM_NAMES - 1, ()), "new_gold": (-1, 3, ()), "fn_avoid": (-1, 3, ()),
    "path_len": (0, MAX_PATH, ()), "path_intro": (0, 1, ()), "path_shown": (0, MAX_PATH, ()),
    "path_dir": (-1, 3, (MAX_PATH,)), "path_name": (-1, NUM_NAMES - 1, (MAX_PATH,)), "path_ord": (-1, 2, (MAX_PATH,)),
}


class Gridworld(LLFEnv):
    """LLF-Bench gridworld: walk through a random house of 20 rooms to the treasure.

    Static config: ``instruction_type`` ("b", "p", "c"), ``feedback_type`` (see
    ``pure_envs.llf``), and the defect flags:

    * ``check_occupancy`` (False = F11 reproduced): when True, no room is placed on a
      coordinate that already holds one (see ``_grow_sequential``: occupied directions are
      no candidates; a house whose growth stalls keeps fewer than 20 rooms, ``num_rooms``).
    * ``fix_feedback_fields`` (False = F9 reproduced): once the goal has been visited, the
      reference writes hn's no-op message into the *hp* field. When hp is also shown (a
      fixed set of kinds containing both, e.g. ``'a'``), hp's own no-op overwrites it, so
      hn says nothing: ``fb_hn = 0``. When hp is not shown (or under ``'m'``, one kind per
      step), the text is the same as hn's no-op in hn's place (hp and hn are adjacent in the
      join order r, hp, hn, fp, fn): ``fb_hn = 1``. True: ``fb_hn = 1`` always.
    * ``fix_path_ordinals`` (False = F10 reproduced): ordinal labels of the path sentences
      (``path_ordinals``).
    * ``count_invalid_steps`` (False = reference): text that is no action takes the
      reference ``TextWrapper``'s error path, where the env is not stepped and its step
      counter does not advance (so such turns never truncate an episode). True: an invalid
      turn counts toward ``max_steps_in_episode``.

    Observation (dict):
      symbolic: ``adjacency`` int32[20, 4] (room behind the door in each direction 0 north,
        1 east, 2 west, 3 south; -1 no door; the whole map), ``room`` int32 (current room),
        ``goal_visited`` int32 (0/1), ``objects`` int32[20] (each room's object, index into
        ``OBJECTS``, -1 none; the treasure is not listed), ``treasure_here`` int32 (0/1: the
        current room is the goal room), ``num_rooms`` int32, ``time`` int32. Neither the goal
        room nor any gold direction is given (the expert action is in ``info``).
      facts (int32 scalars unless said; "name" facts index ``ROOM_NAMES``; directions are
        action indices; -1 = not applicable):
        - ``at_reset`` 1 on the reset observation; ``invalid`` 1 after text that is no
          action (reference: observation None, feedback = an error message, reward 0).
        - observation: ``obs_kind`` (0 room description: at reset and after a move;
          1 blocked: "stayed in <room_name>, no door to the <action>"; 2 none: invalid turn),
          ``room_name``, ``room_object`` (-1 none), ``room_treasure`` (0/1; the reference lists
          it after the object: "<object>,treasure"), ``num_doors``, ``door_dir`` /
          ``door_name`` int32[4] (the doors in the reference's order, -1 beyond
          ``num_doors``), ``action`` (direction taken, -1 at reset / invalid).
        - feedback cases: ``fb_r`` (1 every valid step; ``reward`` float32 0.0/1.0);
          ``fb_hp`` (1 goal already visited: no-op; 2 the action was the old room's gold
          direction; 3 it was not: "from <old_room_name> you should have gone <old_gold>");
          ``fb_hn`` (1 goal already visited: no-op, see ``fix_feedback_fields``; 2 the action
          was not ``hn_avoid``: praise for not going <hn_avoid>; 3 it was: "you should not
          have gone <hn_avoid>"); ``fb_fp`` (1 reward 1 or goal visited: no-op; 2 "from
          <new_room_name> go <new_gold>"); ``fb_fn`` (1 no-op; 2 "in <new_room_name> do not
          go <fn_avoid>"). All 0 at reset and on an invalid turn. Slots: ``old_room_name``,
          ``old_gold``, ``hn_avoid`` (uniform over the old room's 3 non-gold directions),
          ``new_room_name``, ``new_gold``, ``fn_avoid`` (uniform over the new room's 3
          non-gold directions); each -1 where its message is not said.
        - instruction (constant over an episode): ``path_len`` (moves of the optimal path
          from the start), ``path_intro`` (1: the sentence announcing the path is shown),
          ``path_shown`` (move sentences shown: 0 for "b", ``path_len`` for "c", for "p"
          ``max(floor((path_len + 1) * U(0.4, 0.6)) - 1, 0)``, since the reference cuts a list
          that starts with the announcing sentence; with 0 sentences the announcement is also
          dropped), ``path_dir`` / ``path_name`` int32[19] (move t: direction, room
          reached; -1 beyond ``path_len``), ``path_ord`` int32[19] (ordinal of sentence t: 0 opening,
          1 continuation, 2 closing + "which has the treasure"; -1 not shown).
    Action: int32 scalar, 0 north, 1 east, 2 west, 3 south; 4 (or any other value) is text
      that is no action.
    Reward: float32; 1.0 on the first entry into the goal room, else 0.
    Termination: never terminated; truncated when ``time >= max_steps_in_episode`` (20).
    Info: ``success`` bool (goal visited, sticky; False on an invalid turn, as the
      reference's ``TextWrapper``), ``expert_action`` int32 (gold direction of the current
      room; -1 once the goal has been visited, the reference's None; on an invalid turn, where
      the reference's info has no expert action, that of the unchanged room). At reset use
      ``expert_action(state)``.
    State: ``GridworldState``.
    """

    INSTRUCTION_TYPES = ("b", "p", "c")
    FEEDBACK_TYPES = ("r", "hp", "hn", "fp", "fn")

    def __init__(self, instruction_type: str = "b", feedback_type="a", check_occupancy: bool = False,
                 fix_feedback_fields: bool = False, fix_path_ordinals: bool = False,
                 count_invalid_steps: bool = False):
        super().__init__(instruction_type, feedback_type)
        self.check_occupancy = bool(check_occupancy)
        self.fix_feedback_fields = bool(fix_feedback_fields)
        self.fix_path_ordinals = bool(fix_path_ordinals)
        self.count_invalid_steps = bool(count_invalid_steps)
        # F9: hp's own no-op overwrites hn's in the hp field when both are shown together.
        self._hn_noop_lost = (not self.fix_feedback_fields and not self.feedback_mixture
                              and "hp" in self.feedback_kinds)
        self.fact_shapes = {k: shape for k, (_, _, shape) in FACTS.items()}

    # ------------------------------------------------------------------ gymnax API
    @property
    def default_params(self) -> GridworldParams:
        return GridworldParams()

    @property
    def name(self) -> str:
        return "llf-gridworld"

    @property
    def num_actions(self) -> int:
        return NUM_DIRS

    def action_space(self, params=None):
        return spaces.Discrete(NUM_DIRS)

    def observation_space(self, params=None):
        params = self.default_params if params is None else params
        sym = {
            "adjacency": spaces.Box(-1, NUM_ROOMS - 1, (NUM_ROOMS, NUM_DIRS), jnp.int32),
            "room": spaces.Discrete(NUM_ROOMS),
            "goal_visited": spaces.Box(0, 1, (), jnp.int32),
            "objects": spaces.Box(-1, len(OBJECTS) - 1, (NUM_ROOMS,), jnp.int32),
            "treasure_here": spaces.Box(0, 1, (), jnp.int32),
            "num_rooms": spaces.Box(2, NUM_ROOMS, (), jnp.int32),
            "time": spaces.Box(0, params.max_steps_in_episode, (), jnp.int32),
        }
        facts = {k: spaces.Box(lo, hi, shape, jnp.float32 if k == "reward" else jnp.int32)
                 for k, (lo, hi, shape) in FACTS.items()}
        return spaces.Dict({"symbolic": spaces.Dict(sym), "facts": spaces.Dict(facts)})

    def check_params(self, params: GridworldParams) -> None:
        lo, hi = int(np.asarray(params.min_goal_dist)), int(np.asarray(params.max_goal_dist))
        if lo < 0 or hi <= lo:
            raise ValueError(f"need 0 <= min_goal_dist < max_goal_dist, got {lo} and {hi}")
        if int(np.asarray(params.max_steps_in_episode)) < 1:
            raise ValueError(f"max_steps_in_episode must be >= 1, got {params.max_steps_in_episode}")

    def is_truncated(self, state: GridworldState, params: GridworldParams) -> jax.Array:
        return state.time >= params.max_steps_in_episode

    # ------------------------------------------------------------------ dynamics
    def reset_env(self, key: jax.Array, params: GridworldParams):
        lay = generate_layout(key, params, self.check_occupancy)
        intro, shown = instruction_path_counts(self.instruction_type, lay.path_len, lay.partial_u)
        state = GridworldState(time=jnp.int32(0), room=lay.start, visited=jnp.bool_(False),
                               num_rooms=lay.num_rooms, adj=lay.adj, door_order=lay.door_order, name=lay.name,
                               obj=lay.obj, goal=lay.goal, gold=lay.gold, start=lay.start, path_dir=lay.path_dir,
                               path_room=lay.path_room, path_len=lay.path_len, path_intro=intro,
                               path_shown=shown)
        return self._observe(state, self._reset_step_facts(state), OBS_ROOM, jnp.int32(-1), reset=True), state

    def step_env(self, key: jax.Array, state: GridworldState, action, params: GridworldParams):
        a = jnp.asarray(action, jnp.int32)
        valid = (a >= 0) & (a < NUM_DIRS)
        ac = jnp.clip(a, 0, NUM_DIRS - 1)
        old = state.room
        nxt = state.adj[old, ac]
        moved = valid & (nxt >= 0)
        room = jnp.where(moved, nxt, old)
        at_goal = valid & (room == state.goal)
        prev = state.visited
        reward = jnp.where(at_goal & ~prev, 1.0, 0.0).astype(jnp.float32)
        visited = prev | at_goal
        tick = jnp.int32(1) if self.count_invalid_steps else valid.astype(jnp.int32)
        new = state.replace(time=state.time + tick, room=room, visited=visited)

        # Feedback (the reference computes it before updating goal_prev_visited).
        old_gold, new_gold = state.gold[old], state.gold[room]
        # One of the 3 non-gold directions each (one bits call; bias of % 3 is 2^-32).
        pick = (jax.random.bits(key, (2,), jnp.uint32) % 3).astype(jnp.int32)
        hn_avoid = (old_gold + 1 + pick[0]) % 4
        fn_avoid = (new_gold + 1 + pick[1]) % 4
        hn_noop = 0 if self._hn_noop_lost else HN_NOOP
        fb_hp = jnp.where(prev, HP_NOOP, jnp.where(a == old_gold, HP_FOLLOWED, HP_SHOULD))
        fb_hn = jnp.where(prev, hn_noop, jnp.where(a == hn_avoid, HN_TOOK, HN_AVOIDED))
        fb_f = jnp.where(visited, F_NOOP, F_ADVICE)  # reward 1 or goal visited before: no-op
        v = valid.astype(jnp.int32)
        step = {
            "fb_r": v, "fb_hp": v * fb_hp, "fb_hn": v * fb_hn, "fb_fp": v * fb_f, "fb_fn": v * fb_f,
            "reward": jnp.where(valid, reward, 0.0),
            "old_room_name": jnp.where(valid, state.name[old], -1),
            "old_gold": jnp.where(valid & (fb_hp > HP_NOOP), old_gold, -1),
            "hn_avoid": jnp.where(valid & (fb_hn > HN_NOOP), hn_avoid, -1),
            "new_room_name": jnp.where(valid, state.name[room], -1),
            "new_gold": jnp.where(valid & (fb_f == F_ADVICE), new_gold, -1),
            "fn_avoid": jnp.where(valid & (fb_f == F_ADVICE), fn_avoid, -1),
        }
        kind = jnp.where(~valid, OBS_NONE, jnp.where(moved, OBS_ROOM, OBS_BLOCKED))
        obs = self._observe(new, step, kind, jnp.where(valid, a, -1), reset=False)
        info = {"success": valid & visited,
                "expert_action": jnp.where(visited, -1, new_gold).astype(jnp.int32)}
        return obs, new, jnp.where(valid, reward, 0.0), jnp.bool_(False), info

    def expert_action(self, state: GridworldState) -> jax.Array:
        """int32: the reference's ``info["expert_action"]`` for ``state`` (e.g. right after
        reset): the current room's gold direction, -1 once the goal has been visited."""
        return jnp.where(state.visited, -1, state.gold[state.room]).astype(jnp.int32)

    # ------------------------------------------------------------------ observation
    @staticmethod
    def _reset_step_facts(state) -> dict:
        zero, none = jnp.int32(0), jnp.int32(-1)
        return {"fb_r": zero, "fb_hp": zero, "fb_hn": zero, "fb_fp": zero, "fb_fn": zero,
                "reward": jnp.float32(0.0), "old_room_name": none, "old_gold": none, "hn_avoid": none,
                "new_room_name": none, "new_gold": none, "fn_avoid": none}

    def _observe(self, state: GridworldState, step: dict, kind, action, reset: bool) -> dict:
        room, kind = state.room, jnp.asarray(kind, jnp.int32)
        doors = state.door_order[room]
        behind = state.adj[room, jnp.maximum(doors, 0)]
        treasure = (room == state.goal).astype(jnp.int32)
        facts = {
            "at_reset": jnp.int32(1 if reset else 0),
            "invalid": (kind == OBS_NONE).astype(jnp.int32),
            "obs_kind": kind,
            "room_name": state.name[room],
            "room_object": state.obj[room],
            "room_treasure": treasure,
            "num_doors": jnp.sum(doors >= 0),
            "action": action,
        }
        facts["door_dir"] = doors
        facts["door_name"] = jnp.where(doors >= 0, state.name[jnp.maximum(behind, 0)], -1)
        facts.update(step)
        t = jnp.arange(MAX_PATH)
        ords = path_ordinals(state.path_len, self.fix_path_ordinals)
        facts.update({
            "path_len": state.path_len, "path_intro": state.path_intro, "path_shown": state.path_shown,
            "path_dir": state.path_dir,
            "path_name": jnp.where(state.path_room >= 0, state.name[jnp.maximum(state.path_room, 0)], -1),
            "path_ord": jnp.where(t < state.path_shown, ords, -1),
        })
        facts = {k: jnp.asarray(v, jnp.float32 if k == "reward" else jnp.int32) for k, v in facts.items()}
        sym = {"adjacency": state.adj, "room": room, "goal_visited": state.visited.astype(jnp.int32),
               "objects": state.obj, "treasure_here": treasure, "num_rooms": state.num_rooms, "time": state.time}
        return {"symbolic": sym, "facts": facts}

    def observe(self, key, state: GridworldState, action, params) -> dict:
        """The room observation of ``state`` with no feedback (as at reset, ``at_reset=0``)."""
        return self._observe(state, self._reset_step_facts(state), OBS_ROOM, jnp.int32(-1), reset=False)
