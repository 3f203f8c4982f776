"""The console as a background loop of ``supnet serve``: a Starlette app under uvicorn in a thread of its own.

``WebConsole.start(grpc_address)`` binds ``web.listen`` (port 0: any free port; ``bound_address`` says which),
starts serving and returns; ``stop()`` lets in-flight requests finish (a short grace) and joins the thread. On
a non-loopback address the config requires HTTPS (node.config); the certificate is ``web.certificate`` or, by
default, ``pki/web.pem``, issued here by the node's own CA and re-issued ``federation.renew_before_days``
before it expires. Nothing is fetched at run time: templates, ECharts and htmx are package data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from node.app import Node
from node.config import is_loopback_address
from node.drilldown import DrilldownClient
from node.errors import ConfigError
from node.trust import CertificateRole, generate_ec_key, load_certificates, pki_directory
from node.web import auth_pages, directives_pages, drilldown_pages, local_pages, report_pages  # noqa: F401  (routes)
from node.web.core import ROUTES, Console, RouteSpec, dispatch

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
START_TIMEOUT_SECONDS = 10.0
MAX_FORM_FIELDS = 50


def _number(value: object) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else "—"


def _local(value: dt.datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M")


def template_environment() -> Environment:
    """The console's templates (package data), autoescaped."""
    env = Environment(
        loader=PackageLoader("node.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["localdt"] = _local
    return env


def _endpoint(console: Console, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        form: Mapping[str, str] = {}
        if request.method == "POST":
            data = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
            form = {key: value for key, value in data.items() if isinstance(value, str)}
        return await run_in_threadpool(dispatch, console, spec, request, form)

    return endpoint


def build_app(console: Console) -> Starlette:
    """The Starlette app: every registered console route, and the static files."""
    routes: list[BaseRoute] = [
        Route(spec.path, _endpoint(console, spec), methods=list(spec.methods), name=f"{spec.name}_{spec.methods[0]}")
        for spec in ROUTES
    ]
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    return Starlette(routes=routes)


def _pem_key(path: Path, key: object) -> None:
    data = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)


def web_certificate(node: Node) -> tuple[Path, Path]:
    """(certificate chain, key) for HTTPS: the configured files, or pki/web.* issued by the node's own CA."""
    web = node.config.web
    if web.certificate:
        chain, key = node.data_dir / web.certificate, node.data_dir / web.private_key
        for name, path in (("web.certificate", chain), ("web.private_key", key)):
            if not path.is_file():
                raise ConfigError(f"{name}: no file at {path}")
        return chain, key
    pki = pki_directory(node.data_dir)
    chain, key_path = pki.file("web.pem"), pki.file("web.key")
    now = dt.datetime.now(dt.UTC)
    renew = dt.timedelta(days=node.config.federation.renew_before_days)
    if chain.exists() and key_path.exists():
        leaf = load_certificates(chain)[0]
        if leaf.not_valid_after_utc - now > renew:
            return chain, key_path
    if not pki.file("ca.key").exists():
        raise ConfigError(
            f"web.https: node {node.config.id} has no CA (pki/ca.key) to issue its console certificate; enrol it "
            "first, or set web.certificate and web.private_key"
        )
    authority = pki.load_authority()
    private_key = generate_ec_key()
    leaf = authority.issue(node.config.id, CertificateRole.TLS, private_key.public_key(), now=now)
    issued: list[x509.Certificate] = [leaf, *authority.issuer_chain]
    _pem_key(key_path, private_key)
    chain.write_bytes(b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in issued))
    log.info("node %s issued its console certificate until %s", node.config.id, leaf.not_valid_after_utc.isoformat())
    return chain, key_path


def _bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family, backlog=128)
    except OSError as error:
        raise ConfigError(f"web.listen: cannot listen on {address}: {error.strerror or error}") from error


class WebConsole:
    """The supervisor console of one node, served in a background thread (start/stop like the other loops)."""

    def __init__(self, node: Node, *, listen: str | None = None) -> None:
        self.node = node
        self.listen = listen or node.config.web.listen
        self.https = node.config.web.https
        if not self.https and not is_loopback_address(self.listen):
            raise ConfigError(f"web.listen: {self.listen} is not a loopback address: set web.https = true")
        self.bound_address = ""
        self._grpc_address = ""
        self._client: DrilldownClient | None = None
        self._client_lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def for_node(cls, node: Node) -> WebConsole | None:
        """The console of a node, or None when ``web.enabled`` is false."""
        return cls(node) if node.config.web.enabled else None

    @property
    def url(self) -> str:
        """Where a browser opens the console."""
        return f"{'https' if self.https else 'http'}://{self.bound_address}/"

    def _drilldown(self) -> DrilldownClient:
        with self._client_lock:
            if self._client is None:
                self._client = DrilldownClient.for_node(self.node, self._grpc_address)
            return self._client

    def start(self, grpc_address: str) -> str:
        """Serve the console; drill-down goes to the node's own server at ``grpc_address``. Returns the URL."""
        self._grpc_address = grpc_address
        web = self.node.config.web
        console = Console(
            node=self.node,
            env=template_environment(),
            client=self._drilldown,
            secure_cookies=self.https or web.behind_https_proxy,
        )
        tls: dict[str, str] = {}
        if self.https:
            chain, key = web_certificate(self.node)
            tls = {"ssl_certfile": str(chain), "ssl_keyfile": str(key)}
        sock = _bind(self.listen)
        host, port = sock.getsockname()[:2]
        self.bound_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        config = uvicorn.Config(
            build_app(console),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
            **tls,  # type: ignore[arg-type]
        )
        server = self._server = uvicorn.Server(config)

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=run, name=f"web-console-{self.node.config.id}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise ConfigError(f"web console of {self.node.config.id} did not start on {self.bound_address}")
            time.sleep(0.01)
        log.info("node %s console at %s", self.node.config.id, self.url)
        return self.url

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to a short grace), close the drill-down channel."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None
