# Hivemind: `make run` brings the platform up, `make agent` joins a further machine; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Tests use their own database, Redis database number and Docker daemon, so a running
# `make run` and the suite never disturb each other.
TEST_ENV := HIVEMIND_DATABASE_URL=$${HIVEMIND_TEST_DATABASE_URL:-postgres://root@127.0.0.1:5432/hivemind} \
	HIVEMIND_REDIS_URL=$${HIVEMIND_TEST_REDIS_URL:-redis://127.0.0.1:6379/15} \
	HIVEMIND_DOCKER_HOST=unix://$(CURDIR)/var/test/docker/docker.sock \
	HIVEMIND_VAR_DIR=$(CURDIR)/var/test \
	HIVEMIND_NODE_NAME=testnode

.PHONY: run agent test lint format bench bootstrap bootstrap-dev test-services csi-proto

run: bootstrap
	exec $(PY) manage.py up

# On a further machine: join the platform whose PostgreSQL and Redis HIVEMIND_DATABASE_URL and
# HIVEMIND_REDIS_URL name, and run only this node's agent (README, "Joining a second machine").
agent: bootstrap
	exec $(PY) manage.py up --agent

bootstrap:
	@scripts/bootstrap.sh requirements.txt

bootstrap-dev:
	@scripts/bootstrap.sh requirements-dev.txt

test-services: bootstrap-dev
	@scripts/test-services.sh

# The browser tests save a screenshot of every dashboard page there (CI keeps the folder).
ARTIFACTS := $${HIVEMIND_ARTIFACTS_DIR:-$(CURDIR)/var/test/artifacts}

# The suite runs in this many processes at once (pytest-xdist), each with its own database, Redis
# database, var dir and Docker daemon (tests/parallel.py). Most of a test's time is waiting on
# real processes, so one more than the cores keeps them busy: on 2 cores, 3 take the suite from
# 46 minutes to under 20 (at most 8: tests/parallel.py has 8 Redis databases to give).
TEST_WORKERS := $${HIVEMIND_TEST_WORKERS:-$$(( $$(nproc) < 8 ? $$(nproc) + 1 : 8 ))}

# The tests that run the whole platform as a user would (`make run`, `make agent`, a browser:
# marked e2e) run after the others, in one process of their own: a worker's test after a
# `make run` test in the same process lost its workflows' messages (seen twice in parallel runs,
# not yet explained), and they use fixed Redis databases besides.
test: test-services lint
	@echo "dashboard screenshots: $(ARTIFACTS)/screenshots"
	$(TEST_ENV) HIVEMIND_ARTIFACTS_DIR=$(ARTIFACTS) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not e2e" $(PYTEST_ARGS); \
	status=$$?; \
	$(TEST_ENV) HIVEMIND_ARTIFACTS_DIR=$(ARTIFACTS) $(PY) -m pytest -m e2e $(PYTEST_ARGS) || exit 1; \
	exit $$status

lint: bootstrap-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(TEST_ENV) HIVEMIND_DATABASE_URL=sqlite:///$(CURDIR)/var/lint.sqlite3 $(PY) manage.py makemigrations --check --dry-run

# The CSI endpoint's Python modules, generated from storage/csi/csi.proto (a test checks they are current).
csi-proto: bootstrap-dev
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. storage/csi/csi.proto

format: bootstrap-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: test-services
	@set -e; for script in bench/*.py; do echo "== $$script"; $(TEST_ENV) $(PY) $$script; done
