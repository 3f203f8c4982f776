"""``supnet pki``/``enroll``/``keys`` through the real CLI, enrolling over a real enrolment listener on port 0."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import socket
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from federation import error_code_of, key_id, load_private_key, sign_message
from federation.proto.v1.enrolment_pb2 import EnrolRequest, EnrolResponse
from federation.proto.v1.enrolment_pb2_grpc import (
    EnrolmentServiceServicer,
    EnrolmentServiceStub,
    add_EnrolmentServiceServicer_to_server,
)
from federation.proto.v1.report_pb2 import ReportBody
from node.app import open_node
from node.cli import audit_cmd, enroll_cmd, init_cmd, keys_cmd, pki_cmd
from node.config import load_config, parse_config, save_config
from node.errors import ExitCode, UnauthenticatedError
from node.server import EnrolmentServer, NodeScheduler
from node.trust import (
    CertificateAuthority,
    CertificateKeyResolver,
    CertificateRole,
    EnrolmentKeys,
    IssuedCertificates,
    PkiDirectory,
    build_enrolment_request,
    certificate_role,
    chain_der,
    enroll_node,
    hash_token,
    init_root,
    issue_token,
    load_certificate,
    load_certificates,
    parse_discovery_token,
    renew_certificates,
    request_message,
    response_message,
    revoked_serials,
    signing_identity,
    utcnow,
    verify_node_chain,
)
from tests.harness.serve_process import start_serve, wait_for_state


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    for module in (init_cmd, pki_cmd, enroll_cmd, keys_cmd, audit_cmd):
        module.register(app)
    return app


def run(cli: typer.Typer, *args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def run_json(cli: typer.Typer, *args: object) -> Any:
    code, out, err = run(cli, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def node_dir(path: Path, node_id: str) -> Path:
    """A data directory holding only supnet.toml: all the PKI commands need."""
    path.mkdir(parents=True, exist_ok=True)
    save_config(path, parse_config({"id": node_id}))
    return path


class Province:
    """The root node's data directory and its running enrolment listener."""

    def __init__(self, data_dir: Path, server: EnrolmentServer) -> None:
        self.data_dir = data_dir
        self.server = server
        self.address = server.bound_address
        self.pki = PkiDirectory(data_dir / "pki")

    @property
    def root(self) -> x509.Certificate:
        return self.pki.load_root()

    def token(self, cli: typer.Typer, child_id: str = "gd.gz") -> str:
        return str(run_json(cli, "pki", "token", child_id, "--data-dir", self.data_dir)["token"])


@pytest.fixture(scope="module")
def province(cli: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Province]:
    data_dir = node_dir(tmp_path_factory.mktemp("province") / "gd", "gd")
    assert run_json(cli, "pki", "init-root", "--data-dir", data_dir, "--unencrypted")["node_id"] == "gd"
    server = EnrolmentServer(data_dir)
    server.start()
    yield Province(data_dir, server)
    server.stop(0)


def enroll(cli: typer.Typer, data_dir: Path, address: str, token: str, *extra: object) -> tuple[int, str, str]:
    return run(cli, "enroll", "--data-dir", data_dir, "--parent", address, "--token", token, "--timeout", 5, *extra)


def enrolled_city(cli: typer.Typer, province: Province, path: Path, node_id: str = "gd.gz") -> PkiDirectory:
    data_dir = node_dir(path, node_id)
    code, _, err = enroll(cli, data_dir, province.address, province.token(cli, node_id))
    assert code == 0, err
    return PkiDirectory(data_dir / "pki")


def signed_report(pki: PkiDirectory, sequence: int, node_id: str = "gd.gz") -> Any:
    key, chain = pki.load_report()
    return sign_message(key, node_id, ReportBody(node_id=node_id, sequence=sequence), chain_der(chain[0], chain[1:]))


# --- enrolment -----------------------------------------------------------------------------------------------


def test_init_root_token_enroll_then_everything_verifies_to_the_root(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    # A real `supnet init` first: enrolment certifies the report key it created.
    child_dir = tmp_path / "gz"
    assert run(cli, "init", "--data-dir", child_dir, "--id", "gd.gz", "--level", "city")[0] == 0
    issued = run_json(cli, "pki", "token", "gd.gz", "--data-dir", province.data_dir, "--ttl", "2h")
    assert issued["enrol_address"] == province.address
    assert parse_discovery_token(issued["token"]).root_fingerprint == issued["root_fingerprint"]
    expires = dt.datetime.fromisoformat(issued["expires_at"])
    assert dt.timedelta(minutes=119) < expires - utcnow() <= dt.timedelta(hours=2)

    result = run_json(cli, "enroll", "--data-dir", child_dir, "--parent", province.address, "--token", issued["token"])
    assert result["node_id"] == "gd.gz" and result["root_fingerprint"] == issued["root_fingerprint"]
    pki = PkiDirectory(child_dir / "pki")
    root, now = pki.load_root(), utcnow()
    assert root == province.root
    for name, role in (("tls", CertificateRole.TLS), ("report", CertificateRole.REPORT), ("ca", CertificateRole.CA)):
        chain = load_certificates(pki.file(f"{name}.pem"))
        assert verify_node_chain(chain[0], chain[1:], root, now, role=role) == "gd.gz"
    report_key, _ = pki.load_report()
    assert key_id(report_key.public_key()) == key_id(
        load_private_key(child_dir / "keys/report_signing.pem").public_key()
    )
    assert (pki.file("ca.key").stat().st_mode & 0o777) == 0o600
    # The province's ancestors-only resolver verifies the city's report offline.
    assert CertificateKeyResolver(root).verify(signed_report(pki, 1)) == report_key.public_key()
    # The city is a CA now: it can hand out tokens to its own children.
    assert run_json(cli, "pki", "token", "gd.gz.py", "--data-dir", child_dir)["child_id"] == "gd.gz.py"

    shown = run_json(cli, "pki", "show", "--data-dir", province.data_dir)
    mine = [record for record in shown["issued"] if record["subject_id"] == "gd.gz"]
    serials = {f"{load_certificate(pki.file(n + '.pem')).serial_number:x}" for n in ("tls", "report", "ca")}
    assert serials <= {record["serial"] for record in mine}
    token_hash = hash_token(parse_discovery_token(issued["token"]).token)
    used = [token for token in shown["tokens"] if token_hash.startswith(token["token_hash_prefix"])]
    assert used and used[0]["status"] == "used"
    child_view = run_json(cli, "pki", "show", "--data-dir", child_dir)
    assert child_view["node_id"] == "gd.gz" and child_view["has_ca"] is True
    assert set(child_view["certificates"]) == {"root", "ca", "tls", "report"}

    # Every PKI command left an audit entry; the token itself never appears in the log.
    assert run_json(cli, "audit", "--data-dir", province.data_dir, "--verify")["ok"] is True
    province_log = run_json(cli, "audit", "--data-dir", province.data_dir)
    actions = [entry["action"] for entry in province_log["entries"]]
    assert "pki.init_root" in actions and "pki.token_issued" in actions
    assert issued["token"] not in json.dumps(province_log)
    child_log = run_json(cli, "audit", "--data-dir", child_dir)
    assert [e["target"] for e in child_log["entries"] if e["action"] == "pki.enrolled"] == ["gd.gz"]


def test_init_root_refuses_an_existing_pki_unless_forced(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir = node_dir(tmp_path / "gd", "gd")
    first = run_json(cli, "pki", "init-root", "--data-dir", data_dir, "--unencrypted")
    code, _, err = run(cli, "pki", "init-root", "--data-dir", data_dir, "--unencrypted")
    assert code == ExitCode.CONFIG and "already holds a PKI" in err and "--force" in err
    assert run_json(cli, "pki", "show", "--data-dir", data_dir)["root_fingerprint"] == first["root_fingerprint"]
    second = run_json(cli, "pki", "init-root", "--data-dir", data_dir, "--unencrypted", "--force")
    assert second["root_fingerprint"] != first["root_fingerprint"]
    kept = PkiDirectory(Path(second["replaced"]))
    assert kept.load_root().serial_number == int(first["certificates"]["root"]["serial"], 16)


def test_token_only_for_direct_children_and_needs_a_ca(cli: typer.Typer, province: Province, tmp_path: Path) -> None:
    code, _, err = run(cli, "pki", "token", "gd.gz.py", "--data-dir", province.data_dir)
    assert code == ExitCode.REFUSED and "PERMISSION_DENIED" in err and "direct children" in err
    code, _, err = run(cli, "pki", "token", "gd.gz", "--data-dir", province.data_dir, "--ttl", "soon")
    assert code == ExitCode.USAGE and "--ttl" in err
    bare = node_dir(tmp_path / "bare", "gd")
    code, _, err = run(cli, "pki", "token", "gd.gz", "--data-dir", bare)
    assert code == ExitCode.CONFIG and "no CA" in err and "init-root" in err


def _assert_nothing_written(data_dir: Path) -> None:
    assert not (data_dir / "pki").exists()
    assert [path.name for path in data_dir.iterdir()] == ["supnet.toml"]


def test_a_token_enrols_once(cli: typer.Typer, province: Province, tmp_path: Path) -> None:
    token = province.token(cli)
    assert enroll(cli, node_dir(tmp_path / "a", "gd.gz"), province.address, token)[0] == 0
    again = node_dir(tmp_path / "b", "gd.gz")
    code, _, err = enroll(cli, again, province.address, token)
    assert code == ExitCode.REFUSED and "UNAUTHENTICATED" in err and "already used" in err
    _assert_nothing_written(again)


def test_an_expired_token_is_refused(cli: typer.Typer, province: Province, tmp_path: Path) -> None:
    stale = issue_token(province.data_dir, "gd.gz", ttl=dt.timedelta(hours=1), now=utcnow() - dt.timedelta(hours=2))
    data_dir = node_dir(tmp_path / "gz", "gd.gz")
    code, _, err = enroll(cli, data_dir, province.address, stale.token)
    assert code == ExitCode.REFUSED and "UNAUTHENTICATED" in err and "expired" in err
    _assert_nothing_written(data_dir)


def test_a_token_for_another_child_is_refused_and_survives(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    token = province.token(cli, "gd.gz")
    thief = node_dir(tmp_path / "sz", "gd.sz")
    code, _, err = enroll(cli, thief, province.address, token)
    assert code == ExitCode.REFUSED and "PERMISSION_DENIED" in err and "issued for gd.gz, not gd.sz" in err
    _assert_nothing_written(thief)
    assert enroll(cli, node_dir(tmp_path / "gz", "gd.gz"), province.address, token)[0] == 0


def test_malformed_token_and_unreachable_parent_fail_clearly(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    data_dir = node_dir(tmp_path / "gz", "gd.gz")
    code, _, err = enroll(cli, data_dir, province.address, "supnet-enrol-abc")
    assert code == ExitCode.USAGE and "must look like" in err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    code, _, err = run(
        cli, "enroll", "--data-dir", data_dir, "--parent", closed, "--token", province.token(cli), "--timeout", 1
    )
    assert code == ExitCode.UNAVAILABLE and "UNAVAILABLE" in err and closed in err
    _assert_nothing_written(data_dir)


def test_tampered_proof_is_refused_and_does_not_burn_the_token(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    token = province.token(cli)
    keys = EnrolmentKeys.generate()
    message = request_message(
        "gd.gz", build_enrolment_request("gd.gz", keys.tls, keys.report, keys.ca), parse_discovery_token(token)
    )
    tampered = EnrolRequest()
    tampered.CopyFrom(message)
    tampered.proof = bytes([message.proof[0] ^ 0x80]) + message.proof[1:]
    swapped = EnrolRequest()
    swapped.CopyFrom(message)
    swapped.child_id = "gd.sz"
    with grpc.insecure_channel(province.address) as channel:
        stub = EnrolmentServiceStub(channel)
        for bad in (tampered, swapped):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Enroll(bad, timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert error_code_of(caught.value) == "UNAUTHENTICATED"
            assert "proof does not verify" in (caught.value.details() or "")
    assert enroll(cli, node_dir(tmp_path / "gz", "gd.gz"), province.address, token)[0] == 0


class _ImpostorParent(EnrolmentServiceServicer):
    """A man in the middle: answers any request with certificates for the child's keys under its own root."""

    def __init__(self, ca: CertificateAuthority | None = None) -> None:
        self.ca = ca or CertificateAuthority.create_root("gd", now=utcnow())

    def Enroll(self, request: EnrolRequest, context: grpc.ServicerContext) -> EnrolResponse:  # noqa: N802
        now = utcnow()
        tls = x509.load_der_x509_csr(request.tls_csr).public_key()
        report = x509.load_der_x509_csr(request.report_csr).public_key()
        ca = x509.load_der_x509_csr(request.ca_csr).public_key()
        assert isinstance(tls, ec.EllipticCurvePublicKey) and isinstance(ca, ec.EllipticCurvePublicKey)
        assert isinstance(report, Ed25519PublicKey)
        issue = self.ca.issue
        return response_message(
            IssuedCertificates(
                child_id=request.child_id,
                tls_certificate=issue(request.child_id, CertificateRole.TLS, tls, now=now),
                report_certificate=issue(request.child_id, CertificateRole.REPORT, report, now=now),
                ca_certificate=issue(request.child_id, CertificateRole.CA, ca, now=now),
                issuer_chain=tuple(self.ca.issuer_chain),
                root=self.ca.root,
            )
        )


def test_a_man_in_the_middle_cannot_hand_out_another_root(cli: typer.Typer, province: Province, tmp_path: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_EnrolmentServiceServicer_to_server(_ImpostorParent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        data_dir = node_dir(tmp_path / "gz", "gd.gz")
        code, _, err = enroll(cli, data_dir, f"127.0.0.1:{port}", province.token(cli))
        assert code == ExitCode.REFUSED and "UNAUTHENTICATED" in err and "man in the middle" in err
        _assert_nothing_written(data_dir)
    finally:
        server.stop(0)
    # The same with a token whose fingerprint was altered on its way to the child: the real parent's root is refused.
    token = province.token(cli)
    forged = token[: -len("0" * 64)] + "0" * 64
    data_dir = node_dir(tmp_path / "gz2", "gd.gz")
    code, _, err = enroll(cli, data_dir, province.address, forged)
    assert code == ExitCode.REFUSED and "the token expects root 0000000000000000" in err
    _assert_nothing_written(data_dir)


def test_leaf_without_ca_cannot_rotate_and_has_no_enrolment_listener(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    data_dir = tmp_path / "gz"
    assert run(cli, "init", "--data-dir", data_dir, "--id", "gd.gz", "--level", "city")[0] == 0
    code, _, err = enroll(cli, data_dir, province.address, province.token(cli), "--no-ca")
    assert code == 0, err
    assert not (data_dir / "pki" / "ca.key").exists()
    code, _, err = run(cli, "keys", "rotate", "--data-dir", data_dir)
    assert code == ExitCode.CONFIG and "no CA" in err
    node = open_node(data_dir)
    try:
        assert EnrolmentServer.for_node(node) is None
        jobs = [spec.job_id for spec in NodeScheduler(node).job_specs()]
        assert "certificate_renewal" in jobs
    finally:
        node.close()


# --- rotation, revocation, expiry -----------------------------------------------------------------------------


def test_rotation_old_reports_still_verify_and_new_ones_use_the_new_key(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    pki = enrolled_city(cli, province, tmp_path / "gz")
    node = open_node(pki.path.parent)
    old_key, old_chain = pki.load_report()
    old_tls = load_certificate(pki.file("tls.pem"))
    # Signed the way the node signs its reports (node.trust.node_keys), before and after the rotation.
    before = signing_identity(node).sign_message(ReportBody(node_id="gd.gz", sequence=1))
    rotated = run_json(cli, "keys", "rotate", "--data-dir", pki.path.parent, "--tls")
    assert rotated["rotated"]["report"]["old_serial"] == f"{old_chain[0].serial_number:x}"
    new_key, new_chain = pki.load_report()
    assert key_id(new_key.public_key()) != key_id(old_key.public_key())
    assert rotated["report_key_id"] == key_id(new_key.public_key()).hex()
    assert (pki.file("retired") / f"report-{old_chain[0].serial_number:x}.pem").exists()
    assert (pki.file("retired") / f"tls-{old_tls.serial_number:x}.pem").exists()
    # The new certificates come from the city's own CA, and verify to the root with the city's CA above them.
    assert new_chain[0].issuer == load_certificate(pki.file("ca.pem")).subject
    tls_chain = load_certificates(pki.file("tls.pem"))
    assert tls_chain[0].serial_number != old_tls.serial_number
    assert verify_node_chain(tls_chain[0], tls_chain[1:], province.root, utcnow(), role=CertificateRole.TLS) == "gd.gz"
    resolver = CertificateKeyResolver(province.root)
    after = signing_identity(node).sign_message(ReportBody(node_id="gd.gz", sequence=2))
    node.close()
    assert resolver.verify(before) == old_key.public_key()
    assert resolver.verify(after) == new_key.public_key()
    assert after.key_id == key_id(new_key.public_key()) != before.key_id


def test_revocation_refuses_new_and_old_reports_and_resigned_old_data(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    pki = enrolled_city(cli, province, tmp_path / "gz", "gd.hz")
    old_key, _ = pki.load_report()
    before = signed_report(pki, 1, "gd.hz")
    pending = province.token(cli, "gd.hz")  # an unused token must not let it back in
    result = run_json(cli, "pki", "revoke", "gd.hz", "--data-dir", province.data_dir, "--reason", "key leaked")
    assert {record["role"] for record in result["revoked"]} == {"tls", "report", "ca"}
    assert result["tokens_withdrawn"] >= 1
    crl = province.pki.load_crl()
    resolver = CertificateKeyResolver(province.root)
    assert CertificateKeyResolver(province.root).verify(before)  # without the CRL it would still pass
    resolver.revoke(revoked_serials(crl, province.root))  # what NodeTrust does with its crl.pem
    with pytest.raises(UnauthenticatedError, match="revoked"):
        resolver.verify(before)
    # The revoked key re-signs old data: refused too.
    _, chain = pki.load_report()
    resigned = sign_message(old_key, "gd.hz", ReportBody(node_id="gd.hz", sequence=1), chain_der(chain[0], chain[1:]))
    with pytest.raises(UnauthenticatedError, match="revoked"):
        resolver.verify(resigned)
    # Rotating under the revoked CA does not help: the CA certificate itself is revoked.
    run_json(cli, "keys", "rotate", "--data-dir", pki.path.parent)
    with pytest.raises(UnauthenticatedError, match="revoked"):
        resolver.verify(signed_report(pki, 2, "gd.hz"))
    # Revoking again changes nothing; an unknown child is a clear error; the old token is gone.
    again = run_json(cli, "pki", "revoke", "gd.hz", "--data-dir", province.data_dir)
    assert again["revoked"] == [] and len(again["already_revoked"]) == 3
    code, _, err = run(cli, "pki", "revoke", "gd.nobody", "--data-dir", province.data_dir)
    assert code == ExitCode.NOT_FOUND and "NOT_FOUND" in err and "gd.nobody" in err
    code, _, err = run(cli, "pki", "revoke", "gd.hz.x", "--data-dir", province.data_dir)
    assert code == ExitCode.NOT_FOUND and "revoke gd.hz here" in err
    code, _, err = enroll(cli, node_dir(tmp_path / "back", "gd.hz"), province.address, pending)
    assert code == ExitCode.REFUSED and "already used" in err
    shown = run_json(cli, "pki", "show", "--data-dir", province.data_dir)
    assert {record["serial"] for record in result["revoked"]} <= set(shown["revoked_serials"])


def test_an_expired_report_certificate_is_refused(cli: typer.Typer, province: Province, tmp_path: Path) -> None:
    pki = enrolled_city(cli, province, tmp_path / "gz")
    envelope = signed_report(pki, 1)
    _, chain = pki.load_report()
    later = chain[0].not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(UnauthenticatedError, match="expired"):
        CertificateKeyResolver(province.root, clock=lambda: later).verify(envelope)
    # Verified at its signing time, the old report still stands.
    assert CertificateKeyResolver(province.root, clock=lambda: later).verify(envelope, at=utcnow())


# --- renewal ----------------------------------------------------------------------------------------------------


def test_renewal_reissues_leaves_inside_the_window_with_the_same_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = node_dir(tmp_path / "gd", "gd")
    init_root(data_dir, now=utcnow() - dt.timedelta(days=340))
    pki = PkiDirectory(data_dir / "pki")
    old_tls = load_certificate(pki.file("tls.pem"))
    old_report_key, old_report = pki.load_report()
    with caplog.at_level(logging.WARNING, logger="node.trust.lifecycle"):
        result = renew_certificates(data_dir, renew_before=dt.timedelta(days=30))
    assert set(result.renewed) == {"tls", "report"} and result.ca_warnings == []
    assert result.crl_refreshed  # its next update had passed
    assert any("renew it" in record.getMessage() for record in caplog.records)
    assert any("renewed its tls certificate" in record.getMessage() for record in caplog.records)
    tls_chain = load_certificates(pki.file("tls.pem"))
    assert tls_chain[0].public_key() == old_tls.public_key() and tls_chain[0].serial_number != old_tls.serial_number
    assert tls_chain[0].not_valid_after_utc - utcnow() > dt.timedelta(days=364)
    report_key, report_chain = pki.load_report()
    assert key_id(report_key.public_key()) == key_id(old_report_key.public_key())
    assert (pki.file("retired") / f"report-{old_report[0].serial_number:x}.pem").exists()
    assert verify_node_chain(report_chain[0], report_chain[1:], pki.load_root(), utcnow()) == "gd"
    second = renew_certificates(data_dir, renew_before=dt.timedelta(days=30))
    assert second.renewed == {} and second.warnings == [] and not second.crl_refreshed


def test_renewal_warns_loudly_for_a_ca_only_the_parent_can_renew(
    cli: typer.Typer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A tree set up 1810 days ago: the city's CA certificate (1825 days) ends in 15 days.
    past = utcnow() - dt.timedelta(days=1810)
    root_dir = node_dir(tmp_path / "gd", "gd")
    init_root(root_dir, now=past)
    token = issue_token(root_dir, "gd.gz", now=past).token
    listener = EnrolmentServer(root_dir, clock=lambda: past)
    listener.start()
    try:
        city_dir = node_dir(tmp_path / "gz", "gd.gz")
        enroll_node(city_dir, listener.bound_address, token, now=past)
    finally:
        listener.stop(0)
    with caplog.at_level(logging.WARNING, logger="node.trust.lifecycle"):
        first = renew_certificates(city_dir, renew_before=dt.timedelta(days=30))
    assert any(
        "ACTION NEEDED" in message and "only the parent can renew it" in message for message in first.ca_warnings
    )
    assert any("ACTION NEEDED" in record.getMessage() for record in caplog.records)
    # The leaves had expired: renewed, but only up to the CA's end.
    assert set(first.renewed) == {"tls", "report"}
    ca_end = load_certificate(city_dir / "pki" / "ca.pem").not_valid_after_utc
    assert load_certificate(city_dir / "pki" / "tls.pem").not_valid_after_utc == ca_end
    second = renew_certificates(city_dir, renew_before=dt.timedelta(days=30))
    assert second.renewed == {}
    assert any("renew the CA first" in message for message in second.ca_warnings)


def test_ingest_credential_is_issued_recorded_and_revocable(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    out = tmp_path / "system"
    issued = run_json(cli, "pki", "ingest-credential", "approvals-1", "--data-dir", province.data_dir, "--out", out)
    certificate = load_certificate(Path(issued["files"]["certificate"]))
    assert certificate_role(certificate) is CertificateRole.INGEST
    assert (Path(issued["files"]["key"]).stat().st_mode & 0o777) == 0o600
    assert load_certificate(Path(issued["files"]["root"])) == province.root
    code, _, err = run(cli, "pki", "ingest-credential", "approvals-1", "--data-dir", province.data_dir, "--out", out)
    assert code == ExitCode.CONFIG and "--force" in err
    revoked = run_json(cli, "pki", "revoke", "--ingest", "approvals-1", "--data-dir", province.data_dir)
    assert [record["serial"] for record in revoked["revoked"]] == [f"{certificate.serial_number:x}"]
    assert certificate.serial_number in {entry.serial_number for entry in province.pki.load_crl()}


def test_only_the_parent_itself_may_answer_even_another_ancestor_is_refused(
    cli: typer.Typer, province: Province, tmp_path: Path
) -> None:
    # The province's real CA answering a district's enrolment (in place of its city): a valid chain to the
    # right root, but not from the parent the district asked.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_EnrolmentServiceServicer_to_server(_ImpostorParent(province.pki.load_authority()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        data_dir = node_dir(tmp_path / "py", "gd.gz.py")
        token = province.token(cli)  # any well-formed token carrying the right root fingerprint
        code, _, err = enroll(cli, data_dir, f"127.0.0.1:{port}", token)
        assert code == ExitCode.REFUSED and "issued by gd" in err and "parent gd.gz" in err
        _assert_nothing_written(data_dir)
    finally:
        server.stop(0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _eventually(condition: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_serve_opens_the_enrolment_listener_only_while_a_token_is_live(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir = tmp_path / "gd"
    assert run(cli, "init", "--data-dir", data_dir, "--id", "gd", "--level", "province")[0] == 0
    run_json(cli, "pki", "init-root", "--data-dir", data_dir, "--unencrypted")
    # A fixed port: the test can see it closed, and every opening binds the same configured address.
    port = _free_port()
    config = load_config(data_dir)
    config.federation.enrol_listen = f"127.0.0.1:{port}"
    save_config(data_dir, config)
    process = start_serve(data_dir)
    try:
        state = wait_for_state(data_dir, process)
        # No live token: no listener, no enrol.json; serve.json does not name one either.
        assert not (data_dir / "enrol.json").exists() and not _port_open(port) and "enrol_address" not in state
        # Two tokens: `pki token` returns once the listener is open, and prints the address it opened on.
        tokens = [run_json(cli, "pki", "token", child, "--data-dir", data_dir) for child in ("gd.gz", "gd.sz")]
        enrol_state = json.loads((data_dir / "enrol.json").read_text())
        assert enrol_state["address"] == f"127.0.0.1:{port}" and enrol_state["pid"] == process.pid
        assert [token["enrol_address"] for token in tokens] == [enrol_state["address"]] * 2
        assert _port_open(port)
        code, _, err = enroll(cli, node_dir(tmp_path / "gz", "gd.gz"), tokens[0]["enrol_address"], tokens[0]["token"])
        assert code == 0, err
        # The other token is still live: the listener stays open (the watcher saw the redemption within 1 s).
        time.sleep(2.5)
        assert (data_dir / "enrol.json").exists() and _port_open(port)
        code, _, err = enroll(cli, node_dir(tmp_path / "sz", "gd.sz"), tokens[1]["enrol_address"], tokens[1]["token"])
        assert code == 0, err
        # No live token left: it closes, and removes enrol.json.
        _eventually(lambda: not (data_dir / "enrol.json").exists(), "the listener stayed open after the last token")
        _eventually(lambda: not _port_open(port), "the enrolment port is still open")
        shown = run_json(cli, "pki", "show", "--data-dir", data_dir)
        assert shown["enrol_address"] is None
        assert {record["role"] for record in shown["issued"] if record["subject_id"] == "gd.gz"} == {
            "tls",
            "report",
            "ca",
        }
        # A new token opens it again, on the same configured address.
        again = run_json(cli, "pki", "token", "gd.fs", "--data-dir", data_dir)
        assert again["enrol_address"] == f"127.0.0.1:{port}" and _port_open(port)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0
        assert not (data_dir / "enrol.json").exists()
        log = output.decode()
        assert log.count(f"enrolment listener open on 127.0.0.1:{port}: ") == 2
        assert "1 live enrolment token(s) for gd.gz" in log and "1 live enrolment token(s) for gd.fs" in log
        assert "closed: no live enrolment token (2 redeemed, 0 expired) (tokens.json changed)" in log
        assert "closed: the node is stopping" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_provisioned_tree_can_revoke_a_child(cli: typer.Typer, tmp_path: Path) -> None:
    # `supnet demo` / `federation up` provision in-process; the parent must still know what it issued.
    from node.trust import revoked_serials

    for node_id in ("gd", "gd.gz"):
        node_dir(tmp_path / node_id, node_id)
    dirs = [tmp_path / "gd", tmp_path / "gd.gz"]
    assert run_json(cli, "pki", "provision-local", *dirs)["provisioned"] is True
    assert run_json(cli, "pki", "provision-local", *dirs)["provisioned"] is False  # idempotent without --force
    parent = PkiDirectory(tmp_path / "gd" / "pki")
    assert revoked_serials(parent.load_crl(), parent.load_root()) == set()
    child_tls = load_certificate(tmp_path / "gd.gz" / "pki" / "tls.pem")
    result = run_json(cli, "pki", "revoke", "gd.gz", "--data-dir", tmp_path / "gd")
    assert f"{child_tls.serial_number:x}" in {record["serial"] for record in result["revoked"]}
    assert child_tls.serial_number in revoked_serials(parent.load_crl(), parent.load_root())
