"""In-graph number parsing (``jaxlm_gym.text.numparse``) against Python's own ``re``, ``float``
and ``exec`` on thousands of random and adversarial texts."""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm_gym.text import gpt2
from jaxlm_gym.text import numparse as nump

W = 64
BATCH = 1024  # every property batch is padded to this, so each jitted function compiles once
REGEX = r"\[(-?\d+\.?\d*(?:e[-+]?\d+)?),\s*(-?\d+\.?\d*(?:e[-+]?\d+)?)\]"  # LLF-Bench optimization
MIN_NORMAL = float(np.finfo(np.float32).tiny)



@jax.jit
@jax.vmap
def _all(text, length):
    """Both grammars on one batch: one compile serves every property test."""
    return nump.parse_optimization_text(text, length), nump.find_pair_python_list(text, length)


def _opt(text, length):
    return _all(text, length)[0]


def _py(text, length):
    return _all(text, length)[1]


def _bytes(texts, width=W):
    raw = [t.encode("utf-8") for t in texts]
    n = max(BATCH, len(raw))
    out = np.zeros((n, width), np.uint8)
    lengths = np.zeros((n,), np.int32)
    for i, r in enumerate(raw):
        out[i, : min(len(r), width)] = np.frombuffer(r[:width], np.uint8)
        lengths[i] = len(r)
    return jnp.asarray(out), jnp.asarray(lengths)


def _run(fn, texts):
    out = []
    for i in range(0, len(texts), BATCH):
        chunk = texts[i:i + BATCH]
        n = len(chunk)
        out.append(jax.tree.map(lambda a: np.asarray(a)[:n], fn(*_bytes(chunk))))  # noqa: B023 - used at once
    return jax.tree.map(lambda *a: np.concatenate(a), *out)


def _f32(s: str) -> np.float32:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.float32(float(s))


def _same(ours, ref) -> bool:
    """Bit-equal float32, except that results in float32's subnormal range may flush to 0."""
    ours, ref = np.float32(ours), np.float32(ref)
    if np.isnan(ref):
        return bool(np.isnan(ours))
    if 0 < abs(ref) < MIN_NORMAL:
        return ours == 0 or abs(ours - ref) <= abs(ref) * 2**-20 + 2**-149
    return ours.view(np.int32) == ref.view(np.int32)


# ---------------------------------------------------------------------------------------------- generators
def _digits(rng, lo, hi):
    return "".join(rng.choice(list("0123456789"), size=int(rng.integers(lo, hi + 1))))


def _regex_number(rng) -> str:
    """Numbers of the regex's own form, plus near misses (.5, +1, 1E5, 1e, 1.2.3)."""
    r = rng.random()
    if r < 0.08:
        return str(rng.choice([".5", "+1", "1E5", "1e", "1.2.3", "-", "--1", "1e+", "e5", "1..2", "-.5", "1e-"]))
    s = "-" if rng.random() < 0.3 else ""
    s += _digits(rng, 1, 3 if rng.random() < 0.7 else 20)
    if rng.random() < 0.6:
        s += "." + _digits(rng, 0, 4 if rng.random() < 0.7 else 20)
    if rng.random() < 0.25:
        s += "e" + str(rng.choice(["", "-", "+"])) + _digits(rng, 1, 2)
    return s


_PIECES = list("[],.-+eE0123456789 \t\nabxsS") + [
    "reach", "stay", "stop", "Stop", "sto", "x = ", ", ", ",", "  ", "[[", "]]", "1.5", "-0.25", "1e5", "2e-3",
    "e+", "..", "[1, 2]", "[-3.5,4e2]", "reac", "h", "tay", "[1,", " 2]"]


def _regex_text(rng) -> str:
    if rng.random() < 0.5:  # structured: a pair inside some text, sometimes broken
        pair = "[" + _regex_number(rng) + "," + str(rng.choice(["", " ", "  ", "\t", "\n ", " \x0b"])) + \
            _regex_number(rng) + "]"
        pre = "".join(rng.choice(_PIECES, size=int(rng.integers(0, 4))))
        post = "".join(rng.choice(_PIECES, size=int(rng.integers(0, 4))))
        text = pre + pair + post
        if rng.random() < 0.2:  # one random edit
            k = int(rng.integers(0, len(text)))
            text = text[:k] + str(rng.choice(_PIECES[:27])) + text[k + 1:]
    else:
        text = "".join(rng.choice(_PIECES, size=int(rng.integers(1, 14))))
    return text[:W]


def _py_literal(rng) -> str:
    r = rng.random()
    if r < 0.1:
        return str(rng.choice(["01", "00", "0", "007", "01.5", "01e5", "1.", ".5", ".", "1e", "1E+3", "1_0", "inf",
                               "nan", "0x1", "1j", "1-2", "e5", "0e0"]))
    if r < 0.55:
        mant = _digits(rng, 1, 4)
        if mant.startswith("0") and len(mant) > 1 and rng.random() < 0.5:
            mant = mant.lstrip("0") or "0"
        if rng.random() < 0.6:
            mant = str(rng.choice(["", mant])) + "." + _digits(rng, 0 if mant else 1, 4)
    else:
        mant = f"{rng.normal() * 10.0 ** rng.integers(-3, 4):.{int(rng.integers(0, 6))}f}".lstrip("-")
    if rng.random() < 0.2:
        mant += str(rng.choice(["e", "E"])) + str(rng.choice(["", "+", "-"])) + _digits(rng, 1, 2)
    return mant


def _py_text(rng) -> str:
    n = int(rng.choice([1, 2, 2, 2, 3]))
    elems = []
    for _ in range(n):
        signs = "".join(rng.choice(["", "-", "+", "- ", " -"], size=int(rng.choice([0, 0, 0, 1, 2]))))
        elems.append(str(rng.choice(["", " ", "\n"])) + signs + _py_literal(rng) + str(rng.choice(["", "", " "])))
    body = ",".join(elems) + str(rng.choice(["", "", ",", ", "]))
    op, cl = [("[", "]"), ("(", ")"), ("[", ")"), ("[", "]")][int(rng.integers(0, 4))]
    text = str(rng.choice(["", " ", "\n", "x = "])) + op + body + cl + str(rng.choice(["", " ", "\n", ",", ",,", " a"]))
    if rng.random() < 0.15:
        k = int(rng.integers(0, len(text)))
        text = text[:k] + str(rng.choice(list("[](),.-+eE0123456789 \t\n\r\x0ca"))) + text[k + 1:]
    return text


_WS = r"[ \t\n\r\f]*"
_LIT = r"(?:(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|0+|[1-9]\d*)"
_ELEM = _WS + r"(?:[+-]" + _WS + r")*" + _LIT + _WS
_BODY = _ELEM + r"(?:," + _ELEM + r")+(?:," + _WS + r")?"
PY_SUBSET = re.compile(_WS + r"(?:\[" + _BODY + r"\]|\(" + _BODY + r"\))" + _WS + r"(?:," + _WS + r")?", re.ASCII)


def _exec_action(text):
    """The reference TextWrapper's Box parse, or None when it raises."""
    scope = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(f"action = np.array({text})", {"np": np}, scope)  # noqa: S102 - the reference's own rule
            a = scope["action"]
            return [np.float32(float(a[0])), np.float32(float(a[1]))]
    except Exception:  # noqa: BLE001 - any error is an invalid action in the reference
        return None


# ---------------------------------------------------------------------------------------------- properties
def test_optimization_regex_matches_re_search():
    rng = np.random.default_rng(0)
    texts = [_regex_text(rng) for _ in range(4000)]
    texts += ["[1.2.3, 4]", "[[1, 2]", "[1,2] [3,4]", "[1, 2", "[1 ,2]", "[1,\n\t 2]", "[1,2e]", "[1e,2]",
              "[-1.e-5,-0.]", "[1.5e+3, 2e07]", "[ 1, 2]", "[1, 2 ]", "[1,2][3,4]", "[1, [2, 3]", "", "[", "]"]
    texts = [t for t in texts if not any(w in t for w in nump.STOP_WORDS)]  # stop words: next test
    out = _run(_opt, texts)
    hits = 0
    for text, kind, vals in zip(texts, out["kind"], out["x"]):
        m = re.search(REGEX, text, re.ASCII)
        assert (kind == nump.POINT) == (m is not None) and kind != nump.STOP, text
        if m:
            hits += 1
            for g, v in zip(m.groups(), vals):
                assert _same(v, _f32(g)), (text, g, v, _f32(g))
        else:
            assert np.isnan(vals).all()
    assert hits > 800  # the generator really exercises matches


def test_stop_words_and_kind_match_reference():
    rng = np.random.default_rng(1)
    texts = [_regex_text(rng) for _ in range(2000)] + ["Stop", "STAY", "nonstop [1, 2]", "[1, 2] to reach it",
                                                        "stays", "sto p", "[1, 2]"]
    out = _run(_opt, texts)
    for text, x, kind, trunc in zip(texts, out["x"], out["kind"], out["truncated"]):
        stop = any(w in text for w in nump.STOP_WORDS)
        m = re.search(REGEX, text, re.ASCII)
        want = nump.STOP if stop else nump.POINT if m else nump.INVALID
        assert kind == want, text
        assert not trunc
        if want == nump.POINT:
            assert all(_same(v, _f32(g)) for v, g in zip(x, m.groups())), text
        else:
            assert np.isnan(x).all()
    assert not bool(nump.has_stop_word(jnp.zeros((W,), jnp.uint8), jnp.int32(0), ()))  # F2 off: no words
    kinds = dict(zip(texts, out["kind"]))
    assert kinds["Stop"] == nump.INVALID and kinds["STAY"] == nump.INVALID  # case-sensitive, like `in`
    assert kinds["nonstop [1, 2]"] == nump.STOP and kinds["[1, 2] to reach it"] == nump.STOP  # F2


def test_decimal_conversion_is_float32_of_python_float():
    rng = np.random.default_rng(2)
    nums = []
    for _ in range(3000):
        r = rng.random()
        if r < 0.3:  # shortest float32 reprs and long float64 reprs of random magnitudes
            x = np.float32(rng.normal() * 10.0 ** rng.integers(-37, 38))
            s = repr(float(x)) if rng.random() < 0.5 else f"{float(x):.{int(rng.integers(1, 17))}e}"
        elif r < 0.5:  # typical agent numbers
            s = f"{rng.normal() * 10.0 ** rng.integers(-2, 3):.{int(rng.integers(0, 7))}f}"
        else:  # random digit strings, long ones too, with exponents near the float32 limits
            s = _digits(rng, 1, 25) + str(rng.choice(["", "." + _digits(rng, 0, 25)]))
            if rng.random() < 0.6:
                s += "e" + str(int(rng.integers(-70, 60)))
        nums.append(s)
    nums += ["0", "-0", "0.0", "000.000e0", "16777216", "16777217", "16777219", "33554435", "3.4028235e38",
             "3.4028236e38", "3.40282357e38", "3.4028234663852886e38", "1e39", "1e-45", "1e-46", "1.17549435e-38",
             "123456789012345678901234567890", "0.000000000000000000000000000001", "1e0000000000000007",
             "1e-0000000000003", "99999999999999999999e-20", "9" * 40, "1." + "0" * 40, "4294967296", "0.1", "0.2",
             "0.30000000000000004", "1e9999999", "1e-9999999", "2147483647", "8388608.5", "8388609.5"]
    texts = ["[" + (n if re.fullmatch(r"-?\d+\.?\d*(?:e[-+]?\d+)?", n) else "0") + ", 0]" for n in nums]
    texts = [t for t in texts if len(t) <= W]
    out = _run(_opt, texts)
    checked = 0
    for text, kind, vals in zip(texts, out["kind"], out["x"]):
        g = re.search(REGEX, text).group(1)
        assert kind == nump.POINT and _same(vals[0], _f32(g)), (g, vals[0], _f32(g))
        checked += 1
    assert checked > 2500


def test_exact_float32_ties():
    """Decimals exactly halfway between two float32s: ties-to-even up to 9 significant digits,
    at most 1 ulp off beyond (documented)."""
    from decimal import Decimal, getcontext

    getcontext().prec = 100
    rng = np.random.default_rng(4)
    short, long_ = [], []
    while len(short) < 300 or len(long_) < 300:
        odd = int(rng.integers(2**24, 2**25)) | 1  # 25 significant bits, odd: a midpoint
        s = format((Decimal(odd) * Decimal(2) ** int(rng.integers(-30, 70))).normalize(), "f")
        n = len(s.replace(".", "").strip("0"))
        if len(s) <= 50 and n <= 18:
            (short if n <= 9 else long_).append(s)
    out = _run(_opt, ["[" + s + ", 0]" for s in short + long_])
    for i, s in enumerate(short + long_):
        ours, ref = out["x"][i, 0], _f32(s)
        if i < len(short):
            assert _same(ours, ref), (s, ours, ref)
        else:
            assert abs(int(ours.view(np.int32)) - int(ref.view(np.int32))) <= 1, (s, ours, ref)


def test_python_list_matches_subset_grammar_and_exec():
    rng = np.random.default_rng(3)
    texts = [_py_text(rng) for _ in range(3000)]
    texts += ["[0.5, -1]", "[.5,+1e-3]", " [1, 2] ", "(1, 2)", "[1, 2,]", "[1,2],", "[1,2],,", "[01, 2]", "[00, 2]",
              "[- -1, +-2]", "[1, 2, 3]", "x=[1,2]", "[1 2]", "[1,,2]", "[1, 2)", "[1]", "[1,]", "[inf, 1]", "[]",
              "[1e5, 1E-5]", "[1.,.5]", "\f[1,2]\r\n", "\x0b[1,2]", "[1, 2]\x00", "[1,2]  # c", "[1-2, 3]",
              "[01.5, 01e5]", "[0e0, 0]", "[1, 2]]", "[[1, 2]]", "(1, 2,)", "([1, 2])", "[1, 2] [3, 4]"]
    out = _run(_py, texts)
    accepted = 0
    for text, ok, vals in zip(texts, out[0], out[1]):
        want = PY_SUBSET.fullmatch(text) is not None
        assert bool(ok) == want, text
        if ok:
            accepted += 1
            ref = _exec_action(text)  # we only ever accept what the reference's exec accepts
            assert ref is not None, text
            assert _same(vals[0], ref[0]) and _same(vals[1], ref[1]), (text, vals, ref)
        else:
            assert np.isnan(vals).all()
    assert accepted > 600


# ---------------------------------------------------------------------------------------------- edges
def test_overlong_text_prefix_semantics():
    long_tail = " " + "z" * 100
    out = _run(_opt, ["x = [1, 2]" + long_tail, "a" * 60 + "[1, 2]", "a" * 58 + "[1, 2]", "z" * 70 + "stop",
                      "[1, 2] " + "z" * 70 + "stop"])
    assert out["kind"].tolist() == [nump.POINT, nump.INVALID, nump.POINT, nump.INVALID, nump.POINT]
    assert out["truncated"].tolist() == [True, True, False, True, True]
    assert out["x"][0].tolist() == [1.0, 2.0]
    ok, _ = _run(_py, ["[1, 2]" + " " * 70, "[1, 2]" + " " * 58])
    assert ok.tolist() == [False, True]  # the whole text must be seen


def test_non_ascii_text_and_documented_unicode_deviation():
    texts = ["x = [1, 2] — done ✓", "é[3,4]", "[١, 2]", "[1,\u00a02]", "[１, 2]"]
    kinds = _run(_opt, texts)["kind"].tolist()
    assert kinds[:2] == [nump.POINT, nump.POINT]
    # Python's str \d and \s also match these Unicode digits and spaces; we read ASCII only.
    assert all(re.search(REGEX, t) for t in texts[2:]) and kinds[2:] == [nump.INVALID] * 3


def test_bytes_past_length_are_ignored():
    text, _ = _bytes(["[1, 2] stop [9, 9]", "[1, 2] ]"])
    res = jax.tree.map(np.asarray, _all(text, jnp.full((text.shape[0],), 6, jnp.int32)))
    assert res[0]["kind"][:2].tolist() == [nump.POINT] * 2 and res[0]["x"][0].tolist() == [1.0, 2.0]
    assert res[1][0][:2].all() and res[1][1][1].tolist() == [1.0, 2.0]


_py_batch = jax.jit(nump.find_pair_python_list_batch)


def test_python_list_batch_equals_per_row_scan():
    # The batched loop stops after the batch's longest text: results must be the per-row
    # scan's over all W bytes, bit for bit (overlong texts, garbage past the length).
    rng = np.random.default_rng(5)
    texts = [_py_text(rng) for _ in range(1500)] + ["[1, 2]" + " " * 70, "[1, 2]" + " " * 58, "x" * 80, ""]
    want, got = _run(_py, texts), _run(_py_batch, texts)
    assert got[0].tolist() == want[0].tolist() and np.array_equal(got[1], want[1], equal_nan=True)
    assert want[0].sum() > 200
    text, _ = _bytes(["[1, 2] stop [9, 9]", "[1, 2] ]", "[3,4]", "(5,-6)"])
    length = jnp.asarray([6, 6, 5, 6] + [0] * (text.shape[0] - 4), jnp.int32)
    ok, vals = jax.tree.map(np.asarray, _py_batch(text, length))
    assert ok[:4].all() and vals[:4].tolist() == [[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [5.0, -6.0]]


def test_find_pair_dispatch_and_bad_grammar():
    text, length = jnp.zeros((W,), jnp.uint8), jnp.int32(0)
    for grammar in nump.GRAMMARS:  # shapes only: the values are covered above
        found, vals = jax.eval_shape(lambda t, n, g=grammar: nump.find_pair(t, n, g), text, length)
        assert found.shape == () and found.dtype == jnp.bool_ and vals.shape == (2,) and vals.dtype == jnp.float32
    with pytest.raises(ValueError, match="optimization, python_list"):
        nump.find_pair(text, length, "json")


# ---------------------------------------------------------------------------------------------- token parsers
@pytest.fixture(scope="module")
def tok():
    return gpt2()


def _char_tokens(tok, text, width):
    """The text spelled one character per token: a non-canonical tokenization."""
    ids = [i for ch in text for i in tok.encode(ch)]
    out = np.full((width,), tok.pad_id, np.int32)
    out[: len(ids)] = ids
    return out


def test_token_parsers_batched(tok):
    opt = nump.OptimizationActionParser(tok, width=W)
    vec = nump.VectorActionParser(tok, width=W)
    assert opt.max_tokens == W and opt.pad_id == tok.pad_id and opt.invalid == nump.INVALID
    texts = ["x = [1.25, -0.5]", "I'll stop here", "x = [.5, 1]", "[3, 4e-2]\n", "nothing", "x = [12.5,7]",
             "(0.5, -1)", "[0.5, -1] please"]
    width = 32
    tokens = np.stack([opt.encode(t, width) for t in texts] + [_char_tokens(tok, t, width) for t in texts])
    both = jax.jit(lambda t: (nump.parse_optimization_action(t, opt), nump.parse_vector_action(t, vec)))
    res, v = jax.tree.map(np.asarray, both(jnp.asarray(tokens)))
    kinds = [nump.POINT, nump.STOP, nump.INVALID, nump.POINT, nump.INVALID, nump.POINT, nump.INVALID, nump.POINT]
    assert res["kind"].tolist() == kinds * 2
    x = res["x"]
    assert x[0].tolist() == [1.0 + 0.25, -0.5] and x[3].tolist() == [3.0, np.float32(4e-2)]
    assert x[5].tolist() == [12.5, 7.0]
    assert np.array_equal(x[:8], x[8:], equal_nan=True)  # same text, other token ids: same result
    assert v.shape == (16, 2) and v[6].tolist() == [0.5, -1.0] and np.isnan(v[0]).all() and np.isnan(v[7]).all()
    assert np.array_equal(v[:8], v[8:], equal_nan=True)
    one = jax.eval_shape(lambda t: nump.parse_optimization_action(t, opt), jnp.asarray(tokens[0]))
    assert one["x"].shape == (2,) and one["kind"].shape == () and one["kind"].dtype == jnp.int32
    assert jax.eval_shape(lambda t: nump.parse_vector_action(t, vec), jnp.asarray(tokens[0])).shape == (2,)


def test_vector_parser_from_tokens_equals_bytes_path(tok):
    # parse_batch reads the bytes inside the loop (find_pair_python_list_tokens); it must
    # give what the per-row path (tokens -> bytes -> scan) gives, bit for bit, for
    # canonical and one-character-per-token ids, overlong texts and empty ones.
    vec = nump.VectorActionParser(tok, width=W)
    rng = np.random.default_rng(11)
    texts = [_py_text(rng) for _ in range(400)] + ["[1, 2]" + " " * 70, "[1, 2]" + " " * 50, "x" * 80, "",
                                                    "[0.5, -1] please", "(5,-6)"]
    width = 96
    rows = [vec.encode(t, width) if len(tok.encode(t)) <= width else _char_tokens(tok, t[:width], width)
            for t in texts]
    rows += [_char_tokens(tok, t[:width], width) for t in texts[:100]]
    tokens = jnp.asarray(np.stack(rows))
    got = np.asarray(jax.jit(vec.parse_batch)(tokens))
    want = np.asarray(jax.jit(jax.vmap(vec.parse))(tokens))
    assert np.array_equal(got, want, equal_nan=True)
    assert (~np.isnan(got[:, 0])).sum() > 50


def test_token_parser_host_helpers(tok):
    opt = nump.OptimizationActionParser(tok, width=16)
    assert opt.encode("[1, 2]").shape == (16,)
    with pytest.raises(TypeError, match="no finite table"):
        opt.table()
    with pytest.raises(ValueError, match="width"):
        nump.VectorActionParser(tok, width=4)
