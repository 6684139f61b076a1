"""Text-Nav: the reference's house, rules, quest and admissible-commands format, checked
against a plain-Python game written from the spec (lmrl-gym.md section 3)."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from jaxlm_gym.tasks import text_nav as tt
from pure_envs import text_nav as tn

# ---------------------------------------------------------------------------
# A plain-Python Text-Nav written from the spec, to diff against.

EDGES = [("bedroom", "west", "living room"), ("living room", "west", "dining room"), ("dining room", "west", "kitchen"),
         ("kitchen", "west", "backyard"), ("kitchen", "north", "garden"), ("living room", "south", "office"),
         ("office", "east", "bathroom"), ("bedroom", "south", "bathroom")]
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
FURNITURE = {"bedroom": ("bedroom table", "table"), "living room": ("living-room table", "table"),
             "dining room": ("dining table", "table"), "office": ("chest", "chest"), "kitchen": ("fridge", "fridge")}
START = {"bowl": "bedroom table", "stale food": "living-room table", "fresh food": "living-room table",
         "coffee cup": "dining table", "plate": "dining table", "utensils": "chest", "fruit": "fridge"}
FOOD = {"stale food", "fresh food", "fruit"}


def _exits():
    out = {}
    for a, d, b in EDGES:
        out.setdefault(a, {})[d] = b
        out.setdefault(b, {})[OPPOSITE[d]] = a
    return out


EXITS = _exits()


class RefTextNav:
    def __init__(self, room):
        self.room = room
        self.where = dict(START)  # object -> furniture id, "inventory", "<room> floor", "eaten"
        self.open = {"chest": False, "fridge": False}

    def _furniture(self):
        return FURNITURE.get(self.room)

    def commands(self):
        cmds = [f"go {d}" for d in EXITS[self.room]]
        furn = self._furniture()
        reachable = furn is not None and (furn[1] == "table" or self.open[furn[1]])
        if furn and furn[1] != "table":
            cmds.append(("close " if self.open[furn[1]] else "open ") + furn[1])
        for o, w in self.where.items():
            if w == self.room + " floor":
                cmds.append(f"take {o}")
            if furn and w == furn[0] and reachable:
                cmds.append(f"take {o} from {furn[1]}")
            if w == "inventory":
                cmds.append(f"drop {o}")
                if o in FOOD:
                    cmds.append(f"eat {o}")
                if furn and furn[1] == "table":
                    cmds.append(f"put {o} on table")
                if furn and furn[1] != "table" and self.open[furn[1]]:
                    cmds.append(f"insert {o} into {furn[1]}")
        return sorted(cmds)

    def step(self, text):
        """(reward, done); text is what the policy wrote."""
        cmd = text[:-1] if text.endswith("\n") else None  # exact action strings: one trailing newline
        if cmd not in self.commands():
            return 0.0, False
        verb, rest = cmd.split(" ", 1)
        furn = self._furniture()
        if verb == "go":
            self.room = EXITS[self.room][rest]
        elif verb in ("open", "close"):
            self.open[rest] = verb == "open"
        elif verb == "take":
            self.where[rest.split(" from ")[0]] = "inventory"
        elif verb == "drop":
            self.where[rest] = self.room + " floor"
        elif verb == "eat":
            self.where[rest] = "eaten"
        else:  # insert / put
            self.where[rest.split(" into ")[0].split(" on ")[0]] = furn[0]
        if self.where["stale food"] == "eaten":
            return 0.0, True
        if self.where["stale food"] == "fridge" and not self.open["fridge"]:
            return 1.0, True
        return 0.0, False

    def suffix(self):
        return "\n\nAdmissible commands: " + ", ".join(self.commands()) + "\n"


ROOMS = list(tn.ROOMS)


_VECS = {}


def _vec(env_id, **config):
    """One cached 1-env VecEnv per (id, config); the start room is a traced param."""
    key = (env_id, tuple(sorted(config.items())))
    if key not in _VECS:
        vec = jaxlm_gym.make_vec(env_id, 1, obs_mode="both", action_mode="tokens", **config)
        _VECS[key] = (vec, jax.jit(vec.reset), jax.jit(vec.step))
    return _VECS[key]


class Driver:
    """Steps a one-env VecEnv with action texts and returns host text, reward and flags."""

    def __init__(self, env_id, start, **params):
        self.vec, reset, self._step = _vec(env_id)
        self.params = self.vec.params.replace(start=start, **params)
        self.obs, self.state = reset(jax.random.key(0), self.params)
        self.t = 0

    def text(self):
        return self.vec.decode(self.obs)[0]

    def step(self, action_text):
        self.t += 1
        tokens = jnp.asarray(self.vec.encode_actions([action_text], width=12))
        self.obs, self.state, r, te, tr, info = self._step(jax.random.key(self.t), self.state, tokens, self.params)
        self.info = info
        final = self.vec.decode(info["final_observation"])[0]
        return final, float(r[0]), bool(te[0]), bool(tr[0])


# ---------------------------------------------------------------------------


def test_world_matches_the_spec():
    for r, name in enumerate(tn.ROOMS):
        got = {tn.DIRS[d]: tn.ROOMS[tn.EXITS[r, d]] for d in range(4) if tn.EXITS[r, d] >= 0}
        assert got == EXITS[name]
    assert {o: int(tn.START_LOCATIONS[i]) for i, o in enumerate(tn.OBJECTS)} == {
        "bowl": tn.BEDROOM_TABLE, "coffee cup": tn.DINING_TABLE, "fresh food": tn.LIVING_TABLE, "fruit": tn.FRIDGE,
        "plate": tn.DINING_TABLE, "stale food": tn.LIVING_TABLE, "utensils": tn.CHEST}
    assert list(tn.COMMANDS) == sorted(tn.COMMANDS) and len(set(tn.COMMANDS)) == tn.NUM_COMMANDS == 67
    assert tt.ACTIONS == tuple(c + "\n" for c in tn.COMMANDS)
    # Every command any reachable state admits is an action string (random exploration).
    rng = random.Random(1)
    seen = set()
    for _ in range(300):
        ref = RefTextNav(rng.choice(ROOMS))
        for _ in range(30):
            cmds = ref.commands()
            seen.update(cmds)
            if ref.step(rng.choice(cmds) + "\n")[1]:
                break
    assert seen <= set(tn.COMMANDS) and len(seen) > 55


def test_bfs_lengths_equal_walkthrough_lengths():
    lengths = tn.optimal_lengths()
    assert set(lengths) == set(range(8))  # every start room can win
    for r in range(8):
        assert lengths[r] == len(tn.walkthrough(r))
    assert [lengths[r] for r in range(8)] == [7, 6, 7, 8, 9, 9, 7, 8]


@pytest.mark.parametrize("env_id", ["text-nav-fo", "text-nav-po"])
def test_walkthrough_wins_from_every_start(env_id):
    for r in range(8):
        d = Driver(env_id, r)
        steps = tn.walkthrough(r)
        for i, cmd in enumerate(steps):
            final, reward, te, tr = d.step(cmd + "\n")
            last = i == len(steps) - 1
            assert (reward, te, tr) == ((1.0, True, False) if last else (0.0, False, False)), (r, i, cmd)
        assert "*** The End ***" in final
        assert int(d.state.time[0]) == 0  # auto-reset


def test_in_graph_optimal_policy_wins_in_the_fewest_steps():
    env, params = jaxlm_gym.make("text-nav-po")
    lengths = tn.optimal_lengths()

    def episode(start):
        p = params.replace(start=start)
        obs, state = env.reset(jax.random.key(0), p)

        def body(carry, k):
            state, ret, done, n = carry
            a = env.optimal_action(state)
            _, state2, r, te, tr, _ = env.step(k, state, a, p)
            return (state2, ret + jnp.where(done, 0.0, r), done | te | tr, n + (~done)), None

        carry = (state, jnp.float32(0), jnp.bool_(False), jnp.int32(0))
        return jax.lax.scan(body, carry, jax.random.split(jax.random.key(1), 15))[0][1:]

    ret, done, n = jax.jit(jax.vmap(episode))(jnp.arange(8, dtype=jnp.int32))
    assert np.asarray(ret).tolist() == [1.0] * 8 and bool(np.all(done))
    assert np.asarray(n).tolist() == [lengths[r] for r in range(8)]


@pytest.mark.parametrize("env_id,fo", [("text-nav-fo", True), ("text-nav-po", False)])
def test_random_play_matches_the_reference(env_id, fo):
    rng = random.Random(0)
    junk = ["jump\n", "go west", " go west\n", "Go west\n", "open fridge\n", "eat bowl\n", "take stale food\n"]
    for episode in range(8):
        start = rng.randrange(8)
        ref, d = RefTextNav(ROOMS[start]), Driver(env_id, start)
        assert d.text().endswith(ref.suffix())
        assert "You are carrying" not in d.text()  # no inventory line at reset
        for t in range(15):
            cmds = ref.commands()
            action = rng.choice(junk) if rng.random() < 0.2 else rng.choice(cmds) + "\n"
            valid = action[:-1] in cmds and action.endswith("\n")
            r_ref, done_ref = ref.step(action)
            final, r, te, tr = d.step(action)
            assert (r, te) == (r_ref, done_ref), (episode, t, action)
            assert bool(d.info["valid_action"][0]) == valid
            assert final.endswith(ref.suffix()), (episode, t, action, final)
            assert ("You are carrying" in final) == fo
            if not valid:
                assert final.startswith(tt.UNKNOWN)
            assert tr == (t == 14 and not done_ref)  # the 15-step limit
            if done_ref or tr:
                break
            sym = jax.tree.map(lambda x: np.asarray(x[0]), d.obs["symbolic"])
            assert tn.ROOMS[int(sym["room"])] == ref.room
            adm = [tn.COMMANDS[i] for i in np.flatnonzero(sym["admissible"])]
            assert adm == ref.commands()
            assert np.array_equal(np.asarray(d.info["admissible"][0]), sym["admissible"].astype(bool))


def test_exact_renderings_fo_and_po():
    fo, po = Driver("text-nav-fo", 1), Driver("text-nav-po", 1)
    assert fo.text() == (
        tt.OBJECTIVE + "\n\n-= Living Room =-\n" + tt.DECOR["living room"] + " You see a table. On the table you "
        "see a fresh food and a stale food.\n\nThere are exits to the east, south and west.\n\nAdmissible commands: "
        "go east, go south, go west, take fresh food from table, take stale food from table\n")
    assert po.text() == (
        tt.OBJECTIVE + "\n\n-= Living Room =-\nYou see a table. On the table you see a fresh food and a stale "
        "food.\n\nThere are exits to the east, south and west.\n\nAdmissible commands: go east, go south, go west, "
        "take fresh food from table, take stale food from table\n")
    steps = ["take stale food from table\n", "drop stale food\n", "go west\n", "go west\n", "open fridge\n"]
    outs = [(fo.step(a)[0], po.step(a)[0]) for a in steps]
    assert outs[0] == (
        "You take the stale food from the table.\n\nYou are carrying a stale food.\n\nAdmissible commands: drop "
        "stale food, eat stale food, go east, go south, go west, put stale food on table, take fresh food from "
        "table\n",
        "You take the stale food from the table.\n\nAdmissible commands: drop stale food, eat stale food, go east, "
        "go south, go west, put stale food on table, take fresh food from table\n")
    assert outs[1][1] == ("You drop the stale food on the floor.\n\nAdmissible commands: go east, go south, go west, "
                          "take fresh food from table, take stale food\n")
    assert outs[3][0] == (
        "-= Kitchen =-\n" + tt.DECOR["kitchen"] + " You see a closed fridge.\n\nThere are exits to the east, north "
        "and west.\n\nYou are carrying nothing.\n\nAdmissible commands: go east, go north, go west, open fridge\n")
    assert outs[4][1] == ("You open the fridge, revealing a fruit.\n\nAdmissible commands: close fridge, go east, "
                          "go north, go west, take fruit from fridge\n")
    # Back in the living room the dropped food lies on the floor.
    for a in ["go east\n", "go east\n"]:
        final, *_ = po.step(a)
    assert final == ("-= Living Room =-\nYou see a table. On the table you see a fresh food.\n\nThere are exits to "
                     "the east, south and west.\n\nOn the floor you see a stale food.\n\nAdmissible commands: go east, "
                     "go south, go west, take fresh food from table, take stale food\n")
    garden = Driver("text-nav-po", 5)
    assert garden.text() == (tt.OBJECTIVE + "\n\n-= Garden =-\nThere is an exit to the south.\n\n"
                             "Admissible commands: go south\n")


def test_eating_the_stale_food_loses_and_other_food_does_not():
    d = Driver("text-nav-fo", 1)
    assert d.step("take fresh food from table\n")[1:] == (0.0, False, False)
    final, r, te, tr = d.step("eat fresh food\n")
    assert (r, te, tr) == (0.0, False, False) and final.startswith("You eat the fresh food.")
    assert int(d.obs["symbolic"]["location"][0, tn.OBJECTS.index("fresh food")]) == tn.EATEN
    d.step("take stale food from table\n")
    final, r, te, tr = d.step("eat stale food\n")
    assert (r, te, tr) == (0.0, True, False) and "*** You lost! ***" in final


def test_invalid_and_inadmissible_commands_change_nothing():
    d = Driver("text-nav-po", 0)
    before = jax.tree.map(np.asarray, d.obs["symbolic"])
    for text in ["open fridge\n", "jump\n", "go west", "go west\n\n", " go west\n", "take stale food from table\n"]:
        final, r, te, tr = d.step(text)
        assert (r, te, tr) == (0.0, False, False)
        assert final == tt.UNKNOWN + "\n\nAdmissible commands: go south, go west, take bowl from table\n"
        assert not bool(d.info["valid_action"][0])
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, d.obs["symbolic"]), before)
    assert int(d.state.time[0]) == 6  # invalid steps count toward the step limit


def test_step_limit_truncates_and_never_with_termination():
    d = Driver("text-nav-po", 1)
    outs = [d.step("jump\n") for _ in range(15)]
    assert all(not (o[2] or o[3]) for o in outs[:-1]) and outs[-1][3] and not outs[-1][2]
    short = Driver("text-nav-po", 1, max_steps_in_episode=6)
    outs = [short.step(a + "\n") for a in tn.walkthrough(1)]  # wins on step 6 = the limit
    assert outs[-1][1:] == (1.0, True, False)


def test_text_actions_match_exactly():
    vec, _, _ = _vec("text-nav-po")
    tok = vec.tokenizer
    parse = jax.jit(vec.parser.parse_batch)

    def idx(ids, width=16):
        row = np.full((1, width), vec.pad_id, np.int32)
        row[0, : len(ids)] = ids
        return int(parse(jnp.asarray(row))[0])

    for i, s in enumerate(tt.ACTIONS):
        assert idx(tok.encode(s)) == i
    a = tt.ACTIONS.index("insert stale food into fridge\n")
    assert idx(tok.encode("insert st") + tok.encode("ale food into fridge") + tok.encode("\n")) == a
    for bad in ["insert stale food into fridge", "Insert stale food into fridge\n", "examine fridge\n", "look\n",
                "inventory\n", "go  west\n", ""]:
        assert idx(tok.encode(bad)) == tn.NUM_COMMANDS, bad


def test_uniform_start_and_symbolic_view():
    env, params = jaxlm_gym.make("text-nav-po")
    state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(jax.random.split(jax.random.key(0), 4000), params)[1]
    counts = np.bincount(np.asarray(state.room), minlength=8)
    assert ((counts - 500) ** 2 / 500).sum() < 30  # chi-square, 7 dof
    sym = jax.tree.map(lambda x: np.asarray(x[0]).tolist(), Driver("text-nav-fo", 6).obs["symbolic"])
    assert sym["room"] == 6 and sym["opened"] == [0, 0] and sym["inventory"] == [0] * 7 and sym["status"] == 0
    assert sym["location"] == tn.START_LOCATIONS.tolist()
    assert [tn.COMMANDS[i] for i, v in enumerate(sym["admissible"]) if v] == ["go east", "go north", "open chest"]
    with pytest.raises(ValueError, match="start"):
        jaxlm_gym.make("text-nav-fo", start=8)
