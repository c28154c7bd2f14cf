"""Errors shown to users. Each names the input it is about (once), the node that has it, and what is allowed."""
from __future__ import annotations


class InputError(ValueError):
    """A user input cannot be used.

    `field` is the node input / CLI option it concerns and `node` (optional) the node that has it, e.g.
    `scale` on `LoRA Stack #2`. `str()` reads `field (node): reason`; `reason` is the text after the label.
    """

    def __init__(self, field_name: str, message: str, *, node: str | None = None):
        self.field = field_name
        self.node = node
        self.reason = message
        super().__init__(f"{self.label}: {message}")

    @property
    def label(self) -> str:
        return f"{self.field} ({self.node})" if self.node else self.field

    def on_node(self, node: str) -> "InputError":
        """The same error, naming `node` when it names none yet."""
        if self.node:
            return self
        return InputError(self.field, self.reason, node=node)
