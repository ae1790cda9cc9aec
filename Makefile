# The two commands of the README: `make demo` and `make test`.
# Both create .venv if missing and install the package with its dev extras; the install runs
# again only when pyproject.toml changes (a stamp file records the last install). Bytecode is compiled
# at install: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile torch, timm
# and prefect from source again (about 25 s each; the tests start hundreds of processes).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.t2c-installed

.PHONY: install demo test bench docs screenshot clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/t2c demo

# Test files run on TEST_WORKERS processes (pytest-xdist, one file per worker at a time): much of the
# suite waits on servers, subprocesses and a real clock. TEST_WORKERS=0 runs them in this process.
# --no-loadscope-reorder keeps tests/conftest.py's order (slowest files first) instead of xdist's
# (files with the most tests first), so the two workers finish together.
TEST_WORKERS ?= 2

test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The README's generated parts: the CLI and monitor-file references (tests/test_readme.py fails when they
# are stale), and its picture of a report, taken by the demo test's real Chromium.
docs: install
	$(BIN)/python -m t2c_monitor.reference README.md

screenshot: install
	mkdir -p docs && T2C_SCREENSHOT_TO=docs/report.png $(BIN)/pytest -p no:xdist -q \
		tests/test_world_drift.py::test_quick_demo_tells_the_story

clean:
	rm -rf .t2c .pytest_cache build *.egg-info
