"""What every LLF-Bench core shares: its supported instruction and feedback types.

An LLF core is a ``TextEnv`` whose facts say, per feedback kind ``k`` it supports, which
message (if any) the last step earned: ``facts["fb_<k>"]`` is an int32 *case*, 0 when the
reference's field would be None this step, 1.. for the task's message variants. The core
always computes every kind; which ones are shown (``feedback_type``), the ``'m'`` draw,
the join and the paraphrases belong to the text layer (``jaxlm_gym.feedback``).
``facts["at_reset"]`` is 1 on an observation from ``reset`` (instruction shown, no
feedback) and 0 after a step.
"""

from __future__ import annotations

from .base import TextEnv

#: The reference's fixed order of feedback kinds (r, hp, hn, fp, fn).
FEEDBACK_ORDER = ("r", "hp", "hn", "fp", "fn")
INSTRUCTION_ORDER = ("b", "p", "c")


def resolve_feedback_type(feedback_type, supported: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """``(kinds shown, is_mixture)`` for a ``feedback_type``: one code, a set/list/tuple of
    codes, ``'a'`` (all supported), ``'m'`` (one supported kind drawn per step) or ``'n'``."""
    valid = f"one of {list(supported)}, a set of them, 'a' (all), 'm' (one at random per step) or 'n' (none)"
    if isinstance(feedback_type, str):
        if feedback_type == "a":
            return tuple(supported), False
        if feedback_type == "m":
            return tuple(supported), True
        if feedback_type == "n":
            return (), False
        codes = [feedback_type]
    elif isinstance(feedback_type, (set, frozenset, list, tuple)) and feedback_type:
        codes = list(feedback_type)
    else:
        raise ValueError(f"feedback_type={feedback_type!r} is not valid; use {valid}")
    bad = [c for c in codes if c not in supported]
    if bad:
        raise ValueError(f"feedback_type {bad} not supported by this task; use {valid}")
    return tuple(k for k in FEEDBACK_ORDER if k in codes), False


def check_instruction_type(instruction_type, supported: tuple[str, ...]) -> str:
    if instruction_type not in supported:
        raise ValueError(f"instruction_type={instruction_type!r} is not supported by this task; "
                         f"supported: {list(supported)}")
    return instruction_type


class LLFEnv(TextEnv):
    """Base of LLF-Bench cores. Subclasses set the two class tuples and call
    ``super().__init__(instruction_type, feedback_type)`` from their constructor."""

    INSTRUCTION_TYPES: tuple[str, ...] = ("b",)
    FEEDBACK_TYPES: tuple[str, ...] = FEEDBACK_ORDER

    def __init__(self, instruction_type: str = "b", feedback_type="a"):
        super().__init__()
        self.instruction_type = check_instruction_type(instruction_type, self.INSTRUCTION_TYPES)
        self.feedback_kinds, self.feedback_mixture = resolve_feedback_type(feedback_type, self.FEEDBACK_TYPES)
        self.feedback_type = feedback_type
