"""The compose tree under a real Docker engine, with images built offline (issue 20).

``make wheelhouse`` and ``make base-image`` (Debian from this machine's apt sources), then docker-compose.yml with an
override that puts every container on the host network (all traffic on loopback, each node on a free port, the
province's PostgreSQL container too): build with no network, wait for the healthchecks, import at the district
inside its container, see the cases at the province — in its PostgreSQL, reported over mutual TLS — restart the
district and lose nothing, ``down -v``. The build context is a copy of the repository with a node's keys and
databases planted in it, and the images' files are listed: none of them may be inside.

The base root filesystems are cached between runs (keyed by the script that makes them and this machine's apt
sources; a fresh machine builds them), everything else is built every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from node.config import load_config, save_config
from node.localtree import free_ports
from tests.deploy.conftest import REPO, DockerEngine, require_tools

NODES = {"gd": "gd", "gd.gz": "gd-gz", "gd.gz.py": "gd-gz-py"}  # node id -> compose service
SERVICES = ("postgres", "setup", *NODES.values())
CASES = 300
# What a node leaves in a checkout (a data dir in the source tree, a key beside the code): never in an image.
BAIT = (
    "config/compose/gd/pki/ca.key",
    "config/compose/gd/pki/tls.pem",
    "config/compose/gd.gz.py/node.db",
    "config/compose/gd.gz.py/serve.json",
    "data/gd/supnet.toml",
    "node/leftover.db",
    "node/pki/tls.key",
    "federation/report_signing.key",
)


def _make(engine: DockerEngine, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["make", "-C", str(REPO), *args],
        env=engine.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finished(process: subprocess.Popen[str], what: str, timeout: float) -> None:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{what} exited {process.returncode}:\n{output[-4000:]}"


def _base_cache() -> Path:
    """Where the base root filesystems are kept between runs: keyed by their recipe and this machine's sources."""
    recipe = (REPO / "config" / "docker" / "debian-base.sh").read_bytes()
    sources = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT)", "Identifier: Packages"],
        capture_output=True,
        check=True,
    ).stdout
    key = hashlib.sha256(recipe + b"\0" + sources).hexdigest()[:16]
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "supnet" / f"base-{key}"


def _build_context(tmp_path: Path) -> Path:
    """The repository as a fresh clone has it (tracked and new files), plus node leftovers planted as bait."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    context = tmp_path / "context"
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / name)
    for name in BAIT:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text("-----BEGIN PRIVATE KEY-----\nbait\n", encoding="utf-8")
    return context


def _configs(tmp_path: Path, ports: dict[str, int], pg_port: int) -> Path:
    """config/compose for the host network: each node on its own loopback port, the province on the PG container."""
    root = tmp_path / "config"
    for node_id in NODES:
        (root / node_id).mkdir(parents=True)
        shutil.copy2(REPO / "config" / "compose" / node_id / "supnet.toml", root / node_id / "supnet.toml")
        config = load_config(root / node_id)
        config.federation.listen = f"127.0.0.1:{ports[node_id]}"
        if config.federation.parent_id:
            config.federation.parent_address = f"127.0.0.1:{ports[config.federation.parent_id]}"
        if config.store.url:
            assert "@postgres:5432/supnet_gd" in config.store.url, "the province's store is the postgres service"
            config.store.url = f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/supnet_gd"
        save_config(root / node_id, config)
    return root


class Stopwatch:
    """How long each phase took (printed at the end: the CI budget of tests/deploy is under 5 minutes)."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.laps: list[str] = []

    def lap(self, what: str) -> None:
        now = time.monotonic()
        self.laps.append(f"{what} {now - self.last:.0f} s")
        self.last = now

    def __str__(self) -> str:
        return f"{', '.join(self.laps)}; total {time.monotonic() - self.start:.0f} s"


class Tree:
    """The compose project under test: docker-compose with the test override, and the containers' state."""

    def __init__(self, engine: DockerEngine, context: Path, override: Path, tag: str, pg_port: int) -> None:
        self.engine = engine
        self.tag = tag  # of the images: supnet:TAG, supnet-postgres:TAG
        self.project = f"supnet{tag.replace('-', '')}"
        self.pg_port = pg_port
        self.base = ["docker-compose", "--project-name", self.project]
        self.base += ["-f", str(context / "docker-compose.yml"), "-f", str(override)]
        self.stopwatch = Stopwatch()
        self.env = {
            **engine.env,
            "SUPNET_TAG": tag,
            "SUPNET_BASE_IMAGE": "supnet-base:bookworm",
            "SUPNET_POSTGRES_BASE_IMAGE": "supnet-base-postgres:bookworm",
        }

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def resolve_containers(self) -> None:
        """The containers' ids, once (a restart keeps them): plain docker calls are faster than docker-compose's."""
        self.containers = {service: self.compose("ps", "-q", service).stdout.strip() for service in SERVICES}

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.engine.run("docker", *args, timeout=timeout, check=check)

    def exec(
        self, service: str, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.docker("exec", self.containers[service], *args, timeout=300, check=check)

    def supnet_json(self, service: str, *args: str) -> Any:
        return json.loads(self.exec(service, "supnet", *args, "--json").stdout)

    def inspect(self, service: str, template: str) -> str:
        return self.docker("inspect", "--format", template, self.containers[service]).stdout.strip()

    def wait_healthy(self, services: list[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        ids = [self.containers[service] for service in services]
        while True:
            states = self.docker("inspect", "--format", "{{.State.Health.Status}}", *ids).stdout.split()
            if set(states) == {"healthy"}:
                return
            if time.monotonic() > deadline:
                logs = self.compose("logs", "--tail=30", check=False).stdout
                pytest.fail(f"not healthy after {timeout} s: {dict(zip(services, states, strict=False))}\n{logs}")
            time.sleep(1)


def _province_totals(tree: Tree) -> tuple[int, int]:
    province = tree.supnet_json("gd", "stats", "--subtree")
    return province["rows"][0]["received"], province["completeness"]["nodes_reported_in_window"]


def _wait_for_province(tree: Tree, cases: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (seen := _province_totals(tree)) != (cases, len(NODES)):
        assert time.monotonic() < deadline, f"the province sees (cases, nodes reported) = {seen}, not {cases}"
        time.sleep(1)


def _image_files(engine: DockerEngine, image: str) -> list[str]:
    """Every path in the image's filesystem, from ``docker export`` of a container made from it (streamed)."""
    container = engine.run("docker", "create", image).stdout.strip()
    try:
        export = subprocess.Popen(["docker", "export", container], env=engine.env, stdout=subprocess.PIPE)
        assert export.stdout is not None
        with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
            names = [member.name for member in tar]
        assert export.wait(timeout=300) == 0, f"docker export {image} failed"
    finally:
        engine.run("docker", "rm", container, check=False)
    return names


def _node_data_in(names: list[str]) -> list[str]:
    """Paths that look like a node's keys, certificates, databases or config (what .dockerignore keeps out)."""
    suspicious: list[str] = []
    for name in names:
        path = "/" + name.removeprefix("./").strip("/")
        base = path.rsplit("/", 1)[-1]
        keys_or_databases = base.endswith((".key", ".db", ".db-wal", ".db-journal", ".sqlite", ".sqlite3"))
        node_files = base in {"supnet.toml", "serve.json", "enrol.json", "pki"} or "/pki/" in path
        # The build stage's sources and wheels stay there; the data directory is empty in the image.
        build_leftovers = path.startswith(("/src/", "/wheels/", "/var/lib/supnet/"))
        if keys_or_databases or node_files or build_leftovers:
            suspicious.append(path)
    return suspicious


@pytest.fixture
def tree(tmp_path: Path, docker_engine: DockerEngine) -> Iterator[Tree]:
    """Images built offline from a baited copy of the repository, the tree up on the host network; down -v after."""
    require_tools("make", "git", "apt-get", "debootstrap", why="make base-image builds Debian bases with debootstrap")
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("make base-image needs root (debootstrap, chroot)")
    stopwatch = Stopwatch()
    context = _build_context(tmp_path)
    wheelhouse = _make(docker_engine, "wheelhouse", f"WHEELS={context / 'wheels'}")
    base_image = _make(docker_engine, "base-image", f"BASE_DIR={_base_cache()}")
    _finished(base_image, "make base-image", timeout=900)
    stopwatch.lap("base-image")
    _finished(wheelhouse, "make wheelhouse", timeout=600)
    stopwatch.lap("wheelhouse (in parallel)")

    *node_ports, pg_port = free_ports(len(NODES) + 1)
    ports = dict(zip(NODES, node_ports, strict=True))
    config = _configs(tmp_path, ports, pg_port)
    host_network: dict[str, Any] = {"network_mode": "host"}
    override = {
        "services": {
            "postgres": {
                **host_network,
                "environment": {"PGPORT": str(pg_port), "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1"},
            },
            "setup": {**host_network, "volumes": [f"{config}:/config:ro"]},
            **{service: host_network for service in NODES.values()},
        }
    }
    override_file = tmp_path / "docker-compose.test.yml"
    override_file.write_text(json.dumps(override, indent=2), encoding="utf-8")  # JSON is YAML
    tree = Tree(docker_engine, context, override_file, f"test-{uuid.uuid4().hex[:10]}", pg_port)
    tree.stopwatch = stopwatch
    try:
        # The node image once (the node services share it: `up` finds it built), PostgreSQL's, no network.
        tree.compose("build", "setup", "postgres", timeout=900)
        stopwatch.lap("build")
        tree.compose("up", "--detach", timeout=600)
        tree.resolve_containers()
        stopwatch.lap("up")
        yield tree
    finally:
        tree.compose("down", "--volumes", "--timeout", "30", check=False, timeout=300)
        if not docker_engine.own_daemon:  # on a shared engine, take our images away again
            docker_engine.run("docker", "rmi", f"supnet:{tree.tag}", f"supnet-postgres:{tree.tag}", check=False)
        print(f"tests/deploy compose tree: {stopwatch}")


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a fresh machine debootstraps first; the budget (under 5 minutes) is a warm cache's
def test_the_compose_tree_builds_offline_runs_under_docker_and_keeps_its_data(
    tree: Tree, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    services = list(NODES.values())
    tree.wait_healthy(["postgres", *services])
    tree.stopwatch.lap("healthy")
    assert tree.inspect("setup", "{{.State.ExitCode}}") == "0"
    for service in ["postgres", *services]:
        assert tree.inspect(service, "{{.HostConfig.RestartPolicy.Name}}") == "unless-stopped", service
    for service in services:
        assert tree.exec(service, "id", "-u").stdout.strip() == "10001", f"{service} runs as root"
        logs = tree.docker("logs", tree.containers[service])
        assert "over mutual TLS" in logs.stdout + logs.stderr, f"{service} does not serve mutual TLS"
    volumes = docker_engine.run(
        "docker", "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={tree.project}"
    ).stdout.split()
    expected_volumes = {
        f"{tree.project}_{name}" for name in ("postgres-data", "gd-data", "gd-gz-data", "gd-gz-py-data")
    }
    assert set(volumes) == expected_volumes

    # Import at the district, inside its container, as an operator there would.
    imported = tree.exec(
        "gd-gz-py", "sh", "-ec",
        f"supnet generate --id gd.gz.py --cases {CASES} --seed 7 --out /tmp/gen >/dev/null\n"
        "supnet import --data-dir /var/lib/supnet /tmp/gen/*",
    )  # fmt: skip
    assert imported.returncode == 0
    district = tree.supnet_json("gd-gz-py", "stats")["counts"]
    assert district["cases_received"] == CASES
    _wait_for_province(tree, CASES)
    tree.stopwatch.lap("import and roll-up")

    # In the province's PostgreSQL: the city's reports, accepted from the caller its TLS certificate names.
    with psycopg.connect(host="127.0.0.1", port=tree.pg_port, user="postgres", dbname="supnet_gd") as pg:
        accepted = pg.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'report.accepted' AND actor = 'gd.gz'"
        ).fetchone()
        buckets = pg.execute("SELECT count(*) FROM child_buckets").fetchone()
    assert accepted is not None and accepted[0] >= 1
    assert buckets is not None and buckets[0] > 0

    # Restart the district: its SQLite database and keys are in its volume, nothing is lost, the tree carries on.
    tree.compose("restart", "gd-gz-py", timeout=120)
    tree.wait_healthy(services)
    assert tree.supnet_json("gd-gz-py", "stats")["counts"] == district
    verified = tree.exec("gd-gz-py", "supnet", "audit", "--verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    _wait_for_province(tree, CASES)
    tree.stopwatch.lap("restart")

    # The images: non-root, with a HEALTHCHECK, and not one file of a node's data in them.
    image_config = json.loads(tree.docker("image", "inspect", f"supnet:{tree.tag}").stdout)[0]
    assert image_config["Config"]["User"] == "10001:10001"
    assert image_config["Config"]["Healthcheck"]["Test"][0] == "CMD"
    for image in (f"supnet:{tree.tag}", f"supnet-postgres:{tree.tag}"):
        files = _image_files(docker_engine, image)
        assert any(name.endswith(("site-packages/node/cli/main.py", "bin/postgres")) for name in files), image
        assert _node_data_in(files) == [], f"{image} holds node data"
    tree.stopwatch.lap("image files")

    down = tree.compose("down", "--volumes", timeout=300)
    assert down.returncode == 0
    left = docker_engine.run(
        "docker", "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={tree.project}"
    ).stdout.split()
    assert left == [], "down -v leaves no volume behind"
    tree.stopwatch.lap("down")
