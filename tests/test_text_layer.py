"""Text layer: in-graph tokens equal ``tokenizer.encode`` of the host text, always."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from jaxlm_gym.text import (ActionParser, Block, Document, Lit, Paraphrase, Seq, Slot, Switch, digit_choices, digits,
                            get_tokenizer, gpt2)


@pytest.fixture(scope="module")
def tok():
    return gpt2()


def _check_batch(compiled, facts, tok):
    rendered = jax.jit(jax.vmap(compiled.render))(facts)
    texts = compiled.host_batch(facts)
    for i, text in enumerate(texts):
        n = int(rendered["length"][i])
        ids = np.asarray(rendered["tokens"][i][:n]).tolist()
        assert ids == tok.encode(text), text
        assert tok.decode(ids) == text
        assert np.asarray(rendered["mask"][i]).sum() == n
        assert (np.asarray(rendered["tokens"][i][n:]) == compiled.pad_id).all()
    return texts


def test_gpt2_is_the_real_bpe(tok):
    assert tok.vocab_size == 50257 and tok.eos_id == 50256
    assert tok.encode("Hello world") == [15496, 995]
    expected = {"move left\n": [21084, 1364, 198], "move right\n": [21084, 826, 198], "move up\n": [21084, 510, 198],
                "move down\n": [21084, 866, 198], "Yes.\n": [5297, 13, 198], "No.\n": [2949, 13, 198],
                "Wordle:\n": [26449, 293, 25, 198], "b b y b b\n": [65, 275, 331, 275, 275, 198],
                "Success\n": [33244, 198], "Failure\n": [50015, 198], "Start\n": [10434, 198]}
    for text, ids in expected.items():
        assert tok.encode(text) == ids


@pytest.mark.parametrize("env_id", ["maze-fo", "maze-po"])
def test_maze_random_facts_property(env_id, tok):
    """Hundreds of random (also unreachable) fact combinations: tokens == encode(host)."""
    vec = jaxlm_gym.make_vec(env_id, 1, obs_mode="tokens")
    shapes = vec.env.fact_shapes
    highs = {"kind": 4, "walls": 16, "pair_action": 5, "pair_kind": 4, "pair_walls": 16}
    rng = np.random.default_rng(0)
    n = 300
    facts = {k: rng.integers(0, highs.get(k, 13), size=(n, *shape)).astype(np.int32) for k, shape in shapes.items()}
    texts = _check_batch(vec.text, facts, tok)
    assert len(set(texts)) > n // 6  # a varied sample, not one text over and over


def test_synthetic_document_property(tok):
    """Switches, paraphrases, repeats, empty choices and multi-digit numbers."""
    num = digit_choices(1000)
    item = Switch("kind", {
        1: Seq(Lit("Player"), Slot("who", [" A", " B", ""]), Lit(" scored"), Slot("n", num), Lit(" points.\n")),
        2: Paraphrase("para", [Lit("Nothing happened.\n"), Seq(Lit("All quiet"), Lit(".\n")), Lit("No news!\n")]),
        3: Lit("Done\n"),
    })
    doc = Document(Block(Seq(Lit("Round"), Slot("round", num), Lit(":\n"))), Block(item, repeat=6))
    compiled = doc.compile(tok)
    assert compiled.pools == {"para": (3, 6)}
    rng = np.random.default_rng(1)
    n = 400
    facts = {"round": rng.integers(0, 1000, n), "kind": rng.integers(0, 4, (n, 6)), "who": rng.integers(0, 3, (n, 6)),
             "n": rng.integers(0, 1000, (n, 6))}
    facts = jax.tree.map(lambda x: jnp.asarray(x, jnp.int32), facts)
    facts = jax.vmap(compiled.draw)(jax.random.split(jax.random.key(0), n), facts)
    texts = _check_batch(compiled, facts, tok)
    assert any("All quiet." in t for t in texts) and any("No news!" in t for t in texts)
    assert digits(305) == " 3 0 5" and "Round 3 0 5:\n" in {t[: len("Round 3 0 5:\n")] for t in texts} | {
        "Round 3 0 5:\n"}


def test_paraphrase_from_key_or_pinned(tok):
    doc = Document(Paraphrase("p", [Lit("Hi.\n"), Lit("Hello.\n"), Lit("Hey.\n"), Lit("Greetings.\n")]))
    free = doc.compile(tok)
    drawn = [int(free.draw(jax.random.key(i), {})["p"]) for i in range(40)]
    assert set(drawn) == {0, 1, 2, 3}
    assert drawn == [int(free.draw(jax.random.key(i), {})["p"]) for i in range(40)]
    pinned = doc.compile(tok, paraphrase=2)
    assert {pinned.host(pinned.draw(jax.random.key(i), {})) for i in range(10)} == {"Hey.\n"}
    with pytest.raises(ValueError, match="out of range"):
        doc.compile(tok, paraphrase=4)


def test_pieces_must_meet_on_token_boundaries(tok):
    with pytest.raises(ValueError, match="token boundary"):
        Document(Seq(Lit("The goal"), Slot("x", ["s", "ie"]))).compile(tok)
    with pytest.raises(ValueError, match="token boundary"):
        Document(Seq(Lit("position"), Slot("n", ["1", "2"]), Lit("0"))).compile(tok)
    # Strings-only compilation (no tokenizer) does not need the check.
    assert Document(Seq(Lit("The goal"), Slot("x", ["s"]))).compile().host({"x": 0}) == "The goals"


def test_buffer_too_small_is_a_make_time_error():
    vec = jaxlm_gym.make_vec("maze-fo", 2, obs_mode="tokens")
    with pytest.raises(ValueError, match=f"max_tokens=10 is too small.*{vec.max_tokens}"):
        jaxlm_gym.make_vec("maze-fo", 2, obs_mode="tokens", max_tokens=10)
    wide = jaxlm_gym.make_vec("maze-fo", 2, obs_mode="tokens", max_tokens=64)
    obs, _ = wide.reset(jax.random.key(0))
    assert obs["tokens"].shape == (2, 64)
    assert wide.decode(obs) == vec.decode(vec.reset(jax.random.key(0))[0])


def test_missing_facts_name_the_keys(tok):
    compiled = Document(Seq(Lit("x"), Slot("n", [" 1", " 2"]))).compile(tok)
    with pytest.raises(KeyError, match="'n'"):
        compiled.render({})


def test_action_parser_bytes_and_helpers(tok):
    parser = ActionParser(["yes\n", "no\n", "maybe later\n"], tok)
    rows = np.stack([parser.encode(s, 6) for s in ["yes\n", "no\n", "maybe later\n", "yes", "nope\n"]])
    assert np.asarray(parser.parse_batch(jnp.asarray(rows))).tolist() == [0, 1, 2, 3, 3]
    odd = tok.encode("may") + tok.encode("be") + tok.encode(" la") + tok.encode("ter\n")
    row = np.full((1, 8), tok.pad_id, np.int32)
    row[0, : len(odd)] = odd
    assert int(parser.parse_batch(jnp.asarray(row))[0]) == 2
    # Width smaller than an action's own encoding: only the byte path can match it.
    assert int(parser.parse_batch(jnp.asarray([tok.encode("no\n")]))[0]) == 1
    with pytest.raises(ValueError, match="more than width"):
        parser.encode("a very long text that will not fit", 4)


def _tiny_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["The goal is at position 8, 6. Your current position is at position 1, 1 1.",
              "There are walls to your right, above you, below you.", "move left move right move up move down",
              "There is a wall above you. There are no walls near you. Success Failure"] * 50
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")
    hf.save_pretrained(folder)
    return hf


@pytest.mark.parametrize("env_id", ["maze-fo", "maze-po"])
def test_any_hf_tokenizer_or_local_folder(tmp_path, env_id):
    hf = _tiny_tokenizer(tmp_path / "tiny")
    for given in (str(tmp_path / "tiny"), hf):
        vec = jaxlm_gym.make_vec(env_id, 3, obs_mode="tokens", action_mode="tokens", tokenizer=given)
        tok = vec.tokenizer
        assert tok.vocab_size < 1000
        obs, state = vec.reset(jax.random.key(0))
        acts = jnp.asarray(vec.encode_actions(["move up\n", "move left\n", "fly\n"]))
        obs, state, r, *_ , info = vec.step(jax.random.key(1), state, acts)
        assert np.asarray(info["action_index"]).tolist() == [2, 0, 4]
        for i, text in enumerate(vec.decode(obs)):
            ids = np.asarray(obs["tokens"][i][: int(obs["length"][i])]).tolist()
            assert ids == tok.encode(text) and tok.decode(ids) == text


def test_get_tokenizer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not a local folder"):
        get_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="tokenizer must be"):
        get_tokenizer(42)


def test_chunked_layout_equals_testing_every_piece(tok):
    """The layout tests, per chunk of the buffer, only the pieces that can reach it
    (``CompiledText._reach``); with every piece allowed everywhere the tokens are the same,
    and both equal ``tokenizer.encode``: rows with numbers, of different lengths, some
    empty, switches whose fact matches no case."""
    from jaxlm_gym.text import Num

    row = Switch("kind", {0: Seq(Lit(" row"), Slot("a", [" red", " green", " deep blue"]), Lit(":"),
                                 Num("v", 2, " "), Lit(".")),
                          1: Seq(Lit(" skip"), Slot("a", ["", " x", " y"]))})
    doc = Document(Block(Lit("Rows:")), Block(row, repeat=8), Block(Num("total", 0, " ")))
    compiled = doc.compile(tok)
    lo, hi = compiled._reach
    assert (hi - lo < compiled.max_tokens).any(), "some piece should not reach the whole buffer"
    n = 64
    rng = np.random.default_rng(0)
    facts = {"kind": jnp.asarray(rng.integers(0, 3, (n, 8)), jnp.int32),  # 2: no row at all
             "a": jnp.asarray(rng.integers(0, 3, (n, 8)), jnp.int32),
             "v": jnp.asarray(rng.uniform(-50, 50, (n, 8)), jnp.float32),
             "total": jnp.asarray(rng.integers(0, 10**6, (n,)), jnp.float32)}
    texts = _check_batch(compiled, facts, tok)
    assert any(t.count(" row") >= 2 for t in texts) and any(" skip" in t for t in texts)
    chunked = jax.jit(compiled.render_batch)(facts)
    reach, compiled._reach = compiled._reach, (np.zeros_like(lo), np.full_like(hi, compiled.max_tokens))
    try:
        everywhere = jax.jit(compiled.render_batch)(facts)
    finally:
        compiled._reach = reach
    for k in ("tokens", "length", "mask"):
        np.testing.assert_array_equal(chunked[k], everywhere[k])


def test_render_after_continues_a_text(tok):
    """``render_after``: a text cut after ``keep`` tokens and continued with a document's
    text (what ``TaskText.append`` does each step) equals the whole text rendered at once,
    with numbers in the tail and tails of different lengths, some empty."""
    from jaxlm_gym.text import Num

    head = Switch("h", {0: Lit("Log:"), 1: Lit("A longer log header:")})
    tail = Seq(Switch("kind", {0: Seq(Lit(" step"), Num("v", 1, " "), Lit(".")), 1: Lit(" none.")}))
    whole = Document(Block(head), Block(tail)).compile(tok)
    first = Document(Block(head)).compile(tok, max_tokens=whole.max_tokens)
    rest = Document(Block(tail)).compile(tok)
    n = 32
    rng = np.random.default_rng(1)
    facts = {"h": jnp.asarray(rng.integers(0, 2, n), jnp.int32), "kind": jnp.asarray(rng.integers(0, 3, n), jnp.int32),
             "v": jnp.asarray(rng.uniform(-9, 99, n), jnp.float32)}
    start = first.render_batch({"h": facts["h"]})
    got = jax.jit(rest.render_after)({k: facts[k] for k in ("kind", "v")}, start["tokens"], start["length"])
    want = whole.render_batch(facts)
    for k in ("tokens", "length", "mask"):
        np.testing.assert_array_equal(got[k], want[k])
    assert len(set(np.asarray(want["length"] - start["length"]).tolist())) > 2  # tails of several lengths
