"""Maze text: the LMRL-Gym observation and action strings (data formats, byte for byte)."""

from __future__ import annotations

from pure_envs import maze

from ..registry import TaskText, register
from ..text import Document, Block, Lit, Seq, Slot, Switch, digit_choices

ACTIONS = ("move left\n", "move right\n", "move up\n", "move down\n")
# In the order of the wall bits: right, left, above, below.
WALL_PHRASES = ("to your right", "to your left", "above you", "below you")


def wall_sentence(bits: int) -> str:
    rel = [p for i, p in enumerate(WALL_PHRASES) if bits >> i & 1]
    if not rel:
        return "There are no walls near you.\n"
    if len(rel) == 1:
        return f"There is a wall {rel[0]}.\n"
    return f"There are walls {', '.join(rel)}.\n"


def _observation(prefix: str, fo: bool, num) -> Switch:
    """One observation text; its facts are ``<prefix>kind``, ``<prefix>walls``, ..."""
    walls = [wall_sentence(b) for b in range(16)]
    if fo:
        describe = Seq(
            Lit("The goal is at position"), Slot(prefix + "goal_r", num), Lit(","), Slot(prefix + "goal_c", num),
            Lit(". Your current position is at position"), Slot(prefix + "pos_r", num), Lit(","),
            Slot(prefix + "pos_c", num), Lit("."), Slot(prefix + "walls", [" " + s for s in walls]),
        )
    else:
        describe = Slot(prefix + "walls", walls)
    return Switch(prefix + "kind", {maze.DESCRIBE: describe, maze.SUCCESS: Lit("Success\n"),
                             maze.FAILURE: Lit("Failure\n")})


def maze_text(env: maze.Maze) -> TaskText:
    num = digit_choices(max(env.layout.shape))
    fo = env.observability == "fo"
    blocks = [Block(_observation("", fo, num))]
    if env.pairs:
        # An empty pair has no action (pair_action 4) and no observation (pair_kind 0).
        moves = Switch("pair_action", {i: Lit(s) for i, s in enumerate(ACTIONS)})
        pair = Seq(moves, _observation("pair_", fo, num))
        blocks.append(Block(pair, repeat=env.pairs))
    return TaskText(Document(*blocks), ACTIONS)


register("maze-fo", maze.Maze, maze_text, "LMRL-Gym maze, fully observed (goal, position, walls)",
         observability="fo")
register("maze-po", maze.Maze, maze_text, "LMRL-Gym maze, partially observed (walls; 40-text window)",
         observability="po")
