# make demo: set up and run the demo.  make test: set up and run every test.
# make docs: build the documentation site into site/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint bench screenshot install install-test servers clean messages pot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

# The integration tests start their own Mosquitto, Prometheus and Alertmanager on free
# ports; they need the binaries (promtool comes with prometheus, amtool with
# prometheus-alertmanager). Installs only what is missing, without recommends (prometheus
# would bring node-exporter). Debian's packages may start system services on 1883, 9090
# and 9093: the tests never use them. Caddy runs deploy/caddy/Caddyfile in front of the
# service (tests/test_proxy.py); Debian's package starts a caddy on port 80, never used.
# Chromium, driven by Playwright, presses the ack page's buttons as a nurse's phone would.
# The store's tests run on PostgreSQL too: tests/harness/postgres.py makes its own cluster
# with initdb and pg_ctl (/usr/lib/postgresql/<version>/bin) on a free port; the cluster
# Debian's package starts on 5432 is never used.
# The install test sends its test press with
# mosquitto_pub and runs deploy/install into a throwaway root, which takes systemd's
# tools (systemd-sysusers, systemctl, systemd-analyze), not a running systemd. The board's
# tests drive Debian's Chromium through Playwright (never a browser build of its own).
servers:
	@missing=; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing=" mosquitto"; \
	command -v mosquitto_pub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing="$$missing prometheus"; \
	{ command -v prometheus-alertmanager && command -v amtool; } >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v caddy >/dev/null 2>&1 || missing="$$missing caddy"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	{ command -v systemd-sysusers && command -v systemctl && command -v systemd-analyze; } >/dev/null 2>&1 || missing="$$missing systemd"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -z "$$missing" ] || { \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; }

demo: install
	$(BIN)/boothwatch demo

test: install-test servers
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# The docs packages come with the test extras (the suite builds the site); installed
# only when missing, so `make docs` is quick on a set-up .venv.
docs: $(BIN)/python
	@$(BIN)/python -c "import mkdocs, material, neoteroi.mkdocs.oad" 2>/dev/null \
	  || $(BIN)/pip install --quiet -e '.[test]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# docs/board.png, the README's picture of the station board, and docs/board.pt_PT.png, the
# same in European Portuguese for the translators' page: the board's screenshot test
screenshot: install-test servers
	BOOTHWATCH_SCREENSHOT=docs/board.png $(BIN)/python -m pytest -q tests/test_board_ui.py -k screenshot

# make messages: after a text people read was added or reworded. Extracts every message
# id into the template, brings each language's catalog in step with it (new ids come in
# empty, changed ones fuzzy: a translator fills them in), and compiles each catalog as the
# service does at load, with its checks, saying what is left to translate.
# docs/architecture/languages.md is the translator's page.
LOCALE := monitor/locale
POT ?= $(LOCALE)/boothwatch.pot
messages: pot
	$(BIN)/pybabel --quiet update -i $(POT) -d $(LOCALE) -D boothwatch \
	  --ignore-pot-creation-date --ignore-obsolete
	$(BIN)/python -m monitor.i18n

# the template alone; tests/test_i18n.py extracts into a file of its own (POT=...) to see
# that the committed one is current
pot: $(BIN)/python
	@$(BIN)/python -c "import babel" 2>/dev/null || $(BIN)/pip install --quiet -e .
	$(BIN)/pybabel --quiet extract -F babel.cfg -k say -c TRANSLATORS: --add-location=file \
	  --project=boothwatch --copyright-holder="boothwatch contributors" -o $(POT) .

bench: install-test servers
	$(BIN)/python bench/latency.py --broker-defaults
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/timers.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/restart.py
	$(BIN)/python bench/channels.py
	$(BIN)/python bench/board.py
	$(BIN)/python bench/failover.py

clean:
	rm -rf $(VENV) build site *.egg-info
