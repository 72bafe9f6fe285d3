"""The `boothwatch` command line (interface section 2)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# light: what the service imports comes in `main`, once the collector is off (see there)
from monitor import __version__, exits, startup
from monitor.exits import OperatorError

if TYPE_CHECKING:
    from monitor.logs import LogFormat


_COMMANDS = ("run", "check-config", "config-schema", "demo", "sim", "test-page", "test-booth",
             "report")
#: commands whose options need a module that is slow to import (the simulator's scenarios,
#: the report's figures): another command's parser leaves their options out
_HEAVY = ("sim", "report")


def _command_of(argv: Sequence[str]) -> str | None:
    """The command `argv` names, None if none: the first word that is one, skipping the
    value of --log-format (the only option before a command that takes one)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-format":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; for the command `only` (but sim and report), the options of
    sim and report are left out, and their modules not imported (`boothwatch run` starts
    sooner: bench/restart.py)."""
    full = only is None or only in _HEAVY or only not in _COMMANDS
    # options that work before or after the command: every command's parser has them too,
    # with no default there, so one given before the command is not overwritten
    anywhere = argparse.ArgumentParser(add_help=False)
    anywhere.add_argument("--log-format", choices=("json", "console"), default=argparse.SUPPRESS,
                          help="json lines (default for run) or console (default for the "
                               "other commands)")
    parser = argparse.ArgumentParser(
        prog="boothwatch", parents=[anywhere],
        description="Watches consumption-room booths and pages a nurse in time.",
    )
    parser.add_argument("--version", action="version", version=f"boothwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, more: str = "") -> argparse.ArgumentParser:
        """A command: `summary` in `boothwatch --help`, and atop its own --help."""
        return sub.add_parser(name, help=summary, parents=[anywhere],
                              description=f"{summary[0].upper()}{summary[1:]}.",
                              epilog=more or None)

    run = command("run", "run the service in the foreground",
                  "SIGTERM or SIGINT stops it cleanly (exit 0). Exit 2: the config has a "
                  "problem; 73: the store cannot be opened; 69: the HTTP address cannot be "
                  "listened on; 75: another process took the site's lease (PostgreSQL; "
                  "docs/reference/cli.md). --config DIR runs every site in DIR/*.toml.")
    run.add_argument("--config", required=True, metavar="FILE")
    check = command(
        "check-config", "check a config file, and what the service will need, and summarise it",
        "Exit 0 with a one-screen summary, or 2 listing every problem by its key. Also "
        "checked without connecting: the secrets the config names are set (in --env-file "
        "and this environment), the store's directory is there and writable, the TLS files "
        "readable, by --user; with [store] url, the database takes --user's connection. "
        "A store that a newer boothwatch migrated is refused.")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--env-file", metavar="FILE",
                       help="the unit's EnvironmentFile (e.g. /etc/boothwatch/env), read as "
                            "systemd reads it, over this environment")
    check.add_argument("--user", metavar="NAME",
                       help="the user the service runs as (default: the current user; another "
                            "needs root); with it, a missing store directory under /var/lib "
                            "is accepted: the unit's StateDirectory= creates it")
    command("config-schema", "print the JSON Schema of the config file, for editors",
            "Point an editor's TOML support (Taplo, Even Better TOML) at a copy of it.")
    demo = command("demo", "everything in one process, with simulated booths",
                   "An embedded broker, four simulated booths, console pages, HTTP.")
    demo.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT")
    demo.add_argument("--db", default=None, metavar="FILE",
                      help="SQLite file (default: a new temporary file)")
    demo.add_argument("--speed", type=float, default=1.0,
                      help="timer scale: 2 halves every demo threshold")
    demo.add_argument("--verbose", action="store_true",
                      help="the service's logs on stderr (default: a file the banner names)")
    sim = command("sim", "simulated booth devices publishing to a broker",
                  "What the devices of booths b1..bN would publish, in the format of one "
                  "firmware; a summary every few seconds; Ctrl-C stops it.")
    if full:
        _sim_options(sim)
    test_page = command(
        "test-page", "send a clearly marked test page through the real channels",
        "Like a fire-alarm test: one test page to the responder on each of their channels "
        "(or only --channel), one attempt each; prints delivered or failed, latency and "
        "receipt per channel. Exit 0 when all delivered, 1 when one failed, 2 for a config "
        "problem or an unknown responder/channel.")
    test_page.add_argument("--config", required=True, metavar="FILE")
    test_page.add_argument("--responder", required=True, metavar="ID")
    test_page.add_argument("--channel", metavar="NAME",
                           help="only this one of the responder's channels (default: all)")
    test_booth = command(
        "test-booth", "walk through a booth's devices with the person in it, paging nobody",
        "Starts a device test of the booth on the running service (its triggers are recorded, "
        "not raised; only --responder hears of them), asks for the call button and then for "
        "stillness, and reports the devices heard and the triggers fired. Exit 0 when the call "
        "and unresponsive triggers fired, 1 when one did not, 2 when the test could not run.")
    test_booth.add_argument("--config", required=True, metavar="FILE")
    test_booth.add_argument("--booth", required=True, metavar="ID")
    test_booth.add_argument("--responder", metavar="ID",
                            help="the person testing: told of each trigger on their channels")
    test_booth.add_argument("--call-wait", type=float, default=120.0, metavar="S",
                            help="seconds to wait for the call button (default 120)")
    report = command(
        "report", "incidents and response times from the store (table, CSV, JSON)",
        "Reads the store (read-only; a SQLite file or PostgreSQL): incidents raised in "
        "[--from, --to), of some "
        "booths and triggers, grouped by one key or several; response-time percentiles, "
        "outcomes, pages; the incidents behind each group; alarm fatigue; the longest "
        "incidents with their timeline. Shifts: --shifts, else the roster's.")
    if full:
        from monitor import report_cli

        report_cli.add_arguments(report)
    return parser


def _sim_options(sim: argparse.ArgumentParser) -> None:
    from devices.simulator import DEFAULT_RATE, FORMATS, SCENARIOS

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


#: the services: a closed stderr there is a fault to see, never a reader who left
SERVICES = frozenset({"run", "demo"})


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command_of(argv)
    if command == "run":
        # Start-up imports, checks and restores ~10^6 objects that live as long as the
        # process: the cyclic collector would walk them again and again (a fifth of the
        # start at 10,000 booths, bench/restart.py). Runtime.run enables it once they are
        # frozen.
        gc.disable()
    try:
        args = _parser(command).parse_args(argv)
        log_format = getattr(args, "log_format", None)
        if args.command in SERVICES:
            return _command(args, log_format)
        status = exits.STOPPED
        with _reader_may_leave():
            status = _command(args, log_format)
        return status
    finally:
        gc.enable()


def _command(args: argparse.Namespace, log_format: LogFormat | None) -> int:
    from monitor.config import ConfigError, load_config
    from monitor.logs import configure

    match args.command:
        case "check-config":
            return _check_config(args.file, args.env_file, args.user)
        case "config-schema":
            import json

            from monitor.config.schema import json_schema

            print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
            return 0
        case "run":
            startup.mark("imports")
            configure(log_format or "json")
            if Path(args.config).is_dir():
                startup.off()  # several runtimes at once: their phases would mix
                return _run_sites(Path(args.config))
            try:
                config = load_config(args.config)
            except ConfigError as exc:
                for problem in exc.problems:
                    print(f"config: {problem}", file=sys.stderr)
                return exits.CONFIG
            startup.mark("config")
            from monitor.runtime import Runtime

            startup.mark("runtime_imports")
            return _run_until_signal(Runtime(config).run())
        case "demo":
            from monitor.demo import run_demo

            return _run_until_signal(run_demo(args.http, args.db, args.speed,
                                              verbose=args.verbose,
                                              log_format=log_format or "console"))
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
            configure(log_format or "console")
            return _run_until_signal(simulator.run_sim(
                args.mqtt, args.site, args.format, args.scenario, args.booths,
                speed=args.speed, rate=args.rate, duration=args.duration, protocol=args.protocol,
            ))
        case "report":
            from monitor import report_cli

            return report_cli.main(args)
        case "test-booth":
            configure(log_format or "console")
            from monitor import testbooth

            return testbooth.main(args)
        case "test-page":
            configure(log_format or "console")
            from monitor import testpage

            return testpage.main(args)
    raise AssertionError(args.command)


def _check_config(file: str, env_file: str | None, user_name: str | None) -> int:
    """check-config: the config, and what the service will need of this box."""
    from monitor import envfile
    from monitor.access import User
    from monitor.config import ConfigError, load_config
    from monitor.config.host import Host
    from monitor.summary import summary, warnings

    env: dict[str, str] = dict(os.environ)
    problems: list[str] = []
    if env_file is not None:
        # the service gets the unit's EnvironmentFile, never this shell's variables: a
        # password exported here for `boothwatch sim` must not pass for the service's
        env, problems = envfile.read(env_file)
    try:
        user = User.named(user_name) if user_name is not None else User.current()
    except KeyError:
        print(f"boothwatch check-config: --user: no user named {user_name!r}", file=sys.stderr)
        return exits.CONFIG
    host = Host(user, chosen=user_name is not None)
    config = None
    try:
        config = load_config(file, env, host)
    except ConfigError as exc:
        problems += exc.problems
    except PermissionError as exc:  # only root can check for another user
        print(f"boothwatch check-config: --user: {exc}", file=sys.stderr)
        return exits.CONFIG
    with _reader_may_leave():
        if problems or config is None:
            print(f"{file}: {len(problems)} problem(s)", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(summary(config))
            for warning in warnings(config, env):
                print(f"warning: {warning}")
            for note in host.notes:
                print(f"note: {note}")
    return exits.CONFIG if problems else 0


@contextlib.contextmanager
def _reader_may_leave() -> Iterator[None]:
    """A reader that stops reading (``| head``) is no error: the command ends quietly, with
    its own exit status (0 unless it knew better before printing)."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # as the signal module's documentation advises: what is still buffered goes to
        # /dev/null, so the flush at exit does not fail a second time
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _run_sites(directory: Path) -> int:
    """`run --config DIR`: every site of the directory in this process (`monitor.sites`);
    every problem of every file first, each named by its file."""
    from monitor.config import ConfigError, load_config
    from monitor.sites import run_sites, site_files

    files = site_files(directory)
    problems = [] if files else [f"{directory}: no *.toml site config in it"]
    loaded = []  # (file, config) of the files that load
    for path in files:
        try:
            loaded.append((path, load_config(path)))
        except ConfigError as exc:
            problems += [f"{path.name}: {problem}" for problem in exc.problems]
    for what, key in (("site.id", lambda c: c.site.id),
                      ("mqtt.client_id", lambda c: c.mqtt.client_id),
                      ("http.listen", lambda c: (c.http.host, c.http.port))):
        seen: dict[object, str] = {}
        for path, config in loaded:
            value = key(config)
            if value in seen:
                problems.append(f"{path.name}: {what}: the same as in {seen[value]}; each "
                                "site needs its own")
            seen.setdefault(value, path.name)
    if problems:
        for problem in problems:
            print(f"config: {problem}", file=sys.stderr)
        return exits.CONFIG
    return _run_until_signal(run_sites([config for _, config in loaded]))


def _run_until_signal(coro: Coroutine[Any, Any, None]) -> int:
    """Run ``coro``; SIGTERM or SIGINT cancels it cleanly and the process exits 0; an
    operator's mistake ends it with one log line and its own status, never a traceback."""
    import asyncio
    import signal

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await coro

    try:
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            asyncio.run(runner())
    except Exception as exc:
        # a task of the service's TaskGroup raises inside an ExceptionGroup
        mistakes, bugs = (exc.split(OperatorError) if isinstance(exc, ExceptionGroup)
                          else (exc, None) if isinstance(exc, OperatorError) else (None, exc))
        if mistakes is None:
            raise
        mistake = _first(mistakes)
        import structlog

        structlog.get_logger("monitor.cli").critical(
            "cannot_run", problem=str(mistake), exit_status=mistake.status, **mistake.context)
        if bugs is not None:
            raise bugs from None
        return mistake.status
    return exits.STOPPED


def _first(exc: BaseException) -> OperatorError:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, OperatorError)
    return exc


if __name__ == "__main__":
    raise SystemExit(main())
