"""The `boothwatch` command line (interface section 2)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from monitor import __version__
from monitor.config import ConfigError, load_config, summary
from monitor.logs import configure


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
    demo = sub.add_parser("demo", help="everything in one process, with simulated booths")
    demo.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT")
    demo.add_argument("--db", default=None, metavar="FILE",
                      help="SQLite file (default: a new temporary file)")
    demo.add_argument("--speed", type=float, default=1.0,
                      help="timer scale: 2 halves every demo threshold")
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
            configure(args.log_format or "console")
            from monitor.demo import run_demo

            return _run_until_signal(run_demo(args.http, args.db, args.speed))
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
