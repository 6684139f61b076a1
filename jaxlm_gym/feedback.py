"""LLF-Bench's language feedback and instructions, for every LLF core.

A core (``pure_envs.llf.LLFEnv``) computes, every step, a *case* per feedback kind
(``facts["fb_<kind>"]``, 0 = no message) and the slot values. This module turns that
into text, as the reference's ``LLFWrapper`` does, in-graph:

* **Which kinds** (``feedback_type``, validated by the core at make time): one code, a set
  of codes, ``'a'`` (all the task supports), ``'n'`` (none: the feedback is ``''``), or
  ``'m'``: one kind per step drawn uniformly from the task's kinds with the step's key
  (a ``Choice`` pool); if that kind says nothing this step, the feedback is ``''``, as
  in the reference.
* **Order and join**: the reference's fixed order r, hp, hn, fp, fn; present messages
  are separated by one space. (The reference adds no space after a message ending in a
  newline; none of our messages ends in one.)
* **Wording**: each (kind, case) has a pool of our own paraphrases (at least 4); each
  message draws its own from the step key, or all are pinned with ``paraphrase=<i>``.
* **Instruction**: the one of ``instruction_type``, shown at reset only.

Token observation (``obs_mode="tokens"``): at reset ``<instruction>\\n<observation>``;
after a step ``<feedback>\\n<observation>`` (no ``\\n`` when the feedback is empty). The
three strings are also compiled separately (``TaskText.parts``) for the gymnasium API's
``{observation, instruction, feedback}`` dict.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp

from pure_envs.llf import FEEDBACK_ORDER

from .registry import TaskText
from .text import Block, Choice, Document, Lit, Paraphrase, Seq, Slot, Switch
from .text.template import Node, Num

MIN_WORDINGS = 4


def with_space(node: Node) -> Node:
    """``node`` with one space in front (inside its first piece, so tokens stay exact)."""
    if isinstance(node, Lit):
        return Lit(" " + node.text)
    if isinstance(node, Slot):
        return Slot(node.key, [" " + c for c in node.choices])
    if isinstance(node, Num):
        if node.prefix.startswith(" "):
            raise ValueError(f"Num {node.key!r} already starts with a space")
        return Num(node.key, node.decimals, " " + node.prefix)
    if isinstance(node, Seq) and node.parts:
        return Seq(with_space(node.parts[0]), *node.parts[1:])
    if isinstance(node, Paraphrase):
        return type(node)(node.key, [with_space(a) for a in node.alternatives])
    if isinstance(node, Switch):
        return Switch(node.key, {v: with_space(c) for v, c in node.cases})
    raise ValueError(f"cannot put a space in front of {node!r}; start the message with text")


def _ends_with_newline(node: Node) -> bool:
    if isinstance(node, Lit):
        return node.text.endswith("\n")
    if isinstance(node, Slot):
        return any(c.endswith("\n") for c in node.choices)
    if isinstance(node, Seq):
        return bool(node.parts) and _ends_with_newline(node.parts[-1])
    if isinstance(node, Paraphrase):
        return any(_ends_with_newline(a) for a in node.alternatives)
    if isinstance(node, Switch):
        return any(_ends_with_newline(c) for _, c in node.cases)
    return False


def _kind_node(kind: str, cases: Mapping[int, Sequence[Node]], lead: bool) -> Node:
    out = {}
    for case, wordings in cases.items():
        if isinstance(wordings, Node):  # a message that draws its own paraphrases (per sentence)
            out[int(case)] = with_space(wordings) if lead else wordings
            continue
        alts = [with_space(w) if lead else w for w in wordings]
        out[int(case)] = Paraphrase(f"pp_{kind}_{int(case)}", alts)
    return Switch(f"fb_{kind}", out)


def feedback_node(kinds: Sequence[str], mixture: bool, feedback: Mapping[str, Mapping[int, Sequence[Node]]]) -> Node:
    """The feedback text of a step, for the kinds shown (see the module docstring)."""
    if not kinds:
        return Seq()
    if mixture:
        return Choice("fb_mix", [_kind_node(k, feedback[k], lead=False) for k in kinds])
    parts = []
    for i, k in enumerate(kinds):
        if i == 0:
            parts.append(_kind_node(k, feedback[k], lead=False))
        else:
            parts.append(Switch(f"fb_lead_{k}", {0: _kind_node(k, feedback[k], lead=False),
                                                 1: _kind_node(k, feedback[k], lead=True)}))
    return Seq(*parts)


def _prepare(kinds: tuple[str, ...], mixture: bool, invalid: bool):
    """Derived facts: ``fb_lead_<k>`` (an earlier message is shown) and ``fb_any``."""

    def prepare(facts: Mapping) -> dict:
        facts = _shown(dict(facts))
        if invalid:
            facts["fb_any"] = jnp.maximum(facts["fb_any"], (jnp.asarray(facts["invalid"]) > 0).astype(jnp.int32))
        return facts

    def _shown(facts: dict) -> dict:
        if not kinds:
            facts["fb_any"] = jnp.int32(0)
            return facts
        on = [jnp.asarray(facts[f"fb_{k}"]) > 0 for k in kinds]
        if mixture:
            pick = jnp.asarray(facts["fb_mix"])
            facts["fb_any"] = jnp.any(jnp.stack(on) & (jnp.arange(len(kinds)) == pick)).astype(jnp.int32)
            return facts
        seen = jnp.bool_(False)
        for k, o in zip(kinds, on):
            facts[f"fb_lead_{k}"] = seen.astype(jnp.int32)
            seen = seen | o
        facts["fb_any"] = seen.astype(jnp.int32)
        return facts

    return prepare


Parts = Node | Block | Sequence[Node | Block]


def _blocks(parts: Parts) -> list[Block]:
    if isinstance(parts, (Node, Block)):
        parts = [parts]
    return [p if isinstance(p, Block) else Block(p) for p in parts]


def _gate(blocks: list[Block], key: str) -> list[Block]:
    """Plain blocks shown only when fact ``key`` is 1. Repeated blocks are left as they are:
    their rows must be empty themselves when not shown (see ``llf_text``)."""
    return [b if b.repeat else Block(Switch(key, {1: b.node})) for b in blocks]


def llf_text(env, *, instruction: Mapping[str, Parts], feedback: Mapping[str, Mapping[int, Sequence[Node]]],
             observation: Parts, actions: Sequence[str] = (), aliases: Mapping[str, int] | None = None,
             parser=None, prepare=None, invalid: Sequence[Node] | None = None,
             common: Mapping[str, int] | None = None) -> TaskText:
    """The ``TaskText`` of an LLF core: instruction at reset, feedback after each step,
    then the task's observation.

    ``instruction``: per supported instruction type, a node or a list of nodes and
    ``Block``s (a repeated block's rows, e.g. one sentence per move of a path, must write
    nothing unless ``at_reset``: gate them with a per-row fact made by ``prepare``).
    ``feedback``: per supported kind, ``case -> [wordings]`` (cases >= 1, at least
    ``MIN_WORDINGS`` wordings each), or ``case -> node`` for a message of several
    sentences that holds its own ``Paraphrase`` pools (one draw per sentence, as the
    reference). ``observation``: a node or a list of nodes and
    blocks. ``prepare``: the task's own in-graph ``facts -> facts`` (derived facts), run
    before the feedback's. ``common``: more facts with their usual value, e.g. a per-row
    gate of the instruction's repeated rows (see ``Document.compile``). ``invalid``: wordings (>= ``MIN_WORDINGS``) of the message for
    a text that is no action (the core's ``invalid`` fact is 1); give it when the core has one. As the
    reference's ``TextWrapper`` (which reports the parse error as the feedback, whatever
    ``feedback_type``), it replaces the feedback on that step."""
    missing = [t for t in env.INSTRUCTION_TYPES if t not in instruction]
    if missing:
        raise ValueError(f"{type(env).__name__}: no instruction text for types {missing}")
    for k in env.FEEDBACK_TYPES:
        if k not in feedback or not feedback[k]:
            raise ValueError(f"{type(env).__name__}: no feedback text for kind {k!r}")
        for case, wordings in feedback[k].items():
            if int(case) < 1:
                raise ValueError(f"feedback {k!r}: case {case} must be >= 1 (0 means no message)")
            if isinstance(wordings, Node):
                wordings = [wordings]
            elif len(wordings) < MIN_WORDINGS:
                raise ValueError(f"feedback {k!r} case {case}: {len(wordings)} wordings, need >= {MIN_WORDINGS}")
            if any(_ends_with_newline(w) for w in wordings):
                raise ValueError(f"feedback {k!r} case {case}: a message must not end with a newline")
    unknown = sorted(set(feedback) - set(FEEDBACK_ORDER))
    if unknown:
        raise ValueError(f"unknown feedback kinds {unknown}; kinds are {FEEDBACK_ORDER}")
    kinds, mixture = env.feedback_kinds, env.feedback_mixture
    instr = _blocks(instruction[env.instruction_type])
    fb = feedback_node(kinds, mixture, feedback)
    has_invalid = invalid is not None
    if has_invalid:
        if len(invalid) < MIN_WORDINGS:
            raise ValueError(f"{type(env).__name__}: give >= {MIN_WORDINGS} wordings for the invalid-action message")
        fb = Switch("invalid", {0: fb, 1: Paraphrase("pp_invalid", list(invalid))})
    obs = _blocks(observation)
    whole = [*_gate(instr, "at_reset"),
             Block(Switch("at_reset", {1: Lit("\n"), 0: Seq(fb, Switch("fb_any", {1: Lit("\n")}))})), *obs]
    parts = {"instruction": Document(*instr), "feedback": Document(fb), "observation": Document(*obs)}
    fb_prepare = _prepare(kinds, mixture, has_invalid)
    both = fb_prepare if prepare is None else (lambda facts: fb_prepare(prepare(facts)))
    # After a step (most observations) the instruction is absent: render that case with
    # the instruction's pieces left out (``common``; a task adds its own gates).
    return TaskText(Document(*whole), tuple(actions), parser=parser, aliases=aliases, prepare=both, parts=parts,
                    common={"at_reset": 0, **(common or {})})
