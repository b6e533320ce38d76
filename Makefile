# Two entry points: `make demo` runs the main job end to end, `make test` runs
# the whole suite with lint and type checks. Both install what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# Which demo `make demo` runs: redis (default) or postgres.
DEMO ?= redis
export VENV

.PHONY: demo test setup lint typecheck unit bench clean

demo: setup
	$(VENV)/bin/rolecall demo $(DEMO)

test: setup lint typecheck
	ROLECALL_REQUIRE_DOCKER=1 $(VENV)/bin/pytest

unit: setup
	$(VENV)/bin/pytest -m "not docker"

setup:
	scripts/setup.sh

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	@tree=$$(scripts/typecheck-tree.sh) && cd "$$tree" && \
	  $(abspath $(VENV))/bin/mypy --config-file $(CURDIR)/pyproject.toml -p rolecall

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
