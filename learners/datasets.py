"""Datasets: the reference's recipe run in-graph, and the reference's maze jsonl files.

**In-graph generation.** LMRL-Gym's offline data comes from a near-optimal policy diluted with suboptimal
actions (spec §10, issue 5). ``generate_dataset`` runs that recipe as the rollout scan of
``learners.rollout`` (one jitted ``lax.scan`` over the vmapped env): each step every env takes the
expert's action, or with probability ``epsilon`` a uniformly random action, writes its canonical tokens
(``vec_env.action_token_table``) and the env parses them, so the arrays are exactly what a token policy
would have read and written: a ``Trajectory`` with prompt tokens/masks, action tokens/masks, rewards and
dones. ``maze_expert`` is the BFS-optimal maze policy (``Maze.optimal_action``).

**Reference files** (spec §10; loaders in ``llm_rl_scripts/maze/{bc,ilql}``):

- Maze FO: one episode per line, a JSON list of ``{"state", "action", "reward", "done"}`` steps, ``state`` the
  observation text the action answered.
- Maze PO: one episode per line, ``{"text_history": [obs, act, obs, act, ...], "rewards": [...], "dones":
  [...]}``; ``rewards``/``dones`` are aligned with ``text_history`` (an action's reward at its own index,
  0 / false at observations), as the reference's PO ILQL loader reads them.

``write_maze_jsonl`` / ``read_maze_jsonl`` write and read both; ``episodes_to_trajectory`` tokenises episodes
back into the arrays the learners train on (prompt left-truncated, action right-truncated, as the
reference's ``BlockingStrategy``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from learners.bc import FILTER_RULES
from learners.rollout import Trajectory, _prompt_width, scan_env

# expert(state) -> int32[N] action indices
Expert = Callable[[object], jax.Array]


@functools.lru_cache(maxsize=32)
def maze_expert(vec_env) -> Expert:
    """The BFS-optimal maze policy on the (batched) ``MazeState``: ``expert(state) -> int32[N]``.

    Cached per ``vec_env``: the expert is a static argument of ``generate_dataset``, so the same object
    must come back for the compiled scan to be reused."""
    env = vec_env.env
    if not hasattr(env, "optimal_action"):
        raise ValueError(f"{vec_env.id} has no optimal_action; maze_expert needs a maze env")
    return lambda state: jax.vmap(env.optimal_action)(state.pos, state.goal)


def diluted_actor(vec_env, expert: Expert, epsilon, width: int | None = None):
    """An ``act_fn`` for ``scan_env``: the expert's action, or with probability ``epsilon`` one drawn uniformly
    from the ``num_actions`` actions, written as its canonical tokens."""
    table = jnp.asarray(vec_env.action_token_table(width))
    pad = vec_env.pad_id
    n_act = vec_env.num_actions

    def act(_params, _prompt, _mask, key, _obs, state):
        k_coin, k_rand = jax.random.split(key)
        best = expert(vec_env.core_state(state)).astype(jnp.int32)
        n = best.shape[0]
        rand = jax.random.randint(k_rand, (n,), 0, n_act, jnp.int32)
        index = jnp.where(jax.random.uniform(k_coin, (n,)) < epsilon, rand, best)
        tokens = table[index]
        return tokens, tokens != pad

    return act


@functools.partial(jax.jit, static_argnames=("vec_env", "expert", "num_steps", "history_len", "bos_id", "width"))
def generate_dataset(vec_env, expert: Expert, key, num_steps: int, epsilon=0.0, *, history_len: int | None = None,
                     bos_id: int | None = None, width: int | None = None, env_params=None) -> Trajectory:
    """``num_steps`` steps of every env of ``vec_env`` under the ``epsilon``-diluted expert: a ``Trajectory``
    ``[num_steps, num_envs, ...]`` (one jitted scan). ``vec_env``: token observations, ``action_mode="tokens"``.
    ``epsilon`` may be traced. ``width``: action token width (default: the longest action)."""
    traj, _ = scan_env(vec_env, diluted_actor(vec_env, expert, epsilon, width), None, key, num_steps,
                       history_len=history_len, bos_id=bos_id, env_params=env_params)
    return traj


def complete_episode_mask(done: jax.Array) -> jax.Array:
    """bool[T, N]: steps of episodes that ended inside the window (the tail after each env's last done is
    an unfinished episode). Rollouts start from a reset, so every env's first episode is whole."""
    after_last = jnp.cumsum(done[::-1].astype(jnp.int32), axis=0)[::-1]
    return after_last > 0


# ----------------------------------------------------------------------------------------------------
# Episodes on the host


def _text(tok, tokens, mask, skip_first: bool = False) -> str:
    ids = [int(t) for t, m in zip(tokens, mask) if m]
    return tok.decode(ids[1:] if skip_first else ids)


def trajectory_episodes(vec_env, traj: Trajectory, bos_id: int | None = None,
                        complete_only: bool = True) -> list[list[dict]]:
    """Host: the episodes of a ``Trajectory`` as lists of ``{"state", "action", "reward", "done"}`` steps
    (texts decoded with the env's tokenizer; a leading ``bos_id`` is dropped from the state).

    Episodes run env by env; ``complete_only`` drops each env's unfinished last episode.
    """
    tok = vec_env.tokenizer
    host = jax.device_get(traj)
    t_len, n = host.reward.shape
    episodes = []
    for i in range(n):
        cur: list[dict] = []
        for t in range(t_len):
            cur.append({
                "state": _text(tok, host.prompt_tokens[t, i], host.prompt_mask[t, i], bos_id is not None),
                "action": _text(tok, host.action_tokens[t, i], host.action_mask[t, i]),
                "reward": float(host.reward[t, i]),
                "done": bool(host.done[t, i]),
            })
            if host.done[t, i]:
                episodes.append(cur)
                cur = []
        if cur and not complete_only:
            episodes.append(cur)
    return episodes


def _newest_text(state: str) -> str:
    """The newest text of a maze observation window: every maze text is one line ending in ``\\n``."""
    lines = state.splitlines(keepends=True)
    return lines[-1] if lines else ""


OBSERVABILITIES = ("fo", "po")


def write_maze_jsonl(path: str | os.PathLike, episodes: Sequence[Sequence[dict]], observability: str = "fo") -> int:
    """Write episodes in the reference's maze format (``"fo"``: step lists; ``"po"``: ``text_history``).

    PO states may be whole observation windows (what ``trajectory_episodes`` gives for ``maze-po``): only
    each window's newest text goes into ``text_history``. Returns the number of lines written.
    """
    if observability not in OBSERVABILITIES:
        raise ValueError(f"observability must be one of {OBSERVABILITIES}, got {observability!r}")
    with open(path, "w", encoding="utf-8") as f:
        for ep in episodes:
            if observability == "fo":
                obj = [{"state": s["state"], "action": s["action"], "reward": float(s["reward"]),
                        "done": bool(s["done"])} for s in ep]
            else:
                hist, rewards, dones = [], [], []
                for s in ep:
                    hist += [_newest_text(s["state"]), s["action"]]
                    rewards += [0.0, float(s["reward"])]
                    dones += [False, bool(s["done"])]
                obj = {"text_history": hist, "rewards": rewards, "dones": dones}
            f.write(json.dumps(obj) + "\n")
    return len(episodes)


def read_maze_jsonl(path: str | os.PathLike, window: int = 40) -> list[list[dict]]:
    """Read a reference maze jsonl file (either format) as lists of ``{"state", "action", "reward", "done"}``.

    FO lines (a list of steps, or one step dict) are taken as they are. PO lines: the state of the action at
    ``text_history[i]`` is the concatenation of the ``window`` texts before it (the env's ``last_k`` window,
    texts joined with no separator as ``TextHistory`` serialises them).
    """
    episodes = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if isinstance(obj, dict) and "text_history" in obj:
                hist = obj["text_history"]
                rewards = obj.get("rewards", [0.0] * len(hist))
                dones = obj.get("dones", [False] * len(hist))
                ep = [{"state": "".join(hist[max(0, i - window):i]), "action": hist[i],
                       "reward": float(rewards[i]), "done": bool(dones[i])} for i in range(1, len(hist), 2)]
            elif isinstance(obj, dict):
                ep = [obj]
            elif isinstance(obj, list):
                ep = obj
            else:
                raise ValueError(f"{path}:{line_no}: expected a JSON list of steps or an object, got {type(obj).__name__}")
            for s in ep:
                missing = {"state", "action"} - set(s)
                if missing:
                    raise ValueError(f"{path}:{line_no}: step lacks {sorted(missing)}")
            episodes.append([{"state": s["state"], "action": s["action"], "reward": float(s.get("reward", 0.0)),
                              "done": bool(s.get("done", False))} for s in ep])
    return episodes


def episodes_to_trajectory(vec_env, episodes: Sequence[Sequence[dict]], bos_id: int | None = None,
                           prompt_width: int | None = None, action_width: int | None = None) -> Trajectory:
    """Tokenise episodes into a flat ``Trajectory`` (leading axis = transitions, episode by episode).

    Prompt = ``[bos_id] + tokens(state)``, left-padded and left-truncated to ``prompt_width`` (default: the
    rollout prompt width of ``vec_env``); action = ``tokens(action)`` right-padded/truncated to
    ``action_width`` (default: the longest action string). ``action`` is the exact-match action index
    (``num_actions`` when the text is no action). The files do not tell the goal from the time limit, so
    ``terminated`` is ``done`` and ``truncated`` is False.
    """
    tok, pad = vec_env.tokenizer, vec_env.pad_id
    pw = prompt_width if prompt_width is not None else _prompt_width(vec_env, None, bos_id)
    aw = action_width if action_width is not None else vec_env.action_token_table().shape[1]
    steps = [s for ep in episodes for s in ep]
    m = len(steps)
    prompts = np.full((m, pw), pad, np.int32)
    pmask = np.zeros((m, pw), bool)
    acts = np.full((m, aw), pad, np.int32)
    amask = np.zeros((m, aw), bool)
    index = {s: i for i, s in enumerate(vec_env.action_strings)}
    action = np.asarray([index.get(s["action"], vec_env.num_actions) for s in steps], np.int32)
    states = tok.encode_batch([s["state"] for s in steps]) if m else []
    actions = tok.encode_batch([s["action"] for s in steps]) if m else []
    for j, (p, a) in enumerate(zip(states, actions)):
        p = ([bos_id] if bos_id is not None else []) + list(p)
        p = p[-pw:]
        prompts[j, pw - len(p):] = p
        pmask[j, pw - len(p):] = True
        a = list(a)[:aw]
        acts[j, :len(a)] = a
        amask[j, :len(a)] = True
    reward = np.asarray([s["reward"] for s in steps], np.float32)
    done = np.asarray([s["done"] for s in steps], bool)
    return Trajectory(prompt_tokens=jnp.asarray(prompts), prompt_mask=jnp.asarray(pmask),
                      action_tokens=jnp.asarray(acts), action_mask=jnp.asarray(amask), action=jnp.asarray(action),
                      reward=jnp.asarray(reward), terminated=jnp.asarray(done), truncated=jnp.zeros((m,), bool),
                      done=jnp.asarray(done), info={})


# ----------------------------------------------------------------------------------------------------
# Per-step episode facts (filtering, returns)


@jax.jit
def episode_facts(reward: jax.Array, done: jax.Array, terminated: jax.Array) -> dict[str, jax.Array]:
    """Facts of the episode each step belongs to, ``[T, N]`` arrays (time-major, as ``Trajectory``):

    ``complete`` (the episode ended inside the window), ``ep_return`` (its undiscounted return),
    ``last_reward`` (the reward of its last step), ``success`` (it ended by termination, not truncation) and
    ``last`` (the step ends its episode). For an unfinished episode the last three describe the part inside the window.
    """
    done = done.astype(bool)

    def body(carry, x):
        ret_after, last_r, term = carry
        r, d, te = x
        # a done step closes its episode: the running sums restart there
        ret = r + jnp.where(d, 0.0, ret_after)
        last_r = jnp.where(d, r, last_r)
        term = jnp.where(d, te, term)
        return (ret, last_r, term), (ret, last_r, term)

    n = reward.shape[1]
    init = (jnp.zeros((n,), jnp.float32), reward[-1].astype(jnp.float32), jnp.zeros((n,), bool))
    _, (ret_to_go, last_r, term) = jax.lax.scan(body, init, (reward.astype(jnp.float32), done, terminated),
                                                reverse=True)
    # the episode's return = return-to-go at its first step, spread forward over the episode
    start = jnp.concatenate([jnp.ones((1, n), bool), done[:-1]], axis=0)

    def fwd(carry, x):
        g, s = x
        carry = jnp.where(s, g, carry)
        return carry, carry

    _, ep_return = jax.lax.scan(fwd, jnp.zeros((n,), jnp.float32), (ret_to_go, start))
    complete = complete_episode_mask(done)
    return {"complete": complete, "ep_return": ep_return, "last_reward": last_r, "success": term & complete,
            "last": done}


def keep_steps(facts: dict, rule: str, *, last_reward_value: float = 0.0, fraction: float = 1.0) -> jax.Array:
    """In-graph bool ``[T, N]`` keep mask of the steps of the complete episodes a filtered-BC ``rule`` keeps
    (``learners.bc.FILTER_RULES``): ``last_reward`` (the episode's last reward equals ``last_reward_value``;
    maze: 0 = reached the goal), ``top_fraction`` (the ``floor(E * fraction)`` best returns of the ``E`` complete
    episodes; ties at the threshold kept) or ``all``. ``facts``: ``episode_facts``."""
    complete = facts["complete"]
    if rule == "all":
        return complete
    if rule == "last_reward":
        return complete & jnp.isclose(facts["last_reward"], last_reward_value)
    if rule == "top_fraction":
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        ends = jnp.where(facts["last"], facts["ep_return"], -jnp.inf).reshape(-1)  # one per complete episode
        k = jnp.floor(facts["last"].sum() * fraction).astype(jnp.int32)
        threshold = jnp.sort(ends)[::-1][jnp.maximum(k - 1, 0)]
        return complete & (facts["ep_return"] >= threshold) & (k > 0)
    raise ValueError(f"unknown filter rule {rule!r}; valid: {FILTER_RULES}")


def filter_steps(facts: dict, rule: str, *, last_reward_value: float = 0.0, fraction: float = 1.0) -> np.ndarray:
    """``keep_steps`` on the host: a numpy bool ``[T, N]`` mask (offline filtered BC selects its rows with it)."""
    return np.asarray(jax.device_get(keep_steps(facts, rule, last_reward_value=last_reward_value,
                                                fraction=fraction)))
