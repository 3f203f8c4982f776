"""docs/deploy.md, followed by a newcomer on this machine: two data directories, two pairs of fixed ports, PostgreSQL.

The commands are the guide's own: every ``sh`` block marked ``<!-- test: MACHINE -->`` (``province`` or ``city``;
``background`` for ``supnet serve``) runs as written, in order, in bash with ``set -eu``, with the site values the
guide asks for set the way its "try it on one machine" paragraph says — loopback, free fixed ports, a temporary data
directory per node, this test's own PostgreSQL schema — and the token the province printed handed to the city. So
the guide and the test cannot drift apart: a changed command is what runs. Then a report of the city must have
arrived at the province, and a drill-down crosses over.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from node.cli import subtree_cmd
from node.localtree import free_ports
from tests.deploy.conftest import REPO

GUIDE = REPO / "docs" / "deploy.md"
MARKED_BLOCK = re.compile(r"<!-- test: (province|city)( background)? -->\n```sh\n(.*?)```", re.DOTALL)
TOKEN = re.compile(r"supnet-enrol-\S+")
# The site values of docs/deploy.md §4 ("Site values"), for each machine.
SITE_VALUES = {
    "province": ("DATA", "LISTEN", "ENROL_LISTEN", "CITY", "DB_URL"),
    "city": ("DATA", "LISTEN", "ENROL_LISTEN", "PROVINCE", "PROVINCE_ENROL"),
}


@dataclass(frozen=True)
class Block:
    """A command block of the guide: on which machine, whether it keeps running, and its text."""

    machine: str
    background: bool
    commands: str


def guide_blocks() -> list[Block]:
    """The marked blocks of docs/deploy.md, in order."""
    text = GUIDE.read_text(encoding="utf-8")
    return [Block(machine, bool(background), body) for machine, background, body in MARKED_BLOCK.findall(text)]


def test_the_guide_marks_the_path_from_nothing_to_a_reporting_pair() -> None:
    blocks = guide_blocks()
    joined = {machine: "\n".join(b.commands for b in blocks if b.machine == machine) for machine in SITE_VALUES}
    for needed in ("supnet init", "--listen", "--enrol-listen", "--db", "--child", "pki init-root", "pki token"):
        assert needed in joined["province"], f"the province's marked blocks lack {needed!r}"
    for needed in ("supnet init", "--listen", "--parent", "supnet enroll", "--token"):
        assert needed in joined["city"], f"the city's marked blocks lack {needed!r}"
    assert [(b.machine, b.background) for b in blocks if b.background] == [("province", True), ("city", True)]
    text = GUIDE.read_text(encoding="utf-8")
    for machine, names in SITE_VALUES.items():
        used = set(re.findall(r"\$\{?([A-Z_]+)", joined[machine])) - {"TOKEN"}
        assert used <= set(names), f"{machine} blocks use {used - set(names)}, which §4 does not set"
        for name in names:
            assert re.search(rf"^{name}=", text, re.MULTILINE), f"§4 does not show how to set {name}"


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The guide's long-running blocks; stopped with SIGTERM (Ctrl-C's effect) at the end, by their pids."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the group the block's bash leads: its supnet serve too
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(600)  # a guard: eleven CLI runs and two servers, slow only on a crowded machine
def test_a_newcomer_following_the_guide_gets_a_working_pair_of_nodes(
    tmp_path: Path, pg_url: str, background: list[subprocess.Popen[bytes]]
) -> None:
    province_port, province_enrol, city_port, city_enrol = free_ports(4)
    sites = {
        "province": {
            "DATA": str(tmp_path / "supnet-try" / "gd"),
            "LISTEN": f"127.0.0.1:{province_port}",
            "ENROL_LISTEN": f"127.0.0.1:{province_enrol}",
            "CITY": f"127.0.0.1:{city_port}",
            "DB_URL": pg_url,
        },
        "city": {
            "DATA": str(tmp_path / "supnet-try" / "gd.gz"),
            "LISTEN": f"127.0.0.1:{city_port}",
            "ENROL_LISTEN": f"127.0.0.1:{city_enrol}",
            "PROVINCE": f"127.0.0.1:{province_port}",
            "PROVINCE_ENROL": f"127.0.0.1:{province_enrol}",
        },
    }
    # `supnet` is the one installed beside this Python (the guide's /opt/supnet/bin on a server).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    token = ""
    outputs: list[str] = []
    for number, block in enumerate(guide_blocks(), 1):
        env = {**os.environ, "PATH": path, **sites[block.machine], "TOKEN": token}
        script = f"set -eu\n{block.commands}"
        if block.background:
            log = (tmp_path / f"block-{number}-{block.machine}.log").open("wb")
            process = subprocess.Popen(
                ["bash", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            background.append(process)
            _wait_serving(Path(sites[block.machine]["DATA"]), process, tmp_path / log.name)
            continue
        result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"block {number} ({block.machine}) failed:\n{block.commands}\n{result.stderr}"
        outputs.append(result.stdout)
        if block.machine == "province" and (found := TOKEN.search(result.stdout)):
            token = found.group(0)  # handed to the city out of band
    assert token, "the province's blocks never printed an enrolment token"

    # The city's signed report has arrived at the province (over mutual TLS: neither node has another way).
    province_data = sites["province"]["DATA"]
    deadline = time.monotonic() + 60
    while not _has_reported(province_data, "gd.gz"):
        assert time.monotonic() < deadline, "no report of gd.gz reached the province"
        time.sleep(0.5)
    subtree = _supnet_json(path, "subtree", "--data-dir", province_data)
    children = {child["child_id"]: child for child in subtree["children"]}
    assert children["gd.gz"]["last_sequence"]
    assert subtree["completeness"]["nodes_reported_in_window"] == 2
    audit = _supnet_json(path, "audit", "--data-dir", province_data, "--action", "report.accepted")
    assert {entry["actor"] for entry in audit["entries"]} == {"gd.gz"}
    # ... and the guide's own drill-down answered from the city, its signature checked at the province.
    assert "answered by gd.gz" in outputs[-1]
    for site in sites.values():  # the fixed ports are in each node's config, as the guide says
        config = (Path(site["DATA"]) / "supnet.toml").read_text(encoding="utf-8")
        assert f'listen = "{site["LISTEN"]}"' in config and f'enrol_listen = "{site["ENROL_LISTEN"]}"' in config


def _wait_serving(data_dir: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (data_dir / "serve.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"supnet serve in {data_dir} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _has_reported(data_dir: str, child_id: str) -> bool:
    """``supnet subtree --json`` run in this process says the child's report is held: polled, a process per try
    would take the CPU the two nodes need (the answer the test asserts on comes from the real command)."""
    cli = typer.Typer()
    subtree_cmd.register(cli)
    cli.callback()(lambda: None)  # a group, so the command is named as on the command line
    result = CliRunner().invoke(cli, ["subtree", "--data-dir", data_dir, "--json"])
    assert result.exit_code == 0, result.output
    children = {child["child_id"]: child for child in json.loads(result.stdout)["children"]}
    return bool(children.get(child_id, {}).get("last_sequence"))


def _supnet_json(path: str, *args: str) -> Any:
    result = subprocess.run(
        ["supnet", *args, "--json"], env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
