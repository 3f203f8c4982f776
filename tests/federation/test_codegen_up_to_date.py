"""The checked-in generated code equals what federation.codegen produces from protos/; package boundary."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from federation import codegen

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_code_is_what_codegen_produces() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "federation.codegen", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"generated code is out of date; run `python -m federation.codegen`.\n{result.stdout}{result.stderr}"
    )


def test_check_reports_changed_missing_and_stale_files(tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    generated.mkdir()
    codegen.generate(generated)
    checked_in = tmp_path / "checked_in"
    shutil.copytree(generated, checked_in)
    assert codegen.compare(generated, checked_in).clean

    package = checked_in / "federation" / "proto" / "v1"
    (package / "report_pb2.py").write_text("# edited by hand\n", encoding="utf-8")
    (package / "ingest_pb2.pyi").unlink()
    (package / "removed_pb2.py").write_text("# left over from a deleted .proto\n", encoding="utf-8")

    difference = codegen.compare(generated, checked_in)
    assert difference.changed == ("federation/proto/v1/report_pb2.py",)
    assert difference.missing == ("federation/proto/v1/ingest_pb2.pyi",)
    assert difference.stale == ("federation/proto/v1/removed_pb2.py",)

    codegen.write(generated, checked_in)
    assert codegen.compare(generated, checked_in).clean
    assert not (package / "removed_pb2.py").exists()


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    names_first = [p.relative_to(first) for p in codegen.generate(first)]
    names_second = [p.relative_to(second) for p in codegen.generate(second)]
    assert names_first == names_second
    assert codegen.compare(first, second).clean
    for name in names_first:
        assert str(tmp_path) not in (first / name).read_text(encoding="utf-8"), f"{name} embeds a machine path"


def test_federation_never_imports_node() -> None:
    # Dependency direction (docs/architecture.md): node imports federation, never the other way round.
    modules = sorted(
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        for path in (REPO_ROOT / "federation").rglob("*.py")
        if path.name != "__init__.py"
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'node' or m.startswith('node.'))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "federation.signing" in modules
    assert result.stdout.strip() == "", f"federation imported node modules: {result.stdout.strip()}"
