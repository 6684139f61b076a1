"""Shared check: every piece of a rendered text lies inside the static bounds the token
layout relies on (``CompiledText._reach``: fewest tokens before it, most up to its end)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_JITTED = {}


def _piece_lengths(text):
    """Jitted: facts -> int32[N, P] tokens every piece of every env writes."""
    if id(text) not in _JITTED:
        def lengths(facts):
            gid, on, vals = jax.vmap(text.plan)(facts)
            lens = jnp.asarray(text._tok_len)[gid]
            if text.nums:
                _, nlen = text._number_tokens(vals)
                lens = jnp.where(text._dyn[None], nlen[:, text._dyn_index], lens)
                ok = text._tabled_ok(text._number_fields(vals))
            else:
                ok = jnp.bool_(False)
            return jnp.where(on, lens, 0), ok

        _JITTED[id(text)] = (text, jax.jit(lengths))  # keep text alive so its id stays unique
    return _JITTED[id(text)][1]


def assert_pieces_within_reach(text, facts):
    """``facts``: the (drawn, prepared) facts of a batch, as in ``obs["facts"]``."""
    lens, tabled = _piece_lengths(text)(facts)
    _check(np.asarray(lens, np.int64), *text._reach)
    if bool(tabled):  # the batch takes the number-table layout: its tighter bounds must hold too
        plan, (lo, hi) = text._tab["plan"], text._tab["reach"]
        first = {}
        for k, e in enumerate(plan):  # a number's two runs share its bounds
            first.setdefault(e[1], k)
        order = [first[i] for i in range(len(first))]
        _check(np.asarray(lens, np.int64), lo[order], hi[order])


def _check(lens, lo, hi):
    ends = np.cumsum(lens, axis=1)
    begins = ends - lens
    bad = (lens > 0) & ((begins < lo[None]) | (ends > hi[None]))
    assert not bad.any(), (f"pieces outside their static bounds (env, piece): {np.argwhere(bad)[:5].tolist()}; "
                           f"begins {begins[bad][:5]}, ends {ends[bad][:5]}, bounds {lo[np.argwhere(bad)[:5, 1]]}"
                           f"..{hi[np.argwhere(bad)[:5, 1]]}")
