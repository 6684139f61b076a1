"""LLF-Bench parking text: instruction, feedback, observation numbers, vector actions.

Sentences are ours. The observation text lists the car's and the goal's
``[x, y, vx, vy, cos_h, sin_h]`` (scaled as the reference's observation: positions /100,
speeds /5) with 3 decimals; the reward is written with 4 decimals. The string API hands out
the numpy dict instead unless ``text_observation=True`` (reference F22).

Actions are the text of a 2-vector ``[throttle, steering]`` (the reference ``exec``s the
text; here an in-graph parser accepts a bracketed pair of Python number literals, see
``jaxlm_gym.text.numparse``); anything else is the invalid path (no simulation step,
reward 0, our own error message as the feedback).
"""

from __future__ import annotations

from pure_envs import parking

from ..feedback import llf_text
from ..registry import register
from ..text import Lit, Num, Paraphrase, Seq
from ..text.numparse import VectorActionParser

EXAMPLES = ("[0.5, 0.1]", "[-1, 0]", "[1, -0.5]", "[0, 0]")


def _vector(prefix: str) -> Seq:
    # fast_digits=1: the scaled features lie within (-10, 10) (speeds / 5 <= 8); other values
    # are written exactly by the slower general layout.
    nums = [Num(f"{prefix}_0", 3, " [", fast_digits=1)]
    for i in range(1, 6):
        nums += [Lit(","), Num(f"{prefix}_{i}", 3, fast_digits=1)]
    return Seq(*nums)  # the closing "]" merges with what follows: the caller writes it


def parking_text(env: parking.Parking):
    if env.normalized_action_text:
        ranges = "throttle and steering are each a number from -1 to 1"
    else:  # F21: the physical ranges, although the action is normalised
        ranges = "throttle is an acceleration from -5 to 5 m/s^2 and steering an angle from -pi/4 to pi/4 rad"
    preface = Lit("Drive the car into the goal parking spot without hitting a wall. Each observation gives the car's "
                  "state and the goal's state as [x, y, vx, vy, cos_h, sin_h]. An action is a pair [throttle, "
                  f"steering]: {ranges}.")
    request = Paraphrase("pp_instruction", [
        Lit(" Reply with your action as [throttle input, steering input]."),
        Lit(" Write each action in the form [throttle input, steering input]."),
        Lit(" Give your next action as [throttle input, steering input]."),
        Lit(" Answer with the action, formatted [throttle input, steering input]."),
        Lit(" Your reply should be an action [throttle input, steering input]."),
        Lit(" State the action to take as [throttle input, steering input]."),
    ])
    reward = Num("reward", 4, fast_digits=1)  # rewards lie in about (-7, 0]
    feedback = {
        "r": {1: [Seq(Lit("Your reward this step is"), reward, Lit(".")),
                  Seq(Lit("That action earned"), reward, Lit(".")),
                  Seq(Lit("Reward:"), reward, Lit(".")),
                  Seq(Lit("You got a reward of"), reward, Lit("."))]},
        "hp": {1: [Lit("That was the best action you could take."),
                   Lit("Excellent, no action could have done better."),
                   Lit("Perfect move: the car is where it should be."),
                   Lit("That action was optimal.")]},
        "hn": {1: [Lit("Bad action: it made the car crash."),
                   Lit("That was a poor choice, the car hit a wall."),
                   Lit("The car crashed because of that action."),
                   Lit("Avoid moves like that one; it caused a collision.")]},
    }
    invalid = [Lit("I could not read that action; write two numbers as [throttle, steering]."),
               Lit("Invalid action. Use the form [throttle, steering], for example [0.5, -0.1]."),
               Lit("That is not an action: give a list of two numbers, [throttle, steering]."),
               Lit("The action must be a pair of numbers in brackets, like [0.2, 0.0].")]
    observation = Seq(Lit("Car:"), _vector("obs"), Lit("]. Goal:"), _vector("desired"), Lit("].\n"))
    return llf_text(env, instruction={"b": Seq(preface, request)}, feedback=feedback, observation=observation,
                    actions=EXAMPLES, parser=VectorActionParser, invalid=invalid)


register("llf-highway-parking-v0", parking.Parking, parking_text,
         "LLF-Bench parking (highway-env parking-v0 dynamics in JAX), language feedback")
