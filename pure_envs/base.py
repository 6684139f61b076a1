"""Shared conventions of the symbolic cores.

Every core is a gymnax 1.0 ``Environment``. Its observation is a dict with two parts:

* ``"symbolic"`` — arrays for a symbolic policy (positions, bits, ...);
* ``"facts"`` — small int32 arrays from which the text layer writes the task's text
  (which sentence, which slot value). Cores never build strings.

Discrete cores take an int action in ``[0, num_actions)``; the index ``num_actions``
(``invalid_action``) stands for text that matched no action string, and takes the task's
invalid-action path. Any other out-of-range index is treated the same way.
"""

from __future__ import annotations

from gymnax.environments import environment


class TextEnv(environment.Environment):
    """Base of jaxlm-gym cores (gymnax ``Environment`` with the conventions above)."""

    #: Names of the integer facts the core emits, with their shapes (for docs and checks).
    fact_shapes: dict[str, tuple[int, ...]] = {}

    @property
    def invalid_action(self) -> int:
        """The action index meaning "text that is no action of this task"."""
        return self.num_actions

    def __hash__(self) -> int:  # gymnax jits ``step`` with ``self`` static
        return id(self)

    def __eq__(self, other) -> bool:
        return self is other
