"""A host file (``supnet serve --host-config FILE``): the nodes one process serves and the threads they share.

Each hosted node keeps its own data directory and ``supnet.toml`` (node.config.core); this file only lists them,
and says where the host's one Prometheus endpoint for all of them listens (``metrics_listen``; the nodes' own
``metrics.listen`` is not used while they are hosted).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import Field, ValidationError

from node.config.base import OptionalListenAddress, Section, describe_errors
from node.errors import ConfigError


class HostConfig(Section):
    """A host file (``supnet serve --host-config FILE``): the nodes one process serves, each its own data dir."""

    data_dirs: list[Path] = Field(min_length=1, description="data directories; relative ones from the file's folder")
    rpc_workers: int = Field(default=64, ge=2, le=1024, description="threads all hosted nodes' calls share")
    job_workers: int = Field(default=8, ge=1, le=256, description="threads all hosted nodes' scheduled jobs share")
    metrics_listen: OptionalListenAddress = Field(
        default="127.0.0.1:0",
        description="host:port of the one http://HOST:PORT/metrics for all hosted nodes, each series labelled node "
        "(port 0: any free port, written to every hosted node's serve.json as metrics_address); empty: no endpoint",
    )


def load_host_config(path: Path) -> HostConfig:
    """Read and validate a host file; data directories come back absolute (relative to the file's folder)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"host config {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        host = HostConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, str(path))) from exc
    host.data_dirs = [(path.parent / folder).resolve() for folder in host.data_dirs]
    return host
