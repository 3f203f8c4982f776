"""The [web] section of supnet.toml: validated in one place, errors naming the key; HTTPS off loopback with a
certificate the node's own CA issues (a real TLS handshake checks the chain up to the tree's root)."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest

from node.app import open_node
from node.bootstrap import init_node
from node.config import is_loopback_address, load_config, parse_config, save_config
from node.errors import ConfigError
from node.trust import node_dns_name, pki_directory, provision_tree
from node.web import WebConsole, web_certificate


def test_defaults_serve_on_loopback() -> None:
    config = parse_config({"id": "gd"})
    assert config.web.enabled and config.web.listen == "127.0.0.1:0" and not config.web.https
    assert config.web.language == "zh"


@pytest.mark.parametrize("address", ["127.0.0.1:8080", "127.5.5.5:1", "[::1]:8080", "localhost:8080"])
def test_loopback_addresses(address: str) -> None:
    assert is_loopback_address(address)
    parse_config({"id": "gd", "web": {"listen": address}})


@pytest.mark.parametrize("address", ["0.0.0.0:8443", "10.1.2.3:8443", "supnet.example:443", "[::]:8443"])
def test_other_addresses_need_https(address: str) -> None:
    with pytest.raises(ConfigError, match=r"key 'web\.https': web\.listen is .* not a loopback address"):
        parse_config({"id": "gd", "web": {"listen": address}})
    assert parse_config({"id": "gd", "web": {"listen": address, "https": True}}).web.https


@pytest.mark.parametrize(
    ("web", "key"),
    [
        ({"listen": "nowhere"}, "web.listen"),
        ({"certificate": "web.pem"}, "web.private_key"),
        ({"session_idle_minutes": 0}, "web.session_idle_minutes"),
        ({"max_failed_logins": 0}, "web.max_failed_logins"),
        ({"language": "fr"}, "web.language"),
        ({"on_time_rate_target": 1.5}, "web.on_time_rate_target"),
        ({"colour": "red"}, "web.colour"),
    ],
)
def test_bad_values_name_the_key(web: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"key '{key}'")):
        parse_config({"id": "gd", "web": web})


def test_https_with_a_certificate_from_the_nodes_ca(tmp_path: Path) -> None:
    dirs = {node_id: tmp_path / node_id for node_id in ("gd", "gd.gz")}
    for node_id, data_dir in dirs.items():
        init_node(data_dir, node_id, level="province" if node_id == "gd" else "city")
    provision_tree({node_id: data_dir / "pki" for node_id, data_dir in dirs.items()})
    config = load_config(dirs["gd.gz"])
    config.web.https = True
    save_config(dirs["gd.gz"], config)
    node = open_node(dirs["gd.gz"])
    console = WebConsole(node, listen="127.0.0.1:0")
    try:
        url = console.start("127.0.0.1:1")  # no drill-down here: the login page needs none
        assert url.startswith("https://127.0.0.1:")
        host, port = console.bound_address.split(":")
        context = ssl.create_default_context(cafile=str(pki_directory(dirs["gd.gz"]).file("root.pem")))
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=node_dns_name("gd.gz")) as tls,
        ):
            tls.sendall(b"GET /login HTTP/1.1\r\nHost: gz.gd.supnet\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and "登录".encode() in reply
        assert b"Secure" in reply  # the login form's CSRF cookie: HTTPS only
        # Issued by gd.gz's own CA, kept and reused at the next start.
        chain, _key = web_certificate(node)
        assert chain == pki_directory(dirs["gd.gz"]).file("web.pem")
        assert chain.read_bytes().count(b"BEGIN CERTIFICATE") == 2
    finally:
        console.stop()
        node.close()


def test_https_needs_a_ca_or_configured_files(tmp_path: Path) -> None:
    init_node(tmp_path / "gd", "gd", level="province")
    config = load_config(tmp_path / "gd")
    config.web.https = True
    save_config(tmp_path / "gd", config)
    node = open_node(tmp_path / "gd")
    try:
        with pytest.raises(ConfigError, match=r"web\.https: node gd has no CA"):
            web_certificate(node)
        node.config.web.certificate, node.config.web.private_key = "missing.pem", "missing.key"
        with pytest.raises(ConfigError, match=r"web\.certificate: no file at"):
            web_certificate(node)
    finally:
        node.close()
