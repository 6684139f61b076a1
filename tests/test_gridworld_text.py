"""Text of llf-gridworld-v0 (``jaxlm_gym/tasks/gridworld.py``): exact host strings for
hand-computed states, token ids equal to the tokenizer's encoding of the host text, every
instruction and feedback type, paraphrase pinning, action texts and the gymnasium API
(whose ``check_env`` runs for every LLF id in ``tests/test_gym.py``).

Compiles dominate the cost, so the core runs as ONE jitted rollout (instruction "c",
feedback "a", wordings pinned to 0) and the other feedback configurations render the facts
of that rollout with their own text (``_render``): their text reads no fact that their core
would compute differently (see each test). The real "p"/"m" core runs in the gym test.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlm_gym
from jaxlm_gym import gym as llf_gym
from jaxlm_gym.feedback import MIN_WORDINGS
from jaxlm_gym.tasks import gridworld as gt
from pure_envs import gridworld as gw

ID = "llf-gridworld-v0"
N, STEPS = 64, 25
KINDS = ("r", "hp", "hn", "fp", "fn")
NAME_RE = re.compile(r"(?:kitchen|bedroom|lobby|toilet|balcony|corridor|drawing room)-\d+")
DIR_RE = re.compile(r"\b(north|east|west|south)\b")


# ---------------------------------------------------------------------------- the rollout


@pytest.fixture(scope="module")
def run():
    """64 envs x 25 steps: every 4th env follows the expert (reaches the goal, then the
    no-op cases), the others act at random over 0..4 (4 = text that is no action). Every
    env is truncated at t = 20 and auto-resets inside the rollout."""
    vec = jaxlm_gym.make_vec(ID, N, obs_mode="both", instruction_type="c", feedback_type="a", paraphrase=0)

    @jax.jit
    def roll(key):
        k0, k1 = jax.random.split(key)
        obs, st = vec.reset(k0)

        def body(st, k):
            ka, ks = jax.random.split(k)
            expert = jax.vmap(vec.env.expert_action)(st)
            rand = jax.random.randint(ka, (N,), 0, 5)
            a = jnp.where((jnp.arange(N) % 4 == 0) & (expert >= 0), expert, rand).astype(jnp.int32)
            o, st2, r, te, tr, info = vec.step(ks, st, a)
            return st2, (o, st, st2, a, r, te | tr, info["expert_action"])

        _, outs = jax.lax.scan(body, st, jax.random.split(k1, STEPS))
        return obs, st, outs

    obs0, st0, (obs, prev, new, act, rew, done, expert) = jax.device_get(roll(jax.random.key(0)))
    # Rows: reset (t = 0), then the steps; one host decode of all rows.
    facts = {k: np.concatenate([obs0["facts"][k][None], obs["facts"][k]]).reshape((-1,) + obs0["facts"][k].shape[1:])
             for k in obs0["facts"]}
    tokens = np.concatenate([obs0["tokens"][None], obs["tokens"]]).reshape(-1, obs0["tokens"].shape[-1])
    length = np.concatenate([obs0["length"][None], obs["length"]]).reshape(-1)
    texts = vec.text.host_batch(facts)
    return {"vec": vec, "st0": st0, "prev": prev, "new": new, "act": act, "rew": rew, "done": done,
            "expert": expert, "facts": facts, "tokens": tokens, "length": length, "texts": texts}


def _row(t, i):
    """Row of env i after step t (t = -1: the reset)."""
    return (t + 1) * N + i


def _pick(tree, t, i):
    return jax.tree.map(lambda x: np.asarray(x)[t, i] if t is not None else np.asarray(x)[i], tree)


def _tokens_match(tok, texts, tokens, length):
    enc = tok.encode_batch(list(texts))
    bad = [j for j, e in enumerate(enc) if e != tokens[j, : length[j]].tolist()]
    assert not bad, (len(bad), texts[bad[0]])


# ---------------------------------------------------------------------------- expected text (pinned 0)

D, R = gw.DIRECTIONS, gw.ROOM_NAMES


def _room_text(s) -> str:
    room = int(s.room)
    out = f"You are in the {R[s.name[room]]}."
    if s.obj[room] >= 0:
        out += f" There is a {gw.OBJECTS[s.obj[room]]} here."
    if room == s.goal:
        out += " The treasure is in this room!"
    for d in s.door_order[room]:
        if d >= 0:
            out += f" A door to the {D[d]} leads to the {R[s.name[s.adj[room, d]]]}."
    return out


def _instruction_text(s, shown=None, intro=None) -> str:
    """Instruction "c" (or "p" with ``shown`` moves) of state ``s``, with the reference's
    ordinals (F10): move 0 opening, the last move continuation, the others closing."""
    L = int(s.path_len)
    shown = L if shown is None else shown
    intro = (shown >= 1) if intro is None else intro
    out = gt.INSTRUCTION_B[0] + (gt.PATH_INTRO[0] if intro else "")
    for t in range(shown):
        o = gw.ORD_FIRST if t == 0 else gw.ORD_NEXT if t == L - 1 else gw.ORD_FINAL
        pre, mid, post = gt.PATH_MOVE[o][0]
        out += f"{pre} {D[s.path_dir[t]]}{mid} {R[s.name[s.path_room[t]]]}{post}"
    return out


def _say(kind, case, *slots, pp=0) -> str:
    words = gt.FEEDBACK[kind][case][pp]
    return words[0] + "".join(" " + v + w for v, w in zip(slots, words[1:]))


def _step_text(prev, new, a, r, f) -> str:
    """Feedback 'a' and observation after action ``a`` (not an auto-reset step)."""
    if a == 4:
        return gt.INVALID[0] + "\n"
    old, room = int(prev.room), int(new.room)
    gold_old, gold_new = int(prev.gold[old]), int(new.gold[room])
    msgs = [_say("r", 1, f"{r:.1f}")]
    if prev.visited:
        msgs.append(_say("hp", gw.HP_NOOP))  # F9: no hn message with 'a'
    else:
        msgs.append(_say("hp", gw.HP_FOLLOWED) if a == gold_old else
                    _say("hp", gw.HP_SHOULD, R[prev.name[old]], D[gold_old]))
        avoid = int(f["hn_avoid"])
        assert avoid != gold_old and 0 <= avoid < 4
        msgs.append(_say("hn", gw.HN_TOOK if a == avoid else gw.HN_AVOIDED, D[avoid]))
    if new.visited:
        msgs += [_say("fp", gw.F_NOOP), _say("fn", gw.F_NOOP)]
    else:
        avoid = int(f["fn_avoid"])
        assert avoid != gold_new and 0 <= avoid < 4
        msgs += [_say("fp", gw.F_ADVICE, R[new.name[room]], D[gold_new]),
                 _say("fn", gw.F_ADVICE, R[new.name[room]], D[avoid])]
    if prev.adj[old, a] >= 0:
        seen = _room_text(new)
    else:
        assert room == old
        seen = f"You are still in the {R[new.name[room]]}: there is no door to the {D[a]}."
    return " ".join(msgs) + "\n" + seen


def test_host_text_of_every_step_is_the_hand_computed_one(run):
    texts = run["texts"]
    for i in range(N):
        assert texts[_row(-1, i)] == _instruction_text(_pick(run["st0"], None, i)) + "\n" + \
            _room_text(_pick(run["st0"], None, i))
    kinds = set()
    for t in range(STEPS):
        for i in range(N):
            prev, new = _pick(run["prev"], t, i), _pick(run["new"], t, i)
            a, j = int(run["act"][t, i]), _row(t, i)
            f = {k: v[j] for k, v in run["facts"].items()}
            if run["done"][t, i]:  # auto-reset: the new episode's first observation
                want = _instruction_text(new) + "\n" + _room_text(new)
            else:
                want = _step_text(prev, new, a, float(run["rew"][t, i]), f)
                kinds.add((a == 4, bool(prev.visited), bool(prev.adj[prev.room, a] >= 0) if a < 4 else None))
            assert texts[j] == want, (t, i, texts[j], want)
    # The rollout saw invalid turns, moves and blocked moves before and after the goal.
    assert {(True, False, None), (False, False, True), (False, False, False), (False, True, True),
            (False, True, False)} <= kinds
    assert run["done"].any() and (run["rew"] == 1.0).any()


def test_tokens_equal_the_encoding_of_the_host_text(run):
    _tokens_match(run["vec"].tokenizer, run["texts"], run["tokens"], run["length"])


def test_expert_moves_get_the_followed_message_and_the_next_gold_direction(run):
    followed = gt.FEEDBACK["hp"][gw.HP_FOLLOWED][0][0]
    n = 0
    for t in range(1, STEPS):
        for i in range(0, N, 4):
            prev, a = _pick(run["prev"], t, i), int(run["act"][t, i])
            if prev.visited or run["done"][t, i] or run["done"][t - 1, i]:
                continue
            assert a == int(run["expert"][t - 1, i])  # the expert action of the last step's info
            text = run["texts"][_row(t, i)]
            assert followed in text and "should have gone" not in text
            new = _pick(run["new"], t, i)
            if not new.visited:
                assert f"From the {R[new.name[new.room]]}, go {D[int(run['expert'][t, i])]}." in text
            n += 1
    assert n > 50


def test_blocked_move_and_door_list(run):
    seen = 0
    for t in range(STEPS):
        for i in range(N):
            prev, a = _pick(run["prev"], t, i), int(run["act"][t, i])
            if a == 4 or run["done"][t, i]:
                continue
            obs = run["texts"][_row(t, i)].split("\n", 1)[1]
            if prev.adj[prev.room, a] < 0:
                assert obs == f"You are still in the {R[prev.name[prev.room]]}: there is no door to the {D[a]}."
                seen += 1
            else:
                # One door sentence per door, in the core's order, naming the room behind it.
                f = {k: v[_row(t, i)] for k, v in run["facts"].items()}
                doors = re.findall(r"A door to the (\w+) leads to the ([\w ]+-\d+)\.", obs)
                want = [(D[d], R[n]) for d, n in zip(f["door_dir"], f["door_name"]) if d >= 0]
                assert doors == want and len(doors) == int(f["num_doors"]) >= 1
    assert seen > 20


def test_c_instruction_lists_every_move_of_the_path(run):
    for i in range(N):
        s = _pick(run["st0"], None, i)
        instr = run["texts"][_row(-1, i)].split("\n")[0]
        path = instr[len(gt.INSTRUCTION_B[0]):]
        assert NAME_RE.findall(path) == [R[s.name[r]] for r in s.path_room[: s.path_len]]
        assert DIR_RE.findall(path) == [D[d] for d in s.path_dir[: s.path_len]]
        # F10 reproduced: the treasure is mentioned in the sentences of the middle moves.
        assert path.count("treasure") == 1 + max(int(s.path_len) - 2, 0)


def test_p_instruction_shows_the_first_moves_only(run):
    """The instruction of type "p" is the same template as "c"; the core sets how many
    moves are shown (``path_shown``, ``path_intro``). Render each count k."""
    vec, facts = run["vec"], run["facts"]
    L = facts["path_len"]
    prepare = jax.jit(jax.vmap(vec.task_text.prepare))
    for frac in (0.0, 0.3, 0.5, 1.0):
        # Every row is changed (same shapes as the rollout: the compiled host text is reused);
        # only the reset rows write the instruction.
        k = np.floor(L * frac).astype(np.int32)
        f = dict(facts)
        f["path_shown"], f["path_intro"] = k, (k >= 1).astype(np.int32)
        f["path_ord"] = np.where(np.arange(gw.MAX_PATH)[None] < k[:, None], facts["path_ord"], -1).astype(np.int32)
        f = jax.device_get(prepare(f))
        texts = vec.text.host_batch(f)
        for i in range(N):
            s = _pick(run["st0"], None, i)
            assert texts[i] == _instruction_text(s, int(k[i])) + "\n" + _room_text(s)
        steps = np.flatnonzero(facts["at_reset"] == 0)
        assert [texts[j] for j in steps] == [run["texts"][j] for j in steps]


# ---------------------------------------------------------------------------- other configurations


def _render(run, feedback_type, paraphrase=None, key=1, **fix):
    """The rollout's facts rendered by the text of instruction "b" and ``feedback_type``:
    ``(facts, texts, tokens, lengths)``."""
    vec = jaxlm_gym.make_vec(ID, N, obs_mode="both", instruction_type="b", feedback_type=feedback_type,
                             paraphrase=paraphrase)
    core = {k: v for k, v in run["facts"].items() if k in gw.FACTS}
    core.update(fix)
    text = vec.text

    @jax.jit
    def view(facts, key):
        facts = jax.vmap(text.draw)(jax.random.split(key, facts["at_reset"].shape[0]), facts)
        facts = jax.vmap(vec.task_text.prepare)(facts)
        return facts, text.render_batch(facts)

    facts, out = jax.device_get(view(core, jax.random.key(key)))
    texts = text.host_batch(facts)
    _tokens_match(vec.tokenizer, texts, out["tokens"], out["length"])
    return vec, facts, texts


def _message(kind, f, j) -> str:
    """The message of ``kind`` in row j (its case, drawn wording and slots), '' if none."""
    case = int(f[f"fb_{kind}"][j])
    if case == 0:
        return ""
    pp = int(f[f"pp_{kind}"][j])
    room = lambda k: R[f[k][j]]
    d = lambda k: D[f[k][j]]
    slots = {("r", 1): lambda: (f"{float(f['reward'][j]):.1f}",),
             ("hp", gw.HP_SHOULD): lambda: (room("old_room_name"), d("old_gold")),
             ("hn", gw.HN_AVOIDED): lambda: (d("hn_avoid"),), ("hn", gw.HN_TOOK): lambda: (d("hn_avoid"),),
             ("fp", gw.F_ADVICE): lambda: (room("new_room_name"), d("new_gold")),
             ("fn", gw.F_ADVICE): lambda: (room("new_room_name"), d("fn_avoid"))}.get((kind, case), lambda: ())()
    return _say(kind, case, *slots, pp=pp)


def _check_composition(run, facts, texts, shown):
    """Each row = instruction (reset) or the messages of ``shown(facts, j)`` joined by one
    space, or the invalid message; then the observation of the pinned rollout."""
    for j, text in enumerate(texts):
        full = run["texts"][j]
        if facts["at_reset"][j]:
            assert text == gt.INSTRUCTION_B[facts["pp_instruction"][j]] + "\n" + full.split("\n", 1)[1]
            continue
        if facts["invalid"][j]:
            assert text == gt.INVALID[facts["pp_invalid"][j]] + "\n"
            continue
        fb = " ".join(m for m in (_message(k, facts, j) for k in shown(facts, j)) if m)
        assert text == (fb + "\n" if fb else "") + full.split("\n", 1)[1], (text, fb)


def test_feedback_set_in_reference_order(run):
    # hp and fn only: the hn field (the only one an 'a' core computes differently, F9) is not shown.
    _, facts, texts = _render(run, ["fn", "hp"])
    _check_composition(run, facts, texts, lambda f, j: ("hp", "fn"))
    assert len({int(x) for x in facts["pp_hp"]}) == 4  # unpinned: the wordings are drawn


def test_feedback_none_still_reports_invalid_text(run):
    _, facts, texts = _render(run, "n")
    _check_composition(run, facts, texts, lambda f, j: ())
    assert any(facts["invalid"]) and all(t.startswith(("You are", *gt.INVALID, *gt.INSTRUCTION_B)) for t in texts)


def test_mixture_draws_one_kind_and_pinning_fixes_the_wordings(run):
    # An 'm' core keeps hn's no-op after the goal (F9 applies only when hp is shown too).
    fix = {"fb_hn": np.where(run["facts"]["fb_hp"] == gw.HP_NOOP, gw.HN_NOOP, run["facts"]["fb_hn"])}
    vec, facts, texts = _render(run, "m", paraphrase=3, **fix)
    _check_composition(run, facts, texts, lambda f, j: (KINDS[f["fb_mix"][j]],))
    for k in vec.text.pools:
        if k != "fb_mix":
            assert (facts[k] == 3).all(), k
    assert set(np.unique(facts["fb_mix"])) == set(range(5))  # the kind is content: never pinned
    with pytest.raises(ValueError, match="out of range"):
        jaxlm_gym.make_vec(ID, 2, obs_mode="both", paraphrase=4)


def test_pinned_rollout_uses_wording_zero(run):
    for k in run["vec"].text.pools:
        assert (run["facts"][k] == 0).all(), k


def test_every_pool_has_enough_wordings(run):
    assert len(gt.INSTRUCTION_B) >= MIN_WORDINGS and len(gt.PATH_INTRO) >= MIN_WORDINGS
    assert len(gt.INVALID) >= MIN_WORDINGS
    assert all(len(w) >= MIN_WORDINGS for w in gt.PATH_MOVE.values())
    assert all(len(w) >= MIN_WORDINGS for cases in gt.FEEDBACK.values() for w in cases.values())
    assert set(gt.FEEDBACK) == set(KINDS) and set(gt.PATH_MOVE) == {gw.ORD_FIRST, gw.ORD_NEXT, gw.ORD_FINAL}
    assert all(n >= MIN_WORDINGS for n, _ in run["vec"].text.pools.values())


def test_action_texts_and_aliases(run):
    parser = run["vec"].parser
    cases = {"0": 0, "1": 1, "2": 2, "3": 3, "north": 0, "East": 1, " west": 2, "south\n": 3, " 2\n": 2,
             " North\n": 0, "up": 4, "4": 4, "north south": 4, "0 ": 4, "": 4, "NORTH": 4}
    width = 8
    ids = jnp.asarray(np.stack([parser.encode(t, width) for t in cases]))
    assert parser.parse_batch(ids).tolist() == list(cases.values())


# ---------------------------------------------------------------------------- gymnasium API


@pytest.mark.slow
def test_gym_api_with_the_p_instruction_and_m_feedback():
    """The real "p" / "m" core behind the string API; text actions are parsed in-graph.
    (``gymnasium``'s ``check_env`` runs on this id in ``tests/test_gym.py``.)"""
    env = llf_gym.make(ID, instruction_type="p", feedback_type="m")
    obs, info = env.reset(seed=5)
    s = jax.tree.map(lambda x: np.asarray(x)[0], env._state)
    k = int(s.path_shown)
    assert 0 <= k < int(s.path_len) and obs["feedback"] == "" and info["success"] is False
    instr = obs["instruction"]
    assert any(instr.startswith(b) for b in gt.INSTRUCTION_B)
    assert NAME_RE.findall(instr) == [R[s.name[r]] for r in s.path_room[:k]]
    assert any(p in instr for p in gt.PATH_INTRO) == bool(s.path_intro)
    assert obs["observation"].startswith(f"You are in the {R[s.name[s.room]]}.")
    for word, a in (("north", 0), (" East\n", 1), ("2", 2), ("south", 3)):
        room = int(s.room)
        obs, r, te, tr, info = env.step(word)
        s = jax.tree.map(lambda x: np.asarray(x)[0], env._state)
        behind = int(s.adj[room, a])
        assert int(s.room) == (behind if behind >= 0 else room)
        want = f"You are in the {R[s.name[behind]]}." if behind >= 0 else \
            f"You are still in the {R[s.name[room]]}: there is no door to the {D[a]}."
        assert obs["observation"].startswith(want) and obs["instruction"] == ""
        assert isinstance(obs["feedback"], str) and r == 0.0 and not te and not tr
    obs, r, te, tr, info = env.step("go up")
    assert obs["feedback"] in gt.INVALID and obs["observation"] == "" and r == 0.0 and info["success"] is False
