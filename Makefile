# make demo: set up and run the demo.  make test: set up and run every test.
# make docs: build the documentation site into site/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint bench install install-test servers clean

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
# and 9093: the tests never use them. The install test sends its test press with
# mosquitto_pub and runs deploy/install into a throwaway root, which takes systemd's
# tools (systemd-sysusers, systemctl, systemd-analyze), not a running systemd.
servers:
	@missing=; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing=" mosquitto"; \
	command -v mosquitto_pub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing="$$missing prometheus"; \
	{ command -v prometheus-alertmanager && command -v amtool; } >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	{ command -v systemd-sysusers && command -v systemctl && command -v systemd-analyze; } >/dev/null 2>&1 || missing="$$missing systemd"; \
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

bench: install-test servers
	$(BIN)/python bench/latency.py --broker-defaults
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/timers.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/channels.py

clean:
	rm -rf $(VENV) build site *.egg-info
