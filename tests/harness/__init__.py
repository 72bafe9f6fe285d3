"""What the tests and benchmarks run boothwatch with; test modules import from here,
never from one another.

* `site`: the one writer of site config files (TOML).
* `core`: the pure core on a hand-stepped clock (`CoreDriver`), configs as dataclasses.
* `broker`: a real Mosquitto on a free port; what it retains.
* `site_broker`: the shipped broker config and ACL, run as they are, with a site's
  credentials from make-site-credentials (`SiteBroker`, `make_credentials`).
* `receivers`: real HTTP servers that take the pages (`Webhook`) or stand in for ntfy,
  Pushover, Apprise (`local_service`).
* `service`: the whole service in-process (`start_service`), on a `HandClock` if the
  test steps time.
* `process`: the real `boothwatch run` process (`ServiceProcess`), or an installed one.
* `prometheus`: a real Prometheus scraping the service.
* `crash`: the crash-anywhere trials (`tests/test_crash.py`, `bench/crash.py`).
* `strategies`: what the fuzzers draw (`tests/test_fuzz.py`, `bench/fuzz.py`).
* `devices`: device configs, one per firmware.
* `browser`: the station board in Debian's Chromium through Playwright (`chromium`,
  `Board`): `tests/test_board_ui.py`, `bench/board.py`.
"""
