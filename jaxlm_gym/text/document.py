"""A compiled document: templates turned into tables, rendered in-graph and on the host.

In-graph rendering is a gather, not a loop over strings: each piece contributes a run
of token ids taken from one flat table; the runs are laid end to end into a buffer of
fixed length (derived from the templates) with its length and attention mask.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .template import Block, Node, flatten, fuse, keys_of, longest, paraphrase_pools, touching_pairs
from .tokenizer import Tokenizer


class Document:
    """The text of an observation: a sequence of blocks (some repeated, e.g. history windows)."""

    def __init__(self, *blocks: Block | Node):
        self.blocks = tuple(b if isinstance(b, Block) else Block(b) for b in blocks)

    def compile(self, tokenizer: Tokenizer | None = None, max_tokens: int | None = None,
                paraphrase: int | None = None) -> "CompiledText":
        return CompiledText(self, tokenizer, max_tokens, paraphrase)


class CompiledText:
    """Tables and functions for one document (and optionally one tokenizer).

    ``render(facts, key)`` (in-graph, one env) gives ``{"tokens", "length", "mask"}``;
    ``host_batch(facts)`` gives the same text as Python strings. ``draw(key, facts)``
    fills in the paraphrase choices (call it before both so they agree).
    """

    def __init__(self, document: Document, tokenizer: Tokenizer | None = None,
                 max_tokens: int | None = None, paraphrase: int | None = None):
        self.document = document
        self.tokenizer = tokenizer
        self._blocks = []
        strings: list[str] = []
        self.pools: dict[str, tuple[int, int | None]] = {}
        self.required_keys: set[str] = set()
        for block in document.blocks:
            pieces = fuse(flatten(block.node, jnp), jnp)
            bases = []
            for piece in pieces:
                bases.append(len(strings))
                strings.extend(piece.choices)
            self._blocks.append((pieces, np.asarray(bases, np.int32), block.repeat))
            for k, n in paraphrase_pools(block.node).items():
                self.pools[k] = (n, block.repeat)
            self.required_keys |= keys_of(block.node)
        self.required_keys -= set(self.pools)
        self.strings = strings
        self._strings_np = np.asarray(strings, dtype=object)
        self.num_pieces = sum(len(p) * (r or 1) for p, _, r in self._blocks)
        self.max_chars = sum(longest(b.node, len) * (b.repeat or 1) for b in document.blocks)
        if paraphrase is not None:
            small = {k: n for k, (n, _) in self.pools.items() if paraphrase >= n}
            if paraphrase < 0 or small:
                raise ValueError(
                    f"paraphrase={paraphrase} is out of range: valid indices are 0.."
                    f"{min((n for n, _ in self.pools.values()), default=1) - 1} "
                    f"(pool sizes {dict((k, n) for k, (n, _) in self.pools.items())})"
                )
        self.paraphrase = paraphrase
        self.max_tokens = None
        if tokenizer is not None:
            self._compile_tokens(tokenizer, max_tokens)

    # ------------------------------------------------------------------ tokens
    def _compile_tokens(self, tok: Tokenizer, max_tokens: int | None):
        pairs = sorted(touching_pairs(self.document.blocks))
        unique = sorted(set(self.strings) | {s for pair in pairs for s in pair})
        enc = dict(zip(unique, tok.encode_batch(unique)))
        self._check_boundaries(tok, enc, pairs)
        lens = np.asarray([len(enc[s]) for s in self.strings], np.int32)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int32)
        flat = [t for s in self.strings for t in enc[s]] or [tok.pad_id]
        self._tok_flat = np.asarray(flat, np.int32)
        self._tok_len = lens
        self._tok_start = starts
        needed = sum(longest(b.node, lambda s: len(enc[s]) if s in enc else len(tok.encode(s)))
                     * (b.repeat or 1) for b in self.document.blocks)
        self.required_tokens = max(int(needed), 1)
        if max_tokens is None:
            max_tokens = self.required_tokens
        elif max_tokens < self.required_tokens:
            raise ValueError(
                f"max_tokens={max_tokens} is too small: the longest text of this task takes "
                f"{self.required_tokens} tokens with {tok.name}; pass max_tokens>="
                f"{self.required_tokens} (or leave it unset)"
            )
        self.max_tokens = int(max_tokens)
        self.pad_id = int(tok.pad_id)

    def _check_boundaries(self, tok: Tokenizer, enc: Mapping[str, list[int]], pairs: list[tuple[str, str]]):
        """Every two pieces that can touch must tokenize apart exactly as together."""
        if not pairs:
            return
        joined = tok.encode_batch([a + b for a, b in pairs])
        bad = [(a, b) for (a, b), ids in zip(pairs, joined) if ids != enc[a] + enc[b]]
        if bad:
            a, b = bad[0]
            raise ValueError(
                f"template pieces {a!r} and {b!r} do not meet on a token boundary of {tok.name} "
                f"({len(bad)} such pairs): a merge would cross the piece edge. Move the "
                "shared space or punctuation into one piece."
            )

    # ------------------------------------------------------------------ in-graph
    def draw(self, key: jax.Array, facts: Mapping) -> dict:
        """Facts with a paraphrase index for every pool (drawn from ``key``, or pinned)."""
        facts = dict(facts)
        keys = jax.random.split(key, max(len(self.pools), 1))
        for k, (name, (n, repeat)) in zip(keys, sorted(self.pools.items())):
            shape = () if repeat is None else (repeat,)
            if self.paraphrase is None:
                facts[name] = jax.random.randint(k, shape, 0, n, dtype=jnp.int32)
            else:
                facts[name] = jnp.full(shape, self.paraphrase, jnp.int32)
        return facts

    def _check_keys(self, facts: Mapping):
        missing = (self.required_keys | set(self.pools)) - set(facts)
        if missing:
            raise KeyError(f"facts lack {sorted(missing)}; this document reads {sorted(self.required_keys)}"
                           f" and paraphrase choices {sorted(self.pools)} (call draw() first)")

    def plan(self, facts: Mapping) -> tuple[jax.Array, jax.Array]:
        """Which string each piece writes and whether it is present (one env)."""
        self._check_keys(facts)
        ids, ons = [], []
        for pieces, bases, repeat in self._blocks:
            if not pieces:
                continue

            def one(f, pieces=pieces, bases=bases):
                idx = jnp.stack([jnp.asarray(p.index(f), jnp.int32) for p in pieces])
                on = jnp.stack([jnp.broadcast_to(jnp.asarray(p.present(f), bool), ()) for p in pieces])
                return jnp.asarray(bases) + idx, on

            if repeat is None:
                gid, on = one(facts)
            else:
                gid, on = jax.vmap(one)({k: facts[k] for k in facts if jnp.ndim(facts[k]) >= 1
                                         and jnp.shape(facts[k])[0] == repeat})
                gid, on = gid.reshape(-1), on.reshape(-1)
            ids.append(gid)
            ons.append(on)
        if not ids:
            return jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool)
        return jnp.concatenate(ids), jnp.concatenate(ons)

    def render(self, facts: Mapping) -> dict[str, jax.Array]:
        """Token buffer of one env: ``tokens`` int32[L], ``length`` int32[], ``mask`` bool[L]."""
        if self.max_tokens is None:
            raise ValueError("this document was compiled without a tokenizer")
        gid, on = self.plan(facts)
        return _concat(gid, on, jnp.asarray(self._tok_flat), jnp.asarray(self._tok_start),
                       jnp.asarray(self._tok_len), self.max_tokens, self.pad_id)

    # ------------------------------------------------------------------ host
    @functools.cached_property
    def _plan_batch(self):
        return jax.jit(jax.vmap(self.plan))

    def host_batch(self, facts: Mapping) -> list[str]:
        """Host strings of a batch of facts (leading axis = env)."""
        gid, on = jax.device_get(self._plan_batch(dict(facts)))
        return ["".join(self._strings_np[g[o]]) for g, o in zip(gid, on)]

    def host(self, facts: Mapping) -> str:
        """Host string of one env's facts."""
        return self.host_batch(jax.tree.map(lambda x: jnp.asarray(x)[None], dict(facts)))[0]


def _concat(gid, on, flat, start, length, width: int, pad_id: int):
    """Lay the token runs of the pieces end to end into a buffer of ``width`` ids."""
    lens = jnp.where(on, length[gid], 0)
    ends = jnp.cumsum(lens)
    begins = ends - lens
    # Position p lies in the piece with begin <= p < end and reads that piece's run at
    # offset p - begin. A compare-select over the (few) pieces, then one gather per
    # position, was the fastest of the layouts we timed on CPU (count-then-gather,
    # binary search, scatter, one-hot, telescoping sums).
    pos = jnp.arange(width, dtype=jnp.int32)[:, None]
    inside = (pos >= begins[None]) & (pos < ends[None])
    src = jnp.sum(jnp.where(inside, (start[gid] - begins)[None] + pos, 0), axis=1)
    total = ends[-1] if ends.shape[0] else jnp.int32(0)
    mask = pos[:, 0] < total
    # src is in bounds by construction (0 outside every piece); a clip would cost 2x
    # here because it breaks the fusion.
    tokens = jnp.where(mask, flat.at[src].get(mode="promise_in_bounds"), jnp.int32(pad_id))
    return {"tokens": tokens, "length": jnp.asarray(total, jnp.int32), "mask": mask}
