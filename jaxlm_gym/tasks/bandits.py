"""LLF-Bench bandits text: instruction, language feedback and arm-index actions.

All sentences are ours (LLF-Bench's wording is not reproduced); what each conveys and
which values it fills in follow the spec (``llf-bench.md`` §2.1). The observation is empty
(the reference's is None): everything the agent learns comes from the feedback.

Numbers: rewards and expected rewards are written with 3 decimals (the reference prints
full float precision).

Actions: ``"0"`` .. ``"n-1"`` (the reference's ``TextWrapper`` applies ``int()``); a
leading space or a trailing newline is accepted too. Any other text takes the reference's
invalid path (no pull, reward 0, our own error message as the feedback).
"""

from __future__ import annotations

from pure_envs import bandits

from ..feedback import llf_text
from ..registry import register
from ..text import Lit, Num, Paraphrase, Seq, Slot


def _arm(key: str, n: int) -> Slot:
    return Slot(key, [f" {i}" for i in range(n)])


def bandits_text(env: bandits.Bandits):
    n = env.num_actions
    about = bandits.VARIANT_TABLE[env.variant][3]
    head = Lit(f"A multi-armed bandit with {about}.\n")
    task = Paraphrase("pp_instruction", [
        Lit(f"Find the arm with the highest expected reward in as few pulls as you can. "
            f"Each turn, answer with one integer from 0 to {n - 1}: the arm to pull."),
        Lit(f"Your job is to discover, quickly, which arm pays the most on average. "
            f"Reply with a single arm index, an integer between 0 and {n - 1}."),
        Lit(f"Pull arms to learn which one has the best expected payout, and identify it fast. "
            f"An action is an integer in [0, {n - 1}]."),
        Lit(f"Identify the most rewarding arm with as little exploration as possible. "
            f"Choose an arm by writing its number, from 0 up to {n - 1}."),
    ])
    hint = Paraphrase("pp_instruction_p", [
        Seq(Lit(" A hint: arm"), _arm("hint_arm", n), Lit(" is not the best; its expected reward is"),
            Num("hint_reward", 3), Lit(".")),
        Seq(Lit(" To help you: arm"), _arm("hint_arm", n), Lit(" has an expected reward of"), Num("hint_reward", 3),
            Lit(", and it is not the top arm.")),
        Seq(Lit(" Note that arm"), _arm("hint_arm", n), Lit(" (expected reward"), Num("hint_reward", 3),
            Lit(") is not the one you want.")),
        Seq(Lit(" One clue: the expected reward of arm"), _arm("hint_arm", n), Lit(" is"), Num("hint_reward", 3),
            Lit(", which is not the highest.")),
    ])
    answer = Paraphrase("pp_instruction_c", [
        Seq(Lit(" The best arm is"), _arm("best_arm", n), Lit(".")),
        Seq(Lit(" Arm"), _arm("best_arm", n), Lit(" has the highest expected reward.")),
        Seq(Lit(" The optimal action is"), _arm("best_arm", n), Lit(".")),
        Seq(Lit(" You should always pull arm"), _arm("best_arm", n), Lit(".")),
    ])
    instruction = {"b": Seq(head, task), "p": Seq(head, task, hint), "c": Seq(head, task, answer)}

    got = Num("reward", 3)
    feedback = {
        "r": {1: [Seq(Lit("You received a reward of"), got, Lit(".")),
                  Seq(Lit("That pull paid"), got, Lit(".")),
                  Seq(Lit("The arm gave you"), got, Lit(".")),
                  Seq(Lit("Reward this turn:"), got, Lit("."))]},
        "hp": {1: [Lit("Well done: that is the best arm."),
                   Lit("Good choice, no arm has a higher expected reward."),
                   Lit("You picked the optimal arm."),
                   Lit("That arm is the best one to pull.")]},
        "hn": {1: [Lit("That is not the best arm: its expected reward is not the highest."),
                   Lit("Another arm pays more on average than that one."),
                   Lit("Not the optimal arm; some arm has a higher expected reward."),
                   Lit("That arm falls short of the best expected payout.")]},
        "fp": {1: [Seq(Lit("Try arm"), _arm("best_arm", n), Lit("; its expected reward is"), Num("best_reward", 3),
                       Lit(".")),
                   Seq(Lit("Pull arm"), _arm("best_arm", n), Lit(" next, which pays"), Num("best_reward", 3),
                       Lit(" on average.")),
                   Seq(Lit("Arm"), _arm("best_arm", n), Lit(" is the one to choose (expected reward"),
                       Num("best_reward", 3), Lit(").")),
                   Seq(Lit("Go for arm"), _arm("best_arm", n), Lit(": expected reward"), Num("best_reward", 3),
                       Lit("."))]},
        "fn": {1: [Seq(Lit("Avoid arm"), _arm("fn_arm", n), Lit("; its expected reward is only"), Num("fn_reward", 3),
                       Lit(".")),
                   Seq(Lit("Do not pull arm"), _arm("fn_arm", n), Lit(", which pays"), Num("fn_reward", 3),
                       Lit(" on average.")),
                   Seq(Lit("Stay away from arm"), _arm("fn_arm", n), Lit(" (expected reward"), Num("fn_reward", 3),
                       Lit(").")),
                   Seq(Lit("Arm"), _arm("fn_arm", n), Lit(" is a poor pick: expected reward"), Num("fn_reward", 3),
                       Lit("."))]},
    }
    invalid = [Lit(f"That is not an arm. Answer with one integer from 0 to {n - 1}."),
               Lit(f"I could not read an arm index; write a whole number between 0 and {n - 1}."),
               Lit(f"Invalid action: the arms are numbered 0 to {n - 1}."),
               Lit(f"Please reply with just an arm number, 0 through {n - 1}.")]
    actions = tuple(str(i) for i in range(n))
    aliases = {}
    for i, a in enumerate(actions):
        for variant in (f" {a}", f"{a}\n", f" {a}\n"):
            aliases[variant] = i
    return llf_text(env, instruction=instruction, feedback=feedback, observation=Lit(""), actions=actions,
                    aliases=aliases, invalid=invalid)


for _variant in bandits.VARIANTS:
    register(f"llf-bandits-Bandit{_variant}-v0", bandits.Bandits, bandits_text,
             f"LLF-Bench bandit ({bandits.VARIANT_TABLE[_variant][3]}), language feedback", variant=_variant)
