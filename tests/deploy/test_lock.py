"""The pinned dependency set: constraints.txt locks every runtime dependency, and the image installs only it.

constraints.txt is what ``make wheelhouse`` downloads and what the Dockerfile installs with ``--no-index``; a
dependency of pyproject.toml missing from it, or pinned outside pyproject's range, would make the offline build fail
(or differ from what the tests ran with).
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import REPO


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"
        for extra in requirement.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{name}-{extra}") in pins, f"{name}[{extra}] is not locked"
    assert "setuptools" in pins, "the image builds supnet from source: the build backend is in the wheelhouse too"


def test_the_lock_is_what_the_tests_run_with() -> None:
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}
    differing = {name: (pin, installed.get(name)) for name, pin in _pins().items() if installed.get(name) != pin}
    differing.pop("setuptools", None)  # the build backend of the image, not a runtime package
    assert differing == {}, "constraints.txt differs from this environment: (locked, installed)"


def test_the_image_and_the_wheelhouse_use_the_lock_and_no_index() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"pip install [^\n]*--no-index --find-links /wheels", dockerfile)
    assert "--constraint constraints.txt" in dockerfile
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "--constraint constraints.txt --requirement constraints.txt" in makefile
