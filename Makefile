# jobstack: `make run` starts the stack, `make test` runs the test matrix.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# tox finds each Python it tests on PATH: pyenv's shims answer only for the global version,
# so the bin folders of pyenv's 3.11-3.13 go first when pyenv has them.
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
PYTHON_BINS := $(sort $(wildcard $(PYENV_ROOT)/versions/3.1[123].*/bin))
TOX_PATH := $(subst $(eval) ,:,$(strip $(PYTHON_BINS) $(PATH)))
# Under CI=true a Python of the matrix that cannot be found fails the run.
TOX_FLAGS := $(if $(filter true,$(CI)),--skip-missing-interpreters=false)

.PHONY: install run test services lint typing clean bench bench-cluster bench-datasets bench-dashboard observe screenshots

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
	infra/scripts/rabbitmq-ui
	$(BIN)/jobstack db upgrade
	$(BIN)/jobstack up

test: install
	infra/scripts/ensure-services rabbitmq postgres quorum-vhost
	PATH="$(TOX_PATH)" $(BIN)/tox $(TOX_FLAGS)

# Submission, latency, memory and commits per job against their targets, then the drain table:
# bare Dramatiq, jobstack (PostgreSQL, SQLite) and the peers that keep a record of each job
# (Oban for Python, Celery, Procrastinate, each in its venv under bench/.venvs/), 3 runs each.
bench: install
	infra/scripts/ensure-services rabbitmq postgres
	$(BIN)/python -m bench
	$(BIN)/python -m bench.peers

# Drain rate with 1 and 2 worker processes: one node (classic, then quorum queues) against a
# 3-node cluster with quorum queues started here (docs/scaling.md).
bench-cluster: install
	infra/scripts/ensure-services rabbitmq postgres
	$(BIN)/python -m bench.cluster

# A 1,000,000-row dataset load, kept out of the normal test run.
bench-datasets: install
	infra/scripts/ensure-services rabbitmq postgres
	JOBSTACK_TEST_DB=$${JOBSTACK_TEST_DB:-postgres} $(BIN)/pytest -m bench -s tests/bench

# The dashboard's pages on 1,000,000 jobs: p95 per URL, and the plans of slow queries.
bench-dashboard: install
	infra/scripts/ensure-services rabbitmq postgres
	$(BIN)/python -m bench.dashboard

# PNGs of every dashboard page in docs/images/, from a throwaway stack, in Debian's Chromium.
screenshots: install
	infra/scripts/ensure-services rabbitmq
	$(BIN)/python infra/scripts/screenshots.py

# Prometheus with infra/prometheus's config and alerts against the running stack.
observe:
	infra/scripts/observe

lint: install
	$(BIN)/tox -e lint

typing: install
	$(BIN)/tox -e typing

clean:
	rm -rf $(VENV) .tox var .mypy_cache .ruff_cache .pytest_cache *.egg-info
