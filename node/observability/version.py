"""The software version of this supnet installation (``supnet --version``, GetNodeInfo, ``supnet_build_info``)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def software_version() -> str:
    """The installed package's version ("unknown" when run from a tree that was never installed)."""
    try:
        return version("supnet")
    except PackageNotFoundError:
        return "unknown"
