# poolhub: `make run` starts everything, `make test` runs every test. Both build .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# `make run` needs the runtime set and the embedded defaults; tests and tools also the dev set.
# Each stamp is named by its files' checksum, so editing a requirements file reinstalls.
RUN_REQS := requirements.txt requirements-embedded.txt
DEV_REQS := $(RUN_REQS) requirements-dev.txt
RUN_STAMP := $(VENV)/.installed-run-$(shell cat $(RUN_REQS) | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-dev-$(shell cat $(DEV_REQS) | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck check demo bench clean

$(RUN_STAMP): $(RUN_REQS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-embedded.txt
	@rm -f $(VENV)/.installed-run-*
	@touch $(RUN_STAMP)

$(STAMP): $(DEV_REQS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-dev-* $(VENV)/.installed-[0-9]*
	@touch $(STAMP)

# The client SDK and the `poolhub` command (client/), installed editable into .venv for `make demo`
# (the tests import it from client/src, see pyproject.toml). It needs only the runtime set (httpx,
# websockets; setuptools comes with the venv), so a demo after `make run` installs no test tools.
CLIENT_STAMP := $(VENV)/.client-installed
$(CLIENT_STAMP): $(RUN_STAMP) client/pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation -e client 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet --disable-pip-version-check -e client
	@touch $(CLIENT_STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m poolhub.launcher

# The browser tests (tests/browser) run when a chromium is found ($$POOLHUB_CHROMIUM or /usr/bin/chromium).
test: $(STAMP)
	@chromium="$${POOLHUB_CHROMIUM:-/usr/bin/chromium}"; if [ -x "$$chromium" ]; then \
		echo "browser tests: running with $$chromium"; \
	else \
		echo "browser tests: SKIPPED, no chromium at $$chromium (apt-get install chromium, or set POOLHUB_CHROMIUM)"; \
	fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A whole round against a running `make run`: POOLHUB_URL (default http://127.0.0.1:8000), the admin from
# POOLHUB_ADMIN_USERNAME / POOLHUB_ADMIN_PASSWORD. DEMO_ARGS=--clients 200 for a bigger pool.
DEMO_ARGS ?= --clients 50
demo: $(CLIENT_STAMP)
	$(BIN)/poolhub --url "$${POOLHUB_URL:-http://127.0.0.1:8000}" simulate $(DEMO_ARGS)

# Every performance figure beside its baselines, on a private stack on 127.0.0.1; writes BENCHMARKS.md.
# BENCH_QUICK=1 for a smoke run of a few minutes; bench/README.md lists the other knobs.
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy .

check: lint typecheck test

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
