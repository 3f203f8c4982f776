"""supnet.toml: validated in one place, errors naming the bad key; the shipped example configs load."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from node.bootstrap import init_node
from node.config import NodeConfig, load_config, parse_config, save_config
from node.errors import ConfigError, ExitCode

REPO = Path(__file__).resolve().parents[1]


def test_error_names_the_bad_key() -> None:
    with pytest.raises(ConfigError, match=r"key 'supervision.reminder_workdays'"):
        parse_config({"id": "gd.gz", "supervision": {"reminder_workdays": -1}})


def test_unknown_key_is_an_error_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"key 'federation.parnet_address'"):
        parse_config({"id": "gd", "federation": {"parnet_address": "x"}})


def test_bad_node_id_rejected() -> None:
    with pytest.raises(ConfigError, match="key 'id'"):
        parse_config({"id": "GD/gz"})


def test_round_trip_and_parent_id(tmp_path: Path) -> None:
    config = NodeConfig(id="gd.gz.py", level="district")
    save_config(tmp_path, config)
    loaded = load_config(tmp_path)
    assert loaded == config
    assert loaded.parent_id == "gd.gz"


def test_missing_config_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="supnet init"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "node_dir", sorted(path.parent for path in (REPO / "config" / "compose").glob("*/supnet.toml"))
)
def test_shipped_example_configs_validate(node_dir: Path) -> None:
    assert load_config(node_dir).id == node_dir.name


@pytest.mark.parametrize("bad", ["gd.gz_1", "gd.gz-", "gd..gz", "1gd", "gd.GZ"])
def test_node_ids_must_be_dns_label_safe(bad: str) -> None:
    with pytest.raises(ConfigError, match="key 'id'"):
        parse_config({"id": bad})


@pytest.mark.parametrize("zone", ["Asia/Shangai", "", "../etc/passwd"])
def test_unknown_time_zone_is_refused_naming_the_key_and_the_value(zone: str) -> None:
    with pytest.raises(ConfigError, match=rf"key 'calendar.timezone': unknown time zone {re.escape(repr(zone))}"):
        parse_config({"id": "gd.gz", "calendar": {"timezone": zone}})


def _supnet(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``supnet`` program (python -m node), as an operator runs it."""
    env = {**os.environ, "SUPNET_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "node", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _edit_config(data_dir: Path, old: str, new: str) -> None:
    path = data_dir / "supnet.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# Each bad config with two of the six commands, so every command meets a bad config and every bad config a command
# (loading the config is one code path for all; each message's wording is checked in-process above): 6 processes,
# not 18.
@pytest.mark.parametrize(
    ("old", "new", "named", "commands"),
    [
        (
            'timezone = "Asia/Shanghai"',
            'timezone = "Asia/Shangai"',
            r"key 'calendar.timezone': .*'Asia/Shangai'",
            (["stats"], ["serve"]),
        ),
        (
            'timezone = "Asia/Shanghai"',
            'timezone = ""',
            r"key 'calendar.timezone': unknown time zone ''",
            (["audit"], ["items", "list"]),
        ),
        (
            'parent_address = ""',
            'parent_address = "127.0.0.1:99999"',
            r"key 'federation.parent_address': .*99999",
            (["alerts"], ["subtree"]),
        ),
    ],
)
def test_a_bad_config_is_one_line_and_a_non_zero_exit_for_every_command(
    tmp_path: Path, old: str, new: str, named: str, commands: tuple[list[str], ...]
) -> None:
    data_dir = tmp_path / "n"
    init_node(data_dir, "gd.gz", level="city")
    _edit_config(data_dir, old, new)
    for command in commands:
        done = _supnet(*command, "--data-dir", str(data_dir))
        assert done.returncode == ExitCode.CONFIG, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout, command
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (command, done.stderr)
        assert re.search(rf"error \[CONFIG\] .*supnet.toml: {named}", lines[0]), (command, lines[0])


@pytest.mark.parametrize(
    ("federation", "key", "why"),
    [
        ({"parent_id": "gd"}, "federation.parent_address", "parent_address is empty"),
        ({"parent_address": "127.0.0.1:7100"}, "federation.parent_address", "parent_id is empty"),
        ({"parent_id": "gd", "parent_address": "127.0.0.1:99999"}, "federation.parent_address", "'99999'"),
        ({"parent_id": "gd", "parent_address": "127.0.0.1:0"}, "federation.parent_address", "from 1 to 65535"),
        ({"parent_id": "gd", "parent_address": "127.0.0.1"}, "federation.parent_address", "not host:port"),
        ({"parent_id": "gd", "parent_address": "gd gz:7100"}, "federation.parent_address", "not a host name"),
        ({"parent_id": "gd", "parent_address": "::1:7100"}, "federation.parent_address", "in brackets"),
        ({"parent_id": "gd.sz", "parent_address": "gd-sz:7100"}, "federation", "node gd.gz's parent is 'gd'"),
        ({"listen": "0.0.0.0:65536"}, "federation.listen", "'65536'"),
        ({"listen": ""}, "federation.listen", "not host:port"),
        ({"enrol_listen": "127.0.0.1:-1"}, "federation.enrol_listen", "'-1'"),
        ({"children": [{"id": "gd.gz.py", "address": "127.0.0.1:70000"}]}, "federation.children.0.address", "70000"),
    ],
)
def test_federation_addresses_are_refused_naming_the_key(federation: dict[str, object], key: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"key '{re.escape(key)}': .*{re.escape(why)}"):
        parse_config({"id": "gd.gz", "federation": federation})


def test_good_federation_addresses_pass() -> None:
    config = parse_config(
        {
            "id": "gd.gz",
            "federation": {
                "listen": "0.0.0.0:0",
                "enrol_listen": "[::1]:7101",
                "parent_id": "gd",
                "parent_address": "gd-gz_1.example.cn:65535",
                "children": [{"id": "gd.gz.py", "address": "10.0.0.7:1"}, {"id": "gd.gz.th"}],
            },
        }
    )
    assert config.federation.parent_address == "gd-gz_1.example.cn:65535"
    assert parse_config({"id": "gd"}).federation.parent_address == ""  # a root: neither parent key
