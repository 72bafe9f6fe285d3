"""The `boothwatch` command line (interface section 2)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from monitor import __version__
from monitor.config import ConfigError, load_config
from monitor.logs import configure
from monitor.summary import summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boothwatch",
        description="Watches consumption-room booths and pages a nurse in time.",
    )
    parser.add_argument("--version", action="version", version=f"boothwatch {__version__}")
    parser.add_argument("--log-format", choices=("json", "console"), default=None,
                        help="json lines (default for run) or console (default for demo)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the service in the foreground")
    run.add_argument("--config", required=True, metavar="FILE")
    check = sub.add_parser("check-config", help="check a config file and summarise it")
    check.add_argument("file", metavar="FILE")
    sub.add_parser(
        "config-schema", help="print the JSON Schema of the config file, for editors",
        description="Prints the JSON Schema of the TOML config file to stdout; point an "
                    "editor's TOML support (Taplo, Even Better TOML) at a copy of it.",
    )
    demo = sub.add_parser("demo", help="everything in one process, with simulated booths")
    demo.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT")
    demo.add_argument("--db", default=None, metavar="FILE",
                      help="SQLite file (default: a new temporary file)")
    demo.add_argument("--speed", type=float, default=1.0,
                      help="timer scale: 2 halves every demo threshold")
    demo.add_argument("--verbose", action="store_true",
                      help="the service's logs on stderr (default: a file the banner names)")
    from devices.simulator import DEFAULT_RATE, FORMATS, SCENARIOS

    sim = sub.add_parser(
        "sim", help="simulated booth devices publishing to a broker",
        description="Publishes what the devices of booths b1..bN would, in the format of "
                    "one firmware; prints a summary every few seconds; Ctrl-C stops it.",
    )
    sim.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", metavar="URL",
                     help="broker (default mqtt://127.0.0.1:1883; mqtt://user:pass@host too)")
    sim.add_argument("--site", metavar="ID", help="site id, for canonical topics")
    sim.add_argument("--booths", type=int, required=True, metavar="N")
    sim.add_argument("--format", required=True, choices=FORMATS)
    sim.add_argument("--scenario", choices=SCENARIOS)
    sim.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="R",
                     help=f"load: messages a second over all booths (default {DEFAULT_RATE:g})")
    sim.add_argument("--speed", type=float, default=1.0, metavar="X",
                     help="compress time: every offset divided by X")
    sim.add_argument("--duration", type=float, default=None, metavar="S",
                     help="stop after S seconds (default: when done; load runs until Ctrl-C)")
    sim.add_argument("--protocol", choices=("5", "3.1.1"), default="5",
                     help="MQTT version (default 5: only MQTT 5 says when a publish is refused)")
    sim.add_argument("--print-devices", action="store_true",
                     help="print the [[booths]] and [[devices]] TOML for a config, and exit")
    test_page = sub.add_parser(
        "test-page", help="send a clearly marked test page through the real channels",
        description="Like a fire-alarm test: one test page to the responder on each of their "
                    "channels (or only --channel), one attempt each; prints delivered or "
                    "failed, latency and receipt per channel. Exit 0 when all delivered, 1 "
                    "when one failed, 2 for a config problem or an unknown responder/channel.",
    )
    test_page.add_argument("--config", required=True, metavar="FILE")
    test_page.add_argument("--responder", required=True, metavar="ID")
    test_page.add_argument("--channel", metavar="NAME",
                           help="only this one of the responder's channels (default: all)")
    from monitor import report

    report.add_arguments(sub.add_parser(
        "report", help="incidents and response times from the store (table, CSV, JSON)",
        description="Reads the SQLite store (read-only): incidents raised in [--from, --to), "
                    "grouped; response-time percentiles, outcomes, pages; the longest "
                    "incidents with their timeline. Shifts come from --shifts until the "
                    "roster supplies them.",
    ))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    match args.command:
        case "check-config":
            try:
                config = load_config(args.file)
            except ConfigError as exc:
                print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
                for problem in exc.problems:
                    print(f"  {problem}", file=sys.stderr)
                return 2
            print(summary(config))
            return 0
        case "config-schema":
            from monitor.config.schema import json_schema

            print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
            return 0
        case "run":
            configure(args.log_format or "json")
            try:
                config = load_config(args.config)
            except ConfigError as exc:
                for problem in exc.problems:
                    print(f"config: {problem}", file=sys.stderr)
                return 2
            from monitor.runtime import Runtime

            return _run_until_signal(Runtime(config).run())
        case "demo":
            from monitor.demo import run_demo

            return _run_until_signal(run_demo(args.http, args.db, args.speed,
                                              verbose=args.verbose,
                                              log_format=args.log_format or "console"))
        case "sim":
            from devices import simulator

            problems = simulator.problems(args.format, args.scenario or "normal", args.booths,
                                          args.speed, args.rate, args.duration, url=args.mqtt)
            if args.print_devices and args.booths >= 1:
                print(simulator.devices_toml(args.format, args.booths, scenario=args.scenario),
                      end="")
                return 0
            problems += [f"--{name} is required (unless --print-devices)"
                         for name in ("site", "scenario") if not getattr(args, name)]
            if problems:
                for problem in problems:
                    print(f"boothwatch sim: {problem}", file=sys.stderr)
                return 2
            configure(args.log_format or "console")
            return _run_until_signal(simulator.run_sim(
                args.mqtt, args.site, args.format, args.scenario, args.booths,
                speed=args.speed, rate=args.rate, duration=args.duration, protocol=args.protocol,
            ))
        case "report":
            from monitor import report

            return report.main(args)
        case "test-page":
            configure(args.log_format or "console")
            from monitor import testpage

            return testpage.main(args)
    raise AssertionError(args.command)


def _run_until_signal(coro: Coroutine[Any, Any, None]) -> int:
    """Run ``coro``; SIGTERM or SIGINT cancels it cleanly and the process exits 0."""

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await coro

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(runner())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
