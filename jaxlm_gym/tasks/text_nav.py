"""Text-Nav text: observation tables and the command strings.

The exact part (a data format of the reference) is the admissible-commands suffix
``"\\nAdmissible commands: c1, c2, ...\\n"`` with TextWorld's sorted command strings. The
narrative (room descriptions, replies, inventory) is TextWorld-*style* prose written for
this port from the reference's facts: TextWorld draws its sentences from a random grammar
at game build time, so there is no single exact text to reproduce.

Layout of an observation (``[...]`` = FO only)::

    <narrative>(\\n\\nOn the floor you see <things>.)[\\n\\n<inventory sentence>]\\n\\nAdmissible commands: <c1>, ...\\n

The narrative is the objective and the room at reset, the room after ``go``, and the
reply to the command otherwise; the floor sentence (``(...)``) follows a room with things
on its floor. Every part is one slot over a table of strings that the core indexes (the
lists of things and commands are enumerated here, on the host), so an observation renders
as seven pieces.
"""

from __future__ import annotations

import functools
import itertools

from pure_envs import text_nav as tn

from ..registry import TaskText, register
from ..text import Document, Lit, Seq, Slot, Switch

#: Action strings: every command and the policy's trailing newline (LMRL-Gym policies end
#: their action text with one "\n"; the reference strips it before the parser).
ACTIONS = tuple(c + "\n" for c in tn.COMMANDS)
ARTICLE = {"utensils": "some"}

OBJECTIVE = ("Your task is to find the stale food and put it in the fridge in the kitchen, "
             "then close the fridge.")
UNKNOWN = "That's not a verb I recognise."
HEADER = {r: "-= " + r.title() + " =-" for r in tn.ROOMS}
DECOR = {
    "bedroom": "You find yourself in a bedroom. It smells of fresh linen.",
    "living room": "You are in a living room. A comfy sofa faces a silent television.",
    "dining room": "You step into a dining room, neat and quiet.",
    "kitchen": "You are in a kitchen. Someone has left the light on.",
    "backyard": "You are standing in a backyard. The grass could use a trim.",
    "garden": "You are in a garden full of blooming flowers.",
    "office": "You arrive in an office. Papers are piled on every surface.",
    "bathroom": "You are in a bathroom with white tiles that sparkle.",
}


def a_name(o: int) -> str:
    name = tn.OBJECTS[o]
    return f"{ARTICLE.get(name, 'a')} {name}"


def things(mask: int) -> str:
    """Inform-style list: 'a bowl', 'a bowl and a plate', 'a bowl, a fruit and a plate'."""
    names = [a_name(o) for o in range(tn.NUM_OBJECTS) if mask >> o & 1]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def exits_sentence(room: int) -> str:
    dirs = sorted(tn.DIRS[d] for d in range(4) if tn.EXITS[room, d] >= 0)
    if len(dirs) == 1:
        return f"There is an exit to the {dirs[0]}."
    return "There are exits to the " + ", ".join(dirs[:-1]) + " and " + dirs[-1] + "."


def furniture_sentence(room: int, fstate: int) -> str:
    kind = int(tn.FURNITURE_KIND[room])
    if kind < 0:
        return ""
    if kind == 0:
        s = "You see a table."
        return s + (f" On the table you see {things(fstate)}." if fstate else " The table is empty.")
    c = tn.CONTAINERS[kind - 1]
    if fstate == 0:
        return f"You see a closed {c}."
    mask = fstate - 1
    return f"You see an open {c}." + (f" The {c} contains {things(mask)}." if mask else f" The {c} is empty.")


def room_text(room: int, fstate: int, fo: bool) -> str:
    body = " ".join(p for p in ((DECOR[tn.ROOMS[room]] if fo else ""), furniture_sentence(room, fstate)) if p)
    return HEADER[tn.ROOMS[room]] + "\n" + (body + "\n\n" if body else "") + exits_sentence(room)


def reply(a: int) -> str:
    """The reply to command ``a`` (not used for go and open, whose text depends on the state)."""
    kind, o, arg = int(tn.CMD_KIND[a]), int(tn.CMD_OBJ[a]), int(tn.CMD_ARG[a])
    name = tn.OBJECTS[o]
    if kind == tn.CLOSE:
        return f"You close the {tn.CONTAINERS[arg]}."
    if kind == tn.TAKE:
        return f"You pick up the {name} from the floor."
    if kind == tn.TAKE_FROM:
        return f"You take the {name} from the {tn.FURNITURE_KINDS[arg]}."
    if kind == tn.DROP:
        return f"You drop the {name} on the floor."
    if kind == tn.EAT:
        return f"You eat the {name}. Not bad."
    if kind == tn.INSERT:
        return f"You put the {name} into the {tn.CONTAINERS[arg]}."
    if kind == tn.PUT:
        return f"You put the {name} on the table."
    return ""


@functools.lru_cache(maxsize=None)
def lead_choices() -> tuple[str, ...]:
    out = [""] * tn.NUM_LEADS  # LEAD_NONE and the go / open replies stay unused
    out[tn.LEAD_OBJECTIVE] = OBJECTIVE
    out[tn.LEAD_UNKNOWN] = UNKNOWN
    out[tn.LEAD_WON] = "You close the fridge.\n\n*** The End ***"
    out[tn.LEAD_LOST] = "You eat the stale food. It tastes awful.\n\n*** You lost! ***"
    for a in range(tn.NUM_COMMANDS):
        out[tn.LEAD_RESPONSE + a] = reply(a)
    for ci, c in enumerate(tn.CONTAINERS):
        for mask in range(128):
            out[tn.LEAD_OPEN + ci * 128 + mask] = (f"You open the {c}, revealing {things(mask)}." if mask
                                                   else f"You open the {c}.")
    return tuple(out)


@functools.lru_cache(maxsize=None)
def narrative_choices(fo: bool) -> tuple[str, ...]:
    """Replies (``lead``), then room descriptions, then the objective and the room."""
    descs = [room_text(r, f, fo) for r in range(8) for f in range(int(tn.ROOM_SIZES[r]))]
    return lead_choices() + tuple(descs) + tuple(OBJECTIVE + "\n\n" + d for d in descs)


def floor_choices() -> list[str]:
    return [f" {things(m)}." for m in range(1, 128)]


def inventory_sentence(mask: int) -> str:
    return "You are carrying " + (things(mask) if mask else "nothing") + "."


def _commands_of(room: int, location, opened) -> list[str]:
    return [tn.COMMANDS[a] for a in tn.admissible_py(room, location, opened)]


@functools.lru_cache(maxsize=None)
def adm_a_choices(fo: bool) -> tuple[str, ...]:
    """[FO: with_inventory * 2048 +] room * 256 + open * 128 + inventory mask -> the
    inventory line (FO, after a step) and the commands before 'take', sorted. Each string
    starts with its second leading newline (the first is a fixed piece before it)."""
    out = []
    for room, is_open, mask in itertools.product(range(8), range(2), range(128)):
        loc = [tn.INV if mask >> o & 1 else tn.EATEN for o in range(tn.NUM_OBJECTS)]
        kind = int(tn.FURNITURE_KIND[room])
        opened = [0, 0]
        if kind >= 1:
            opened[kind - 1] = is_open
        cmds = [c for c in _commands_of(room, loc, opened) if not c.startswith("take ")]
        out.append("\nAdmissible commands: " + ", ".join(cmds))
    if fo:
        out += ["\n" + inventory_sentence(i % 128) + "\n" + s for i, s in enumerate(out)]
    return tuple(out)


def take_choices(o: int) -> dict[int, str]:
    """take_<o> fact -> that object's take command (variant 0, the first one, follows the
    fixed ", take"; variant 1 follows another take command)."""
    name = tn.OBJECTS[o]
    rest = [name] + [f"{name} from {f}" for f in tn.FURNITURE_KINDS]
    return {v * 4 + t: (", take " if v else " ") + c for v in range(2) for t, c in enumerate(rest)}


def text_nav_text(env: tn.TextNav) -> TaskText:
    # Big tables meet only small fixed pieces (the token-boundary check looks at every pair
    # of strings that can touch); the small pieces fuse with their neighbours.
    fo = env.observability == "fo"
    parts = [Slot("narrative", narrative_choices(fo)),
             Switch("floor_on", {1: Seq(Lit("\n\nOn the floor you see"), Slot("floor", floor_choices()))}),
             Lit("\n"), Slot("adm_a", adm_a_choices(fo)),
              Switch("take_on", {0: Lit("\n"), 1: Seq(Lit(", take"), *[
                  Switch(f"take_{o}", {v: Lit(c) for v, c in take_choices(o).items()}) for o in range(tn.NUM_OBJECTS)
              ], Lit("\n"))})]
    return TaskText(Document(Seq(*parts)), ACTIONS)


register("text-nav-fo", tn.TextNav, text_nav_text,
         "LMRL-Gym Text-Nav, fully observed (room text and inventory shown)", observability="fo")
register("text-nav-po", tn.TextNav, text_nav_text,
         "LMRL-Gym Text-Nav, partially observed (room text and inventory hidden)", observability="po")
