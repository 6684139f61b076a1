"""Loss and update functions of the learners, checked by hand on tiny batches (spec §13).

References are computed in numpy; every call into the library goes through ``jax.jit`` (one compile per
function is much cheaper than op-by-op eager compiles on a 2-core CI machine).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training.train_state import TrainState

from learners import bc, ilql, mc, ppo
from learners.common import make_optimizer, make_update, token_logprobs
from learners.presets import PRESETS, BCConfig, FilteredBCConfig, ILQLConfig, PPOConfig, get_preset

V, D = 11, 8  # stand-in vocabulary and width
jit = jax.jit

# ---------------------------------------------------------------- numpy helpers


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _lse(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1)
    return m + np.log(np.exp(x - m[..., None]).sum(-1))


def _take(x, idx):
    return np.take_along_axis(np.asarray(x), np.asarray(idx)[..., None], -1)[..., 0]


# ---------------------------------------------------------------- a trivial stand-in model


def _hidden(p, ids, attn, xp=jnp):
    """Causal mean of token embeddings: position t sees tokens <= t (a model in spirit, not in size)."""
    e = xp.tanh(p["emb"][ids]) * attn[..., None]
    return xp.cumsum(e, axis=1) / xp.maximum(xp.cumsum(attn, axis=1), 1)[..., None]


def policy_apply(p, ids, attn):
    h = _hidden(p, ids, attn)
    return h @ p["out"], h


def value_apply(p, ids, attn, xp=jnp):
    h = _hidden(p, ids, attn, xp)
    return {"q1": h @ p["q1"], "q2": h @ p["q2"], "v": h @ p["v"]}


def mc_apply(p, ids, attn):
    return {"q": _hidden(p, ids, attn) @ p["q1"]}


def ppo_apply(p, ids, attn):
    h = _hidden(p, ids, attn)
    return h @ p["out"], h @ p["v"]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)
    return {"emb": f(V, D), "out": 0.3 * f(D, V), "q1": 0.3 * f(D, V), "q2": 0.3 * f(D, V), "v": 0.3 * f(D),
            "bias": np.ones((V,), np.float32)}


def _batch(seed=1, b=3, t=9):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (b, t)).astype(np.int32)
    attn = np.ones((b, t), np.float32)
    attn[1, -2:] = 0  # right padding in row 1
    act = np.zeros((b, t), bool)
    act[:, [2, 3, 6, 7]] = True  # two 2-token actions per row
    act[1, 7] = False  # (row 1's second action is cut short by the padding)
    rew = np.zeros((b, t), np.float32)
    rew[:, 3] = -1.0
    rew[:, 7] = rng.normal(size=b)
    rew[1, 7] = 0.0
    rew[1, 6] = 1.0
    return {"input_ids": ids, "attention_mask": attn, "action_mask": act, "rewards": rew,
            "dones": np.array([1.0, 0.0, 0.0], np.float32)}


def _mask(batch):
    return (batch["action_mask"][:, 1:] * batch["attention_mask"][:, 1:]).astype(np.float64)


# ---------------------------------------------------------------- BC


def test_bc_loss_counts_only_action_tokens():
    logits = np.random.default_rng(0).normal(size=(2, 4, V)).astype(np.float32)
    targets = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    mask = np.array([[0, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    lp = _log_softmax(logits)
    want = -(lp[0, 1, 2] + lp[0, 2, 3] + lp[1, 0, 5]) / 3  # one mean over the batch's 3 action tokens
    f = jit(bc.bc_loss)
    assert float(f(logits, targets, mask)) == pytest.approx(want, rel=1e-5)
    noisy = logits.copy()
    noisy[0, 0], noisy[1, 1:] = 100.0, -50.0  # logits at non-action positions do not matter
    assert float(f(noisy, targets, mask)) == pytest.approx(want, rel=1e-5)
    assert float(f(logits, targets, np.zeros_like(mask))) == 0.0  # no action tokens: 0, not NaN


def test_bc_loss_fn_shift_and_weights():
    p, batch = _params(), _batch()
    f = jit(lambda q, b: bc.bc_loss_fn(q, policy_apply, b))
    loss, m = f(p, batch)
    logits = _hidden(p, batch["input_ids"], batch["attention_mask"], np) @ p["out"]
    lp = _take(_log_softmax(logits[:, :-1]), batch["input_ids"][:, 1:])
    mask = _mask(batch)
    assert float(loss) == pytest.approx(-(lp * mask).sum() / mask.sum(), rel=1e-5)
    assert float(m["n_action_tokens"]) == mask.sum() == 11  # tokens 2,3,6,7 per row, minus row 1's padded 7
    loss_w, _ = jit(lambda q, b: bc.bc_loss_fn(q, policy_apply, b))(p, {**batch, "weights": np.array([1.0, 0, 1])})
    mw = mask * np.array([1, 0, 1])[:, None]
    assert float(loss_w) == pytest.approx(-(lp * mw).sum() / mw.sum(), rel=1e-5)


def test_top_fraction_keeps_int_n_times_fraction_stable_ties():
    f = jit(bc.top_fraction_mask, static_argnums=1)
    r = np.array([3.0, 1, 3, 2, 0, 5, 1, 2, 4, 0], np.float32)
    assert np.flatnonzero(f(r, 0.3)).tolist() == [0, 5, 8]  # 5, 4, then the first of the two 3s
    assert np.flatnonzero(f(r, 0.1)).tolist() == [5]
    assert np.asarray(f(r, 1.0)).all()
    big = np.random.default_rng(0).normal(size=128).astype(np.float32)
    keep = np.asarray(f(big, 0.3))
    assert keep.sum() == 38 == int(128 * 0.3)
    assert big[keep].min() >= big[~keep].max()
    with pytest.raises(ValueError, match="fraction"):
        bc.top_fraction_count(10, 0.0)


def test_success_filters_and_online_selection():
    rewards = np.array([[0, -1, 0, -1, 0, 0], [0, -1, 0, -1, 0, 0], [0, 0, 0, 0, 0, 0]], np.float32)
    act = np.array([[0, 1, 0, 1, 0, 1], [0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]], bool)

    @jit
    def run(rewards, act):
        last = bc.last_action_reward(rewards, act)
        ret = bc.episode_returns(rewards)
        return (last, ret, bc.last_reward_mask(last), bc.last_reward_mask(last, -1.0), bc.filter_mask("all", ret),
                bc.filter_mask("top_fraction", ret, fraction=0.34), bc.filter_mask("last_reward", ret, last))

    last, ret, ok0, ok1, keep_all, keep_top, keep_last = map(np.asarray, run(rewards, act))
    assert last.tolist() == [0.0, -1.0, 0.0]  # row 2 has no action: 0
    assert ret.tolist() == [-2.0, -2.0, 0.0]
    assert ok0.tolist() == [True, False, True] and ok1.tolist() == [False, True, False]
    assert keep_all.all() and keep_top.tolist() == [False, False, True]
    assert keep_last.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="valid"):
        bc.filter_mask("best", ret)
    with pytest.raises(ValueError, match="last_rewards"):
        bc.filter_mask("last_reward", ret)
    tree = {"x": np.arange(5) * 10, "y": np.arange(10).reshape(5, 2)}
    out, valid = jit(bc.compact_rows, static_argnums=2)(tree, np.array([False, True, False, True, True]), 4)
    assert out["x"].tolist() == [10, 30, 40, 0] and valid.tolist() == [True, True, True, False]
    assert out["y"][0].tolist() == [2, 3]


# ---------------------------------------------------------------- ILQL


def test_expectile_weights_and_loss():
    target, value = np.array([2.0, 0.0, 1.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32)

    @jit
    def run(target, value):
        return (ilql.expectile_weights(target, value, 0.7),
                ilql.expectile_loss(value, target, 0.7, jnp.array([1.0, 1.0, 0.0])),
                jax.grad(lambda v: ilql.expectile_loss(v, target, 0.9, jnp.ones(3)))(value))

    w, loss, g = run(target, value)
    np.testing.assert_allclose(w, [0.7, 0.3, 0.7])  # u > 0, u < 0, tie (target >= V counts as above)
    assert float(loss) == pytest.approx((0.7 * 0.5 + 0.3 * 0.5) / 2)  # over the 2 action tokens
    np.testing.assert_allclose(g, [-0.9 / 3, 0.1 / 3, 0.0], rtol=1e-6)


def test_ilql_targets_by_hand():
    rewards = np.array([[0.0, 0, 1, 0, 2]], np.float32)
    values = np.array([[10.0, 20, 30, 40, 50]], np.float32)
    act = np.array([[0, 1, 1, 0, 1]], np.float32)
    final = np.array([7.0], np.float32)

    @jit
    def run(rewards, values, act, final):
        return (ilql.ilql_targets(rewards, values, act, final, 0.5),
                ilql.ilql_targets(rewards, values, act, final, 0.5, final_done=jnp.array([1.0])),
                ilql.ilql_targets(rewards, values, act, final, 0.5, token_dones=jnp.array([[0, 0, 1, 0, 0]])),
                ilql.next_action_values(jnp.concatenate([values, values]),
                                        jnp.array([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]), jnp.array([-1.0, -2.0])))

    plain, done, cut, nv = run(rewards, values, act, final)
    # next action of 1 is 2 -> V=30; of 2 is 4 -> V=50; 4 is the last -> final value
    want = [0.0, 0 + 0.5 * 30, 1 + 0.5 * 50, 0.0, 2 + 0.5 * 7]
    np.testing.assert_allclose(plain, [want])
    np.testing.assert_allclose(done, [want[:4] + [2.0]])  # done: no bootstrap
    np.testing.assert_allclose(cut, [[0.0, 15.0, 1.0, 0.0, 5.5]])  # episode ends after token 2
    np.testing.assert_allclose(nv, [[-1.0] * 5, [-2.0] * 5])  # no later action: the final value


def test_polyak_update():
    online = {"a": np.ones(3, np.float32), "b": {"c": np.full((2, 2), 3.0, np.float32)}}
    target = jax.tree.map(np.zeros_like, online)

    @jit
    def run(online, target):
        t1 = ilql.polyak_update(online, target, 0.005)
        return (t1, ilql.polyak_update(online, t1, 0.005),
                ilql.update_targets(online, target, jnp.asarray(4), polyak_alpha=0.005, hard_update_every=2),
                ilql.update_targets(online, target, jnp.asarray(3), polyak_alpha=0.005, hard_update_every=2))

    t1, t2, hard, soft = run(online, target)
    np.testing.assert_allclose(t1["a"], 0.005)
    np.testing.assert_allclose(t1["b"]["c"], 0.015)
    np.testing.assert_allclose(t2["a"], 1 - 0.995 ** 2, rtol=1e-6)
    np.testing.assert_allclose(hard["a"], 1.0)  # step % 2 == 0: hard copy
    np.testing.assert_allclose(soft["a"], 0.005)


def test_cql_term_matches_numpy():
    rng = np.random.default_rng(0)
    q = (rng.normal(size=(2, 5, V)) * 3).astype(np.float32)
    a = rng.integers(0, V, (2, 5))
    m = (rng.random((2, 5)) < 0.6).astype(np.float32)
    m[0, 0] = 1
    want = ((_lse(q) - _take(q, a)) * m).sum() / m.sum()
    assert float(jit(ilql.cql_term)(q, a, m)) == pytest.approx(want, rel=1e-5)


def _ilql_loss_numpy(q1l, q2l, v, v_final, tq1l, tq2l, a, m, r, gamma, tau, cql_w):
    """Row-by-row rewrite of the reference loss: list the action positions, pair each with the next one."""
    q1, q2, tq1, tq2 = (_take(x, a) for x in (q1l, q2l, tq1l, tq2l))
    n = m.sum()
    lq1 = lq2 = lv = 0.0
    for b in range(q1.shape[0]):
        idx = np.flatnonzero(m[b])
        nxt = [v[b, j] for j in idx[1:]] + [v_final[b]]
        for i, vn in zip(idx, nxt):
            y = r[b, i] + gamma * vn
            lq1 += 0.5 * (q1[b, i] - y) ** 2
            lq2 += 0.5 * (q2[b, i] - y) ** 2
            tq = min(tq1[b, i], tq2[b, i])
            lv += (tau if tq >= v[b, i] else 1 - tau) * 0.5 * (v[b, i] - tq) ** 2

    def ce(lg):
        return ((_lse(lg) - _take(lg, a)) * m).sum() / n

    return (lq1 + lq2 + lv) / n + cql_w * (ce(q1l) + ce(q2l))


def test_ilql_loss_matches_row_by_row_reference():
    rng = np.random.default_rng(3)
    b, length = 3, 7
    f = lambda *s: rng.normal(size=s).astype(np.float32)
    q1l, q2l, tq1l, tq2l = f(b, length, V), f(b, length, V), f(b, length, V), f(b, length, V)
    a = rng.integers(0, V, (b, length))
    v, r, vf = f(b, length), f(b, length), f(b)
    m = np.array([[0, 1, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], np.float32)

    @jit
    def run(q1l, q2l, v, vf, tq1l, tq2l, a, m, r):
        g = lambda x: jnp.take_along_axis(x, a[..., None], -1)[..., 0]
        return ilql.ilql_loss(g(q1l), g(q2l), v, vf, g(tq1l), g(tq2l), q1l, q2l, a, m, r,
                              gamma=0.9, tau=0.7, cql_weight=0.01)

    got, metrics = run(q1l, q2l, v, vf, tq1l, tq2l, a, m, r)
    want = _ilql_loss_numpy(q1l, q2l, v, vf, tq1l, tq2l, a, m, r, 0.9, 0.7, 0.01)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(metrics["n_action_tokens"]) == 5


def test_ilql_loss_fn_bootstraps_from_last_action_token_or_next_window():
    p, batch = _params(), _batch()
    cfg = ILQLConfig(lr=1e-4, tau=0.7, cql_weight=0.01, gamma=0.9)
    target_p = jax.tree.map(lambda x: x * 0.5, p)
    nxt = {"next_input_ids": batch["input_ids"][:, :4], "next_attention_mask": np.ones((3, 4), np.float32),
           "next_dones": np.array([0.0, 1.0, 0.0], np.float32)}
    nxt["next_attention_mask"][0, 3] = 0
    f = jit(lambda q, t, b: ilql.ilql_loss_fn(q, value_apply, b, cfg, target_params=t)[0])
    loss, loss_next = float(f(p, target_p, batch)), float(f(p, target_p, {**batch, **nxt}))

    ids, attn = batch["input_ids"], batch["attention_mask"]
    out, tout = value_apply(p, ids, attn, np), value_apply(target_p, ids, attn, np)
    a, m, r = ids[:, 1:], _mask(batch), batch["rewards"][:, 1:]

    def want(v_final):
        return _ilql_loss_numpy(out["q1"][:, :-1], out["q2"][:, :-1], out["v"][:, :-1], v_final, tout["q1"][:, :-1],
                                tout["q2"][:, :-1], a, m, r, 0.9, 0.7, 0.01)

    # last action token: index 7 for rows 0 and 2, 6 for row 1; row 0 is done
    assert loss == pytest.approx(want(np.array([0.0, out["v"][1, 6], out["v"][2, 7]])), rel=1e-5)
    # next window: V at its last real token, times (1 - next_dones)
    nv = value_apply(p, nxt["next_input_ids"], nxt["next_attention_mask"], np)["v"]
    assert loss_next == pytest.approx(want(np.array([nv[0, 2], 0.0, nv[2, 3]])), rel=1e-5)


def test_ilql_update_moves_targets_only_on_real_steps():
    p, batch = _params(), _batch()
    cfg = ILQLConfig(lr=1e-2, tau=0.7, cql_weight=0.01)
    state = ilql.ILQLState.create(apply_fn=value_apply, params=p, tx=make_optimizer(cfg.lr, 0.0, grad_accum_steps=2))
    step = jit(ilql.make_ilql_update(cfg))
    s1, m1 = step(state, batch)
    assert np.isfinite(float(m1["loss"])) and np.isfinite(float(m1["grad_norm"])) and float(m1["grad_norm"]) > 0
    for got, w in zip(jax.tree.leaves(s1.target_params), jax.tree.leaves(p)):  # accumulating: nothing moves
        np.testing.assert_array_equal(got, w)
    s2, _ = step(s1, batch)
    assert int(s2.step) == 2 and not np.allclose(s2.params["q1"], p["q1"])
    for got, new, old in zip(jax.tree.leaves(s2.target_params), jax.tree.leaves(s2.params), jax.tree.leaves(p)):
        np.testing.assert_allclose(got, 0.005 * np.asarray(new) + 0.995 * old, rtol=1e-5, atol=1e-7)


def test_perturbed_logits():
    pi = np.array([1.0, 2.0, 3.0], np.float32)
    q1, q2 = np.array([0.5, -1.0, 0.0], np.float32), np.array([0.1, 1.0, -2.0], np.float32)
    both, single = jit(lambda *x: (ilql.perturbed_logits(x[0], x[1], 8.0, x[2]),
                                   ilql.perturbed_logits(x[0], x[1], 2.0)))(pi, q1, q2)
    np.testing.assert_allclose(both, [1.8, -6.0, -13.0], rtol=1e-6)  # pi + 8 * min(Q1, Q2)
    np.testing.assert_allclose(single, [2.0, 0.0, 3.0])


# ---------------------------------------------------------------- MC


def test_returns_to_go_by_hand():
    r = np.array([[1.0, 5.0, 2.0, 3.0, 0.0]], np.float32)  # the 5 sits on a non-action token: ignored
    act = np.array([[1, 0, 1, 1, 0]])
    f = jit(mc.returns_to_go, static_argnums=2)
    np.testing.assert_allclose(f(r, act, 0.5), [[2.75, 0, 3.5, 3.0, 0]])
    np.testing.assert_allclose(f(r, act, 0.5, np.array([4.0])), [[3.25, 0, 4.5, 5.0, 0]])  # bootstrap
    np.testing.assert_allclose(f(r, act, 1.0), [[6.0, 0, 5.0, 3.0, 0]])


def test_mc_loss_fn_by_hand():
    p, batch = _params(), _batch()
    cfg = get_preset("mc", "wordle")  # cql_weight 0.01, gamma 0.99
    f = jit(lambda q, b: mc.mc_loss_fn(q, mc_apply, b, cfg)[0])
    q = (_hidden(p, batch["input_ids"], batch["attention_mask"], np) @ p["q1"])[:, :-1]
    a, m = batch["input_ids"][:, 1:], _mask(batch)
    r = batch["rewards"][:, 1:]
    ret = np.zeros_like(m)  # per row: G_i = r_i + 0.99 G_next over action tokens
    for b in range(m.shape[0]):
        g = 0.0
        for i in reversed(np.flatnonzero(m[b])):
            g = r[b, i] + 0.99 * g
            ret[b, i] = g
    qa = _take(q, a)
    want = (0.5 * (qa - ret) ** 2 * m).sum() / m.sum() + 0.01 * ((_lse(q) - qa) * m).sum() / m.sum()
    assert float(f(p, batch)) == pytest.approx(want, rel=1e-5)
    assert float(f(p, {**batch, "returns": ret.astype(np.float32)})) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------- PPO


def _gae_loop(r, v, m, last, gamma, lam):
    """The reference's loop: compress each row to its action tokens, then the classic backward recursion."""
    adv = np.zeros_like(r)
    for b in range(r.shape[0]):
        idx = np.flatnonzero(m[b])
        nv = np.append(v[b, idx][1:], last[b])
        gl = 0.0
        for k in reversed(range(len(idx))):
            delta = r[b, idx[k]] + gamma * nv[k] - v[b, idx[k]]
            gl = delta + gamma * lam * gl
            adv[b, idx[k]] = gl
    return adv, np.where(m > 0, adv + v, 0.0)


def test_gae_matches_hand_unrolled_loop():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(4, 12)).astype(np.float32), rng.normal(size=(4, 12)).astype(np.float32)
    m = (rng.random((4, 12)) < 0.5).astype(np.float32)
    m[3] = 0  # a row without actions
    last = rng.normal(size=4).astype(np.float32)
    f = jit(lambda r, v, m, last, gamma, lam, dones=None: ppo.gae(r, v, m, last, gamma=gamma, lam=lam,
                                                                  token_dones=dones))
    for gamma, lam in ((1.0, 0.95), (0.99, 0.95), (0.9, 0.0), (0.9, 1.0)):
        adv, ret = f(r, v, m, last, gamma, lam)
        want_adv, want_ret = _gae_loop(r, v, m, last, gamma, lam)
        np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-6)
    # token_dones cut the recursion: a done at the first action keeps the second one from leaking back
    adv, _ = f(np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32),
               np.array([10.0], np.float32), 1.0, 1.0, np.array([[1.0, 0.0]], np.float32))
    np.testing.assert_allclose(adv, [[1.0, 11.0]])


def test_whiten_masked():
    x = np.array([[1.0, 100.0, 3.0], [5.0, 7.0, -9.0]], np.float32)
    m = np.array([[1, 0, 1], [1, 1, 0]], np.float32)
    out, out_keep = jit(lambda x, m: (ppo.whiten(x, m), ppo.whiten(x, m, shift_mean=False)))(x, m)
    vals = np.array([1.0, 3.0, 5.0, 7.0])
    want = (vals - vals.mean()) / np.sqrt(vals.var() + 1e-8)
    np.testing.assert_allclose(np.asarray(out)[m > 0], want, rtol=1e-5)
    assert out[0, 1] == 0 and out[1, 2] == 0
    np.testing.assert_allclose(np.asarray(out_keep)[m > 0], want + 4.0, rtol=1e-5)


_ppo_policy = jit(jax.value_and_grad(
    lambda lp, adv: ppo.ppo_loss(lp, jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.zeros((1, 1)), adv, jnp.zeros((1, 1)),
                                 jnp.ones((1, 1)), clip=0.2, value_clip=0.2, value_loss_coef=0.0)[0]))


@pytest.mark.parametrize("adv,ratio,clipped", [(1.0, 1.25, True), (1.0, 1.15, False), (1.0, 0.75, False),
                                                (-1.0, 0.75, True), (-1.0, 0.85, False), (-1.0, 1.25, False)])
def test_ppo_policy_clip(adv, ratio, clipped):
    eps = 0.2
    loss, g = _ppo_policy(np.full((1, 1), math.log(ratio), np.float32), np.full((1, 1), adv, np.float32))
    assert float(loss) == pytest.approx(max(-adv * ratio, -adv * min(max(ratio, 1 - eps), 1 + eps)), rel=1e-6)
    assert float(g[0, 0]) == (0.0 if clipped else pytest.approx(-adv * ratio, rel=1e-6))


def test_ppo_value_clip_and_metrics():
    v = np.array([[0.5, 0.5]], np.float32)
    ret = np.array([[1.0, 0.0]], np.float32)

    def loss(values, ret):
        z, mask = jnp.zeros((1, 2)), jnp.ones((1, 2))
        return ppo.ppo_loss(z, values, z, z, z, ret, mask, clip=0.2, value_clip=0.2, value_loss_coef=1.0)

    (val, metrics), g = jit(jax.value_and_grad(loss, has_aux=True))(v, ret)
    # pos 0: clipped V = 0.2 -> (0.8)^2 beats (0.5)^2; pos 1: unclipped 0.25 beats 0.04
    assert float(val) == pytest.approx(0.5 * (0.64 + 0.25) / 2)
    assert float(metrics["value_clipfrac"]) == pytest.approx(0.5)
    np.testing.assert_allclose(g, [[0.0, 0.5 / 2]], atol=1e-7)  # the clipped branch has no gradient


def test_ppo_rollout_targets_kl_reward():
    batch = {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.float32),
             "action_mask": np.array([[0, 0, 1, 1]]), "rewards": np.array([[0.0, 9.0, 0.0, 1.0]], np.float32),
             "dones": np.array([0.0], np.float32)}
    lp, ref = np.array([[-1.0, -2.0, -0.5]], np.float32), np.array([[-3.0, -2.5, -1.0]], np.float32)
    values_full = np.array([[0.0, 0.2, 0.3, 0.4]], np.float32)

    @jit
    def run(lp, ref, values_full, batch):
        return (ppo.kl_penalized_rewards(batch["rewards"][:, 1:], lp, ref, jnp.array([[0, 1, 1]]), 0.1),
                ppo.ppo_rollout_targets(lp, ref, values_full, batch, gamma=1.0, lam=1.0, kl_coef=0.1,
                                        whiten_advantages=False))

    kl_r, out = run(lp, ref, values_full, batch)
    np.testing.assert_allclose(kl_r, [[9.0, -0.05, 0.95]], rtol=1e-6)  # non-action token: no penalty
    # aligned positions 1, 2 are actions; bootstrap = V at the last token, 0.4 (not done)
    r1, r2 = -0.05, 0.95
    a2 = r2 + 0.4 - 0.3
    a1 = r1 + 0.3 - 0.2 + a2
    np.testing.assert_allclose(out["advantages"], [[0.0, a1, a2]], rtol=1e-5)
    np.testing.assert_allclose(out["returns"], [[0.0, a1 + 0.2, a2 + 0.3]], rtol=1e-5)
    d = np.array([0.5, 0.5])
    assert float(out["kl"]) == pytest.approx(np.mean(np.exp(d) - 1 - d), rel=1e-5)
    _, done = run(lp, ref, values_full, {**batch, "dones": np.array([1.0], np.float32)})
    assert float(done["advantages"][0, 2]) == pytest.approx(r2 - 0.3, rel=1e-5)


def test_adaptive_kl_coef():
    assert ppo.adaptive_kl_coef(0.1, 6.0, 128, target=3.0, horizon=1280) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert ppo.adaptive_kl_coef(0.1, 2.7, 128, target=3.0, horizon=1280) == pytest.approx(0.1 * (1 - 0.1 * 0.1))


def test_ppo_loss_fn_at_rollout_policy_with_bc_term():
    p, batch = _params(), _batch()
    cfg = dataclasses.replace(PPOConfig(), bc_loss_weight=1.0)

    @jit
    def run(q, batch):
        logits, vals = ppo_apply(q, batch["input_ids"], batch["attention_mask"])
        lp = token_logprobs(logits[:, :-1], batch["input_ids"][:, 1:])
        tgt = ppo.ppo_rollout_targets(lp, lp - 0.1, vals, batch, gamma=1.0, lam=0.95, kl_coef=0.001)
        bc_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "action_mask")}
        full = {**batch, **{k: tgt[k] for k in ("old_logprobs", "old_values", "advantages", "returns")},
                "bc": bc_batch}
        return jax.value_and_grad(lambda x: ppo.ppo_loss_fn(x, ppo_apply, full, cfg), has_aux=True)(q)

    (loss, metrics), grads = run(p, batch)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(grads))
    assert float(metrics["ratio_mean"]) == pytest.approx(1.0)
    # ratio == 1: the policy loss is -mean(whitened A) = 0, and the BC term is added with weight 1
    assert float(metrics["policy_loss"]) == pytest.approx(0.0, abs=1e-5)
    assert float(loss) == pytest.approx(float(metrics["ppo_loss"] + metrics["bc_loss"]), rel=1e-6)


# ---------------------------------------------------------------- updates and the optimiser


def test_update_lowers_the_loss():
    # make_update is shared by BC, filtered BC, MC and PPO; BC stands for all of them here
    state = TrainState.create(apply_fn=policy_apply, params=_params(), tx=make_optimizer(1e-2))
    step, batch = jit(make_update(bc.bc_loss_fn, None)), _batch()
    losses = []
    for _ in range(15):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
        assert np.isfinite(float(m["grad_norm"]))
    assert losses[-1] < losses[0] - 0.05 and int(state.step) == 15


def test_optimizer_decays_matrices_only():
    p = _params()
    tx = make_optimizer(1.0, weight_decay=0.5)
    upd, _ = jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p))(p)
    assert np.allclose(upd["bias"], 0.0) and np.allclose(upd["v"], 0.0)  # 1-D leaves: no decay, as the reference
    np.testing.assert_allclose(upd["out"], -0.5 * p["out"], rtol=1e-6)
    with pytest.raises(ValueError):
        make_optimizer(0.0)


# ---------------------------------------------------------------- presets


def test_presets_spec_values():
    assert get_preset("ilql", "maze-fo") == ILQLConfig(lr=1e-4, tau=0.95, cql_weight=0.0, gamma=0.99, batch_size=32,
                                                       max_length=80, beta=8.0)
    assert get_preset("ilql", "maze-po").max_length == 328
    w = get_preset("ilql", "wordle")
    assert (w.lr, w.tau, w.cql_weight, w.epochs, w.beta, w.polyak_alpha) == (3e-5, 0.7, 0.01, 10, 32.0, 0.005)
    assert get_preset("ilql", "chess").cql_weight == 1.0
    assert get_preset("ilql", "text-nav-po") is get_preset("ilql", "text-nav-fo")
    assert get_preset("ilql", "twenty-questions").model == "gpt2-medium"
    assert get_preset("mc", "guess-city") == get_preset("mc", "wordle")
    assert get_preset("bc", "twenty-questions").grad_accum_steps == 32
    assert get_preset("bc", "maze-fo").weight_decay == 1e-3
    assert get_preset("filtered_bc", "wordle").fraction == 0.1
    assert get_preset("online_filtered_bc", "wordle").fraction == 0.3
    assert get_preset("online_filtered_bc", "maze-fo").rule == "last_reward"
    pm = get_preset("ppo", "maze-fo")
    assert (pm.gamma, pm.value_loss_coef, pm.bc_loss_weight, pm.max_input_length, pm.max_output_length) == \
        (0.99, 0.5, 0.0, 64, 32)
    pw = get_preset("ppo", "wordle")
    assert (pw.lr, pw.gamma, pw.lam, pw.clip, pw.value_clip, pw.init_kl_coef, pw.bc_loss_weight) == \
        (1e-5, 1.0, 0.95, 0.2, 0.2, 0.001, 1.0)
    assert not get_preset("ppo", "car-dealer").runs_in_reference
    assert all(isinstance(t, dict) and t for t in PRESETS.values())


def test_preset_errors_name_the_choices():
    with pytest.raises(ValueError, match="valid"):
        get_preset("dqn", "wordle")
    with pytest.raises(ValueError, match="maze-fo"):
        get_preset("ilql", "minesweeper")
    with pytest.raises(ValueError, match="tau"):
        ILQLConfig(lr=1e-4, tau=1.0, cql_weight=0.0)
    with pytest.raises(ValueError, match="valid"):
        FilteredBCConfig(bc=BCConfig(lr=1e-4, batch_size=8), rule="best")
    with pytest.raises(ValueError, match="kl_horizon"):
        PPOConfig(kl_target=6.0)
    assert PPOConfig(kl_target=6.0, kl_horizon=10000).adaptive_kl
