"""Numbers in text: a float fact written with a fixed precision, tokenized in-graph.

A float has too many values to pre-tokenize as a slot, so a ``Num`` node is written
in-graph, and its tokens are exactly ``tokenizer.encode`` of the host text.

**Format** (documented precision, ``decimals`` = d in 0..4):

* ``|x| < 1e9`` (after rounding): fixed point, like ``f"{x:.{d}f}"`` — optional ``-``,
  the integer digits, then ``.`` and d digits when d > 0. A value that rounds to zero is
  written unsigned (``0.00``, never ``-0.00``).
* ``|x| >= 1e9``: scientific, like ``f"{x:.{d}e}"`` (``1.2346e+12``).
* NaN and infinities: ``nan``, ``inf``, ``-inf``.

The digits are computed in-graph in float32 (the integer part split off exactly, the
fraction rounded in float32, ties to even); the host text is built from the
*same* digits, so host text and tokens always agree. They may differ from Python's
float64 formatting of the value in the last digit.

**Tokens.** Byte-level BPE never merges across pre-tokens, and a number's pre-tokens are
its sign (``" -"``/``"-"``), its integer digits (with the leading space when unsigned),
``"."``, the fraction digits, ``"e"``, ``"+"`` and the exponent digits. Each is looked up
in a table made with the tokenizer itself (integers below 10^4, every d-digit fraction,
exponents), except integer parts of 5 to 9 digits: those run the tokenizer's BPE merges
in-graph, restricted to the tokens made of digits (and the leading space). That path runs
only when some env of the batch needs it (a batch-level ``lax.cond``).
"""

from __future__ import annotations

import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np

from .template import Num
from .tokenizer import Tokenizer, _byte_to_unicode

MAX_DECIMALS = 4
INT_DIGITS = 9  # fixed point below 1e9, scientific from there
TABLE_DIGITS = 4  # integer parts below 10**4 come from a table
FIXED, SCI, NAN, INF = 0, 1, 2, 3
_NAN_ROW, _INF_ROW = 10**TABLE_DIGITS, 10**TABLE_DIGITS + 1
_POW10 = np.asarray([10.0**k for k in range(39)], np.float32)


def max_chars(num: Num) -> int:
    """Characters of the longest text of ``num``."""
    frac = num.decimals + 1 if num.decimals else 0
    return len(num.prefix) + 1 + max(INT_DIGITS + frac, 1 + frac + 4)


def samples(num: Num) -> tuple[str, ...]:
    """Texts that start and end with every kind of character a rendering can: enough to
    check the pre-token boundaries with the pieces around it."""
    return tuple(num.prefix + _py_format(v, num.decimals) for v in (-12.5, 12.5, 0.0, 3e12, np.nan, np.inf, -np.inf))


def _py_format(v: float, d: int) -> str:
    """Host reference of the format for exactly representable test values."""
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "-inf" if v < 0 else "inf"
    if abs(v) >= 1e9:
        return f"{v:.{d}e}"
    s = f"{v:.{d}f}"
    return s[1:] if s.startswith("-") and not any(c in "123456789" for c in s) else s


# ---------------------------------------------------------------------------
# Digits (in-graph, one value)


def _fixed(x: jax.Array, decimals: int):
    """Fixed point: the integer part split off exactly, the fraction rounded. Returns
    ``(|x| or 0 when not finite, finite, integer part float32, fraction int32)``."""
    scale = np.float32(10.0**decimals)
    finite = jnp.isfinite(x)
    a_f = jnp.where(finite, jnp.abs(x), 0.0)
    ip = jnp.floor(jnp.minimum(a_f, 2e9))
    fq = jnp.round((a_f - ip) * scale).astype(jnp.int32)
    carry = fq >= int(scale)
    return a_f, finite, ip + carry, jnp.where(carry, 0, fq)


def _signed(x, kind, ival, fval, **more) -> dict[str, jax.Array]:
    """The fields dict; a value that rounds to zero (and nan) is unsigned."""
    nonzero = (ival > 0) | (fval > 0) | (kind == INF)
    neg = (x < 0) & nonzero & (kind != NAN)
    return {"kind": kind.astype(jnp.int32), "neg": neg, "ival": ival.astype(jnp.int32),
            "fval": fval.astype(jnp.int32), **more}


def fields(x: jax.Array, decimals: int) -> dict[str, jax.Array]:
    """The parts of the text of ``x``: kind, sign, integer part, fraction, exponent."""
    x = jnp.asarray(x, jnp.float32)
    scale = np.float32(10.0**decimals)
    a_f, finite, ip, fq = _fixed(x, decimals)
    is_sci = finite & (ip >= 1e9)
    # Scientific: mantissa in [1, 10) rounded to ``decimals``, exponent >= 9.
    e = jnp.clip(jnp.floor(jnp.log10(jnp.maximum(a_f, 1.0))).astype(jnp.int32), 0, 38)
    m = a_f / jnp.asarray(_POW10)[e]
    e = jnp.where(m >= 10.0, e + 1, jnp.where(m < 1.0, e - 1, e))
    m = a_f / jnp.asarray(_POW10)[jnp.clip(e, 0, 38)]
    mq = jnp.round(m * scale).astype(jnp.int32)
    over = mq >= 10 * int(scale)
    e = jnp.where(over, e + 1, e)
    mq = jnp.where(over, mq // 10, mq)
    kind = jnp.where(jnp.isnan(x), NAN, jnp.where(~finite, INF, jnp.where(is_sci, SCI, FIXED)))
    ival = jnp.where(kind == SCI, mq // int(scale), ip.astype(jnp.int32))
    fval = jnp.where(kind == SCI, mq % int(scale), fq)
    return _signed(x, kind, ival, fval, exp=e.astype(jnp.int32))


def fixed_fields(x: jax.Array, decimals: int) -> dict[str, jax.Array]:
    """``fields`` without the scientific notation, for the table path: equal to ``fields``
    wherever ``kind`` is NAN or INF, or FIXED with ``ival < 10**TABLE_DIGITS`` (what
    the table layout accepts); a value >= 1e9 shows as FIXED with a large ``ival`` instead of
    SCI. It skips the logarithm, division and power lookups of the scientific path,
    half the cost of ``fields`` on CPU (parking renders 12 numbers per step)."""
    x = jnp.asarray(x, jnp.float32)
    _, finite, ip, fq = _fixed(x, decimals)
    kind = jnp.where(jnp.isnan(x), NAN, jnp.where(~finite, INF, FIXED))
    return _signed(x, kind, ip.astype(jnp.int32), fq)


def _digits(v: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Decimal digits of ``v >= 0`` right-aligned in ``width`` slots, and their count."""
    pw = jnp.asarray([10**(width - 1 - i) for i in range(width)], jnp.int32)
    dig = (v // pw) % 10
    n = 1 + jnp.sum(v >= jnp.asarray([10**k for k in range(1, width)], jnp.int32))  # digits of v (>= 1)
    return dig.astype(jnp.int32), n.astype(jnp.int32)


def _lay(parts: list[tuple[jax.Array, jax.Array]], width: int, fill: int) -> tuple[jax.Array, jax.Array]:
    """Concatenate variable-length runs (values[T_i], length) into ``width`` slots.

    As ``document._source``: each slot reads from the last run that begins at or before
    it (a chain of selects; an empty run is overridden by the next, which begins where it
    does), out of the runs laid end to end in one flat array."""
    flat = jnp.concatenate([jnp.asarray(p, jnp.int32).reshape(-1) for p, _ in parts])
    pos = jnp.arange(width, dtype=jnp.int32)
    src = jnp.zeros((width,), jnp.int32)
    begin = jnp.int32(0)
    base = 0
    for p, n in parts:
        src = jnp.where(pos >= begin, base - begin, src)
        begin = begin + jnp.asarray(n, jnp.int32)
        base += int(p.shape[-1])
    src = jnp.clip(src + pos, 0, flat.shape[0] - 1)
    return jnp.where(pos < begin, flat[src], fill), begin


def chars(f: dict[str, jax.Array], decimals: int, prefix: str) -> tuple[jax.Array, jax.Array]:
    """The text as bytes uint8[max_chars] and its length (in-graph, one value)."""
    d = decimals
    kind, neg = f["kind"], f["neg"]
    z = jnp.int32(0)
    width = len(prefix) + 1 + max(INT_DIGITS + (d + 1 if d else 0), 1 + (d + 1 if d else 0) + 4)
    pre = (jnp.asarray(list(prefix.encode()) or [32], jnp.int32), jnp.int32(len(prefix)))
    sign = (jnp.asarray([45], jnp.int32), neg.astype(jnp.int32))
    idig, ind = _digits(f["ival"], INT_DIGITS)
    # Right-aligned digits: read them from the left edge of the used ones.
    idx = jnp.arange(INT_DIGITS) + (INT_DIGITS - ind)
    ints = (48 + idig[jnp.clip(idx, 0, INT_DIGITS - 1)], jnp.where(kind <= SCI, ind, z))
    word = jnp.where(kind == NAN, jnp.asarray([110, 97, 110]), jnp.asarray([105, 110, 102]))  # nan / inf
    words = (word, jnp.where(kind >= NAN, 3, 0))
    parts = [pre, sign, ints, words]
    if d:
        fdig, _ = _digits(f["fval"], d)
        parts += [(jnp.asarray([46], jnp.int32), jnp.where(kind <= SCI, 1, 0)),
                  (48 + fdig, jnp.where(kind <= SCI, d, 0))]
    edig, _ = _digits(f["exp"], 2)
    parts += [(jnp.concatenate([jnp.asarray([101, 43], jnp.int32), 48 + edig]), jnp.where(kind == SCI, 4, 0))]
    out, n = _lay(parts, width, 0)
    return out.astype(jnp.uint8), n


# ---------------------------------------------------------------------------
# Tokens


class NumCodec:
    """Token tables of one tokenizer for numbers with ``decimals`` decimals after ``prefix``."""

    def __init__(self, tok: Tokenizer, decimals: int, prefix: str):
        self.tok, self.decimals, self.prefix = tok, decimals, prefix
        self.pad = int(tok.pad_id)
        enc = tok.encode_batch
        # Row v: str(v) (v < 10^4), then "nan", "inf"; variant 1 has the leading space.
        words = [str(v) for v in range(10**TABLE_DIGITS)] + ["nan", "inf"]
        self.int_tab, self.int_len = self._table(enc(words) + enc([" " + w for w in words]), 2 * len(words))
        self.int_tab = self.int_tab.reshape(2, len(words), -1)
        self.int_len = self.int_len.reshape(2, len(words))
        # The prefix: a space joins the digits of an unsigned number; punctuation is its
        # own pre-token, unless a minus sign follows and merges with it.
        self.space = prefix == " "
        self.lead_pos = np.asarray(tok.encode(prefix) if prefix not in ("", " ") else [], np.int32)
        self.lead_neg = np.asarray(tok.encode(prefix + "-"), np.int32)
        if decimals:
            self.point = np.asarray(tok.encode("."), np.int32)
            self.frac_tab, self.frac_len = self._table(enc([f"{v:0{decimals}d}" for v in range(10**decimals)]),
                                                       10**decimals)
        self.e_plus = np.asarray(tok.encode("e") + tok.encode("+"), np.int32)
        self.exp_tab, self.exp_len = self._table(enc([f"{v:02d}" for v in range(100)]), 100)
        self._bpe = _DigitBPE(tok)
        frac_tokens = int(self.frac_len.max()) + len(self.point) if decimals else 0
        self.max_tokens = int(max(len(self.lead_neg), len(self.lead_pos)) + max(INT_DIGITS + 1, int(self.int_len.max()))
                              + frac_tokens + len(self.e_plus) + int(self.exp_len.max()))
        self._check(tok)

    def _table(self, rows: list[list[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        tab = np.full((n, width), self.pad, np.int32)
        for i, r in enumerate(rows):
            tab[i, : len(r)] = r
        return tab, np.asarray([len(r) for r in rows], np.int32)

    def _check(self, tok: Tokenizer):
        """The pre-token split the tables assume must be the tokenizer's: every sample's
        tokens must be the tokens of its parts, encoded one by one."""
        for v in (-12.5, 0.0, 7.0, 123.456, -98765.4321, 123456789.0, 3.5e12, -1e20, np.nan, np.inf, -np.inf):
            body = _py_format(v, self.decimals)
            neg = body.startswith("-")
            body = body[1:] if neg else body
            head = re.match(r"\d+|nan|inf", body).group()
            parts = [self.prefix + "-"] if neg else ([self.prefix] if not self.space and self.prefix else [])
            parts += [(" " if self.space and not neg else "") + head]
            parts += re.findall(r"\d+|\.|e|\+", body[len(head):])
            s = self.prefix + _py_format(v, self.decimals)
            if tok.encode(s) != [i for p in parts for i in tok.encode(p)]:
                raise ValueError(f"tokenizer {tok.name} does not split numbers like GPT-2's byte-level BPE "
                                 f"({s!r}); Num nodes need a byte-level BPE tokenizer")

    def tokens_batch(self, f: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """int32[N, max_tokens] token ids (padded) and int32[N] lengths of a batch of numbers."""
        need_bpe = jnp.any((f["kind"] == FIXED) & (f["ival"] >= 10**TABLE_DIGITS))
        return jax.lax.cond(need_bpe, lambda g: jax.vmap(self._one_bpe)(g), lambda g: jax.vmap(self._one)(g), f)

    def _one(self, f, int_run=None):
        kind, neg = f["kind"], f["neg"]
        space = jnp.where(neg, 0, int(self.space))
        row = jnp.where(kind == NAN, _NAN_ROW, jnp.where(kind == INF, _INF_ROW,
                                                         jnp.minimum(f["ival"], 10**TABLE_DIGITS - 1)))
        tab = jnp.asarray(self.int_tab)[space, row]
        tlen = jnp.asarray(self.int_len)[space, row]
        if int_run is not None:
            big = (kind == FIXED) & (f["ival"] >= 10**TABLE_DIGITS)
            run, rlen = int_run
            width = max(tab.shape[0], run.shape[0])
            tab = jnp.where(big, jnp.pad(run, (0, width - run.shape[0]), constant_values=self.pad),
                            jnp.pad(tab, (0, width - tab.shape[0]), constant_values=self.pad))
            tlen = jnp.where(big, rlen, tlen)
        lead = jnp.where(neg, _pad_to(self.lead_neg, self.lead_pos, self.pad), _pad_to(self.lead_pos, self.lead_neg,
                                                                                         self.pad))
        parts = [(lead, jnp.where(neg, len(self.lead_neg), len(self.lead_pos))), (tab, tlen)]
        num = kind <= SCI
        if self.decimals:
            parts += [(jnp.asarray(self.point), jnp.where(num, len(self.point), 0)),
                      (jnp.asarray(self.frac_tab)[f["fval"]], jnp.where(num, jnp.asarray(self.frac_len)[f["fval"]], 0))]
        sci = kind == SCI
        e = jnp.clip(f["exp"], 0, 99)
        parts += [(jnp.asarray(self.e_plus), jnp.where(sci, len(self.e_plus), 0)),
                  (jnp.asarray(self.exp_tab)[e], jnp.where(sci, jnp.asarray(self.exp_len)[e], 0))]
        return _lay(parts, self.max_tokens, self.pad)

    def _one_bpe(self, f):
        space = jnp.where(f["neg"], 0, int(self.space))
        return self._one(f, self._bpe.digits(f["ival"], space))


def _pad_to(a: np.ndarray, b: np.ndarray, pad: int) -> jax.Array:
    """``a`` padded to the longer of the two lengths (at least 1)."""
    n = max(len(a), len(b), 1)
    return jnp.asarray(np.concatenate([a, np.full((n - len(a),), pad, np.int32)]).astype(np.int32))


class _DigitBPE:
    """The tokenizer's BPE merges restricted to digits and a leading space, run in-graph."""

    def __init__(self, tok: Tokenizer):
        model = json.loads(tok._backend().to_str())["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"Num nodes need a BPE tokenizer; {tok.name} is {model.get('type')}")
        b2u = _byte_to_unicode()
        space, digits = b2u[32], [b2u[48 + i] for i in range(10)]
        allowed = set(digits) | {space}
        vocab = model["vocab"]
        names = sorted(t for t in vocab if t and all(c in allowed for c in t) and space not in t[1:])
        index = {t: i for i, t in enumerate(names)}
        keys, ranks, merged = [], [], []
        r = len(names)
        for rank, m in enumerate(model["merges"]):
            a, b = m if isinstance(m, (list, tuple)) else m.split(" ")
            if a in index and b in index and (a + b) in index:
                keys.append(index[a] * r + index[b])
                ranks.append(rank)
                merged.append(index[a + b])
        order = np.argsort(keys)
        self.keys = np.asarray(keys, np.int64)[order].astype(np.int32)
        self.ranks = np.asarray(ranks, np.int32)[order]
        self.merged = np.asarray(merged, np.int32)[order]
        self.ids = np.asarray([vocab[t] for t in names], np.int32)
        self.r = r
        self.space = index[space]
        self.digit = np.asarray([index[c] for c in digits], np.int32)
        self.pad = int(tok.pad_id)

    def digits(self, v: jax.Array, space: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Tokens (int32[INT_DIGITS + 1]) and count of ``str(v)``, with a leading space if asked."""
        m = INT_DIGITS + 1
        dig, n = _digits(v, INT_DIGITS)
        idx = jnp.arange(INT_DIGITS) + (INT_DIGITS - n)
        sym_d = jnp.asarray(self.digit)[dig[jnp.clip(idx, 0, INT_DIGITS - 1)]]
        sym_d = jnp.where(jnp.arange(INT_DIGITS) < n, sym_d, -1)
        sym = jnp.where(space > 0, jnp.concatenate([jnp.asarray([self.space]), sym_d]),
                        jnp.concatenate([sym_d, jnp.asarray([-1])]))
        keys, ranks, merged = jnp.asarray(self.keys), jnp.asarray(self.ranks), jnp.asarray(self.merged)
        pos_ids = jnp.arange(m - 1)
        big = jnp.int32(2**30)

        def merge_round(_, sym):
            a, b = sym[:-1], sym[1:]
            ok = (a >= 0) & (b >= 0)
            key = jnp.where(ok, a * self.r + b, -1)
            at = jnp.clip(jnp.searchsorted(keys, key), 0, keys.shape[0] - 1)
            rank = jnp.where(ok & (keys[at] == key), ranks[at], big)
            best = jnp.min(rank)
            match = (rank == best) & (best < big)
            # Leftmost, non-overlapping occurrences: every other one in a run of matches.
            last_miss = jax.lax.cummax(jnp.where(match, -1, pos_ids))
            sel = match & ((pos_ids - last_miss) % 2 == 1)
            new = jnp.concatenate([jnp.where(sel, merged[at], a), sym[-1:]])
            dead = jnp.concatenate([jnp.zeros((1,), bool), sel])
            alive = (new >= 0) & ~dead
            cum = jnp.cumsum(alive)
            src = jnp.sum(cum[None, :] <= jnp.arange(m)[:, None], axis=1)  # index of the (j+1)-th alive
            return jnp.where(jnp.arange(m) < cum[-1], new[jnp.clip(src, 0, m - 1)], -1)

        sym = jax.lax.fori_loop(0, m - 1, merge_round, sym)
        count = jnp.sum(sym >= 0)
        return jnp.where(sym >= 0, jnp.asarray(self.ids)[jnp.maximum(sym, 0)], self.pad), count.astype(jnp.int32)


@functools.lru_cache(maxsize=32)
def _codec_cached(tok_id: int, tok: Tokenizer, decimals: int, prefix: str) -> NumCodec:
    return NumCodec(tok, decimals, prefix)


def codec(tok: Tokenizer, decimals: int, prefix: str) -> NumCodec:
    """The (cached) ``NumCodec`` of a tokenizer, precision and prefix."""
    return _codec_cached(id(tok), tok, decimals, prefix)
