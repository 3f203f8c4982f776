# supnet: `make demo` runs the main job, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python's byte-code cache on even where the environment turns it off (PYTHONDONTWRITEBYTECODE): the project's modules
# are compiled once, not again in every process the tests start (~0.3 s of CPU per `supnet` or node start).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint typecheck check protos bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/supnet demo

# The suites built on the test tree (tests/harness/tree.py), run a second time with every server hosted.
HOSTED_SUITES = tests/drilldown tests/reporting tests/directives tests/faults tests/trust tests/server

# Three workers on two cores: most tests wait on servers, deadlines and subprocesses, not on the CPU.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 3 -q
	SUPNET_TEST_HOSTING=hosted $(BIN)/python -m pytest -n 3 -q $(HOSTED_SUITES)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python -m federation.codegen

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Container images that build with no network (docs/deploy.md "Containers", README "Containers").
# wheelhouse: every wheel of the locked set (constraints.txt), for `pip install --no-index` in the image or on a
# server; constraints: re-lock after changing pyproject.toml; base-image: Debian bases from this machine's own apt
# sources (debootstrap, root; kept in BASE_DIR, delete it to rebuild with newer packages), imported into Docker.
WHEELS ?= wheels
BASE_DIR ?= build/base
BASE_TAG ?= bookworm
SUDO ?= $(shell test "$$(id -u)" = 0 || echo sudo)

.PHONY: wheelhouse constraints base-image

wheelhouse: $(STAMP)
	rm -rf $(WHEELS).partial
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELS).partial \
		--constraint constraints.txt --requirement constraints.txt
	rm -rf $(WHEELS) && mv $(WHEELS).partial $(WHEELS)

constraints:
	rm -rf build/lock && $(PYTHON) -m venv build/lock
	build/lock/bin/python -m pip install --quiet . 'setuptools>=68'
	{ echo "# The locked runtime dependency set (every package 'pip install .' pulls in, plus the build backend), used by"; \
	  echo "# the image (pip install --no-index -c constraints.txt) and by 'make wheelhouse'. Regenerate: make constraints."; \
	  build/lock/bin/python -m pip freeze --all --exclude supnet --exclude pip; } > constraints.txt.partial
	mv constraints.txt.partial constraints.txt && rm -rf build/lock

base-image:
	test -s $(BASE_DIR)/supnet-base-postgres.tar || SUITE=$(BASE_TAG) $(SUDO) config/docker/debian-base.sh $(BASE_DIR)
	docker import --change 'ENV LANG=C.UTF-8' $(BASE_DIR)/supnet-base.tar supnet-base:$(BASE_TAG)
	docker import --change 'ENV LANG=C.UTF-8' $(BASE_DIR)/supnet-base-postgres.tar supnet-base-postgres:$(BASE_TAG)
