"""LLF-Bench gridworld text (``llf-gridworld-v0``): instruction, observation, language
feedback and the action strings.

All sentences are ours (LLF-Bench's wording is not reproduced); what each one conveys and
which values it fills in follow the spec (``llf-bench.md`` §2.2) and the facts of
``pure_envs.gridworld.Gridworld`` (read its docstring for every fact).

* **Instruction** ``b``: the house, what is visible, doors and walls, the goal and the 4
  action codes (one of 5 wordings, a ``Paraphrase``). ``c``: ``b``, a sentence announcing
  the route, then one sentence per move of the optimal path (direction, room reached),
  each with the ordinal the core gives in ``path_ord`` (opening / continuation / closing
  with a mention of the treasure; the core reproduces F10 unless ``fix_path_ordinals``).
  ``p``: the same with only the first ``path_shown`` moves (and the announcement only if
  ``path_intro``). The path sentences are the rows of a ``Block(repeat=19)``; a row writes
  nothing unless ``path_show`` (derived: the row is shown and this is the reset view).
* **Observation** after a move (and at reset), ``obs_kind`` 0: the current room, its object
  and the treasure if there, then one sentence per door (direction, room behind it; the
  rows of a ``Block(repeat=4)``, empty beyond ``num_doors``: derived fact ``door_show``).
  After a move into a wall, ``obs_kind`` 1: the agent stayed in the named room, there is no
  door that way. After text that is no action, ``obs_kind`` 2: nothing (the reference's
  observation is None).
* **Feedback**: r (the reward, written with 1 decimal: ``0.0`` / ``1.0``), hp (1 no-op,
  2 followed the shortest route, 3 "from <old room> you should have gone <dir>"), hn (1
  no-op, 2 praise for not going <dir>, 3 "you should not have gone <dir>"), fp (1 no-op,
  2 "from <new room> go <dir>"), fn (1 no-op, 2 "in <new room> do not go <dir>"); 4
  wordings per case. The wordings of a case put its slots in the same order, so a message
  is one template whose texts around the slots come from one pool ``pp_<kind>`` (shared
  by the kind's cases: a step shows one case of a kind), which keeps the slot tables
  small. Pools: ``pp_instruction`` (5), ``pp_path_intro``, ``pp_path`` (one draw per path
  row), ``pp_r`` .. ``pp_fn``, ``pp_invalid`` (4 each); ``paraphrase=0..3`` pins them all.
* **Invalid text** (``invalid`` = 1): the reference's ``TextWrapper`` reports the ``int()``
  error as the feedback (a traceback), whatever ``feedback_type``; here a short error
  message of our own (``llf_text``'s ``invalid=``) replaces the feedback, the observation
  is empty, the reward 0.

Actions: ``"0"`` north, ``"1"`` east, ``"2"`` west, ``"3"`` south (the reference's
``TextWrapper`` applies ``int()``). Aliases (also exact matches): the texts ``int()``
accepts with a leading space and/or a trailing newline (``" 0"``, ``"0\\n"``,
``" 0\\n"``), and the direction words, lower case or capitalised, with the same
whitespace variants (``"north"``, ``" North"``, ``"north\\n"``, ...). The words are an
extension: the reference rejects them (F12, its README suggests text actions). Anything
else is invalid text.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from pure_envs import gridworld as gw

from ..feedback import MIN_WORDINGS, llf_text
from ..registry import register
from ..text import Block, Lit, Num, Paraphrase, Seq, Slot, Switch
from ..text.template import Node

#: Action strings, in the core's action order (0 north, 1 east, 2 west, 3 south).
ACTIONS = ("0", "1", "2", "3")


def _aliases() -> dict[str, int]:
    out: dict[str, int] = {}
    for i, word in enumerate(gw.DIRECTIONS):
        for base in (str(i), word, word.capitalize()):
            for pre in ("", " "):
                for post in ("", "\n"):
                    text = pre + base + post
                    if text not in ACTIONS:
                        out[text] = i
    return out


ALIASES = _aliases()


# ---------------------------------------------------------------------------- slots

def _dir(key: str) -> Slot:
    """A direction (action index) with its leading space: `` north`` ..."""
    return Slot(key, [" " + d for d in gw.DIRECTIONS])


def _room(key: str) -> Slot:
    """A room name (index into ``ROOM_NAMES``) with its leading space: `` kitchen-3``."""
    return Slot(key, [" " + n for n in gw.ROOM_NAMES])


def _frame(key: str, slots: Sequence[Node], wordings: Sequence[Sequence[str]]) -> Node:
    """Wordings that put the same slots in the same order, as one template: the text
    around the slots is a ``Paraphrase`` pool ``key`` (all pieces read the same draw),
    so each slot is laid out once, not once per wording (smaller tables, faster
    compiles). ``wordings``: per wording, the ``len(slots) + 1`` texts around the slots."""
    parts: list[Node] = []
    for i in range(len(slots) + 1):
        texts = [w[i] for w in wordings]
        parts.append(Lit(texts[0]) if len(set(texts)) == 1 else Paraphrase(key, [Lit(t) for t in texts]))
        if i < len(slots):
            parts.append(slots[i])
    return parts[0] if len(parts) == 1 else Seq(*parts)


def _check_wordings(wordings: Sequence[Sequence[str]], n_slots: int) -> None:
    if len(wordings) < MIN_WORDINGS or any(len(w) != n_slots + 1 for w in wordings):
        raise ValueError(f"need >= {MIN_WORDINGS} wordings of {n_slots + 1} texts each")


# ---------------------------------------------------------------------------- instruction

INSTRUCTION_B = (
    ("You are exploring a house made of many rooms, and you can only see the objects in the room you are in. "
     "A room may have a door to the north, south, east or west; if you move toward a wall, you stay where you are. "
     "Exactly one room holds a treasure: find it. Reply with a single number: 0 to go north, 1 to go east, "
     "2 to go west, 3 to go south."),
    ("This house is a set of connected rooms, and only the contents of your current room are visible to you. "
     "Doors can lead north, south, east or west; walking where there is no door keeps you in the same room. "
     "Your goal is to reach the one room that contains the treasure. Each turn, answer with an action code: "
     "0 (north), 1 (east), 2 (west) or 3 (south)."),
    ("Find the treasure hidden in one of the rooms of this house. You see only the objects of the room you "
     "stand in. Rooms connect through doors on their north, south, east and west sides, and trying to pass "
     "where there is no door leaves you where you were. Actions are numbers: 0 moves north, 1 moves east, "
     "2 moves west and 3 moves south."),
    ("Your task is to walk through a house of rooms until you reach the single room with the treasure. What "
     "lies in a room can be seen only from inside it. Each room has doors on some of its four sides (north, "
     "east, west, south), and a move toward a side without a door does nothing. Respond with 0 for north, 1 "
     "for east, 2 for west or 3 for south."),
    ("There is a treasure in exactly one room of a house, and you must get to it. Objects are visible only in "
     "the room where you are. Doors may connect a room to its neighbours to the north, east, west and south; "
     "a move in a direction with no door leaves you in place. To move, write the code of a direction: 0 is "
     "north, 1 is east, 2 is west and 3 is south."),
)

#: The sentence that announces the route (p/c), shown when ``path_intro``.
PATH_INTRO = (
    " Here is the way to the treasure.",
    " This route leads to it.",
    " Follow these moves to get there.",
    " The path to the treasure goes as follows.",
)

#: Per ``path_ord`` (opening, continuation, closing + treasure): wordings of one move,
#: texts around (direction, room reached).
PATH_MOVE = {
    gw.ORD_FIRST: ((" First, go", " to the", "."),
                   (" Start by going", " into the", "."),
                   (" Begin with a move", ", to the", "."),
                   (" Your first move is", ", which takes you to the", ".")),
    gw.ORD_NEXT: ((" Then go", " to the", "."),
                  (" Next, move", " into the", "."),
                  (" After that, head", " to the", "."),
                  (" Continue", " to reach the", ".")),
    gw.ORD_FINAL: ((" Finally, go", " to the", ", which holds the treasure."),
                   (" Last, move", " into the", ", where the treasure is."),
                   (" Your final move is", ", into the", ": the treasure is there."),
                   (" To finish, head", " to the", ", the room with the treasure.")),
}


def _instruction() -> dict:
    b = Paraphrase("pp_instruction", [Lit(t) for t in INSTRUCTION_B])
    intro = Switch("path_intro", {1: Paraphrase("pp_path_intro", [Lit(t) for t in PATH_INTRO])})

    def around(i):  # the texts before / between / after the slots, per ordinal
        return Switch("path_ord", {o: Paraphrase("pp_path", [Lit(w[i]) for w in ws]) for o, ws in PATH_MOVE.items()})

    # One row per move; every row draws its own wording (pp_path has one draw per row).
    row = Switch("path_show", {1: Seq(around(0), _dir("path_dir"), around(1), _room("path_name"), around(2))})
    path = [Block(b), Block(intro), Block(row, repeat=gw.MAX_PATH)]
    return {"b": b, "p": path, "c": path}


# ---------------------------------------------------------------------------- observation

def _observation() -> list[Block]:
    obj = Switch("room_object", {i: Lit(f" There is a {o} here.") for i, o in enumerate(gw.OBJECTS)})
    treasure = Switch("room_treasure", {1: Lit(" The treasure is in this room!")})
    head = Switch("obs_kind", {
        gw.OBS_ROOM: Seq(Lit("You are in the"), _room("room_name"), Lit("."), obj, treasure),
        gw.OBS_BLOCKED: Seq(Lit("You are still in the"), _room("room_name"), Lit(": there is no door to the"),
                            _dir("action"), Lit(".")),
    })
    door = Switch("door_show", {1: Seq(Lit(" A door to the"), _dir("door_dir"), Lit(" leads to the"),
                                       _room("door_name"), Lit("."))})
    return [Block(head), Block(door, repeat=gw.NUM_DIRS)]


# ---------------------------------------------------------------------------- feedback

#: Per kind and case: the wordings, as the texts around the case's slots (``SLOTS``).
FEEDBACK = {
    "r": {1: (("You received a reward of", "."),
              ("Reward for this move:", "."),
              ("This step earned a reward of", "."),
              ("Your reward is", "."))},
    "hp": {gw.HP_NOOP: (("You have already found the treasure, so this move changes nothing.",),
                        ("The treasure was reached earlier; there is nothing more to judge.",),
                        ("Nothing to add: you found the treasure before this move.",),
                        ("The treasure room has been visited already, so any move is fine now.",)),
           gw.HP_FOLLOWED: (("Good move: that is the shortest way toward the treasure.",),
                            ("Well done, that direction brought you closer to the treasure.",),
                            ("That was the right direction to take.",),
                            ("Nice, you followed the fastest route to the treasure.",)),
           gw.HP_SHOULD: (("In the", ", you should have gone", "."),
                          ("The better move from the", " was to go", "."),
                          ("From the", ", going", " would have brought you closer to the treasure."),
                          ("Leaving the", ", the right way was", "."))},
    "hn": {gw.HN_NOOP: (("The treasure is already found; there is no mistake left to make.",),
                        ("Since you reached the treasure before, no move can be wrong now.",),
                        ("No warning this time: the treasure was already found.",),
                        ("You found the treasure earlier, so there is nothing to avoid.",)),
           gw.HN_AVOIDED: (("Good that you did not go", "."),
                           ("It was wise not to head", "."),
                           ("You were right to avoid going", "."),
                           ("Well done for not moving", ".")),
           gw.HN_TOOK: (("You should not have gone", "."),
                        ("Moving", " was a mistake."),
                        ("Heading", " was the wrong choice."),
                        ("Going", " did not help you."))},
    "fp": {gw.F_NOOP: (("No further moves are needed.",),
                       ("You can stop here: the treasure has been found.",),
                       ("There is no next move to suggest.",),
                       ("Your search is over, nothing more to do.",)),
           gw.F_ADVICE: (("From the", ", go", "."),
                         ("Now, leave the", " by going", "."),
                         ("In the", ", the way to go is", "."),
                         ("Your next move from the", " should be", "."))},
    "fn": {gw.F_NOOP: (("There is nothing left to avoid.",),
                       ("No more warnings: the treasure has been found.",),
                       ("You need not worry about wrong turns any more.",),
                       ("Nothing to steer clear of now.",)),
           gw.F_ADVICE: (("In the", ", do not go", "."),
                         ("From the", ", avoid heading", "."),
                         ("Leaving the", ", going", " is not the way."),
                         ("Out of the", ", do not move", " next."))},
}


def _slots() -> dict:
    """The slots of every (kind, case), in the order they appear in its wordings."""
    return {
        "r": {1: (Num("reward", 1),)},
        "hp": {gw.HP_NOOP: (), gw.HP_FOLLOWED: (), gw.HP_SHOULD: (_room("old_room_name"), _dir("old_gold"))},
        "hn": {gw.HN_NOOP: (), gw.HN_AVOIDED: (_dir("hn_avoid"),), gw.HN_TOOK: (_dir("hn_avoid"),)},
        "fp": {gw.F_NOOP: (), gw.F_ADVICE: (_room("new_room_name"), _dir("new_gold"))},
        "fn": {gw.F_NOOP: (), gw.F_ADVICE: (_room("new_room_name"), _dir("fn_avoid"))},
    }


def _feedback() -> dict:
    """Per kind, ``case -> node``: one paraphrase pool ``pp_<kind>`` per kind (a step
    shows one case of a kind, so its cases can share the draw)."""
    slots = _slots()
    out = {}
    for kind, cases in FEEDBACK.items():
        out[kind] = {}
        for case, wordings in cases.items():
            _check_wordings(wordings, len(slots[kind][case]))
            out[kind][case] = _frame(f"pp_{kind}", slots[kind][case], wordings)
    return out


#: The message for text that is no action (it replaces the feedback on that turn).
INVALID = (
    "That is not a valid action: answer with 0, 1, 2 or 3.",
    "Your reply could not be read as an action; use 0 (north), 1 (east), 2 (west) or 3 (south).",
    "Invalid action. Reply with one of the numbers 0, 1, 2, 3.",
    "The answer is not one of the actions 0, 1, 2 or 3, so nothing happened.",
)


# ---------------------------------------------------------------------------- derived facts

def _prepare(facts):
    """Derived facts: the per-row gates of the repeated blocks (rows read only facts with
    a leading axis of the block's length): ``door_show`` int32[4] (door row shown: a room
    description and the row is one of the room's doors) and ``path_show`` int32[19] (path
    sentence shown: the reset view and the row is among the shown moves)."""
    facts = dict(facts)
    room_view = jnp.asarray(facts["obs_kind"]) == gw.OBS_ROOM
    facts["door_show"] = ((jnp.arange(gw.NUM_DIRS) < facts["num_doors"]) & room_view).astype(jnp.int32)
    facts["path_show"] = ((jnp.asarray(facts["path_ord"]) >= 0) & (jnp.asarray(facts["at_reset"]) == 1)
                          ).astype(jnp.int32)
    return facts


def gridworld_text(env: gw.Gridworld):
    return llf_text(env, instruction=_instruction(), feedback=_feedback(), observation=_observation(),
                    actions=ACTIONS, aliases=ALIASES, prepare=_prepare, invalid=[Lit(t) for t in INVALID],
                    common={"path_show": 0})  # the path rows are empty after reset


register("llf-gridworld-v0", gw.Gridworld, gridworld_text,
         "LLF-Bench gridworld: walk through a house of 20 rooms to the treasure, with language feedback")
