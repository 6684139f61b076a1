"""Templates: literal pieces and slots, from which a task's text is written.

A template is a small tree:

* ``Lit(text)`` — fixed text;
* ``Slot(key, choices)`` — one string from a finite list, picked by the integer fact ``key``;
* ``Num(key, decimals)`` — the float fact ``key`` with a fixed precision, tokenized in-graph;
* ``Seq(*parts)`` — parts one after another;
* ``Switch(key, {value: node})`` — the case picked by fact ``key`` (no match: nothing);
* ``Paraphrase(key, [node, ...])`` — like ``Switch``, but the alternative is drawn from the
  PRNG key at render time (or pinned), and written back into the facts so the host text
  can be rebuilt;
* ``Choice(key, [node, ...])`` — drawn like ``Paraphrase``, but never pinned (content, not wording);
* ``Block(node, repeat=W)`` — a top-level part of a ``Document``; with ``repeat`` its facts
  have a leading axis of length ``W`` and the node is written once per row (history windows).

Every piece must start and end on a pre-token boundary of the tokenizer, so that the
tokens of the pieces laid end to end are exactly ``tokenizer.encode`` of the whole text.
Put the leading space inside the slot's choices (``" 8"``, not ``" " + "8"``).
``compile_document`` checks this for every pair of pieces that can touch.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping, Sequence


class Node:
    """Base class of template nodes."""


@dataclasses.dataclass(frozen=True)
class Lit(Node):
    text: str


@dataclasses.dataclass(frozen=True)
class Slot(Node):
    key: str
    choices: tuple[str, ...]

    def __init__(self, key: str, choices: Sequence[str]):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "choices", tuple(choices))
        if not self.choices:
            raise ValueError(f"Slot {key!r} has no choices")


@dataclasses.dataclass(frozen=True)
class Seq(Node):
    parts: tuple[Node, ...]

    def __init__(self, *parts: Node):
        object.__setattr__(self, "parts", tuple(parts))


@dataclasses.dataclass(frozen=True)
class Switch(Node):
    key: str
    cases: tuple[tuple[int, Node], ...]

    def __init__(self, key: str, cases: Mapping[int, Node]):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "cases", tuple((int(v), n) for v, n in cases.items()))


@dataclasses.dataclass(frozen=True)
class Paraphrase(Node):
    """Alternative wordings; the choice is a fact the renderer draws from the key."""

    key: str
    alternatives: tuple[Node, ...]

    def __init__(self, key: str, alternatives: Sequence[Node]):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "alternatives", tuple(alternatives))
        if not self.alternatives:
            raise ValueError(f"Paraphrase {key!r} has no alternatives")


class Choice(Paraphrase):
    """Like ``Paraphrase`` (drawn uniformly from the key at render time), but a content
    choice, not a wording: ``paraphrase=<index>`` does not pin it (e.g. LLF's ``'m'``
    feedback, one kind drawn per step)."""


_NUM_PREFIX = re.compile(r" ?(?:[^\s\w+\-.]{1,3})?")


@dataclasses.dataclass(frozen=True)
class Num(Node):
    """The float fact ``key`` written with ``decimals`` (0..4) decimals after ``prefix``
    (``""``, ``" "``, or punctuation such as ``"["``: a sign merges with punctuation
    before it, so that punctuation belongs to the number); rendered and tokenized
    in-graph (see ``numbers``).

    ``fast_digits`` (1..4, optional) is a promise about the usual values, not a limit: when
    every number of a batch is finite with at most that many integer digits, the batch takes
    a faster layout (tighter bounds on where the later pieces lie); any other value (larger,
    nan, inf) is still written exactly, by the general path. Unset: the fast path covers
    integer parts below 10**4, nan and inf."""

    key: str
    decimals: int = 2
    prefix: str = " "
    fast_digits: int | None = None

    def __post_init__(self):
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 4:
            raise ValueError(f"Num {self.key!r}: decimals must be an int in 0..4, got {self.decimals!r}")
        if self.fast_digits is not None and (isinstance(self.fast_digits, bool) or not isinstance(
                self.fast_digits, int) or not 1 <= self.fast_digits <= 4):
            raise ValueError(f"Num {self.key!r}: fast_digits must be None or an int in 1..4, got {self.fast_digits!r}")
        if not _NUM_PREFIX.fullmatch(self.prefix):
            raise ValueError(f"Num {self.key!r}: prefix must be '', ' ' or up to 3 punctuation marks (other than "
                             f"'-+.') after an optional space, like '[' or ' ('; got {self.prefix!r}")


@dataclasses.dataclass(frozen=True)
class Block:
    node: Node
    repeat: int | None = None


def digits(n: int, prefix: str = " ") -> str:
    """LMRL-Gym's integer style: one digit at a time, space separated (11 -> '1 1')."""
    return prefix + " ".join(str(int(n)))


def digit_choices(upto: int, prefix: str = " ") -> tuple[str, ...]:
    """Choices for a slot holding an integer in ``[0, upto)`` written digit by digit."""
    return tuple(digits(i, prefix) for i in range(upto))


# ---------------------------------------------------------------------------
# Flattening: a node becomes a list of pieces, each a table of strings plus two
# functions of the facts (which string, and whether the piece is present).

IdxFn = Callable[[Mapping], object]


# (measure, num_bound) -> (fewest before, most up to the end): where a piece can lie,
# relative to the start of the node it was flattened from, in the unit of ``measure``
# (tokens when compiled). Only needs to hold when the piece writes something.
SpanFn = Callable[[Callable[[str], int], Callable[["Num"], int]], tuple[int, int]]


@dataclasses.dataclass
class Piece:
    choices: tuple[str, ...]
    index: IdxFn  # facts -> int index into choices
    present: IdxFn  # facts -> bool
    optional: bool = False  # False: present is always True
    num: "Num | None" = None  # a number written in-graph (``choices`` is empty)
    span: SpanFn | None = None  # None: at the node's start, as long as its longest choice


def num_low(num_bound) -> Callable[["Num"], int] | None:
    """The lower bound of a number's length that a ``num_bound`` carries (its ``low``
    attribute), if any: a layout that knows more about its numbers passes both."""
    return getattr(num_bound, "low", None)


def _const(v):
    return lambda f: v


def piece_span(piece: Piece, measure, num_bound) -> tuple[int, int]:
    """``(fewest before, most up to its end)`` of ``piece`` (see ``SpanFn``)."""
    if piece.span is not None:
        return piece.span(measure, num_bound)
    width = num_bound(piece.num) if piece.num is not None else max((measure(c) for c in piece.choices), default=0)
    return 0, width


def _shifted(piece: Piece, lo_fn, hi_fn) -> Piece:
    """``piece`` moved by a run of fewest ``lo_fn(...)`` and most ``hi_fn(...)`` units."""
    def span(m, nb, p=piece):
        first, last = piece_span(p, m, nb)
        return first + lo_fn(m, nb), last + hi_fn(m, nb)

    return dataclasses.replace(piece, span=span)


def flatten(node: Node, xp) -> list[Piece]:
    """Lay a node out as pieces. ``xp`` is the array module (jax.numpy)."""
    if isinstance(node, Lit):
        return [Piece((node.text,), _const(0), _const(True))]
    if isinstance(node, Slot):
        key = node.key
        return [Piece(node.choices, lambda f, key=key: f[key], _const(True))]
    if isinstance(node, Num):
        return [Piece((), _const(0), _const(True), num=node)]
    if isinstance(node, Seq):
        out: list[Piece] = []
        for k, part in enumerate(node.parts):
            before = node.parts[:k]
            lo = lambda m, nb, before=before: sum(shortest(q, m, num_low(nb)) for q in before)  # noqa: E731
            hi = lambda m, nb, before=before: sum(longest(q, m, nb) for q in before)  # noqa: E731
            out.extend(_shifted(piece, lo, hi) if k else piece for piece in flatten(part, xp))
        return out
    if isinstance(node, (Switch, Paraphrase)):
        if isinstance(node, Switch):
            cases = list(node.cases)
        else:
            cases = list(enumerate(node.alternatives))
        flats = [(value, flatten(child, xp)) for value, child in cases]
        width = max((len(fl) for _, fl in flats), default=0)
        key = node.key
        merged: list[Piece] = []

        def slot_span(m, nb, i, flats=flats, cases=cases, nullable=isinstance(node, Switch)):
            # Piece i of the switch sits after piece i - 1 of the active case: where that
            # case's piece i sits, or after the whole case when it has fewer pieces (then
            # it writes nothing, but a fused group starting there may).
            spans = [piece_span(fl[i], m, nb) if len(fl) > i else (shortest(child, m, num_low(nb)), 0)
                     for (_, fl), (_, child) in zip(flats, cases)]
            if nullable:
                spans.append((0, 0))
            return min(a for a, _ in spans), max(e for _, e in spans)
        # Merge the cases position by position: piece i of the switch holds piece i of
        # every case, so the piece count is the longest case's, not the sum.
        for i in range(width):
            members = [(value, fl[i]) for value, fl in flats if len(fl) > i]
            # A number cannot share a table: it stays its own piece, present in its case.
            for value, piece in members:
                if piece.num is not None:
                    merged.append(Piece((), piece.index, lambda f, v=value, p=piece, key=key: xp.logical_and(
                        f[key] == v, p.present(f)), optional=True, num=piece.num, span=piece.span))
            members = [(value, piece) for value, piece in members if piece.num is None]
            if not members:
                continue
            choices: list[str] = []
            offsets = []
            for _, piece in members:
                offsets.append(len(choices))
                choices.extend(piece.choices)

            def index(f, members=members, offsets=offsets, key=key):
                sel = f[key]
                out = 0
                for (value, piece), off in zip(members, offsets):
                    out = xp.where(sel == value, off + piece.index(f), out)
                return out

            def present(f, members=members, key=key):
                sel = f[key]
                out = False
                for value, piece in members:
                    out = xp.logical_or(out, xp.logical_and(sel == value, piece.present(f)))
                return out

            merged.append(Piece(tuple(choices), index, present, optional=True,
                                span=lambda m, nb, i=i: slot_span(m, nb, i)))
        return merged
    raise TypeError(f"not a template node: {node!r}")


#: Most strings of one fused piece (``fuse``). 8192 rather than 256: gridworld's step text
#: drops from 30 pieces to 17 and renders ~15 % faster (16,384 envs, 2 cores); other tasks
#: render as fast as before, with flat token tables of up to ~0.5M ids (Text-Nav).
FUSE_LIMIT = 8192


def fuse(pieces: list[Piece], xp, limit: int | None = None) -> list[Piece]:
    """Fuse runs of adjacent pieces into one piece over the product of their choices,
    while the product stays <= ``limit``. Rendering costs one select per buffer position
    and piece that can reach it, so fewer, larger tables are faster; an absent piece counts
    as one more (empty) choice."""
    limit = FUSE_LIMIT if limit is None else limit
    groups: list[list[Piece]] = []
    size = limit + 1
    for p in pieces:
        if p.num is not None:  # numbers are never fused
            groups.append([p])
            size = limit + 1
            continue
        n = len(p.choices) + p.optional
        if size * n > limit:
            groups.append([])
            size = 1
        groups[-1].append(p)
        size *= n
    out = []
    for group in groups:
        if len(group) == 1:
            out.append(group[0])
            continue
        options = [list(p.choices) + ([""] if p.optional else []) for p in group]
        choices = [""]
        for opts in options:
            choices = [a + b for a in choices for b in opts]
        strides = []
        stride = 1
        for opts in reversed(options):
            strides.append(stride)
            stride *= len(opts)
        strides.reverse()

        def index(f, group=group, strides=strides):
            out = 0
            for p, stride in zip(group, strides):
                i = p.index(f)
                if p.optional:
                    i = xp.where(p.present(f), i, len(p.choices))  # the trailing "" option
                out = out + i * stride
            return out

        def span(m, nb, group=group):
            # The group starts where its first piece does and ends where its last one can.
            spans = [piece_span(p, m, nb) for p in group]
            return spans[0][0], max(e for _, e in spans)

        out.append(Piece(tuple(choices), index, _const(True), span=span))
    return out


# ---------------------------------------------------------------------------
# Static analysis: keys read, paraphrase pools, longest text, touching pieces.


def keys_of(node: Node) -> set[str]:
    if isinstance(node, Lit):
        return set()
    if isinstance(node, (Slot, Num)):
        return {node.key}
    if isinstance(node, Seq):
        return set().union(*(keys_of(p) for p in node.parts)) if node.parts else set()
    if isinstance(node, Switch):
        return {node.key}.union(*(keys_of(c) for _, c in node.cases))
    if isinstance(node, Paraphrase):
        return {node.key}.union(*(keys_of(c) for c in node.alternatives))
    raise TypeError(f"not a template node: {node!r}")


def paraphrase_pools(node: Node) -> dict[str, int]:
    """Paraphrase keys and their pool sizes."""
    out: dict[str, int] = {}
    if isinstance(node, Seq):
        for p in node.parts:
            out.update(paraphrase_pools(p))
    elif isinstance(node, Switch):
        for _, c in node.cases:
            out.update(paraphrase_pools(c))
    elif isinstance(node, Paraphrase):
        out[node.key] = len(node.alternatives)
        for c in node.alternatives:
            out.update(paraphrase_pools(c))
    return out


def specialize(node: Node, fixed: Mapping[str, int]) -> Node:
    """``node`` with every ``Switch`` on a key of ``fixed`` resolved to that value's case
    (nothing when there is none): the text of the common case, with fewer pieces."""
    if isinstance(node, Seq):
        return Seq(*(specialize(p, fixed) for p in node.parts))
    if isinstance(node, Switch):
        if node.key in fixed:
            hit = [c for v, c in node.cases if v == fixed[node.key]]
            return specialize(hit[0], fixed) if hit else Seq()
        return Switch(node.key, {v: specialize(c, fixed) for v, c in node.cases})
    if isinstance(node, Paraphrase):
        return type(node)(node.key, [specialize(a, fixed) for a in node.alternatives])
    return node


def choice_keys(node: Node) -> set[str]:
    """Keys of the ``Choice`` pools under ``node``."""
    if isinstance(node, Seq):
        return set().union(*(choice_keys(p) for p in node.parts)) if node.parts else set()
    if isinstance(node, Switch):
        return set().union(*(choice_keys(c) for _, c in node.cases)) if node.cases else set()
    if isinstance(node, Paraphrase):
        own = {node.key} if isinstance(node, Choice) else set()
        return own.union(*(choice_keys(c) for c in node.alternatives))
    return set()


def shortest(node: Node, measure: Callable[[str], int], num_low: Callable[["Num"], int] | None = None) -> int:
    """Lower bound of ``measure`` over all renderings of ``node`` (a number: ``num_low``, or 1)."""
    if isinstance(node, Lit):
        return measure(node.text)
    if isinstance(node, Slot):
        return min(measure(c) for c in node.choices)
    if isinstance(node, Num):
        return 1 if num_low is None else num_low(node)
    if isinstance(node, Seq):
        return sum(shortest(p, measure, num_low) for p in node.parts)
    if isinstance(node, Switch):
        return 0  # a fact that matches no case writes nothing
    if isinstance(node, Paraphrase):
        return min(shortest(c, measure, num_low) for c in node.alternatives)
    raise TypeError(f"not a template node: {node!r}")


def longest(node: Node, measure: Callable[[str], int], num_bound: Callable[["Num"], int]) -> int:
    """Upper bound of ``measure`` (characters or tokens) over all renderings of ``node``;
    ``num_bound`` bounds a number in the same unit."""
    if isinstance(node, Lit):
        return measure(node.text)
    if isinstance(node, Slot):
        return max(measure(c) for c in node.choices)
    if isinstance(node, Num):
        return num_bound(node)
    if isinstance(node, Seq):
        return sum(longest(p, measure, num_bound) for p in node.parts)
    if isinstance(node, Switch):
        return max((longest(c, measure, num_bound) for _, c in node.cases), default=0)
    if isinstance(node, Paraphrase):
        return max(longest(c, measure, num_bound) for c in node.alternatives)
    raise TypeError(f"not a template node: {node!r}")


@dataclasses.dataclass
class _Edges:
    first: set[str]
    last: set[str]
    nullable: bool
    pairs: set[tuple[str, str]]


def _edges(node: Node) -> _Edges:
    """First/last strings and the pairs of strings that can stand side by side."""
    if isinstance(node, Num):
        from .numbers import samples  # numbers imports this module

        strings = set(samples(node))
        return _Edges(strings, strings, False, set())
    if isinstance(node, (Lit, Slot)):
        strings = {node.text} if isinstance(node, Lit) else set(node.choices)
        nonempty = {s for s in strings if s}
        return _Edges(nonempty, nonempty, "" in strings, set())
    if isinstance(node, Seq):
        return _chain([_edges(p) for p in node.parts])
    children = [c for _, c in node.cases] if isinstance(node, Switch) else list(node.alternatives)
    es = [_edges(c) for c in children]
    return _Edges(
        set().union(*(e.first for e in es)),
        set().union(*(e.last for e in es)),
        # A switch whose fact matches no case writes nothing.
        isinstance(node, Switch) or any(e.nullable for e in es),
        set().union(*(e.pairs for e in es)),
    )


def _chain(es: list[_Edges]) -> _Edges:
    pairs: set[tuple[str, str]] = set().union(*(e.pairs for e in es)) if es else set()
    for i, left in enumerate(es):
        for right in es[i + 1 :]:
            pairs.update((a, b) for a in left.last for b in right.first)
            if not right.nullable:
                break
    first: set[str] = set()
    for e in es:
        first |= e.first
        if not e.nullable:
            break
    last: set[str] = set()
    for e in reversed(es):
        last |= e.last
        if not e.nullable:
            break
    return _Edges(first, last, all(e.nullable for e in es), pairs)


def touching_pairs(blocks: Sequence[Block]) -> set[tuple[str, str]]:
    """Every pair of piece strings that can be adjacent in some rendering."""
    parts = []
    for block in blocks:
        e = _edges(block.node)
        if block.repeat and block.repeat > 1:
            # Rows follow rows (empty rows may sit between two full ones).
            e = _Edges(e.first, e.last, e.nullable, e.pairs | {(a, b) for a in e.last for b in e.first})
        parts.append(e)
    return _chain(parts).pairs
