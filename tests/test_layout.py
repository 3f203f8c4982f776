"""The layout rules of docs/architecture.md that import-linter does not check.

Each package names its public API in ``__all__`` and code outside a package imports from the package; modules stay
readable in one sitting; the code cites only documents inside the repository.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATED = ("federation/proto/", "node/store/migrations/")
MAX_LINES = 600
ONE_UNIT = "one unit"
# node.errors extends the exception hierarchy shared with federation; it imports that one module directly, so a module
# needing only errors (config, calendar, a generator worker) does not load the protocol stack (grpc, cryptography).
DIRECT_IMPORTS = {("node.errors", "federation.errors")}


def _sources(*roots: str) -> list[Path]:
    paths = [path for root in roots for path in sorted((REPO / root).rglob("*.py"))]
    return [path for path in paths if not path.relative_to(REPO).as_posix().startswith(GENERATED)]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _packages() -> set[str]:
    """Every package of node and federation except the root ``node`` namespace (its rooms are the packages)."""
    names = {_module_name(path) for path in _sources("node", "federation") if path.name == "__init__.py"}
    return names - {"node"}


def _owning_package(module: str, importer: str, packages: set[str]) -> str | None:
    """The outermost package holding ``module`` but not ``importer``: where ``importer`` must import it from."""
    parts = module.split(".")
    for end in range(1, len(parts)):
        package = ".".join(parts[:end])
        if package in packages and not (importer == package or importer.startswith(package + ".")):
            return package
    return None


def test_every_package_names_its_public_api() -> None:
    missing: list[str] = []
    for package in sorted(_packages() | {"node"}):
        module = importlib.import_module(package)
        exported = getattr(module, "__all__", None)
        if exported is None:
            missing.append(f"{package}: no __all__")
            continue
        missing.extend(
            f"{package}: __all__ names {name!r}, which it lacks" for name in exported if not hasattr(module, name)
        )
    assert not missing, "\n".join(missing)


def test_code_outside_a_package_imports_from_the_package() -> None:
    packages = _packages()
    modules = {_module_name(path) for path in _sources("node", "federation")}
    offences: list[str] = []
    for path in _sources("node", "federation", "bench", "tests"):
        importer = _module_name(path)
        for statement in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(statement, ast.ImportFrom) or statement.level or statement.module is None:
                continue
            target = statement.module
            if target.startswith("federation.proto") or target not in modules or target in packages:
                continue
            package = _owning_package(target, importer, packages)
            if package is not None and package != "node.cli" and (importer, target) not in DIRECT_IMPORTS:
                where = f"{path.relative_to(REPO)}:{statement.lineno}"
                offences.append(f"{where} imports from {target}; import from {package}")
    assert not offences, "\n".join(offences)


def test_the_check_above_sees_a_private_import() -> None:
    packages = _packages()
    assert _owning_package("node.supervision.metrics", "node.reporting.reports", packages) == "node.supervision"
    assert _owning_package("node.supervision.metrics", "node.supervision.alerts", packages) is None
    assert _owning_package("federation.signing", "node.trust.pki", packages) == "federation"


@pytest.mark.parametrize("root", ["node", "federation"])
def test_modules_stay_readable_in_one_sitting(root: str) -> None:
    too_long: list[str] = []
    for path in _sources(root):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and ONE_UNIT not in docstring.lower():
            too_long.append(
                f"{path.relative_to(REPO)}: {lines} lines, and its docstring does not say why it is one unit"
            )
    assert not too_long, "\n".join(too_long)


def test_every_module_says_what_lives_there() -> None:
    undocumented = [
        str(path.relative_to(REPO))
        for path in _sources("node", "federation")
        if path.read_text(encoding="utf-8").strip()
        and ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]
    assert not undocumented, undocumented


def test_code_and_docs_cite_only_documents_in_the_repository() -> None:
    outside = ("DOMAIN.md", "DESIGN.md", "shared/seeds", "../shared")
    citing = [
        f"{path.relative_to(REPO)}: {name}"
        for path in [
            *_sources("node", "federation", "bench", "tests"),
            *sorted((REPO / "docs").glob("*.md")),
            REPO / "README.md",
        ]
        if path != Path(__file__).resolve()
        for name in outside
        if name in path.read_text(encoding="utf-8")
    ]
    assert not citing, "\n".join(citing)


def test_errors_and_config_load_without_the_protocol_stack() -> None:
    """federation's names load on first use, so the lowest modules stay cheap (generator workers import them)."""
    import subprocess
    import sys

    probe = (
        "import sys, node.config, node.errors; print(sorted(m for m in ('grpc', 'cryptography') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"
