"""``supnet backup`` / ``supnet restore`` as real processes on real nodes, SQLite and PostgreSQL: a backup taken while
``supnet import`` runs restores and the node carries on; restore refuses a running node and another node's data
unless forced, keeps what it replaces, and refuses a damaged backup or one whose audit chain does not match."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from node.config import load_config, save_config
from node.store import make_engine
from node.synthetic import generate
from tests.harness.postgres import PG_ADMIN_URL
from tests.harness.serve_process import start_serve, wait_for_state

# Cases the import during the backup brings: CI a few batches' worth (the backup is taken between or inside batches
# either way), by hand the full size.
IMPORT_CASES = 200 if os.environ.get("CI") == "true" else 600
TABLES = ("items", "cases", "steps", "special_procedures", "payments", "completions", "evaluations", "complaints")


def supnet(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real program, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "node", *(str(arg) for arg in args)], capture_output=True, text=True, timeout=timeout
    )


def ok_json(*args: object) -> Any:
    result = supnet(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def counts(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return {table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()) for table in TABLES}
    finally:
        engine.dispose()


def drop_schema(name: str | None) -> None:
    if name is None:
        return
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    admin.dispose()


def new_node(tmp_path: Path, db_url: str) -> Path:
    data_dir = tmp_path / "py"
    result = supnet("init", "--data-dir", data_dir, "--id", "gd.gz.py", "--db", db_url)
    assert result.returncode == 0, result.stderr
    return data_dir


@pytest.mark.slow
def test_a_backup_taken_during_a_running_import_restores_and_the_node_carries_on(tmp_path: Path, db_url: str) -> None:
    data_dir = new_node(tmp_path, db_url)
    files = [str(path) for path in generate("gd.gz.py", IMPORT_CASES, 7, tmp_path / "gen").paths]
    # Small batches: the import commits often, so it is caught between (or inside) batches.
    importing = subprocess.Popen(
        [sys.executable, "-m", "node", "import", "--data-dir", str(data_dir), "--batch-size", "20", "--json", *files],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    replaced_schema = None
    try:
        deadline = time.monotonic() + 120
        while counts(db_url)["cases"] == 0:
            assert importing.poll() is None and time.monotonic() < deadline, "the import ended before any case"
            time.sleep(0.05)
        # Held still while the backup runs, whatever the machine's speed: it may sit inside a batch's transaction.
        importing.send_signal(signal.SIGSTOP)
        try:
            backup = ok_json("backup", "--data-dir", data_dir, "--out", tmp_path / "backups" / "mid.tar.gz")
        finally:
            importing.send_signal(signal.SIGCONT)
        out, err = importing.communicate(timeout=600)
        assert importing.returncode == 0, err
        first = json.loads(out)
        full = counts(db_url)
        assert first["rejected"] == 0 and full["cases"] == IMPORT_CASES

        refused = supnet("restore", backup["file"], "--data-dir", data_dir)
        assert refused.returncode != 0 and "--force" in refused.stderr
        assert counts(db_url) == full
        restored = ok_json("restore", backup["file"], "--data-dir", data_dir, "--force")
        replaced_schema = restored["replaced_schema"]
        assert restored["audit_head"] == "{seq}:{hash}".format(**backup["manifest"]["audit_head"])
        middle = counts(db_url)
        assert middle["cases"] > 0 and sum(middle.values()) < sum(full.values()), (middle, full)

        # Re-running the import completes it: what the backup held comes back as duplicates, nothing twice.
        again = ok_json("import", "--data-dir", data_dir, *files)
        assert again["rejected"] == 0 and again["accepted"] > 0
        assert again["by_kind"]["acceptance"]["duplicates"] == middle["cases"]
        assert again["accepted"] + again["duplicates"] == first["accepted"]
        assert counts(db_url) == full
        assert ok_json("metrics", "check", "--data-dir", data_dir)["consistent"] is True
        audit = ok_json("audit", "--data-dir", data_dir, "--verify")
        assert audit["ok"] is True
        actions = [entry["action"] for entry in ok_json("audit", "--data-dir", data_dir)["entries"]]
        assert actions[:2] == ["records.imported", "node.restored"]
    finally:
        if importing.poll() is None:
            importing.kill()
            importing.communicate()
        drop_schema(replaced_schema)


def test_restore_refuses_a_running_node(tmp_path: Path) -> None:
    data_dir = new_node(tmp_path, f"sqlite:///{tmp_path}/py/node.db")
    config = load_config(data_dir)
    federation = config.federation.model_copy(update={"insecure_plaintext": True, "listen": "127.0.0.1:0"})
    save_config(data_dir, config.model_copy(update={"federation": federation}))
    backup = ok_json("backup", "--data-dir", data_dir, "--out", tmp_path / "py.tar.gz")
    process = start_serve(data_dir)
    try:
        state = wait_for_state(data_dir, process)
        for extra in ((), ("--force",)):
            refused = supnet("restore", backup["file"], "--data-dir", data_dir, *extra)
            assert refused.returncode != 0
            assert "INVALID_STATE" in refused.stderr and f"pid {state['pid']}" in refused.stderr
        assert not list(data_dir.glob("replaced-by-restore-*"))
    finally:
        process.terminate()
        process.wait(30)


def test_restore_into_a_new_directory_and_over_a_node_keeping_what_it_replaces(tmp_path: Path) -> None:
    data_dir = new_node(tmp_path, "")  # SQLite in the data directory
    (data_dir / "holidays.toml").write_text("# operator's holiday file\n", encoding="utf-8")
    backup = ok_json("backup", "--data-dir", data_dir, "--out", tmp_path / "py.tar.gz")
    assert Path(backup["file"]).stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".py.tar.gz.*")) and not list(tmp_path.glob(".supnet-backup-*"))
    members = {part["path"] for part in backup["manifest"]["parts"]}
    assert {"database/node.db", "files/supnet.toml", "files/holidays.toml", "files/keys/report_signing.pem"} <= members
    assert not any(name.startswith("files/node.db") for name in members)

    # Elsewhere: a fresh directory (another machine), the database file where the config says.
    elsewhere = tmp_path / "elsewhere" / "py"
    restored = ok_json("restore", backup["file"], "--data-dir", elsewhere)
    assert restored["replaced"] is None and (elsewhere / "node.db").is_file()
    assert (elsewhere / "keys" / "report_signing.pem").read_bytes() == (
        data_dir / "keys" / "report_signing.pem"
    ).read_bytes()

    # Over the node itself: only with --force, and what was there is kept aside.
    (data_dir / "notes.txt").write_text("written after the backup\n", encoding="utf-8")
    assert supnet("restore", backup["file"], "--data-dir", data_dir).returncode != 0
    restored = ok_json("restore", backup["file"], "--data-dir", data_dir, "--force")
    kept = Path(restored["replaced"])
    assert (kept / "notes.txt").is_file() and (kept / "database" / "node.db").is_file()
    assert not (data_dir / "notes.txt").exists() and (data_dir / "holidays.toml").is_file()
    assert ok_json("audit", "--data-dir", data_dir, "--verify")["ok"] is True


def _rewrite(archive: Path, out: Path, change: Any) -> None:
    """Copy a backup member by member, letting ``change(name, data)`` return new bytes for a member."""
    with tarfile.open(archive, "r:gz") as source, tarfile.open(out, "w:gz") as target:
        for member in source:
            handle = source.extractfile(member)
            assert handle is not None
            data = change(member.name, handle.read())
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))


def test_a_damaged_backup_is_refused_naming_the_part_and_nothing_is_restored(tmp_path: Path) -> None:
    data_dir = new_node(tmp_path, "")
    backup = Path(ok_json("backup", "--data-dir", data_dir, "--out", tmp_path / "py.tar.gz")["file"])
    damaged = tmp_path / "damaged.tar.gz"

    def edit_config(name: str, data: bytes) -> bytes:
        return data.replace(b"gd.gz.py", b"gd.gz.xx") if name.endswith(".toml") else data

    _rewrite(backup, damaged, edit_config)
    for args in (("--check",), ("--data-dir", tmp_path / "new")):
        result = supnet("restore", damaged, *args)
        assert result.returncode != 0 and "files/supnet.toml does not match the manifest" in result.stderr
    assert not (tmp_path / "new" / "supnet.toml").exists() and not (tmp_path / "new" / "node.db").exists()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    result = supnet("restore", truncated, "--check")
    assert result.returncode != 0 and ("damaged or truncated" in result.stderr or "not a readable" in result.stderr)


def test_restore_checks_the_audit_chain_against_the_head_in_the_manifest(tmp_path: Path) -> None:
    data_dir = new_node(tmp_path, "")
    backup = Path(ok_json("backup", "--data-dir", data_dir, "--out", tmp_path / "py.tar.gz")["file"])
    # A manifest naming a head the database does not end at (a later head: entries were cut off).
    forged = tmp_path / "forged.tar.gz"

    def later_head(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["audit_head"] = {"seq": manifest["audit_head"]["seq"] + 1, "hash": "ab" * 32}
        return json.dumps(manifest).encode()

    _rewrite(backup, forged, later_head)
    result = supnet("restore", forged, "--data-dir", tmp_path / "new")
    assert result.returncode != 0 and "audit log does not verify" in result.stderr and "truncated" in result.stderr


def test_a_failed_backup_leaves_no_file(tmp_path: Path) -> None:
    data_dir = new_node(tmp_path, "")
    (data_dir / "node.db").unlink()
    result = supnet("backup", "--data-dir", data_dir, "--out", tmp_path / "out" / "py.tar.gz")
    assert result.returncode != 0 and "does not exist" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []
    result = supnet("backup", "--data-dir", data_dir, "--out", data_dir / "py.tar.gz")
    assert result.returncode != 0 and "outside the data directory" in result.stderr
