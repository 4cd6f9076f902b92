# jobstack: `make run` starts the stack, `make test` runs the test matrix.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test services lint typing clean bench bench-datasets

install: $(VENV)/.installed

# Re-installs only when the package metadata changes (the install is editable).
$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jobstack needs Python 3.11 or newer (PYTHON=$(PYTHON))")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

run: install
	infra/scripts/ensure-services rabbitmq
	$(BIN)/jobstack db upgrade
	$(BIN)/jobstack up

test: install
	infra/scripts/ensure-services rabbitmq postgres
	$(BIN)/tox

# jobstack against bare Dramatiq and the performance targets (table; JSON in bench/results/).
bench: install
	infra/scripts/ensure-services rabbitmq postgres
	$(BIN)/python -m bench

# A 1,000,000-row dataset load, kept out of the normal test run.
bench-datasets: install
	infra/scripts/ensure-services rabbitmq postgres
	JOBSTACK_TEST_DB=$${JOBSTACK_TEST_DB:-postgres} $(BIN)/pytest -m bench -s tests/bench

lint: install
	$(BIN)/tox -e lint

typing: install
	$(BIN)/tox -e typing

clean:
	rm -rf $(VENV) .tox var .mypy_cache .ruff_cache .pytest_cache *.egg-info
