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

from . import numbers
from .template import (
    Block,
    Node,
    choice_keys,
    flatten,
    fuse,
    keys_of,
    longest,
    num_low,
    paraphrase_pools,
    piece_span,
    shortest,
    specialize,
    touching_pairs,
)
from .tokenizer import Tokenizer


class Document:
    """The text of an observation: a sequence of blocks (some repeated, e.g. history windows)."""

    def __init__(self, *blocks: Block | Node):
        self.blocks = tuple(b if isinstance(b, Block) else Block(b) for b in blocks)

    def compile(self, tokenizer: Tokenizer | None = None, max_tokens: int | None = None,
                paraphrase: int | None = None, common: Mapping[str, int] | None = None) -> "CompiledText":
        """``common``: facts whose value is usually this one (e.g. ``{"at_reset": 0}``): the
        renderer then also compiles the text specialised to that case (fewer pieces) and
        uses it, with a batch-level ``lax.cond``, whenever every env of the batch has it."""
        return CompiledText(self, tokenizer, max_tokens, paraphrase, common)


class CompiledText:
    """Tables and functions for one document (and optionally one tokenizer).

    ``render(facts, key)`` (in-graph, one env) gives ``{"tokens", "length", "mask"}``;
    ``host_batch(facts)`` gives the same text as Python strings. ``draw(key, facts)``
    fills in the paraphrase choices (call it before both so they agree).
    """

    def __init__(self, document: Document, tokenizer: Tokenizer | None = None,
                 max_tokens: int | None = None, paraphrase: int | None = None,
                 common: Mapping[str, int] | None = None):
        self.document = document
        self.tokenizer = tokenizer
        self._blocks = []
        strings: list[str] = []
        self.pools: dict[str, tuple[int, int | None]] = {}
        self.choices: set[str] = set()  # pools that ``paraphrase`` does not pin
        self.required_keys: set[str] = set()
        dyn = []  # per piece (in layout order): is it a number?
        self.nums = []  # the Num node of every number piece, in layout order
        specs = []  # per number piece: what it writes (same spec = same tokens)
        for b, block in enumerate(document.blocks):
            pieces = fuse(flatten(block.node, jnp), jnp)
            bases = []
            for piece in pieces:
                bases.append(len(strings))
                strings.extend(piece.choices)
            self._blocks.append((pieces, np.asarray(bases, np.int32), block.repeat))
            for row in range(block.repeat or 1):
                dyn.extend(p.num is not None for p in pieces)
                self.nums.extend(p.num for p in pieces if p.num is not None)
                specs.extend(((b, row) if block.repeat else None, p.num) for p in pieces if p.num is not None)
            for k, n in paraphrase_pools(block.node).items():
                self.pools[k] = (n, block.repeat)
            self.choices |= choice_keys(block.node)
            self.required_keys |= keys_of(block.node)
        self._dyn = np.asarray(dyn, bool)
        # Pieces that write the same fact the same way (e.g. one number in several
        # paraphrases) share one tokenization: ``_dyn_index`` maps each piece to its
        # distinct number (0 for the other pieces); ``_num_first`` is a number's first piece.
        distinct: dict = {}
        of_piece = [distinct.setdefault(spec, len(distinct)) for spec in specs]
        self._num_first = np.asarray([of_piece.index(u) for u in range(len(distinct))], np.int32)
        self._dyn_index = np.zeros(len(dyn), np.int32)
        self._dyn_index[self._dyn] = of_piece
        self._dyn_piece = np.where(self._dyn, np.cumsum(self._dyn) - 1, 0).astype(np.int32)
        self.required_keys -= set(self.pools)
        self.strings = strings
        self._strings_np = np.asarray(strings, dtype=object)
        self.num_pieces = sum(len(p) * (r or 1) for p, _, r in self._blocks)
        self.max_chars = sum(longest(b.node, len, numbers.max_chars) * (b.repeat or 1) for b in document.blocks)
        if paraphrase is not None:
            wordings = {k: n for k, (n, _) in self.pools.items() if k not in self.choices}
            if isinstance(paraphrase, bool) or not isinstance(paraphrase, (int, np.integer)):
                raise ValueError(f"paraphrase must be None or an int index, got {paraphrase!r}")
            if not wordings:
                raise ValueError(f"paraphrase={paraphrase}: this text has no paraphrase pools to pin")
            if paraphrase < 0 or any(paraphrase >= n for n in wordings.values()):
                raise ValueError(
                    f"paraphrase={paraphrase} is out of range: valid indices are 0.."
                    f"{min(wordings.values()) - 1} (pool sizes {wordings})"
                )
        self.paraphrase = paraphrase
        self.max_tokens = None
        if tokenizer is not None:
            self._compile_tokens(tokenizer, max_tokens)
        self._common = None
        if common and tokenizer is not None:
            fast = Document(*(Block(specialize(b.node, common), b.repeat) for b in document.blocks))
            self._common = (dict(common), CompiledText(fast, tokenizer, self.max_tokens))

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
        self._codecs = [numbers.codec(tok, n.decimals, n.prefix) for n in self.nums]
        self.num_tokens = max((c.max_tokens for c in self._codecs), default=0)
        measure = lambda s: len(enc[s]) if s in enc else len(tok.encode(s))  # noqa: E731
        num_bound = lambda n: numbers.codec(tok, n.decimals, n.prefix).max_tokens  # noqa: E731
        block_tokens = [int(longest(b.node, measure, num_bound)) for b in self.document.blocks]
        needed = sum(w * (b.repeat or 1) for w, b in zip(block_tokens, self.document.blocks))
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
        # Where every piece can lie (fewest tokens before it, most up to its end): the
        # layout tests only the pieces that can reach a position (see ``_source``).
        self._reach = self._spans(measure, num_bound)
        self._tab = self._number_tables(tok, measure) if self.nums else None

    def _spans(self, measure, num_bound) -> tuple[np.ndarray, np.ndarray]:
        """int64[P] fewest tokens before every piece and most up to its end (numbers
        bounded by ``num_bound``)."""
        reach_lo, reach_hi = [], []
        doc_lo = doc_hi = 0  # fewest and most tokens before the block
        for (pieces, _, repeat), block in zip(self._blocks, self.document.blocks):
            spans = np.asarray([piece_span(p, measure, num_bound) for p in pieces], np.int64).reshape(-1, 2)
            lo, hi = spans[:, 0], spans[:, 1]
            row_lo = shortest(block.node, measure, num_low(num_bound))
            row_hi = int(longest(block.node, measure, num_bound))
            for r in range(repeat or 1):
                reach_lo.extend(doc_lo + r * row_lo + lo)
                reach_hi.extend(doc_hi + r * row_hi + hi)
            doc_lo += row_lo * (repeat or 1)
            doc_hi += row_hi * (repeat or 1)
        return np.asarray(reach_lo, np.int64), np.asarray(reach_hi, np.int64)

    def _number_tables(self, tok: Tokenizer, measure) -> dict:
        """Tables for laying numbers out as ordinary table pieces (``_render_tabled``):
        a number whose integer part is below ``10**TABLE_DIGITS`` (or nan / inf) is two
        runs, sign and integer part (row ``neg * R + int row`` of table A) and point and
        fraction (row ``fraction`` of table B), both appended to the flat string table.
        A ``Num`` with ``fast_digits`` k takes this path only for finite values below
        ``10**k``, and the spans use the shortest and longest runs of those rows (much
        tighter than any number's: fewer pieces reach each position).
        Static: per layout piece, ``("s", piece)`` or ``("a" | "b", piece, distinct
        number)``; per distinct number, the rows where its A and B tables start and the
        largest integer part (``limit``) and whether nan / inf (``special``) it takes."""
        flat, start, length = list(self._tok_flat), list(self._tok_start), list(self._tok_len)
        rows = len(self._tok_start)
        bases: dict[tuple[int, str], tuple[int, int]] = {}  # (decimals, prefix) -> base A, base B
        sizes: dict[tuple[int, str, int | None], tuple[int, int]] = {}  # + fast_digits -> shortest, longest
        for num in self.nums:
            spec = (num.decimals, num.prefix)
            key = (*spec, num.fast_digits)
            if key in sizes and spec in bases:
                continue
            c = numbers.codec(tok, num.decimals, num.prefix)
            runs = []
            for neg in (0, 1):
                lead = list(c.lead_neg if neg else c.lead_pos)
                space = 0 if neg else int(c.space)
                runs += [lead + list(c.int_tab[space, r, : c.int_len[space, r]]) for r in range(c.int_tab.shape[1])]
            fracs = [list(c.point) + list(c.frac_tab[v, : c.frac_len[v]]) for v in range(10**num.decimals)] \
                if num.decimals else []
            if key not in sizes:
                n_int = c.int_tab.shape[1]  # 10**TABLE_DIGITS rows, then nan, inf (unsigned, then signed)
                top = numbers._NAN_ROW if num.fast_digits is None else 10**num.fast_digits
                ints = [len(r) for neg in (0, 1) for r in runs[neg * n_int:neg * n_int + top]]
                lo = min(ints) + min(map(len, fracs), default=0)
                hi = max(ints) + max(map(len, fracs), default=0)
                if num.fast_digits is None:  # nan / inf: one run, no fraction
                    special = [len(r) for neg in (0, 1) for r in runs[neg * n_int + numbers._NAN_ROW:(neg + 1) * n_int]]
                    lo, hi = min(lo, min(special)), max(hi, max(special))
                sizes[key] = (lo, hi)
            if spec in bases:
                continue
            base_a = rows
            base_b = rows + len(runs)
            for run in runs + fracs:
                start.append(len(flat))
                length.append(len(run))
                flat.extend(run)
                rows += 1
            bases[spec] = (base_a, base_b)
        plan = []
        for i in range(len(self._dyn)):
            if not self._dyn[i]:
                plan.append(("s", i))
                continue
            u = int(self._dyn_index[i])
            plan.append(("a", i, u))
            if self.nums[self._dyn_piece[i]].decimals:
                plan.append(("b", i, u))
        distinct = [self.nums[j] for j in self._num_first]
        lo, hi = self._spans(measure, _NumBound(sizes))
        # Both runs of a number lie within the number's bounds.
        lo = np.asarray([lo[e[1]] for e in plan], np.int64)
        hi = np.asarray([hi[e[1]] for e in plan], np.int64)
        return {"flat": np.asarray(flat, np.int32), "start": np.asarray(start, np.int32),
                "length": np.asarray(length, np.int32), "plan": plan, "reach": (lo, hi),
                "base_a": np.asarray([bases[(n.decimals, n.prefix)][0] for n in distinct], np.int32),
                "base_b": np.asarray([bases[(n.decimals, n.prefix)][1] for n in distinct], np.int32),
                "limit": np.asarray([10**(n.fast_digits or numbers.TABLE_DIGITS) for n in distinct], np.int32),
                "special": np.asarray([n.fast_digits is None for n in distinct], bool),
                "row_width": numbers._NAN_ROW + 2}

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
        pools = sorted(self.pools.items())
        sizes = [repeat or 1 for _, (_, repeat) in pools]
        # One draw of 32-bit words for every choice: a key split and a ``randint`` per pool
        # cost a threefry call each (half of a bandit step on CPU). Modulo a pool size n
        # is uniform up to a relative bias below n / 2^32.
        bits = jax.random.bits(key, (max(sum(sizes), 1),), jnp.uint32)
        offset = 0
        for (name, (n, repeat)), size in zip(pools, sizes):
            shape = () if repeat is None else (repeat,)
            if self.paraphrase is None or name in self.choices:
                facts[name] = (bits[offset:offset + size] % jnp.uint32(n)).astype(jnp.int32).reshape(shape)
            else:
                facts[name] = jnp.full(shape, self.paraphrase, jnp.int32)
            offset += size
        return facts

    def _check_keys(self, facts: Mapping):
        missing = (self.required_keys | set(self.pools)) - set(facts)
        if missing:
            raise KeyError(f"facts lack {sorted(missing)}; this document reads {sorted(self.required_keys)}"
                           f" and paraphrase choices {sorted(self.pools)} (call draw() first)")

    def plan(self, facts: Mapping) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Which string each piece writes, whether it is present, and the value of every
        number piece (one env): ``(int32[P], bool[P], float32[J])``."""
        self._check_keys(facts)
        ids, ons, vals = [], [], []
        for pieces, bases, repeat in self._blocks:
            if not pieces:
                continue

            def one(f, pieces=pieces, bases=bases):
                idx = jnp.stack([jnp.asarray(p.index(f), jnp.int32) for p in pieces])
                on = jnp.stack([jnp.broadcast_to(jnp.asarray(p.present(f), bool), ()) for p in pieces])
                val = [jnp.asarray(f[p.num.key], jnp.float32).reshape(()) for p in pieces if p.num is not None]
                val = jnp.stack(val) if val else jnp.zeros((0,), jnp.float32)
                return jnp.asarray(bases) + idx, on, val

            if repeat is None:
                gid, on, val = one(facts)
            else:
                gid, on, val = jax.vmap(one)({k: facts[k] for k in facts if jnp.ndim(facts[k]) >= 1
                                              and jnp.shape(facts[k])[0] == repeat})
                gid, on, val = gid.reshape(-1), on.reshape(-1), val.reshape(-1)
            ids.append(gid)
            ons.append(on)
            vals.append(val)
        if not ids:
            return jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool), jnp.zeros((0,), jnp.float32)
        return jnp.concatenate(ids), jnp.concatenate(ons), jnp.concatenate(vals)

    def render(self, facts: Mapping) -> dict[str, jax.Array]:
        """Token buffer of one env: ``tokens`` int32[L], ``length`` int32[], ``mask`` bool[L]."""
        out = self.render_batch(jax.tree.map(lambda x: jnp.asarray(x)[None], dict(facts)))
        return jax.tree.map(lambda x: x[0], out)

    def render_batch(self, facts: Mapping) -> dict[str, jax.Array]:
        """Token buffers of a batch of envs (leading axis of every fact = env)."""
        if self.max_tokens is None:
            raise ValueError("this document was compiled without a tokenizer")
        self._check_keys(facts)
        if self._common is not None:
            fixed, fast = self._common
            usual = jnp.all(jnp.stack([jnp.all(jnp.asarray(facts[k]) == v) for k, v in fixed.items()]))
            return jax.lax.cond(usual, fast._render_batch, self._render_batch, dict(facts))
        return self._render_batch(facts)

    def _render_batch(self, facts: Mapping) -> dict[str, jax.Array]:
        gid, on, vals = jax.vmap(self.plan)(facts)
        flat, start, length = (jnp.asarray(a) for a in (self._tok_flat, self._tok_start, self._tok_len))
        spans = self._reach
        if not self.nums:
            return jax.vmap(lambda g, o: _concat(g, o, flat, start, length, self.max_tokens, self.pad_id, spans))(
                gid, on)
        f = self._number_fields(vals)
        ok = self._tabled_ok(f)
        return jax.lax.cond(ok, self._render_tabled, self._render_numbers, gid, on, vals, f)

    def _render_numbers(self, gid, on, vals, f=None):
        """The general number path: every number laid out in its own buffer first."""
        flat, start, length = (jnp.asarray(a) for a in (self._tok_flat, self._tok_start, self._tok_len))
        ntok, nlen = self._number_tokens(vals)
        dyn, dyn_index = self._dyn, jnp.asarray(self._dyn_index)  # dyn stays static
        return jax.vmap(lambda g, o, t, n: _concat(g, o, flat, start, length, self.max_tokens, self.pad_id,
                                                   self._reach, (dyn, dyn_index, t, n)))(gid, on, ntok, nlen)

    def _number_fields(self, vals: jax.Array) -> dict[str, jax.Array]:
        """``numbers.fixed_fields`` of the U distinct numbers of a batch: int32/bool[N, U]
        each (each number at its own precision; right wherever ``_tabled_ok`` holds)."""
        vals = vals[:, self._num_first]
        decimals = np.asarray([self.nums[j].decimals for j in self._num_first])
        groups = [np.flatnonzero(decimals == d) for d in sorted(set(decimals.tolist()))]
        parts = [jax.vmap(jax.vmap(lambda v, d=int(decimals[js[0]]): numbers.fixed_fields(v, d)))(vals[:, js])
                 for js in groups]
        if len(parts) == 1:
            return parts[0]
        back = np.argsort(np.concatenate(groups))  # columns back in number order
        return jax.tree.map(lambda *cols: jnp.concatenate(cols, axis=1)[:, back], *parts)

    def _tabled_ok(self, f: dict) -> jax.Array:
        """bool: every number of the batch has a table row (no scientific notation, integer
        part below ``10**TABLE_DIGITS``) within its ``fast_digits`` promise (integer part
        below ``10**fast_digits``, finite): the batch can take ``_render_tabled``."""
        kind = f["kind"]
        fits = (kind == numbers.FIXED) & (f["ival"] < jnp.asarray(self._tab["limit"]))
        return jnp.all(fits | (jnp.asarray(self._tab["special"]) & (kind >= numbers.NAN)))

    def _render_tabled(self, gid, on, vals, f):
        """Numbers as two table pieces each (see ``_number_tables``): one layout pass and
        one gather, instead of a layout per number and a second one for the text."""
        tab = self._tab
        kind, neg = f["kind"], f["neg"].astype(jnp.int32)
        row = jnp.where(kind == numbers.NAN, numbers._NAN_ROW, jnp.where(kind == numbers.INF, numbers._INF_ROW,
                                                                         f["ival"]))
        row_a = jnp.asarray(tab["base_a"]) + neg * tab["row_width"] + row
        row_b = jnp.asarray(tab["base_b"]) + f["fval"]
        frac_on = kind == numbers.FIXED
        gids, ons = [], []
        for e in tab["plan"]:
            if e[0] == "s":
                gids.append(gid[:, e[1]])
                ons.append(on[:, e[1]])
            elif e[0] == "a":
                gids.append(row_a[:, e[2]])
                ons.append(on[:, e[1]])
            else:
                gids.append(row_b[:, e[2]])
                ons.append(on[:, e[1]] & frac_on[:, e[2]])
        flat, start, length = (jnp.asarray(tab[k]) for k in ("flat", "start", "length"))
        return jax.vmap(lambda g, o: _concat(g, o, flat, start, length, self.max_tokens, self.pad_id, tab["reach"]))(
            jnp.stack(gids, 1), jnp.stack(ons, 1))

    def render_after(self, facts: Mapping, tokens: jax.Array, keep: jax.Array) -> dict[str, jax.Array]:
        """A batch of texts cut after ``keep`` tokens (int32[N]) and continued with this
        document's text: ``{"tokens", "length", "mask"}`` in the buffer of ``tokens``
        (int32[N, L]), for texts that grow at the end (``TaskText.append``). The caller
        guarantees that the result fits in L.

        The text is rendered in its own buffer and written at ``keep`` with one
        ``dynamic_update_slice`` per env. A gather per position (``tail[pos - keep]``) or
        a layout over absolute positions were slower (Wordle, 16,384 envs on 2 cores:
        0.96e6 env-steps/s against 1.3e6): XLA fuses the tail's layout into the gather
        and recomputes it for every position."""
        tail = self.render_batch(facts)
        width, size = tokens.shape[1], self.max_tokens
        pos = jnp.arange(width, dtype=jnp.int32)[None, :]
        keep = keep.astype(jnp.int32)
        # Room for the whole tail buffer past the end: dynamic_update_slice would move a
        # write that runs past the end back into the buffer.
        base = jnp.pad(jnp.where(pos < keep[:, None], tokens, jnp.int32(self.pad_id)), ((0, 0), (0, size)),
                       constant_values=self.pad_id)
        out = jax.vmap(lambda b, t, k: jax.lax.dynamic_update_slice(b, t, (k,)))(base, tail["tokens"], keep)
        length = keep + tail["length"]
        return {"tokens": out[:, :width], "length": length, "mask": pos < length[:, None]}

    def _number_tokens(self, vals: jax.Array) -> tuple[jax.Array, jax.Array]:
        """int32[N, U, K] tokens and int32[N, U] lengths of the U distinct numbers of a batch."""
        n, k = vals.shape[0], self.num_tokens
        vals = vals[:, self._num_first]
        nums = [self.nums[j] for j in self._num_first]
        toks = [None] * len(nums)
        lens = [None] * len(nums)
        groups: dict[tuple, list[int]] = {}
        for j, num in enumerate(nums):
            groups.setdefault((num.decimals, num.prefix), []).append(j)
        for (dec, _), js in groups.items():
            codec = self._codecs[self._num_first[js[0]]]
            f = jax.vmap(lambda v: numbers.fields(v, dec))(vals[:, js].reshape(-1))
            t, ln = codec.tokens_batch(f)  # one batch-level choice of the BPE path per group
            t = jnp.pad(t, ((0, 0), (0, k - t.shape[1])), constant_values=self.pad_id).reshape(n, len(js), k)
            ln = ln.reshape(n, len(js))
            for i, j in enumerate(js):
                toks[j], lens[j] = t[:, i], ln[:, i]
        return jnp.stack(toks, axis=1), jnp.stack(lens, axis=1)

    # ------------------------------------------------------------------ host
    @functools.cached_property
    def _plan_batch(self):
        nums = self.nums

        def plan_chars(facts):
            gid, on, vals = self.plan(facts)
            texts = [numbers.chars(numbers.fields(vals[j], n.decimals), n.decimals, n.prefix) for j, n in
                     enumerate(nums)]
            width = max((t.shape[0] for t, _ in texts), default=0)
            chars = jnp.stack([jnp.pad(t, (0, width - t.shape[0])) for t, _ in texts]) if texts else \
                jnp.zeros((0, 0), jnp.uint8)
            nchars = jnp.stack([c for _, c in texts]) if texts else jnp.zeros((0,), jnp.int32)
            return gid, on, chars, nchars

        return jax.jit(jax.vmap(plan_chars))

    def host_batch(self, facts: Mapping) -> list[str]:
        """Host strings of a batch of facts (leading axis = env)."""
        gid, on, chars, nchars = jax.device_get(self._plan_batch(dict(facts)))
        if not self.nums:
            return ["".join(self._strings_np[g[o]]) for g, o in zip(gid, on)]
        out = []
        for g, o, c, nc in zip(gid, on, chars, nchars):
            parts = []
            for i in np.flatnonzero(o):
                if self._dyn[i]:
                    j = self._dyn_piece[i]
                    parts.append(bytes(c[j, : nc[j]]).decode("ascii"))
                else:
                    parts.append(self._strings_np[g[i]])
            out.append("".join(parts))
        return out

    def host(self, facts: Mapping) -> str:
        """Host string of one env's facts."""
        return self.host_batch(jax.tree.map(lambda x: jnp.asarray(x)[None], dict(facts)))[0]


class _NumBound:
    """``num_bound`` of the table layout: the longest tokens of a number on the fast path,
    with ``low``, the shortest (see ``template.num_low``)."""

    def __init__(self, sizes: Mapping[tuple, tuple[int, int]]):
        self.sizes = dict(sizes)

    def __call__(self, num) -> int:
        return self.sizes[(num.decimals, num.prefix, num.fast_digits)][1]

    def low(self, num) -> int:
        return self.sizes[(num.decimals, num.prefix, num.fast_digits)][0]


def _concat(gid, on, flat, start, length, width: int, pad_id: int, spans, nums=None):
    """Lay the token runs of the pieces end to end into a buffer of ``width`` ids.

    ``spans``: static (fewest tokens before, most tokens up to the end) of every piece
    (see ``_source``).
    ``nums``: ``(is_number bool[P] (static), number_index int32[P], tokens int32[J, K],
    lengths int32[J])`` when some pieces are numbers (their runs come from ``tokens``)."""
    if nums is not None:
        return _concat_numbers(gid, on, flat, start, length, width, pad_id, spans, *nums)
    lens = jnp.where(on, length[gid], 0)
    ends = _cumsum(lens)
    begins = ends - lens
    total = ends[-1] if ends.shape[0] else jnp.int32(0)
    pos = jnp.arange(width, dtype=jnp.int32)
    tokens = _chunk_tokens(width, begins, start[gid] - begins, spans, total, flat, pad_id)
    return {"tokens": tokens, "length": jnp.asarray(total, jnp.int32), "mask": pos < total}


def _chunk_tokens(width: int, begins, offsets, spans, total, flat, pad_id: int):
    """The token ids of every position, chunk by chunk: each chunk of ``_CHUNK`` positions
    finds its sources with ``_source``'s select chain over the pieces that can reach it,
    then gathers its ids and pads past ``total``; chunks that no piece reaches are padding.
    Gathering per chunk (one fusion from the chain to the ids) instead of laying the whole
    buffer's sources out first saves a pass over the int32 buffer and its concatenation:
    gridworld's render (16,384 envs, 2 cores) 5.8 -> 4.9 ms, parking's 10.2 -> 7.2 ms. Tried
    and slower: one chain over every piece for the whole buffer (one fusion, no
    concatenation; 3.4 against 3.1 ms) and writing the chunks with dynamic_update_slice
    (12.8 ms)."""
    chunks = []
    for pos, src in _chunk_sources(width, begins, offsets, spans):
        if src is None:
            chunks.append(jnp.full(pos.shape, pad_id, jnp.int32))
            continue
        inside = pos < total
        # In the text, src is in bounds by construction (a piece's own run); past it, 0.
        src = jnp.where(inside, src, 0)
        chunks.append(jnp.where(inside, flat.at[src].get(mode="promise_in_bounds"), jnp.int32(pad_id)))
    return jnp.concatenate(chunks) if chunks else jnp.zeros((0,), jnp.int32)


def _cumsum(x):
    # XLA's CPU backend runs jnp.cumsum as a reduce-window, 2-3x slower here than the
    # log-depth scan for the 8-50 pieces of a text (16,384 envs).
    return jax.lax.associative_scan(jnp.add, x) if x.shape[0] > 1 else x


_CHUNK = 32  # buffer positions per static chunk (8 to 64 ran about as fast; fewer chunks compile faster)


def _source(width: int, begins, offsets, spans):
    """Where each of ``width`` positions reads from: ``offsets[i] + pos`` for the last
    piece ``i`` with ``begins[i] <= pos`` (pieces are laid in order; an empty piece is
    overridden by the next one, which begins where it does).

    A chain of selects, one per piece, which XLA fuses into loops over the positions.
    ``spans`` (static: the fewest tokens before each piece and the most up to its end)
    bound where a piece can lie when it writes something: the buffer is cut into chunks
    of ``_CHUNK`` positions and each chunk's chain tests only the pieces that can reach
    it. That is exact: the piece that owns a position reaches it, the pieces after it
    begin past it, and those before it are overridden by it. Long texts of many pieces
    (LLF feedback, Wordle's history) test a fraction of their pieces per position. On a
    2-core CPU this layout rendered gridworld's text in ~40 ms instead of 105 ms (16,384
    envs) with the compare-select-reduce over every (position, piece) pair it replaces,
    and made the two-level rendering of repeated rows (each row in its own buffer first)
    slower than laying all pieces out at once, so that was dropped."""
    chunks = [pos if src is None else src for pos, src in _chunk_sources(width, begins, offsets, spans)]
    return jnp.concatenate(chunks) if chunks else jnp.zeros((0,), jnp.int32)


def _chunk_sources(width: int, begins, offsets, spans):
    """Per chunk of ``_CHUNK`` positions: ``(pos, src)``, the chunk's positions and where
    each reads from (``_source``'s select chain over the pieces that can reach the chunk),
    or ``(pos, None)`` when no piece reaches it (its positions lie past every text)."""
    n = begins.shape[0]
    first, last = (np.asarray(a, np.int64).reshape(-1) for a in spans)
    assert first.shape == last.shape == (n,), (first.shape, n)
    for c0 in range(0, width, _CHUNK):
        c1 = min(c0 + _CHUNK, width)
        pos = jnp.arange(c0, c1, dtype=jnp.int32)
        reach = np.flatnonzero((first < c1) & (last > c0))
        if reach.size == 0:
            yield pos, None
            continue
        src = jnp.zeros(pos.shape, jnp.int32)
        for i in reach:
            src = jnp.where(pos >= begins[i], offsets[i], src)
        yield pos, src + pos


# Number runs are addressed below zero, so one select chain serves both sources.
_NUM_BASE = 1 << 30


def _concat_numbers(gid, on, flat, start, length, width, pad_id, spans, dyn, dyn_index, ntok, nlen):
    """``_concat`` when some pieces are numbers: their runs are read from ``ntok``."""
    k = ntok.shape[1]
    dyn = np.asarray(dyn, bool)  # static: which pieces are numbers
    gid = jnp.where(dyn, 0, gid)
    lens = jnp.where(on, jnp.where(dyn, nlen[dyn_index], length[gid]), 0)
    ends = _cumsum(lens)
    begins = ends - lens
    offsets = jnp.where(dyn, dyn_index * k - begins - _NUM_BASE, start[gid] - begins)
    total = ends[-1]
    pos = jnp.arange(width, dtype=jnp.int32)
    mask = pos < total
    src = jnp.where(mask, _source(width, begins, offsets, spans), 0)
    in_num = src < 0
    num_tok = ntok.reshape(-1).at[jnp.where(in_num, src + _NUM_BASE, 0)].get(mode="promise_in_bounds")
    tok = jnp.where(in_num, num_tok, flat.at[jnp.where(in_num, 0, src)].get(mode="promise_in_bounds"))
    return {"tokens": jnp.where(mask, tok, jnp.int32(pad_id)), "length": jnp.asarray(total, jnp.int32),
            "mask": mask}
