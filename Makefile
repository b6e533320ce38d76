# Set-up and checks. `make demo` and `make test` are the two entry points.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: lint typecheck

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	@tree=$$(scripts/typecheck-tree.sh) && cd "$$tree" && \
	  $(abspath $(VENV))/bin/mypy --config-file $(CURDIR)/pyproject.toml -p rolecall
