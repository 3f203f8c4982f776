"""What every config section shares: the base model refusing unknown keys, error texts, the host:port check.

The error text names a bad key; ``check_address`` checks the node's listen and parent addresses and the host file's
metrics_listen. The sections themselves live in core (the node), notifications (channels, robots, routing) and host
(hosted nodes).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

# A host name as DNS and docker-compose spell them (compose service names may hold "_").
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")


def check_address(value: str, *, listening: bool = False) -> str:
    """``value`` if it is ``host:port`` (IPv6 in brackets), else ValueError saying why.

    A port is 1–65535; a listen address may also name port 0 (any free port, the bound one is in serve.json).
    """
    host, colon, port_text = value.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:7100, [::1]:7100, gd-gz:7100)")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{value!r}: {host} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 host in brackets, e.g. [::1]:7100")
    elif not _HOST_NAME.match(host):
        raise ValueError(f"{value!r}: {host!r} is not a host name or IP address")
    lowest = 0 if listening else 1
    if not port_text.isascii() or not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: port {port_text!r} is not a number from {lowest} to 65535")
    return value


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


def check_optional_listen(value: str) -> str:
    """``value`` checked as a listen address (``check_address``); empty ("no endpoint") passes as it is."""
    return check_address(value, listening=True) if value else value


# A listen address that may be left empty (an endpoint that is off): the type of such config fields.
OptionalListenAddress = Annotated[str, AfterValidator(check_optional_listen)]
