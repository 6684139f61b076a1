"""Datasets: the reference's recipe run in-graph, and the reference's maze and Wordle jsonl files.

**In-graph generation.** LMRL-Gym's offline data comes from a near-optimal policy diluted with suboptimal
actions (spec §10, issue 5). ``generate_dataset`` runs that recipe as the rollout scan of
``learners.rollout`` (one jitted ``lax.scan`` over the vmapped env): each step every env takes the
expert's action, or with probability ``epsilon`` a uniformly random action, writes its canonical tokens
(``vec_env.action_token_table``) and the env parses them, so the arrays are exactly what a token policy
would have read and written: a ``Trajectory`` with prompt tokens/masks, action tokens/masks, rewards and
dones. Experts (``EXPERTS``, by task): ``maze_expert`` is the BFS-optimal maze policy
(``Maze.optimal_action``); ``wordle_expert`` is the greedy information-gain Wordle policy (the reference's
``OptimalPolicy``, spec §4), see its docstring; ``text_nav_expert`` plays a shortest completion of the
Text-Nav quest (the reference's walkthrough generalised to every state, spec §3).

**Reference files** (spec §10; loaders in ``llm_rl_scripts/maze/{bc,ilql}`` and ``llm_rl_scripts/wordle``):

- Maze FO: one episode per line, a JSON list of ``{"state", "action", "reward", "done"}`` steps, ``state`` the
  observation text the action answered.
- Maze PO: one episode per line, ``{"text_history": [obs, act, obs, act, ...], "rewards": [...], "dones":
  [...]}``; ``rewards``/``dones`` are aligned with ``text_history`` (an action's reward at its own index,
  0 / false at observations), as the reference's PO ILQL loader reads them.
- Wordle (``train_data.jsonl``; written by ``wordle/misc/data_gen.py``, read by ``wordle/bc/train_bc_gpt2.py``
  and ``wordle/ilql/train_ilql_gpt2.py``): one episode per line, ``{"sequence": [[text, is_action], ...],
  "reward": [...], "done": bool}``. ``sequence`` is the ``ReformatWordleEnvironment`` history: ``"Wordle:\n"``,
  then per try the guess letter-spaced (``"s l a t e\n"``, the agent's text stripped, spaces removed,
  letter-spaced) and the feedback (``"b b y b b\n"``, ``"\n"`` after an invalid guess). ``is_action`` is
  written as a float (1.0 / 0.0), as ``data_gen.py`` does. ``reward`` has one entry per element of
  ``sequence`` *after the first* (the loaders prepend 0.0): an action's reward at its own position, 0.0 at
  observations. ``done``: the episode ended.

``write_maze_jsonl`` / ``read_maze_jsonl`` and ``write_wordle_jsonl`` / ``read_wordle_jsonl`` write and read
them as lists of step dicts (``{"state", "action", "reward", "done"}``, Wordle steps also ``"feedback"``: the
text the env answered); ``trajectory_episodes`` / ``wordle_trajectory_episodes`` give the episodes of a
generated ``Trajectory`` and ``episodes_to_trajectory`` tokenises episodes back into the arrays the learners
train on (prompt left-truncated, action right-truncated, as the reference's ``BlockingStrategy``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm_gym.tasks.wordle import MARK_CHARS as WORDLE_MARKS
from learners.bc import FILTER_RULES
from learners.rollout import Trajectory, _prompt_width, scan_env
from pure_envs import text_nav as text_nav_core
from pure_envs import wordle as wordle_core

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


# ----------------------------------------------------------------------------------------------------
# Wordle: greedy information gain

#: Answer slots gathered per chunk of envs in the Wordle expert (int32: 32 MiB); sets the chunk size.
_WORDLE_CHUNK_ELEMENTS = 1 << 23


class _WordleTables:
    """Host tables of the Wordle expert for one core (built once; see ``wordle_expert``).

    ``pattern int32[G, A]``: the feedback of guess ``g`` against answer ``a`` as the core computes it
    (``env.feedback``, so the reference's letter rule L3 unless the env plays official Wordle), marks base 3
    with the first most significant (the core's ``row_marks``). ``order int32[G, A]``: each guess's answers
    sorted by pattern; ``segment int32[G * A]``: ``g * S + k`` for the ``k``-th distinct pattern of guess ``g``
    in that order (sorted, so the counts are one sorted segment sum); ``S`` the most distinct patterns of any
    guess. ``log_fixed int32[A + 1]``: ``round(log(c) * 2^bits)``, so a partition's ``sum c log c`` is an
    integer and equal partitions tie exactly.
    """

    def __init__(self, env):
        g_letters = jnp.asarray(env.guess_letters)
        a_letters = jnp.asarray(env.answer_letters)
        marks_of = jax.jit(jax.vmap(jax.vmap(env.feedback, (None, 0)), (0, None)))
        pow3 = np.asarray(wordle_core.POW3, np.int32)
        step = max(1, (1 << 22) // (len(env.answers) * wordle_core.N_CHARS))  # guesses per host batch
        self.pattern = np.concatenate([np.asarray(marks_of(g_letters[i:i + step], a_letters)) @ pow3
                                       for i in range(0, len(env.guesses), step)]).astype(np.int32)
        g, a = self.pattern.shape
        self.order = np.argsort(self.pattern, axis=1, kind="stable").astype(np.int32)
        ranked = np.take_along_axis(self.pattern, self.order, axis=1)
        new = np.concatenate([np.zeros((g, 1), bool), ranked[:, 1:] != ranked[:, :-1]], axis=1)
        rank = np.cumsum(new, axis=1)
        self.num_segments = int(rank.max()) + 1
        self.segment = (rank + np.arange(g)[:, None] * self.num_segments).astype(np.int32).reshape(-1)
        # 2 * (sum c log c) + 1 must fit int32: sum c log c <= A log A (+ A/2 of rounding)
        top = a * (np.log(max(a, 2)) + 0.5)
        self.bits = int(min(24, np.floor(np.log2((2**31 - 2) / (2 * top + 1)))))
        logs = np.log(np.maximum(np.arange(a + 1), 1))
        self.log_fixed = np.round(logs * 2.0**self.bits).astype(np.int32)
        self.answer_guess = np.asarray(env.answer_guess, np.int32)

    def partition_scores(self, cons: jax.Array) -> jax.Array:
        """bool[M, A] consistent answers -> int32[M, G]: ``sum_p c_p log c_p`` (fixed point) over the feedback
        partition of each guess. The entropy of that partition is ``log C - score / C``, so the lowest score
        is the most informative guess."""
        m = cons.shape[0]
        g, a = self.pattern.shape
        x = cons[:, jnp.asarray(self.order)].astype(jnp.int32).reshape(m, g * a)
        counts = jnp.zeros((m, g * self.num_segments), jnp.int32).at[:, jnp.asarray(self.segment)].add(
            x, indices_are_sorted=True).reshape(m, g, self.num_segments)
        return jnp.sum(counts * jnp.asarray(self.log_fixed)[counts], axis=-1, dtype=jnp.int32)

    def keys(self, cons: jax.Array, consistent_guess: jax.Array) -> jax.Array:
        """int32[M, G] sort keys: lower score first, then consistent guesses (argmin then takes the lowest
        index among equal keys)."""
        return 2 * self.partition_scores(cons) + (~consistent_guess).astype(jnp.int32)

    def consistent(self, state) -> jax.Array:
        """bool[N, A]: the answers that give every valid row of the batched ``WordleState`` its feedback."""
        code = jnp.sum(state.marks * jnp.asarray(wordle_core.POW3), axis=-1)  # [N, T]
        rows = jnp.asarray(self.pattern)[state.word]  # [N, T, A]
        ok = (state.kind != wordle_core.VALID)[..., None] | (rows == code[..., None])
        return jnp.all(ok, axis=1)

    def consistent_guesses(self, cons: jax.Array) -> jax.Array:
        """bool[N, G]: guesses that are still-consistent answers."""
        return jnp.zeros((cons.shape[0], self.pattern.shape[0]), bool).at[:, jnp.asarray(self.answer_guess)].set(cons)


@functools.lru_cache(maxsize=32)
def wordle_expert(vec_env) -> Expert:
    """The greedy information-gain Wordle policy (the reference's ``OptimalPolicy``) on the (batched)
    ``WordleState``: ``expert(state) -> int32[N]`` guess indices (``env.guesses``, the core's actions).

    Each env guesses, among all ``G`` guesses, the one whose feedback partition of the answers still
    consistent with every feedback of the episode has the most entropy. Consistency and partitions use the
    core's own feedback (``env.feedback``: the reference's rule L3, a letter is ``y`` when it is anywhere in
    the hidden word), through a ``[G, A]`` pattern table built once. Ties (equal partitions score equal
    exactly: ``sum c log c`` in fixed point) go to a still-consistent guess, then to the lowest index.
    Shortcuts that give the same choice: the empty board's guess is computed once; with one or two
    consistent answers the lowest-index one is guessed (every consistent guess splits two answers, and
    nothing can do better). The other envs go through a ``while_loop`` over chunks of envs (a gather of each
    guess's answers in pattern order and a sorted segment sum: ``M x G x A`` int32 per chunk, ``M`` from
    ``_WORDLE_CHUNK_ELEMENTS``), so the cost follows the number of envs that need it.

    Sized for the benchmark list (431 words: a few MiB of tables); a big list (12,972 x 2,315) works but
    costs ``G x A`` per env that needs a search. Cached per ``vec_env`` (a static argument of
    ``generate_dataset``)."""
    env = vec_env.env
    if not isinstance(env, wordle_core.Wordle):
        raise ValueError(f"{vec_env.id} is not a Wordle env; wordle_expert needs one")
    tab = _WordleTables(env)
    g, a = tab.pattern.shape
    n = int(vec_env.num_envs)
    m = max(1, min(n, _WORDLE_CHUNK_ELEMENTS // (g * a)))
    chunks_max = -(-n // m)
    everything = jnp.ones((1, a), bool)
    first = int(jax.device_get(jnp.argmin(jax.jit(tab.keys)(everything, tab.consistent_guesses(everything))[0])))

    def expert(state):
        cons = tab.consistent(state)
        count = jnp.sum(cons, axis=1)
        cg = tab.consistent_guesses(cons)
        need = (count > 2) & (count < a)
        # the envs that need a search first, padded to whole chunks (extra rows redo some env: same answer)
        order = jnp.argsort(~need, stable=True).astype(jnp.int32)
        order = jnp.concatenate([order, order[: chunks_max * m - n]])

        def body(i, best):
            idx = jax.lax.dynamic_slice(order, (i * m,), (m,))
            return best.at[idx].set(jnp.argmin(tab.keys(cons[idx], cg[idx]), axis=1).astype(jnp.int32))

        todo = (jnp.sum(need) + m - 1) // m
        best = jax.lax.fori_loop(0, todo, body, jnp.zeros((n,), jnp.int32))
        lowest = jnp.argmax(cg, axis=1).astype(jnp.int32)
        return jnp.where(count >= a, first, jnp.where(count <= 2, lowest, best)).astype(jnp.int32)

    expert.tables = tab  # for tests and tools
    expert.first_guess = first
    return expert


# ----------------------------------------------------------------------------------------------------
# Text-Nav: a shortest completion of the quest


@functools.lru_cache(maxsize=32)
def text_nav_expert(vec_env) -> Expert:
    """A shortest-completion Text-Nav policy on the (batched) ``TextNavState``: ``expert(state) -> int32[N]``
    command indices (``text_nav.COMMANDS``, the core's actions), FO and PO alike (the state is the same).

    From any state it plays the next command of a shortest way to the win quest (stale food in the fridge,
    fridge closed): go to where the stale food is (the living-room table at reset, or wherever a diluted
    action left it: a floor, a table, the chest, the inventory, the open fridge), take it (opening the chest
    first if it is in there), go to the kitchen, open the fridge, insert it, close the fridge. From a reset
    that is the reference's walkthrough (spec §3), of the same length. The lookup is the core's
    ``optimal_action``: a table over (room, stale food's location, chest open, fridge open), built on the
    host by a backward shortest-path search over those states with the core's own rules (the other objects
    never enable or block a command the quest needs, so that is a shortest path of the whole game); among
    equally short completions the lowest command index (sorted = display order) wins. Cached per ``vec_env``
    (a static argument of ``generate_dataset``)."""
    env = vec_env.env
    if not isinstance(env, text_nav_core.TextNav):
        raise ValueError(f"{vec_env.id} is not a Text-Nav env; text_nav_expert needs one")
    return lambda state: jax.vmap(env.optimal_action)(state).astype(jnp.int32)


#: The tasks with an expert for ``generate_dataset`` (registry id -> expert factory).
EXPERTS = {"maze-fo": maze_expert, "maze-po": maze_expert, "wordle": wordle_expert,
           "text-nav-fo": text_nav_expert, "text-nav-po": text_nav_expert}


def task_expert(vec_env) -> Expert:
    """The expert of ``vec_env``'s task (``EXPERTS``); ValueError naming the tasks that have one."""
    if vec_env.id not in EXPERTS:
        raise ValueError(f"no dataset expert for task {vec_env.id!r}; tasks with one: {sorted(EXPERTS)}")
    return EXPERTS[vec_env.id](vec_env)


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


def wordle_feedback(info: dict) -> dict[str, jax.Array]:
    """``Trajectory.info`` entry of a Wordle step: ``feedback`` int32[N], the marks the env answered the
    action with (base 3, first mark most significant, the core's ``row_marks``), -1 after an invalid guess.
    Read from ``final_observation`` (the text before the auto-reset), so an episode's last feedback is kept."""
    facts = info["final_observation"]["facts"]
    kind = facts["row_kind"]  # [N, T]: 1 on valid rows
    newest = jnp.argmax(jnp.where(kind == wordle_core.VALID, jnp.arange(kind.shape[1]) + 1, 0), axis=1)
    marks = jnp.take_along_axis(facts["row_marks"], newest[:, None], axis=1)[:, 0]
    return {"feedback": jnp.where(info["valid_action"], marks, -1).astype(jnp.int32)}


#: Per-task extra step facts that ``generate_dataset`` records (``scan_env``'s ``record``).
RECORDERS = {"wordle": wordle_feedback}


@functools.partial(jax.jit, static_argnames=("vec_env", "expert", "num_steps", "history_len", "bos_id", "width"))
def generate_dataset(vec_env, expert: Expert, key, num_steps: int, epsilon=0.0, *, history_len: int | None = None,
                     bos_id: int | None = None, width: int | None = None, env_params=None) -> Trajectory:
    """``num_steps`` steps of every env of ``vec_env`` under the ``epsilon``-diluted expert: a ``Trajectory``
    ``[num_steps, num_envs, ...]`` (one jitted scan). ``vec_env``: token observations, ``action_mode="tokens"``.
    ``epsilon`` may be traced. ``width``: action token width (default: the longest action). The task's
    ``RECORDERS`` entry adds its step facts to ``info`` (Wordle: ``feedback``)."""
    traj, _ = scan_env(vec_env, diluted_actor(vec_env, expert, epsilon, width), None, key, num_steps,
                       history_len=history_len, bos_id=bos_id, env_params=env_params,
                       record=RECORDERS.get(vec_env.id))
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
                        complete_only: bool = True, info_keys: Sequence[str] = ()) -> list[list[dict]]:
    """Host: the episodes of a ``Trajectory`` as lists of ``{"state", "action", "reward", "done"}`` steps
    (texts decoded with the env's tokenizer; a leading ``bos_id`` is dropped from the state), plus the
    ``info_keys`` entries of ``traj.info`` (as Python scalars).

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
                **{k: host.info[k][t, i].item() for k in info_keys},
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
                raise ValueError(f"{path}:{line_no}: expected a JSON list of steps or an object, "
                                 f"got {type(obj).__name__}")
            for s in ep:
                missing = {"state", "action"} - set(s)
                if missing:
                    raise ValueError(f"{path}:{line_no}: step lacks {sorted(missing)}")
            episodes.append([{"state": s["state"], "action": s["action"], "reward": float(s.get("reward", 0.0)),
                              "done": bool(s.get("done", False))} for s in ep])
    return episodes


def feedback_text(code: int) -> str:
    """The ``ReformatWordleEnvironment`` text of a feedback code (``wordle_feedback``): ``"b b y b b\n"``,
    or ``"\n"`` for an invalid guess (code -1)."""
    if code < 0:
        return "\n"
    marks = [(int(code) // int(p)) % 3 for p in wordle_core.POW3]
    return " ".join(WORDLE_MARKS[m] for m in marks) + "\n"


def reformat_guess(text: str) -> str:
    """An action text as the reference's Wordle history writes it: stripped, spaces removed, letter-spaced,
    newline-terminated (``"slate"`` and ``" s l a t e\n"`` -> ``"s l a t e\n"``)."""
    return " ".join(text.strip().replace(" ", "")) + "\n"


def wordle_trajectory_episodes(vec_env, traj: Trajectory, bos_id: int | None = None,
                               complete_only: bool = True) -> list[list[dict]]:
    """``trajectory_episodes`` of a Wordle ``Trajectory`` from ``generate_dataset`` (which records
    ``feedback``): every step also has ``"feedback"``, the text the env answered its action with."""
    if "feedback" not in traj.info:
        raise ValueError("the trajectory has no Wordle feedback: make it with generate_dataset on a wordle env")
    episodes = trajectory_episodes(vec_env, traj, bos_id, complete_only, info_keys=("feedback",))
    for ep in episodes:
        for s in ep:
            s["feedback"] = feedback_text(s["feedback"])
    return episodes


def write_wordle_jsonl(path: str | os.PathLike, episodes: Sequence[Sequence[dict]]) -> int:
    """Write Wordle episodes (steps with ``"feedback"``, e.g. ``wordle_trajectory_episodes``) in the reference's
    layout (module docstring). The first step's state is the initial text (``"Wordle:\n"``); every later state
    must be the texts before it joined, as the env shows them. Returns the number of lines written."""
    with open(path, "w", encoding="utf-8") as f:
        for n, ep in enumerate(episodes):
            if not ep:
                raise ValueError(f"episode {n} has no steps")
            seq, reward = [[ep[0]["state"], 0.0]], []
            for j, s in enumerate(ep):
                if "feedback" not in s:
                    raise ValueError(f"episode {n}, step {j} has no 'feedback' (the env's answer text)")
                seen = "".join(text for text, _ in seq)
                if s["state"] != seen:
                    raise ValueError(f"episode {n}, step {j}: state {s['state']!r} is not the history {seen!r}")
                seq += [[reformat_guess(s["action"]), 1.0], [s["feedback"], 0.0]]
                reward += [float(s["reward"]), 0.0]
            f.write(json.dumps({"sequence": seq, "reward": reward, "done": bool(ep[-1]["done"])}) + "\n")
    return len(episodes)


def read_wordle_jsonl(path: str | os.PathLike) -> list[list[dict]]:
    """Read a reference Wordle jsonl file as lists of ``{"state", "action", "reward", "done", "feedback"}``
    steps, one per action of ``sequence``: ``state`` is every text before it joined (the env's observation),
    ``reward`` the action's entry of ``[0.0] + reward`` (as the reference's loaders align it), ``done`` the
    line's ``done`` on its last action, ``feedback`` the text after it (``""`` if the line ends there)."""
    episodes = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj, dict) or not {"sequence", "reward", "done"} <= set(obj):
                raise ValueError(f"{path}:{line_no}: expected an object with 'sequence', 'reward' and 'done'")
            seq = obj["sequence"]
            if not all(isinstance(x, (list, tuple)) and len(x) == 2 and isinstance(x[0], str) for x in seq):
                raise ValueError(f"{path}:{line_no}: 'sequence' must be a list of [text, is_action] pairs")
            rewards = [0.0] + [float(r) for r in obj["reward"]]
            if len(rewards) != len(seq):
                raise ValueError(f"{path}:{line_no}: 'reward' has {len(rewards) - 1} entries; 'sequence' has "
                                 f"{len(seq)} texts (one reward per text after the first)")
            acts = [i for i, (_, is_action) in enumerate(seq) if bool(is_action)]
            ep = []
            for i in acts:
                nxt = seq[i + 1] if i + 1 < len(seq) and not bool(seq[i + 1][1]) else ("", 0.0)
                ep.append({"state": "".join(text for text, _ in seq[:i]), "action": seq[i][0],
                           "reward": rewards[i], "done": bool(obj["done"]) and i == acts[-1],
                           "feedback": nxt[0]})
            episodes.append(ep)
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
