"""What every config section shares: the base model that refuses unknown keys, and the error text naming a bad key.

The sections themselves live in core (the node), notifications (channels, robots, routing) and host (hosted nodes).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, so typos are caught."""

    model_config = ConfigDict(extra="forbid")


def describe_errors(exc: ValidationError, source: str) -> str:
    """One line per bad key: ``source: key 'a.b': why``, joined by '; ' (a ConfigError's message)."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top)"
        message = err["msg"].removeprefix("Value error, ")  # pydantic's wrapping of our own messages
        parts.append(f"{source}: key '{key}': {message}")
    return "; ".join(parts)
