"""Real local stand-ins for the far ends of the notification channels that need more than a recording server:
DingTalk and WeCom group robots (HTTP servers that check the signature / key and answer with errcodes as the real
ones do), and TLS material for a mail server (a CA and a server certificate for 127.0.0.1, made with cryptography).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class RobotMessage:
    """One message a fake robot received (and whether it accepted it)."""

    query: dict[str, str]
    headers: dict[str, str]
    document: Any
    errcode: int


@dataclass
class FakeRobot:
    """A DingTalk (``kind='dingtalk'``) or WeCom (``'wecom'``) robot on a real HTTP server bound to port 0.

    DingTalk: the query must hold ``access_token=token`` and, when ``secret`` is set, a ``timestamp`` within an hour
    and the ``sign`` DingTalk computes (else errcode 310000). WeCom: ``key=token`` (else 93000). Errcodes queued in
    ``answer_next`` are answered first (e.g. a rate limit), one per request.
    """

    kind: str
    token: str
    secret: str = ""
    answer_next: list[int] = field(default_factory=list)
    received: list[RobotMessage] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def accepted(self) -> list[RobotMessage]:
        return [message for message in self.received if message.errcode == 0]

    def _check(self, query: dict[str, str], document: Any) -> tuple[int, str]:
        if self.answer_next:
            code = self.answer_next.pop(0)
            return code, "send too fast, exceed 20 times per minute" if code in {130101, 45009} else "error"
        if not isinstance(document, dict) or document.get("msgtype") not in {"text", "markdown"}:
            return 40008, "invalid message type"
        if self.kind == "wecom":
            return (0, "ok") if query.get("key") == self.token else (93000, "invalid webhook url")
        if query.get("access_token") != self.token:
            return 300001, "token is not exist"
        if self.secret:
            timestamp = query.get("timestamp", "")
            if not timestamp.isdigit() or abs(int(timestamp) - time.time() * 1000) > 3_600_000:
                return 310000, "sign not match, timestamp is out of date"
            expected = base64.b64encode(
                hmac.new(self.secret.encode(), f"{timestamp}\n{self.secret}".encode(), hashlib.sha256).digest()
            ).decode()
            if query.get("sign") != expected:
                return 310000, "sign not match"
        return 0, "ok"

    def start(self) -> FakeRobot:
        robot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                # parse_qsl decodes the percent-encoding, as the robots' servers do.
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                try:
                    document = json.loads(body.decode("utf-8"))
                except ValueError:
                    document = None
                errcode, errmsg = robot._check(query, document)
                robot.received.append(RobotMessage(query, dict(self.headers), document, errcode))
                answer = json.dumps({"errcode": errcode, "errmsg": errmsg}).encode()
                # Like the real robots: HTTP 200 whatever the errcode.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass(frozen=True)
class ServerTls:
    """A CA certificate file and a server certificate + key for 127.0.0.1 / localhost that it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_server_tls(directory: Path, name: str = "mail") -> ServerTls:
    """A fresh CA and a server certificate for 127.0.0.1 and localhost, written as PEM files under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test {name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = ServerTls(directory / f"{name}-ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    paths.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths
