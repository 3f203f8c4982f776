"""The docker-compose tree without Docker: the shipped configs and the containers' commands, run as processes.

docker-compose.yml runs ``supnet pki provision-local`` once, then ``supnet serve`` per node on the data
directories in config/compose/. This test runs exactly those commands on copies of those directories, with only
the addresses and the province's PostgreSQL URL rewritten for loopback, imports data at the district, and
checks that it reaches the province over mutual TLS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from node.cli import stats_cmd
from node.config import load_config, save_config
from node.localtree import free_ports

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "config" / "compose"
NODES = ("gd", "gd.gz", "gd.gz.py")


def _supnet(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _json(*args: object, cwd: Path) -> Any:
    result = _supnet(*args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _polled_stats(data_dir: Path) -> Any:
    """``supnet stats --subtree --json`` run in this process: a wait polls it many times, a process per poll would
    take the CPU the starting nodes need (the answers the test asserts on come from real processes)."""
    cli = typer.Typer()
    stats_cmd.register(cli)
    cli.callback()(lambda: None)  # a group, so the command is named as on the command line
    result = CliRunner().invoke(cli, ["stats", "--subtree", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _compose_copy(tmp_path: Path, pg_url: str) -> Path:
    """config/compose copied, each service host:7100 rewritten to a loopback port, the province on ``pg_url``."""
    root = tmp_path / "compose"
    shutil.copytree(COMPOSE_DIR, root)
    ports = dict(zip(NODES, free_ports(len(NODES)), strict=True))
    for node_id in NODES:
        config = load_config(root / node_id)
        assert config.federation.listen == "0.0.0.0:7100", "the compose services all listen on 7100"
        config.federation.listen = f"127.0.0.1:{ports[node_id]}"
        if config.federation.parent_id:
            # Compose names the service after the node id with '-' for '.' (gd.gz -> gd-gz:7100).
            parent = config.federation.parent_id
            assert config.federation.parent_address == f"{parent.replace('.', '-')}:7100"
            config.federation.parent_address = f"127.0.0.1:{ports[parent]}"
        if config.store.url:
            assert "@postgres:5432/" in config.store.url, "the compose store URL names the postgres service"
            config.store.url = pg_url
        save_config(root / node_id, config)
    return root


@pytest.mark.postgres
def test_compose_tree_runs_its_commands_and_rolls_district_data_up_to_the_province(tmp_path: Path, pg_url: str) -> None:
    root = _compose_copy(tmp_path, pg_url)
    provisioned = _supnet("pki", "provision-local", *NODES, cwd=root)  # the compose `pki` service
    assert provisioned.returncode == 0, provisioned.stderr
    generated = _supnet(
        "generate", "--id", "gd.gz.py", "--cases", 300, "--seed", 7, "--out", tmp_path / "gen", cwd=root
    )
    assert generated.returncode == 0, generated.stderr

    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for node_id in NODES:  # in compose's depends_on order
            processes[node_id] = subprocess.Popen(
                [sys.executable, "-m", "node.cli.main", "serve", "--data-dir", node_id],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "SUPNET_LOG_LEVEL": "WARNING"},
            )
        for node_id, process in processes.items():
            deadline = time.monotonic() + 30
            while not (root / node_id / "serve.json").exists():
                assert process.poll() is None, f"{node_id}: serve exited with {process.returncode}"
                assert time.monotonic() < deadline, f"{node_id}: serve did not start"
                time.sleep(0.1)

        # First the empty tree rolls up, so what follows is an import beside running nodes: `supnet import` is
        # another process, and the district's `serve` must notice the new data in the database by itself.
        deadline = time.monotonic() + 60
        while _polled_stats(root / "gd")["completeness"]["nodes_reported_in_window"] < 3:
            assert time.monotonic() < deadline, "the empty tree never rolled up"
            time.sleep(0.3)
        imported = _supnet("import", "--data-dir", "gd.gz.py", *sorted((tmp_path / "gen").iterdir()), cwd=root)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        district = _json("stats", "--data-dir", "gd.gz.py", cwd=root)["counts"]
        assert district["cases_received"] == 300

        deadline = time.monotonic() + 30
        while True:
            polled = _polled_stats(root / "gd")
            if polled["rows"][0]["received"] == 300 and polled["completeness"]["nodes_reported_in_window"] == 3:
                break
            assert time.monotonic() < deadline, f"the province never saw the district's cases: {polled}"
            time.sleep(0.5)
        province = _json("stats", "--subtree", "--data-dir", "gd", cwd=root)
        totals = province["rows"][0]
        assert totals["received"] == 300 and province["completeness"]["nodes_reported_in_window"] == 3
        assert totals["completed"] == district["cases_completed"]
        assert province["completeness"]["nodes_in_subtree"] == 3
        assert [child["child_id"] for child in province["children"]] == ["gd.gz"]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {node_id: process.wait(timeout=30) for node_id, process in processes.items()}
    assert codes == dict.fromkeys(NODES, 0), "every node stops cleanly on SIGTERM (docker compose stop)"
