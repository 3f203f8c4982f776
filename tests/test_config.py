"""supnet.toml: validated in one place, errors naming the bad key; the shipped example configs load."""

from pathlib import Path

import pytest

from node.config import NodeConfig, load_config, parse_config, save_config
from node.errors import ConfigError

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


@pytest.mark.parametrize("node_dir", sorted((REPO / "config" / "compose").iterdir()))
def test_shipped_example_configs_validate(node_dir: Path) -> None:
    assert load_config(node_dir).id == node_dir.name


@pytest.mark.parametrize("bad", ["gd.gz_1", "gd.gz-", "gd..gz", "1gd", "gd.GZ"])
def test_node_ids_must_be_dns_label_safe(bad: str) -> None:
    with pytest.raises(ConfigError, match="key 'id'"):
        parse_config({"id": bad})
