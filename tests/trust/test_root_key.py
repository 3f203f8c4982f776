"""The root key at rest: encrypted with a passphrase (file or environment) and asked for by every command that signs
with it, or kept offline in a directory of its own while the province node runs without it — through the real CLI,
with real ``supnet serve`` processes enrolling a child over the enrolment listener and answering over mutual TLS."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.cli import audit_cmd, enroll_cmd, init_cmd, keys_cmd, pki_cmd
from node.trust import (
    PASSPHRASE_ENV,
    CertificateRole,
    PassphraseError,
    PkiDirectory,
    load_certificate,
    load_certificates,
    revoked_serials,
    utcnow,
    verify_node_chain,
)
from tests.harness.pki import channel_as
from tests.harness.serve_process import start_serve, wait_for_state

PASSPHRASE = "长城 correct horse battery staple"


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    for module in (init_cmd, pki_cmd, enroll_cmd, keys_cmd, audit_cmd):
        module.register(app)
    return app


@pytest.fixture(autouse=True)
def no_passphrase_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def run(cli: typer.Typer, *args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def run_json(cli: typer.Typer, *args: object) -> Any:
    code, out, err = run(cli, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def secret_file(path: Path, text: str = PASSPHRASE) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    return path


def init(cli: typer.Typer, data_dir: Path, node_id: str, level: str) -> Path:
    assert run(cli, "init", "--data-dir", data_dir, "--id", node_id, "--level", level)[0] == 0
    return data_dir


@pytest.fixture
def serving() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output.decode()


def enrol_city(cli: typer.Typer, province: Path, base: Path) -> PkiDirectory:
    """gd.gz enrols at the province's running enrolment listener with a fresh token."""
    token = run_json(cli, "pki", "token", "gd.gz", "--data-dir", province)
    assert token["enrol_address"], "the province serves no enrolment listener"
    city = init(cli, base / "gz", "gd.gz", "city")
    code, _, err = run(
        cli, "enroll", "--data-dir", city, "--parent", token["enrol_address"], "--token", token["token"], "--timeout", 5
    )
    assert code == 0, err
    return PkiDirectory(city / "pki")


def test_init_root_does_not_write_an_unprotected_root_key_unless_asked(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir = init(cli, tmp_path / "gd", "gd", "province")
    code, _, err = run(cli, "pki", "init-root", "--data-dir", data_dir)
    assert code != 0 and "--passphrase-file" in err and "--offline" in err and "--unencrypted" in err
    assert not (data_dir / "pki").exists()
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    code, _, err = run(cli, "pki", "init-root", "--data-dir", data_dir, "--passphrase-file", empty)
    assert code != 0 and "empty" in err and not (data_dir / "pki").exists()


def test_the_root_key_is_encrypted_at_rest_and_signing_commands_ask_for_it(
    cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = init(cli, tmp_path / "gd", "gd", "province")
    right, wrong = secret_file(tmp_path / "right"), secret_file(tmp_path / "wrong", "not it")
    installed = run_json(cli, "pki", "init-root", "--data-dir", data_dir, "--passphrase-file", right)
    pki = PkiDirectory(data_dir / "pki")
    key_file = pki.file("ca.key").read_text()
    assert key_file.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----") and "BEGIN PRIVATE KEY" not in key_file
    assert pki.file("ca.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(PassphraseError, match="is encrypted"):
        pki.load_authority()
    authority = pki.load_authority(PASSPHRASE.encode())
    assert authority.is_root and f"{authority.root.serial_number:x}" == installed["certificates"]["root"]["serial"]

    # A token signs nothing: no passphrase needed.
    assert run_json(cli, "pki", "token", "gd.gz", "--data-dir", data_dir)["child_id"] == "gd.gz"
    # Rotating the node's keys signs with the root key: without, or with a wrong passphrase, a clear error.
    code, _, err = run(cli, "keys", "rotate", "--data-dir", data_dir)
    assert code != 0 and "[CONFIG]" in err and "is encrypted" in err and "--passphrase-file" in err
    code, _, err = run(cli, "keys", "rotate", "--data-dir", data_dir, "--passphrase-file", wrong)
    assert code != 0 and "wrong passphrase" in err and "Traceback" not in err
    old_report = load_certificate(pki.file("report.pem")).serial_number
    rotated = run_json(cli, "keys", "rotate", "--data-dir", data_dir, "--passphrase-file", right)
    assert rotated["rotated"]["report"]["old_serial"] == f"{old_report:x}"
    # The environment variable serves as well (a service's credential), here for an ingest credential.
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    issued = run_json(cli, "pki", "ingest-credential", "approvals-1", "--data-dir", data_dir, "--out", tmp_path / "c")
    assert issued["node_id"] == "gd"
    log = run_json(cli, "audit", "--data-dir", data_dir)["entries"]
    init_entry = next(entry for entry in log if entry["action"] == "pki.init_root")
    assert init_entry["detail"]["root_key"] == "encrypted"


def test_enrolment_at_a_province_whose_root_key_is_encrypted(
    cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving: list[subprocess.Popen[bytes]]
) -> None:
    province = init(cli, tmp_path / "gd", "gd", "province")
    run_json(cli, "pki", "init-root", "--data-dir", province, "--passphrase-file", secret_file(tmp_path / "secret"))
    # Without the passphrase the node serves, but cannot enrol children, and says why.
    serving.append(start_serve(province))
    wait_for_state(province, serving[-1])
    assert not (province / "enrol.json").exists()
    output = stop(serving[-1])
    assert "enrolment listener off" in output and PASSPHRASE_ENV in output
    # With it (a service's environment), a city enrols through the real listener and verifies to the root.
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    serving.append(start_serve(province))
    wait_for_state(province, serving[-1])
    monkeypatch.delenv(PASSPHRASE_ENV)
    city = enrol_city(cli, province, tmp_path)
    root = PkiDirectory(province / "pki").load_root()
    chain = load_certificates(city.file("ca.pem"))
    assert verify_node_chain(chain[0], chain[1:], root, utcnow(), role=CertificateRole.CA) == "gd.gz"
    stop(serving[-1])


def test_an_offline_root_end_to_end(cli: typer.Typer, tmp_path: Path, serving: list[subprocess.Popen[bytes]]) -> None:
    province = init(cli, tmp_path / "gd", "gd", "province")
    medium, secret = tmp_path / "usb" / "supnet-root", secret_file(tmp_path / "secret")
    code, _, err = run(cli, "pki", "init-root", "--data-dir", province, "--offline", province / "root")
    assert code != 0 and "inside the node's data directory" in err
    installed = run_json(
        cli, "pki", "init-root", "--data-dir", province, "--offline", medium, "--passphrase-file", secret
    )
    assert set(installed["certificates"]) == {"root", "ca", "tls", "report"}
    # The root key is on the medium, encrypted; pki/ holds the node's own CA, certified by that root.
    assert (medium / "root.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    pki = PkiDirectory(province / "pki")
    root, node_ca = pki.load_root(), load_certificate(pki.file("ca.pem"))
    assert root == load_certificate(medium / "root.pem") and node_ca != root and node_ca.issuer == root.subject
    authority = pki.load_authority()  # the node's CA key is not the root key and needs no passphrase
    assert not authority.is_root and authority.private_key.public_key() != root.public_key()
    root_key_text = (medium / "root.key").read_text()
    assert all(root_key_text != path.read_text(errors="replace") for path in province.rglob("*.key"))
    for name, role in (("tls", CertificateRole.TLS), ("report", CertificateRole.REPORT)):
        chain = load_certificates(pki.file(f"{name}.pem"))
        assert verify_node_chain(chain[0], chain[1:], root, utcnow(), role=role) == "gd"

    # The province serves without the root key: a city enrols and talks to it over mutual TLS.
    serving.append(start_serve(province))
    state = wait_for_state(province, serving[-1])
    city = enrol_city(cli, province, tmp_path)
    for name, role in (("tls", CertificateRole.TLS), ("ca", CertificateRole.CA)):
        chain = load_certificates(city.file(f"{name}.pem"))
        assert verify_node_chain(chain[0], chain[1:], root, utcnow(), role=role) == "gd.gz"
    with channel_as(tmp_path / "gz", str(state["address"]), "gd") as channel:
        assert NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=10).node_id == "gd"
    stop(serving[-1])
    # Revoking the city is the node CA's work (its CRL), no root key involved.
    run_json(cli, "pki", "revoke", "gd.gz", "--data-dir", province, "--reason", "test")
    city_ca = load_certificate(city.file("ca.pem"))
    assert city_ca.serial_number in revoked_serials(pki.load_crl(), node_ca)

    # Renewing the node's CA is the explicit command, from the medium, with its passphrase.
    code, _, err = run(cli, "pki", "sign-ca", "--data-dir", province, "--root-dir", medium)
    assert code != 0 and "is encrypted" in err
    code, _, err = run(cli, "pki", "sign-ca", "--data-dir", province, "--root-dir", tmp_path / "nothing-mounted")
    assert code != 0 and "is the offline root's medium mounted" in err
    signed = run_json(cli, "pki", "sign-ca", "--data-dir", province, "--root-dir", medium, "--passphrase-file", secret)
    renewed = load_certificate(pki.file("ca.pem"))
    assert signed["old_serial"] == f"{node_ca.serial_number:x}" and signed["new_serial"] == f"{renewed.serial_number:x}"
    assert renewed.public_key() == node_ca.public_key() and renewed.serial_number != node_ca.serial_number
    tls_chain = load_certificates(pki.file("tls.pem"))
    assert tls_chain[1] == renewed
    assert verify_node_chain(tls_chain[0], tls_chain[1:], root, utcnow(), role=CertificateRole.TLS) == "gd"
    issued_by_root = json.loads((medium / "issued.json").read_text())
    assert len(issued_by_root["certificates"]) == 2
    actions = [entry["action"] for entry in run_json(cli, "audit", "--data-dir", province)["entries"]]
    assert "pki.ca_signed_offline" in actions and "pki.init_root" in actions
