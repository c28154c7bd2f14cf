"""Errors shown to users. Each names the input it is about and what is allowed."""
from __future__ import annotations


class InputError(ValueError):
    """A user input cannot be used. `field` is the node input / CLI option it concerns."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")
