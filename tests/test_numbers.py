"""Numbers written in-graph: tokens equal ``tokenizer.encode`` of the host text."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm_gym.text import Block, Document, Lit, Num, Seq, Slot, Switch, gpt2, numbers


@pytest.fixture(scope="module")
def tok():
    return gpt2()


def _values(seed, n):
    rng = np.random.default_rng(seed)
    mags = 10.0 ** rng.uniform(-4, 13, n)
    v = rng.choice([-1.0, 1.0], n) * mags
    v[: n // 4] = rng.integers(-20000, 20000, n // 4) / 100  # short integer parts (table path)
    special = [0.0, -0.0, 0.004, -0.004, 0.005, 9999.995, 10000.0, 123456789.0, 999999999.0, 1e9, -2.5e12,
               3.4e38, np.nan, np.inf, -np.inf, 1.5, 2.5, -7.0]
    return np.concatenate([v, special]).astype(np.float32)


@pytest.mark.parametrize("decimals,prefix", [(0, " "), (2, " "), (4, ""), (3, " ["), (1, "(")])
def test_number_tokens_equal_encode_of_host_text(tok, decimals, prefix):
    vals = _values(decimals, 400)
    codec = numbers.codec(tok, decimals, prefix)
    f = jax.vmap(lambda v: numbers.fields(v, decimals))(vals)
    toks, lens = jax.jit(codec.tokens_batch)(f)
    text, n = jax.vmap(lambda g: numbers.chars(g, decimals, prefix))(f)
    for v, t, k, c, m in zip(vals, np.asarray(toks), np.asarray(lens), np.asarray(text), np.asarray(n)):
        s = bytes(c[:m]).decode()
        assert list(t[:k]) == tok.encode(s), (v, s)
        assert k <= codec.max_tokens and m <= numbers.max_chars(Num("x", decimals, prefix))
        # The documented format (float32 digits; no "-0.00").
        body = s[len(prefix):]
        if np.isnan(v):
            assert body == "nan"
        elif np.isinf(v):
            assert body == ("-inf" if v < 0 else "inf")
        elif abs(float(v)) >= 1e9 + 1:
            assert "e+" in body and abs(float(body) - float(v)) <= abs(float(v)) * 10.0 ** -decimals
        else:
            assert abs(float(body) - float(v)) <= 0.5 * 10.0 ** -decimals * 1.001 + abs(float(v)) * 2e-7
            assert not body.startswith("-") or float(body) != 0


def test_table_path_and_bpe_path_agree(tok):
    """Integer parts below 10^4 come from a table, unless a batch needs the BPE path;
    both give the same tokens."""
    codec = numbers.codec(tok, 2, " ")
    small = np.asarray([0.0, 5.25, -17.5, 999.99, 1234.5, -9999.0], np.float32)
    f = jax.vmap(lambda v: numbers.fields(v, 2))(small)
    table = jax.vmap(codec._one)(f)
    bpe = jax.vmap(codec._one_bpe)(f)
    np.testing.assert_array_equal(table[0], bpe[0])
    np.testing.assert_array_equal(table[1], bpe[1])


def test_in_graph_bpe_matches_tokenizer_on_digit_runs(tok):
    bpe = numbers._DigitBPE(tok)
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.integers(0, 10**9, 300), [0, 7, 10, 100, 1000, 2019, 10000, 99999, 123456789, 111111111,
                                                         100000000, 999999999]]).astype(np.int32)
    for space in (0, 1):
        toks, n = jax.jit(jax.vmap(lambda v: bpe.digits(v, jnp.int32(space))))(vals)
        for v, t, k in zip(vals, np.asarray(toks), np.asarray(n)):
            assert list(t[:k]) == tok.encode((" " if space else "") + str(int(v))), v


def test_numbers_in_a_document(tok):
    doc = Document(
        Seq(Lit("Reward:"), Num("r", 2), Lit(". x ="), Num("x0", 4, " ["), Lit(","), Num("x1", 4), Lit("]\n"),
            Switch("k", {1: Seq(Lit("Got"), Num("r", 1), Lit(" points.")), 2: Lit("Nothing.")})),
        Block(Seq(Lit("Row"), Slot("i", [" a", " b"]), Lit(":"), Num("v", 0), Lit("\n")), repeat=3))
    text = doc.compile(tok)
    rng = np.random.default_rng(1)
    n = 64
    facts = {"r": _values(5, n)[:n], "x0": (rng.normal(size=n) * 50).astype(np.float32),
             "x1": (rng.normal(size=n) * 1e5).astype(np.float32), "k": rng.integers(0, 3, n).astype(np.int32),
             "i": rng.integers(0, 2, (n, 3)).astype(np.int32), "v": (rng.normal(size=(n, 3)) * 100).astype(np.float32)}
    out = jax.jit(text.render_batch)(facts)
    host = text.host_batch(facts)
    assert max(len(tok.encode(h)) for h in host) <= text.max_tokens
    for i, h in enumerate(host):
        k = int(out["length"][i])
        assert list(np.asarray(out["tokens"][i][:k])) == tok.encode(h)
        assert not np.asarray(out["mask"][i][k:]).any()
    one = text.render(jax.tree.map(lambda x: x[3], facts))
    np.testing.assert_array_equal(one["tokens"], out["tokens"][3])


def test_fast_digits_is_a_promise_not_a_limit(tok):
    # Numbers that promise one integer digit: batches within the promise take the table
    # layout with tighter bounds; batches with larger values, nan or inf are still written
    # exactly (the general path), and both give what a document without the promise gives.
    def doc(fast):
        nums = [Num(f"x{i}", 3, " [" if i == 0 else " ", fast_digits=fast) for i in range(6)]
        parts = [nums[0]] + [q for n in nums[1:] for q in (Lit(","), n)]
        return Document(Seq(Lit("Reward:"), Num("r", 4, fast_digits=fast), Lit(". Car:"), *parts, Lit("].\n")))

    fast, plain = doc(1).compile(tok), doc(None).compile(tok)
    assert fast.max_tokens == plain.max_tokens
    width = lambda t: int(np.sum(np.asarray(t._tab["reach"][1]) - np.asarray(t._tab["reach"][0])))  # noqa: E731
    assert width(fast) < width(plain)
    rng = np.random.default_rng(2)
    n = 32
    small = {k: rng.uniform(-9.9, 9.9, n).astype(np.float32) for k in ["r"] + [f"x{i}" for i in range(6)]}
    for name, facts in [("small", small), ("large", {**small, "x3": small["x3"] * 100}),
                        ("nan", {**small, "r": np.where(np.arange(n) == 5, np.nan, small["r"]).astype(np.float32)})]:
        ok = jax.jit(lambda f: fast._tabled_ok(fast._number_fields(jax.vmap(fast.plan)(f)[2])))(facts)
        assert bool(ok) == (name == "small"), name
        got, want = jax.jit(fast.render_batch)(facts), jax.jit(plain.render_batch)(facts)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))
        for i, h in enumerate(fast.host_batch(facts)):
            assert list(np.asarray(got["tokens"][i][: int(got["length"][i])])) == tok.encode(h)
    for bad in (0, 5, True, 1.0):
        with pytest.raises(ValueError, match="fast_digits"):
            Num("x", 2, fast_digits=bad)


def test_number_boundaries_and_bad_nodes_are_make_time_errors(tok):
    with pytest.raises(ValueError, match="token boundary"):
        Document(Seq(Lit("x = ["), Num("x", 2, ""))).compile(tok)  # "[" + "-" would merge
    with pytest.raises(ValueError, match="decimals"):
        Num("x", 7)
    with pytest.raises(ValueError, match="prefix"):
        Num("x", 2, "a")
