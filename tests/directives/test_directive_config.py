"""The ``[directives]`` section of supnet.toml: defaults written by ``supnet init``, each bad value named by its key."""

from __future__ import annotations

import pytest

from node.config import parse_config
from node.errors import ConfigError


def test_defaults() -> None:
    config = parse_config({"id": "gd.gz"}).directives
    assert config.default_respond_within_workdays == 5
    assert config.escalate_after_workdays == 3
    assert config.check_interval_seconds == 60.0 and config.poll_seconds == 1.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("escalate_after_workdays", 0),
        ("default_respond_within_workdays", 121),
        ("check_interval_seconds", 0),
        ("poll_seconds", 120),
        ("escalate_after", 3),
    ],
)
def test_a_bad_value_names_its_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"key 'directives\.{key}'"):
        parse_config({"id": "gd.gz", "directives": {key: value}}, "supnet.toml")
