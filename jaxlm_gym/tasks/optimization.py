"""LLF-Bench optimization text: instruction, language feedback, observation and text actions.

All sentences are ours (LLF-Bench's wording is not reproduced); what each conveys and which
values it fills in follow the spec (``llf-bench.md`` §2.3) and the core's facts
(``pure_envs.optimization.Optimization``).

**Instruction** (type ``b``, static per id): minimise the named function f(x1, x2) with both
coordinates in [lo, hi], within N attempts (``attempts_total``), proposing points as
``x = [x1, x2]`` or saying stop at the minimum. The reference never paraphrases it (F4): by
default the first of our wordings is always shown; the core flag ``paraphrase_instruction=True``
draws one of the ``INSTRUCTIONS`` (5) wordings at each reset instead.

**Feedback** (kinds r, hp, hn, fp, fn, each sentence one ``Paraphrase`` pool of 4 wordings):

* r: invalid text (1), stopped away from (2) or at (3) the minimum, reached the minimum (4),
  not reached yet (5). Stops and proposals echo the point (a stop: where the agent stopped).
  The reference echoes the agent's raw text; the core only has the parsed numbers, so we
  write ``x = [x1, x2]`` from them, and an invalid text is not echoed.
* hp / hn: one sentence per coordinate i whose move ``x_i - prev_x_i`` agrees (hp) or not
  (hn) with ``-grad f(prev_x)``: it names the coordinate, its new value and its old value,
  and the direction (increasing / decreasing / unchanged; a zero move is "decreasing" unless
  the core's ``fix_unchanged_coordinate`` flag is set, F5). The coordinate sentences draw
  their wordings independently (as the reference), and are joined by one space.
* fp / fn: per coordinate with a non-zero gradient at x, suggest (fp) a smaller / larger
  x_i, or warn (fn) against a larger / smaller one, naming x_i. On invalid text, fp asks for
  a valid action within (lo, hi) and fn warns against a *valid* action outside (lo, hi): the
  reference's self-contradiction (F7), kept.

**Observation** (``obs_kind``): nothing after invalid text or a stop (the reference's is
None); at reset the start point x0, f(x0), the attempts left and the request for the next x
in the syntax ``x = [x1, x2]``; after a proposal f(x), the attempts left and the request; on
a hit f(x) = min f and the statement that the minimum is reached.

**Numbers** (documented precision): coordinates with the function's print digits
(``env.digits``: 2 or 4 decimals, as the reference rounds x0), values of f with 4 decimals,
attempts as integers (the counter goes negative past the budget, F3); domain bounds are
written as Python's ``{:g}`` (``-65.536``). See ``jaxlm_gym.text.numbers`` for the format.

**Actions** are free text, parsed in-graph (``OptimizationTextParser``): a stop word
``reach``/``stay``/``stop`` anywhere in the text makes it a stop (F2; the core flag
``stop_words_anywhere=False`` lets a point win over a stop word); otherwise the first
``[a, b]`` pair of the reference's regex is the point (``.5`` and ``+1`` do not parse, F6);
anything else is invalid text. Only the text's first ``numparse.DEFAULT_WIDTH`` (64) bytes are
searched (the reference searches all of it). ``ACTIONS`` are example texts, not a list of all.

Every sentence pool has 4 wordings, so ``paraphrase=<i>`` (``make_vec``, ``gym.make``) pins
them with i in 0..3. Numbers are laid out so that each is written by one template piece
whatever the wording (see ``_segments``): number pieces dominate render and compile costs.
"""

from __future__ import annotations

import functools

from typing import Sequence

import jax.numpy as jnp

from pure_envs import optimization as opt

from ..feedback import llf_text, with_space
from ..registry import register
from ..text import Lit, Num, Paraphrase, Seq, Switch
from ..text.numparse import DEFAULT_WIDTH, STOP_WORDS, OptimizationActionParser
from ..text.numparse import INVALID as P_INVALID
from ..text.numparse import POINT as P_POINT
from ..text.numparse import STOP as P_STOP
from ..text.template import Node

# The parser's kinds are the core's action kinds.
assert (P_POINT, P_STOP, P_INVALID) == (opt.PROPOSE, opt.STOP, opt.INVALID)

#: Example action texts: two points, a stop, and a stop by substring ("stay", F2).
ACTIONS = ("x = [1.5, -2]", "x = [0, 0]", "stop", "I will stay here")

#: Function names as the text writes them.
DISPLAY_NAMES = {
    "Booth": "Booth", "McCormick": "McCormick", "Rosenbrock": "Rosenbrock", "SixHumpCamel": "six-hump camel",
    "Bohachevsky": "Bohachevsky", "RotatedHyperEllipsoid": "rotated hyper-ellipsoid", "Matyas": "Matyas",
    "ThreeHumpCamel": "three-hump camel",
}

Y_DECIMALS = 4
COORDS = ("x1", "x2")


class OptimizationTextParser(OptimizationActionParser):
    """Text -> the core's action: ``parse(int32[L]) -> {"x": float32[2], "kind": int32}``
    (kind ``PROPOSE``/``STOP``/``INVALID``), ``parse_batch`` maps int32[N, L]. Reads the
    text's first ``width`` bytes (see ``numparse``). ``x`` is [0, 0] unless the kind is a
    point (the core reads it only then; numparse's NaN would make the action, which the
    gym API returns in ``info``, unequal to itself)."""

    def parse(self, tokens):
        out = super().parse(tokens)
        return {"x": jnp.where(out["kind"] == P_POINT, out["x"], 0.0), "kind": out["kind"]}


def optimization_parser(tokenizer, width: int = DEFAULT_WIDTH, stop_words: Sequence[str] = STOP_WORDS,
                        stop_first: bool = True):
    """The ``TaskText.parser`` factory: ``tokenizer -> OptimizationTextParser``. ``stop_first``
    is F2 (the env's ``stop_words_anywhere`` flag)."""
    return OptimizationTextParser(tokenizer, width, stop_words, stop_first)


# ---------------------------------------------------------------------------------------------- helpers
def _node(x) -> Node:
    return Lit(x) if isinstance(x, str) else x


def _segments(key: str, slots: Sequence[Node], wordings: Sequence[Sequence]) -> list[Node | None]:
    """A sentence pool whose wordings share their slots, as the ``len(slots) + 1`` pieces of
    text around the slots: per position, a ``Paraphrase`` of the wordings' texts (all under
    one key, so one draw picks one wording), a ``Lit`` if all agree, None if all are empty.
    Splitting at the slots writes every number with one piece whatever the wording (each
    number piece costs render and compile time)."""
    out: list[Node | None] = []
    for w in wordings:
        if len(w) != len(slots) + 1:
            raise ValueError(f"{key}: a wording needs {len(slots) + 1} pieces around {len(slots)} slots, got {w!r}")
    for j in range(len(slots) + 1):
        segs = [w[j] for w in wordings]
        if all(s == segs[0] for s in segs):
            out.append(None if segs[0] == "" else _node(segs[0]))
        else:
            out.append(Paraphrase(key, [_node(s) for s in segs]))
    return out


def _pool(key: str, slots: Sequence[Node], wordings: Sequence[Sequence]) -> Node:
    """The sentence of ``_segments`` as one node."""
    return Seq(*_interleave(_segments(key, slots, wordings), slots))


def _interleave(segs: Sequence[Node | None], slots: Sequence[Node]) -> list[Node]:
    parts: list[Node] = []
    for j, seg in enumerate(segs):
        if seg is not None:
            parts.append(seg)
        if j < len(slots):
            parts.append(slots[j])
    return parts


def _point(k0: str, k1: str, digits: int) -> tuple[Node, Node]:
    """The two numbers of ``x = [a, b]``: the text before must end with ``x =``; the ``,``
    between them and the ``]`` after are the caller's pieces."""
    return Num(k0, digits, " ["), Num(k1, digits, " ")


def _dir(key: str, words: dict) -> Node:
    return Switch(key, {d: Lit(w) for d, w in words.items()})


def _coords(kind: str, sentence) -> Node:
    """The per-coordinate sentences of ``kind``, joined by one space when both are shown.

    ``sentence(i) -> (segments, slots)`` (see ``_segments``; the first segment is text).
    Laid out so that each number appears once: the first piece is the first segment of
    whichever sentence comes first (so a leading space put in front of the whole message,
    as ``llf_text`` does after an earlier message, lands on it); coordinate 1's first segment
    gets its own space only after coordinate 0's sentence. Derived facts: ``has_<kind>_<i>``
    (sentence i shown) and ``both_<kind>``."""
    (seg0, slots0), (seg1, slots1) = sentence(0), sentence(1)
    has0, has1 = f"has_{kind}_0", f"has_{kind}_1"
    return Seq(
        Switch(has0, {1: seg0[0], 0: seg1[0]}),
        Switch(has0, {1: Seq(*_interleave([None, *seg0[1:]], slots0))}),
        Switch(f"both_{kind}", {1: with_space(seg1[0])}),
        Switch(has1, {1: Seq(*_interleave([None, *seg1[1:]], slots1))}),
    )


def _prepare(facts):
    out = dict(facts)
    for kind in ("hp", "hn", "fp", "fn"):
        on = [(jnp.asarray(facts[f"fb_{kind}_{i}"]) > 0) for i in (0, 1)]
        for i in (0, 1):
            out[f"has_{kind}_{i}"] = on[i].astype(jnp.int32)
        out[f"both_{kind}"] = (on[0] & on[1]).astype(jnp.int32)
    kind = jnp.asarray(facts["obs_kind"])
    out["obs_on"] = (kind != opt.OBS_NONE).astype(jnp.int32)
    out["obs_ask"] = ((kind == opt.OBS_START) | (kind == opt.OBS_STEP)).astype(jnp.int32)
    return out


# ---------------------------------------------------------------------------------------------- wordings
def _instructions(name: str, dom: str) -> list[tuple[str, str]]:
    """Instruction wordings: the text before and after the attempts budget."""
    return [
        (f"Find the minimum of the {name} function f(x1, x2), where x1 and x2 both lie in {dom}. You have",
         " attempts. Each time, propose a point written as x = [x1, x2], or say stop once you believe you are "
         "at the minimum."),
        (f"Your task is to make f(x1, x2), the {name} function, as small as possible, searching {dom} for each "
         "coordinate. Get there in at most",
         " tries. Answer with x = [x1, x2] to try a point, or with stop when you think the minimum is reached."),
        (f"We want the lowest value of the {name} function f(x1, x2) for x1 and x2 in {dom}. Within",
         " attempts, find the point where it is smallest. Write each guess as x = [x1, x2]; write stop if you "
         "are already at the minimum."),
        (f"Minimise the {name} function f(x1, x2) over {dom} x {dom}. You get",
         " attempts. Reply with a point in the form x = [x1, x2], or reply stop once you have found the minimum."),
        (f"Search {dom} (the same range for both coordinates) for the point (x1, x2) that minimises the {name} "
         "function f(x1, x2); you have",
         " attempts. Give each guess as x = [x1, x2], and say stop when you are at the minimum."),
    ]


#: Number of instruction wordings (``paraphrase_instruction=True`` draws one per reset).
INSTRUCTIONS = 5


def _r(d: int) -> dict:
    x0, x1 = _point("x_0", "x_1", d)
    return {
        opt.R_INVALID: [Lit("Your answer is not a valid action."),
                        Lit("No point of the form x = [x1, x2] could be read from your answer."),
                        Lit("That reply is not an action this task understands."),
                        Lit("The action could not be read, so it did not count.")],
        opt.R_STOP_MISS: _pool("pp_r_2", [x0, x1], [
            ("You stopped at x =", ",", "], which is not the minimum."),
            ("You chose to stay at x =", ",", "], but that is not where f is smallest."),
            ("Stopping at x =", ",", "] ends the search short of the minimum."),
            ("The search ended at x =", ",", "]; the minimum was not reached.")]),
        opt.R_STOP_MIN: _pool("pp_r_3", [x0, x1], [
            ("You stopped at x =", ",", "], which is the minimum."),
            ("You chose to stay at x =", ",", "], and that is where f is smallest."),
            ("Stopping at x =", ",", "] is right: it is the minimum."),
            ("The search ended at x =", ",", "]; you found the minimum.")]),
        opt.R_HIT: _pool("pp_r_4", [x0, x1], [
            ("You proposed x =", ",", "] and reached the minimum."),
            ("The point x =", ",", "] is a minimum of f. Well done."),
            ("Your point x =", ",", "] reaches the minimum."),
            ("With x =", ",", "] you have found the minimum.")]),
        opt.R_MISS: _pool("pp_r_5", [x0, x1], [
            ("You proposed x =", ",", "]. The minimum is not reached yet."),
            ("The point x =", ",", "] is not the minimum."),
            ("Your point x =", ",", "] does not reach the minimum yet."),
            ("With x =", ",", "] you have not found the minimum yet.")]),
    }


def _hindsight(kind: str, d: int, good: bool):
    """hp (``good``) / hn sentence of coordinate i: slots x_i (new) and prev_x_i (old)."""

    def sentence(i: int) -> Node:
        c, key = COORDS[i], f"fb_{kind}_{i}"
        up, down, same = opt.INCREASING, opt.DECREASING, opt.UNCHANGED
        tails = ([" is a direction in which f goes down.", ", you are moving downhill in f.", ") lowers f.",
                  ", and that direction reduces f."] if good else
                 [" does not make f go down.", ", you are not moving downhill in f.", ") does not lower f.",
                  ", and that direction does not reduce f."])
        wordings = [
            (f"You set {c} to", _dir(key, {up: f". Increasing {c} from", down: f". Decreasing {c} from",
                                           same: f". Keeping {c} at"}), tails[0]),
            (f"With {c} at", _dir(key, {up: ", up from", down: ", down from", same: ", unchanged from"}), tails[1]),
            (f"Changing {c} to", _dir(key, {up: " (an increase from", down: " (a decrease from",
                                            same: " (no change from"}), tails[2]),
            (f"{'Good' if good else 'Careful'}: {c} =",
             _dir(key, {up: " is higher than", down: " is lower than", same: " equals"}), tails[3]),
        ]
        slots = [Num(f"x_{i}", d), Num(f"prev_x_{i}", d)]
        return _segments(f"pp_{kind}_{i}", slots, wordings), slots

    return _coords(kind, sentence)


def _future(kind: str, d: int, lo: str, hi: str) -> dict:
    """fp / fn: case 1 one sentence per coordinate (slot x_i), case 2 the invalid-text message."""
    small, large = opt.SMALLER, opt.LARGER

    def sentence(i: int) -> Node:
        c, key = COORDS[i], f"fb_{kind}_{i}"
        if kind == "fp":
            wordings = [
                (_dir(key, {small: f"Try a smaller {c} than", large: f"Try a larger {c} than"}), "."),
                (_dir(key, {small: f"Next, lower {c} below", large: f"Next, raise {c} above"}), "."),
                (_dir(key, {small: f"A value of {c} under", large: f"A value of {c} over"}), " should lower f."),
                (f"From {c} =", _dir(key, {small: ", move to a smaller value.", large: ", move to a larger value."})),
            ]
        else:
            wordings = [
                (_dir(key, {small: f"Do not try a smaller {c} than", large: f"Do not try a larger {c} than"}), "."),
                (_dir(key, {small: f"Avoid lowering {c} below", large: f"Avoid raising {c} above"}), "."),
                (_dir(key, {small: f"A value of {c} under", large: f"A value of {c} over"}), " would not help."),
                (f"From {c} =", _dir(key, {small: ", going smaller is a mistake.",
                                          large: ", going larger is a mistake."})),
            ]
        slots = [Num(f"x_{i}", d)]
        return _segments(f"pp_{kind}_{i}", slots, wordings), slots

    if kind == "fp":
        invalid = [f"Give a valid action: x = [x1, x2] with both numbers between {lo} and {hi}.",
                   f"Please answer with a point x = [x1, x2] whose coordinates lie in ({lo}, {hi}).",
                   f"Write your next guess as x = [x1, x2], each number within ({lo}, {hi}).",
                   f"Propose a valid point, x = [x1, x2], with x1 and x2 between {lo} and {hi}."]
    else:  # F7: warns against a *valid* action outside the range
        invalid = [f"Avoid a valid action that lies outside ({lo}, {hi}).",
                   f"Do not answer with a valid point outside ({lo}, {hi}).",
                   f"Steer clear of valid actions beyond the range ({lo}, {hi}).",
                   f"Never propose a valid x outside ({lo}, {hi})."]
    return {opt.FB_COORDS: _coords(kind, sentence), opt.FB_INVALID: [Lit(t) for t in invalid]}


def _observation(d: int) -> Node:
    """Start: x0, f(x0), attempts, request; step: f(x), attempts, request; hit: f(x) and
    "minimum reached"; none: nothing. Laid out so that each number appears once."""
    x0, x1 = _point("x_0", "x_1", d)
    kind = "obs_kind"
    return Switch("obs_on", {1: Seq(
        Switch(kind, {opt.OBS_START: Seq(Lit("You start at x ="), x0, Lit(","), x1, Lit("], where f(x) =")),
                      opt.OBS_STEP: Lit("Now f(x) ="), opt.OBS_HIT: Lit("Now f(x) =")}),
        Num("y", Y_DECIMALS),
        Switch(kind, {opt.OBS_START: Lit(". Attempts left:"), opt.OBS_STEP: Lit(". Attempts left:"),
                      opt.OBS_HIT: Lit(". This is the minimum of f.")}),
        Switch("obs_ask", {1: Seq(Num("attempts", 0), Lit(". Which x do you try next? Answer as x = [x1, x2]."))}),
    )})


# ---------------------------------------------------------------------------------------------- task text
def optimization_text(env: opt.Optimization):
    name = DISPLAY_NAMES[env.function]
    lo, hi = f"{env.x_low:g}", f"{env.x_high:g}"
    d = env.digits
    wordings = _instructions(name, f"[{lo}, {hi}]")
    assert len(wordings) == INSTRUCTIONS
    # F4: the reference never paraphrases the instruction; the flag draws a wording per reset.
    instruction = _pool("pp_instruction", [Num("attempts_total", 0)],
                        wordings if env.paraphrase_instruction else wordings[:1])
    feedback = {
        "r": _r(d),
        "hp": {opt.FB_COORDS: _hindsight("hp", d, good=True)},
        "hn": {opt.FB_COORDS: _hindsight("hn", d, good=False)},
        "fp": _future("fp", d, lo, hi),
        "fn": _future("fn", d, lo, hi),
    }
    return llf_text(env, instruction={"b": instruction}, feedback=feedback, observation=_observation(d),
                    actions=ACTIONS, prepare=_prepare,
                    parser=functools.partial(optimization_parser, stop_first=env.stop_words_anywhere))


#: The reference marks these "not recommended": an LLM's first guess [0, 0] is the optimum.
_NOT_RECOMMENDED = ("Bohachevsky", "RotatedHyperEllipsoid", "Matyas", "ThreeHumpCamel")

for _name in opt.FUNCTIONS:
    _f = opt.FUNCTION_TABLE[_name]
    _desc = (f"LLF-Bench optimization: minimise the {DISPLAY_NAMES[_name]} function over [{_f[1]:g}, {_f[2]:g}]^2 "
             "with language feedback; text actions x = [x1, x2] or stop")
    if _name in _NOT_RECOMMENDED:
        _desc += " (the reference marks it not recommended: the minimum is at [0, 0])"
    register(f"llf-optimization-{_name}-v0", opt.Optimization, optimization_text, _desc, function=_name)
