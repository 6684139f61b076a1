"""In-graph parsing of numeric action text: token ids -> bytes -> numbers. No ``exec``, no callback.

Two reference behaviours (spec ``llf-bench.md``):

* ``"optimization"`` (§2.3): stop words first, as substrings (``F2``), else the first match of
  ``\\[(-?\\d+\\.?\\d*(?:e[-+]?\\d+)?),\\s*(-?\\d+\\.?\\d*(?:e[-+]?\\d+)?)\\]`` with ``re.search``
  semantics, each group then converted by ``float``. ``.5``, ``+1`` and ``1E5`` do not match (``F6``).
* ``"python_list"`` (§1.3, parking §2.4): ``TextWrapper`` runs ``exec("action = np.array(<text>)")``
  and highway-env reads ``action[0]`` and ``action[1]``. We accept the subset of that made of
  number literals: the WHOLE text, stripped, must be one list or tuple of at least two Python
  float/int literals; the first two are the action. Prose around it is a syntax error in the
  reference, so it is invalid here too.

Everything works on the UTF-8 bytes of the text: ``uint8[W]`` plus the text's full byte length
(``tokens_to_bytes`` gives both; bytes past the length must be 0 or are ignored). Run
``tokens -> bytes`` once and then any number of the matchers below.

Grammar decisions (documented deviations; all are tested):

* Digits are ASCII ``0-9`` only. Python's ``\\d`` on ``str`` also matches other Unicode digits
  (e.g. Arabic-Indic), and ``\\s`` also matches U+0085, U+00A0 and the Unicode spaces; we do not.
  ``\\s`` here is the ASCII part of Python's: ``\\t \\n \\v \\f \\r``, ``\\x1c-\\x1f`` and space.
* Texts longer than ``width`` bytes: ``"optimization"`` searches the first ``width`` bytes
  (stop words and the pair), i.e. it behaves as the reference on ``text[:width]``; a match found
  there is always the reference's match on the full text, but a stop word or a pair that lies
  (partly) past the window is missed. ``truncated`` reports it. ``"python_list"`` needs the whole
  text, so an overlong text is invalid.
* ``"python_list"`` literal subset: an optional run of unary ``+``/``-`` signs (whitespace allowed
  between them, as in Python: ``- -1`` is 1), then ``digits[.digits]``, ``digits.`` or ``.digits``
  with an optional ``[eE][+-]digits`` exponent. Python's rule that ``01`` is a SyntaxError (but
  ``00``, ``01.5`` and ``01e5`` are fine) is kept. Brackets ``[...]`` or ``(...)``, a trailing comma
  inside (``[1, 2,]``) and one after (``[1, 2],``) are accepted, as ``np.array(...)`` does. Not
  accepted although ``exec`` would run them: ``inf``/``nan`` are not even valid there (NameError),
  but names such as ``np.pi``, arithmetic (``1-2``), ``_`` digit separators, hex/octal/binary,
  complex and bool literals, comments and backslash line continuations are; nested lists are not
  2-vectors. Whitespace in the list is Python's: space, ``\\t``, ``\\n``, ``\\r``, ``\\f``.

* ``"python_list"``: a Python int zero keeps no sign (``-0`` is 0.0, ``-0.`` is -0.0), as numpy
  gives it. Lists of more than two numbers are accepted and the first two used (highway-env
  reads ``action[0]``, ``action[1]``); ``[1]`` and ``[]`` are invalid.

How it runs: each grammar is a small DFA over the bytes, stepped by ``lax.scan`` (W steps of
a few dozen integer ops; under ``vmap`` every op is one vector op over the batch). The numbers
are read into integer fields during the same pass and converted to float32 once at the end.
For ``"optimization"`` the pattern has a single ``[``, at its start, so at most one candidate
is alive at a time and the first accepted candidate is ``re.search``'s leftmost match. A
vectorized per-start-position formulation (run lengths plus gathers) was measured 5-10x slower
on CPU. CPU cost at N=16384, W=64 on a 2-core machine, in CPU-µs per env: tokens -> bytes
(L=32 tokens) about 1, optimization parse of the bytes 1.2-1.5, python_list 1.8-2.

Number conversion (``number_to_f32``): the first 18 significant digits are read as two 9-digit
integers, multiplied by a double-float (about 48 bits) power of ten with exact 10 x 12-bit
partial products and compensated (two-sum) additions, then rounded to float32 once. Results are
``np.float32(float(s))`` bit for bit (tested on thousands of inputs), with these exceptions:
(a) a decimal within about 2**-40 (relative) of a midpoint between two float32s, including an
exact midpoint written with more than 9 significant digits (e.g. ``2588.5228271484375``), may
round the other way: at most 1 ulp; exact midpoints with up to 9 significant digits
(``16777217``, ``8388609.5``) do round half to even; (b) results below float32's normal range
(|x| < 1.18e-38) may lose precision or flush to zero (XLA on CPU flushes subnormals). Digits
after the 18th are dropped. Overflow gives ``±inf`` and underflow ``±0``, signed like Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from .actions import pad_tokens, tokens_to_bytes
from .tokenizer import Tokenizer, token_byte_table

GRAMMARS = ("optimization", "python_list")
STOP_WORDS = ("reach", "stay", "stop")
DEFAULT_WIDTH = 64

# Result kinds of the optimization parser.
POINT, STOP, INVALID = 0, 1, 2

_UNROLL = 1  # lax.scan unroll of the byte loops: 2 and 4 measured slower on CPU
_RE_SPACE = np.asarray([9, 10, 11, 12, 13, 28, 29, 30, 31, 32], np.int32)  # ASCII part of Python's \s
_PY_SPACE = np.asarray([9, 10, 12, 13, 32], np.int32)  # whitespace Python's tokenizer skips in brackets
_MAX_DIGITS = 18  # significant digits read; later ones are dropped

# Decimal powers as double-float mantissas in [1, 2) times 2**e: 10**k = (hi + lo) * 2**e.
_K_MIN, _K_MAX = -64, 48


def _pow10_table():
    hi, lo, ex = [], [], []
    for k in range(_K_MIN, _K_MAX + 1):
        f = Fraction(10) ** k
        e = f.numerator.bit_length() - f.denominator.bit_length()
        if Fraction(2) ** e > f:
            e -= 1
        m = f / Fraction(2) ** e
        h = np.float32(float(m))
        hi.append(h)
        lo.append(np.float32(float(m - Fraction(float(h)))))
        ex.append(e)
    return np.asarray(hi, np.float32), np.asarray(lo, np.float32), np.asarray(ex, np.int32)


_P10_HI, _P10_LO, _P10_EXP = _pow10_table()
_P10_INT = np.asarray([10**i for i in range(10)], np.int32)
_P5_INT = np.asarray([5**i for i in range(14)], np.int32)


# ---------------------------------------------------------------------------------------------- helpers
def _clean(text: jax.Array, length: jax.Array) -> jax.Array:
    """int32[W]: the bytes, 0 past ``length`` (callers may hand in garbage there)."""
    return jnp.where(jnp.arange(text.shape[0]) < length, text.astype(jnp.int32), 0)


def _pow2(k: jax.Array) -> jax.Array:
    """2.0**k as float32 for integer k in [-126, 127], built from the bits (exact)."""
    return jax.lax.bitcast_convert_type(((k + 127) << 23).astype(jnp.int32), jnp.float32)


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


# ---------------------------------------------------------------------------------------------- numbers
# A number is read one byte at a time inside the scans below, into integer fields:
#   m1, m2  the first 9 and the next 9 significant digits, as integers (later digits are dropped);
#   k       digits stored (<= 18); nzk: digits stored up to the last non-zero one;
#   p0      value = 0.d1 d2 ... * 10**(p0 + exponent), i.e. the decimal place of d1, plus one;
#   e       exponent digits (saturated at 10**7); (k > 0: a non-zero mantissa digit was read)
#   eneg, neg  exponent and number signs.
FIELDS = ("m1", "m2", "k", "nzk", "p0", "e", "eneg", "neg")
_E_SAT = 10**7


def _zeros_number(like: jax.Array) -> dict:
    return {f: jnp.zeros_like(like) for f in FIELDS}


def _mantissa_digit(ns: dict, d: jax.Array, frac: jax.Array, on: jax.Array) -> dict:
    """``ns`` after reading mantissa digit ``d`` (where ``on``); ``frac``: after the point."""
    nz = d != 0
    sig = (ns["k"] > 0) | nz
    k = ns["k"]
    take = on & sig & (k < _MAX_DIGITS)
    out = dict(ns)
    out["m1"] = jnp.where(take & (k < 9), ns["m1"] * 10 + d, ns["m1"])
    out["m2"] = jnp.where(take & (k >= 9), ns["m2"] * 10 + d, ns["m2"])
    out["nzk"] = jnp.where(take & nz, k + 1, ns["nzk"])
    out["k"] = jnp.where(take, k + 1, k)
    # An integer-part digit from the first significant one on moves the point right; a zero
    # between the point and the first significant digit moves it left.
    move = jnp.where(frac, jnp.where(sig, 0, -1), jnp.where(sig, 1, 0))
    out["p0"] = ns["p0"] + jnp.where(on, move, 0)
    return out


def number_to_f32(ns: dict) -> jax.Array:
    """float32 of a number read into ``FIELDS`` (see the module docstring for the rounding)."""
    p10 = jnp.asarray(_P10_INT)
    k, kk = ns["k"], ns["nzk"]  # kk: significant digits without trailing zeros
    short = kk <= 9
    m1 = jnp.where(short, ns["m1"] // p10[jnp.clip(jnp.minimum(k, 9) - kk, 0, 9)], ns["m1"])
    m2 = jnp.where(short, 0, ns["m2"] // p10[jnp.clip(k - kk, 0, 9)])
    n2 = jnp.maximum(kk - 9, 0)
    p = ns["p0"] + jnp.where(ns["eneg"] > 0, -ns["e"], ns["e"])  # value in [10**(p-1), 10**p)
    q = p - kk  # value = (m1 * 10**n2 + m2) * 10**q

    hi_t, lo_t, ex_t = jnp.asarray(_P10_HI), jnp.asarray(_P10_LO), jnp.asarray(_P10_EXP)
    i2 = jnp.clip(q - _K_MIN, 0, _K_MAX - _K_MIN)
    i1 = jnp.clip(q + n2 - _K_MIN, 0, _K_MAX - _K_MIN)
    e2 = ex_t[i2]
    # Sum the exact partial products (10-bit chunks of m times 12-bit halves of the power's
    # high word) and the small low-word products with compensated (two-sum) additions, relative
    # to 2**e2, then round once. Axis -2: (m1, m2); axis -1: the three 10-bit chunks.
    m = jnp.stack([m1, m2], -1)[..., None]
    idx = jnp.stack([i1, i2], -1)
    hi, lo = hi_t[idx][..., None], lo_t[idx][..., None]
    hh = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(hi, jnp.uint32) & jnp.uint32(0xFFFFF000),
                                      jnp.float32)
    hl = hi - hh
    shifts = jnp.array([20, 10, 0], jnp.int32)
    chunk = ((m >> shifts) & 1023).astype(jnp.float32)
    scale = _pow2(jnp.stack([ex_t[i1] - e2, jnp.zeros_like(e2)], -1)[..., None] + shifts)
    terms = jnp.stack([chunk * hh * scale, chunk * hl * scale, chunk * lo * scale], -1)  # [..., 2, 3, 3]
    terms = jnp.moveaxis(terms.reshape(terms.shape[:-3] + (18,)), -1, 0)

    def add(carry, x):
        s, t = carry
        s, err = _two_sum(s, x)
        return (s, t + err), None

    zero = jnp.zeros(terms.shape[1:], jnp.float32)
    (s, t), _ = jax.lax.scan(add, (zero, zero), terms)
    r = s + t
    a = e2 >> 1
    val = r * _pow2(a) * _pow2(e2 - a)  # exact unless the result is subnormal
    # A value with <= 9 digits and a fraction that is a dyadic rational (m1 divisible by 5**-q)
    # may be an exact float32 tie, which the approximate sum cannot break the right way:
    # m1 / 10**-q = (m1 / 5**-q) * 2**q, and the int -> float conversion rounds ties to even.
    f5 = jnp.asarray(_P5_INT)[jnp.clip(-q, 0, 13)]
    dyadic = short & (q < 0) & (q >= -13) & (m1 % f5 == 0)
    val = jnp.where(dyadic, (m1 // f5).astype(jnp.float32) * _pow2(jnp.clip(q, -13, 0)), val)
    val = jnp.where(p >= 40, jnp.inf, val)
    val = jnp.where((p <= -46) | (kk == 0), 0.0, val)
    return jnp.where(ns["neg"] > 0, -val, val).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------- stop words
def has_stop_word(text: jax.Array, length: jax.Array, words: Sequence[str] = STOP_WORDS) -> jax.Array:
    """bool: some word occurs in the first W bytes as a substring (case-sensitive, as ``in``)."""
    w = text.shape[0]
    raw = [x.encode("utf-8") for x in words if x]
    if not raw:  # no stop words: the F2 rule switched off
        return jnp.zeros((), bool)
    b = jnp.concatenate([_clean(text, length), jnp.zeros((max(len(r) for r in raw),), jnp.int32)])
    hit = jnp.zeros((w,), bool)
    for word in raw:
        h = jnp.ones((w,), bool)
        for k, c in enumerate(word):
            h = h & (b[k:k + w] == c)
        hit = hit | h
    return jnp.any(hit)


# ---------------------------------------------------------------------------------------------- optimization regex
# DFA of the search for '[' NUM ',' \s* NUM ']', NUM = -?\d+\.?\d*(?:e[-+]?\d+)?. Number states
# are sub + 0 for the first number and sub + 8 for the second. The pattern has one '[', at its
# start, so any '[' starts a fresh candidate and at most one candidate is alive: the first
# accepted one is ``re.search``'s (leftmost) match. ACC absorbs, freezing the numbers read.
_IDLE, _ACC = 0, 8
_START, _MINUS, _INT, _FRAC, _ESTART, _ESIGN, _EXP = 1, 2, 3, 4, 5, 6, 7


def _optimization_table() -> np.ndarray:
    space = set(_RE_SPACE.tolist())
    table = np.zeros((16, 256), np.int32)
    for s in range(16):
        for c in range(256):
            if s == _ACC:
                nxt = _ACC
            elif c == ord("["):
                nxt = _START
            elif s == _IDLE:
                nxt = _IDLE
            else:
                base, sub = s & 8, s & 7
                digit = 48 <= c <= 57
                term = c == (ord(",") if base == 0 else ord("]"))
                done = _START + 8 if base == 0 else _ACC
                nxt = _IDLE
                if sub == _START:
                    nxt = base + _MINUS if c == ord("-") else base + _INT if digit else \
                        s if (base == 8 and c in space) else _IDLE
                elif sub == _MINUS:
                    nxt = base + _INT if digit else _IDLE
                elif sub in (_INT, _FRAC):
                    nxt = s if digit else base + _FRAC if (sub == _INT and c == ord(".")) else \
                        base + _ESTART if c == ord("e") else done if term else _IDLE
                elif sub == _ESTART:
                    nxt = base + _ESIGN if c in (ord("+"), ord("-")) else base + _EXP if digit else _IDLE
                elif sub == _ESIGN:
                    nxt = base + _EXP if digit else _IDLE
                elif sub == _EXP:
                    nxt = s if digit else done if term else _IDLE
            table[s, c] = nxt
    return table.reshape(-1)


_OPT_TABLE = _optimization_table()


def find_pair_optimization(text: jax.Array, length: jax.Array):
    """``re.search`` of the optimization regex on the text's first W bytes.

    Returns ``(found bool, values float32[2])``; values are NaN when nothing matched.
    """
    table = jnp.asarray(_OPT_TABLE)
    b = _clean(text, length)
    zero = jnp.int32(0)

    def step(carry, c):
        s, cur, first = carry
        s2 = table[s * 256 + c]
        sub = s2 & 7
        d = c - 48
        save = (s2 == _START + 8) & (s != _START + 8)  # the comma after the first number
        reset = (s2 == _START) | save
        first = {f: jnp.where(save, cur[f], first[f]) for f in FIELDS}
        cur = {f: jnp.where(reset, 0, cur[f]) for f in FIELDS}
        digit = (d >= 0) & (d <= 9)
        cur = _mantissa_digit(cur, d, sub == _FRAC, ((sub == _INT) | (sub == _FRAC)) & digit)
        cur["neg"] = jnp.where(sub == _MINUS, 1, cur["neg"])
        cur["eneg"] = jnp.where((sub == _ESIGN) & (c == 45), 1, cur["eneg"])
        cur["e"] = jnp.where(sub == _EXP, jnp.minimum(cur["e"] * 10 + d, _E_SAT), cur["e"])
        return (s2, cur, first), None

    (s, cur, first), _ = jax.lax.scan(step, (zero, _zeros_number(zero), _zeros_number(zero)), b, unroll=_UNROLL)
    found = s == _ACC
    vals = number_to_f32({f: jnp.stack([first[f], cur[f]]) for f in FIELDS})
    return found, jnp.where(found, vals, jnp.nan)


# ---------------------------------------------------------------------------------------------- python list
# DFA of the whole text: spaces, '[' or '(', elements "signs literal spaces" separated by commas
# (a trailing one allowed), the matching close, spaces, one optional comma, spaces.
(_P_LEAD, _P_FIRST, _P_NEXT, _P_SIGN, _P_INT, _P_DOT, _P_FRAC, _P_ES, _P_EG, _P_EXP, _P_AFTER,
 _P_CLOSED, _P_CLOSED2, _P_DEAD) = range(14)


def _python_table() -> np.ndarray:
    space = set(_PY_SPACE.tolist())
    opens, closes = {ord("["), ord("(")}, {ord("]"), ord(")")}
    table = np.full((16, 256), _P_DEAD, np.int32)
    for s in range(16):
        for c in range(256):
            digit = 48 <= c <= 57
            nxt = _P_DEAD
            end_ok = c in space or c == ord(",") or c in closes  # what may follow a literal
            after_lit = _P_AFTER if c in space else _P_NEXT if c == ord(",") else _P_CLOSED
            if s == _P_LEAD:
                nxt = _P_LEAD if c in space else _P_FIRST if c in opens else _P_DEAD
            elif s in (_P_FIRST, _P_NEXT, _P_SIGN):
                if c in space:
                    nxt = s
                elif c in (ord("+"), ord("-")):
                    nxt = _P_SIGN
                elif digit:
                    nxt = _P_INT
                elif c == ord("."):
                    nxt = _P_DOT
                elif c in closes and s == _P_NEXT:  # "[1, 2,]"
                    nxt = _P_CLOSED
            elif s == _P_INT:
                nxt = _P_INT if digit else _P_FRAC if c == ord(".") else _P_ES if c in (ord("e"), ord("E")) else \
                    after_lit if end_ok else _P_DEAD
            elif s == _P_DOT:
                nxt = _P_FRAC if digit else _P_DEAD
            elif s == _P_FRAC:
                nxt = _P_FRAC if digit else _P_ES if c in (ord("e"), ord("E")) else after_lit if end_ok else _P_DEAD
            elif s == _P_ES:
                nxt = _P_EG if c in (ord("+"), ord("-")) else _P_EXP if digit else _P_DEAD
            elif s == _P_EG:
                nxt = _P_EXP if digit else _P_DEAD
            elif s == _P_EXP:
                nxt = _P_EXP if digit else after_lit if end_ok else _P_DEAD
            elif s == _P_AFTER:
                nxt = _P_AFTER if c in space else _P_NEXT if c == ord(",") else _P_CLOSED if c in closes else _P_DEAD
            elif s == _P_CLOSED:
                nxt = _P_CLOSED if c in space else _P_CLOSED2 if c == ord(",") else _P_DEAD
            elif s == _P_CLOSED2:
                nxt = _P_CLOSED2 if c in space else _P_DEAD
            table[s, c] = nxt
    return table.reshape(-1)


_PY_TABLE = _python_table()


def _py_init(like: jax.Array):
    zero = jnp.zeros_like(like, jnp.int32)
    return (zero, zero, zero, zero, _zeros_number(zero), _zeros_number(zero))


def _py_step(carry, x):
    """One byte of the ``python_list`` DFA; a byte past the text (``on`` False) changes
    nothing that ``_py_result`` reads, so a batch may stop after its longest text."""
    s, kind, zst, count, cur, first = carry
    c, on = x
    s2 = jnp.asarray(_PY_TABLE)[s * 256 + c]
    # The close must match the open; "01" (an int with a leading zero) is a SyntaxError.
    kind = jnp.where((s == _P_LEAD) & (s2 == _P_FIRST), c, kind)
    into_close = (s2 == _P_CLOSED) & (s != _P_CLOSED)
    bad_close = into_close & (c != kind + jnp.where(kind == 40, 1, 2))  # '('+1 = ')', '['+2 = ']'
    zst = jnp.where((s2 == _P_INT) & (s != _P_INT), jnp.where(c == 48, 1, 0),
                    jnp.where((s2 == _P_INT) & (zst == 1) & (c != 48), 2, zst))
    lit = (s == _P_INT) | (s == _P_FRAC) | (s == _P_EXP)
    ends = lit & ((s2 == _P_AFTER) | (s2 == _P_NEXT) | (s2 == _P_CLOSED))
    bad_zero = ends & (s == _P_INT) & (zst == 2)
    s2 = jnp.where(bad_close | bad_zero, _P_DEAD, s2)
    s2 = jnp.where(on, s2, s)
    ends = ends & on & (s2 != _P_DEAD)
    count = count + ends
    # Python's int zero has no sign: "-0" is 0 but "-0." is -0.0.
    cur["neg"] = jnp.where(ends & (count <= 2) & (s == _P_INT) & (cur["k"] == 0), 0, cur["neg"])
    first = {f: jnp.where(ends & (count == 1), cur[f], first[f]) for f in FIELDS}
    keep = count < 2  # after two elements, cur keeps the second one
    reset = keep & ((s2 == _P_FIRST) | (s2 == _P_NEXT)) & (s2 != s)
    cur = {f: jnp.where(reset, 0, cur[f]) for f in FIELDS}
    d = c - 48
    digit = (d >= 0) & (d <= 9)
    upd = keep & on
    cur = _mantissa_digit(cur, d, s2 == _P_FRAC, upd & ((s2 == _P_INT) | (s2 == _P_FRAC)) & digit)
    cur["neg"] = jnp.where(upd & (s2 == _P_SIGN) & (c == 45), 1 - cur["neg"], cur["neg"])
    cur["eneg"] = jnp.where(upd & (s2 == _P_EG) & (c == 45), 1, cur["eneg"])
    cur["e"] = jnp.where(upd & (s2 == _P_EXP), jnp.minimum(cur["e"] * 10 + d, _E_SAT), cur["e"])
    return (s2, kind, zst, count, cur, first), None


def _py_result(carry, length: jax.Array, w: int):
    s, _, _, count, cur, first = carry
    valid = ((s == _P_CLOSED) | (s == _P_CLOSED2)) & (count >= 2) & (length <= w)
    vals = number_to_f32({f: jnp.stack([first[f], cur[f]], -1) for f in FIELDS})
    return valid, jnp.where(valid[..., None], vals, jnp.nan)


def find_pair_python_list(text: jax.Array, length: jax.Array):
    """The whole text is a list/tuple of >= 2 number literals: ``(found, values float32[2])``."""
    w = text.shape[0]
    b = _clean(text, length)
    live = jnp.arange(w) < length
    carry, _ = jax.lax.scan(_py_step, _py_init(length), (b, live), unroll=_UNROLL)
    return _py_result(carry, length, w)


def _py_batch_loop(byte_at, length: jax.Array, width: int):
    """The ``python_list`` DFA over a batch, byte by byte, stopping after the batch's
    longest text (at most ``width`` bytes). ``byte_at(i) -> int32[N]``: byte ``i`` of every
    text (any value past a text's length: it is masked here)."""
    steps = jnp.minimum(jnp.max(length, initial=0), width)

    def body(loop):
        i, carry = loop
        on = i < length
        carry, _ = _py_step(carry, (jnp.where(on, byte_at(i), 0), on))  # every op is elementwise over the batch
        return i + 1, carry

    _, carry = jax.lax.while_loop(lambda loop: loop[0] < steps, body, (jnp.int32(0), _py_init(length)))
    return _py_result(carry, length, width)


def find_pair_python_list_batch(text: jax.Array, length: jax.Array):
    """``find_pair_python_list`` of a batch (``uint8[N, W]``, ``int32[N]``): ``(bool[N],
    float32[N, 2])``. The byte loop stops after the batch's longest text instead of
    running all W steps (parking's actions are ~12 of 64 bytes)."""
    b = text.astype(jnp.int32).T  # [W, N]: one row per loop step
    return _py_batch_loop(lambda i: b[i], length.astype(jnp.int32), text.shape[1])


def find_pair_python_list_tokens(tokens: jax.Array, byte_table: jax.Array, byte_lengths: jax.Array, pad_id: int,
                                 width: int):
    """``find_pair_python_list_batch`` straight from token ids (int32[N, L], ending at the
    first ``pad_id``), with the bytes of the first ``width`` read as the loop reaches them:
    byte ``i`` of a text comes from its token ``k`` = the number of tokens that end at or
    before ``i``. Same result as ``tokens_to_bytes`` then the batch parser, without the
    [width, L] byte layout per env, which cost more than the parse itself (parking: ~12
    bytes of a 64-byte window)."""
    tokens = tokens.astype(jnp.int32)
    n, size = tokens.shape
    live = jnp.cumprod(tokens != pad_id, axis=1).astype(bool)
    blen = jnp.where(live, byte_lengths[tokens], 0)
    ends = jnp.cumsum(blen, axis=1)
    begins = ends - blen
    rows = jnp.arange(n)

    def byte_at(i):
        k = jnp.minimum(jnp.sum(ends <= i, axis=1), size - 1)
        off = jnp.clip(i - begins[rows, k], 0, byte_table.shape[1] - 1)
        return byte_table[tokens[rows, k], off].astype(jnp.int32)

    length = ends[:, -1] if size else jnp.zeros((n,), jnp.int32)
    return _py_batch_loop(byte_at, length, width)


def find_pair(text: jax.Array, length: jax.Array, grammar: str = "optimization"):
    """``(found bool, values float32[2])`` of one text (``uint8[W]`` bytes and its byte length).

    ``grammar``: ``"optimization"`` (first regex match, §2.3) or ``"python_list"`` (the whole
    text is a list of numbers, §1.3). Values are NaN when not found.
    """
    if grammar == "optimization":
        return find_pair_optimization(text, length)
    if grammar == "python_list":
        return find_pair_python_list(text, length)
    raise ValueError(f"unknown grammar {grammar!r}; valid: {', '.join(GRAMMARS)}")


def parse_optimization_text(text: jax.Array, length: jax.Array, words: Sequence[str] = STOP_WORDS,
                            stop_first: bool = True) -> dict:
    """The optimization task's action rule on bytes: ``{"x": float32[2], "kind": int32,
    "truncated": bool}``; kind ``POINT`` (0), ``STOP`` (1) or ``INVALID`` (2). ``x`` is NaN
    unless kind is POINT. ``stop_first`` (the reference, F2): a stop word anywhere wins over a
    point; ``False``: a point wins, and a stop word counts only in a text with no point."""
    found, vals = find_pair_optimization(text, length)
    stop = has_stop_word(text, length, words)
    if not stop_first:
        stop = stop & ~found
    kind = jnp.where(stop, STOP, jnp.where(found, POINT, INVALID)).astype(jnp.int32)
    x = jnp.where(kind == POINT, vals, jnp.nan)
    return {"x": x, "kind": kind, "truncated": length > text.shape[0]}


def parse_vector_text(text: jax.Array, length: jax.Array) -> jax.Array:
    """The parking action on bytes: float32[2], NaN where the text is not a number list."""
    return find_pair_python_list(text, length)[1]


# ---------------------------------------------------------------------------------------------- token parsers
class _TokenParser:
    """Shared token plumbing: the byte table and the ``ActionParser``-like host helpers."""

    def __init__(self, tokenizer: Tokenizer, width: int = DEFAULT_WIDTH):
        if int(width) < 8:
            raise ValueError(f"width={width} bytes is too small for a number pair; use 8 or more")
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_id)
        self.width = int(width)
        # A buffer of ``width`` tokens holds any text the window can see (real tokens are >= 1 byte).
        self.max_tokens = self.width
        self._table, self._lengths = token_byte_table(tokenizer, self.width)

    def bytes(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """int32[L] -> (uint8[width] first bytes of the text, int32 full byte length)."""
        return tokens_to_bytes(tokens, jnp.asarray(self._table), jnp.asarray(self._lengths), self.pad_id,
                               self.width)

    def parse_batch(self, tokens: jax.Array):
        """int32[N, L] -> the ``parse`` result for every row."""
        return jax.vmap(self.parse)(tokens)

    def encode(self, text: str, width: int | None = None) -> np.ndarray:
        """Host helper: ``text`` as an int32[width] token buffer (default ``max_tokens``)."""
        return pad_tokens(self.tokenizer, text, self.max_tokens if width is None else int(width))

    def table(self, width: int | None = None) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} parses free text: there is no finite table of actions")


class OptimizationActionParser(_TokenParser):
    """LLF optimization actions: ``parse(tokens int32[L]) -> {"x": float32[2], "kind": int32,
    "truncated": bool}`` (see ``parse_optimization_text``); ``parse_batch`` maps int32[N, L]."""

    POINT, STOP, INVALID = POINT, STOP, INVALID

    def __init__(self, tokenizer: Tokenizer, width: int = DEFAULT_WIDTH, stop_words: Sequence[str] = STOP_WORDS,
                 stop_first: bool = True):
        super().__init__(tokenizer, width)
        self.stop_words = tuple(stop_words)
        self.stop_first = bool(stop_first)
        self.invalid = INVALID

    def parse(self, tokens: jax.Array) -> dict:
        text, length = self.bytes(tokens)
        return parse_optimization_text(text, length, self.stop_words, self.stop_first)


class VectorActionParser(_TokenParser):
    """Box(2) actions written as a Python list (parking): ``parse(tokens int32[L]) -> float32[2]``,
    NaN when the text is not such a list; ``parse_batch`` maps int32[N, L] -> float32[N, 2]."""

    def parse(self, tokens: jax.Array) -> jax.Array:
        text, length = self.bytes(tokens)
        return parse_vector_text(text, length)

    def parse_batch(self, tokens: jax.Array) -> jax.Array:
        return find_pair_python_list_tokens(tokens, jnp.asarray(self._table), jnp.asarray(self._lengths),
                                            self.pad_id, self.width)[1]


def parse_optimization_action(tokens: jax.Array, parser: OptimizationActionParser) -> dict:
    """int32[L] or int32[N, L] tokens -> the optimization action dict (batched if 2-D)."""
    return parser.parse_batch(tokens) if tokens.ndim == 2 else parser.parse(tokens)


def parse_vector_action(tokens: jax.Array, parser: VectorActionParser) -> jax.Array:
    """int32[L] or int32[N, L] tokens -> float32[2] or float32[N, 2], NaN where invalid."""
    return parser.parse_batch(tokens) if tokens.ndim == 2 else parser.parse(tokens)
