"""Start-up, phase by phase: how long `boothwatch run` took from exec to serving.

`mark(phase)` ends a phase; `phases()` gives each phase's milliseconds in order, the
first counted from the exec of the process (Linux's /proc/self/stat, to a clock tick,
10 ms), for the ``startup`` log line (bench/restart.py prints it).
"""

from __future__ import annotations

import os
import time

_marks: list[tuple[str, float]] = []
_reported = False
_on = True


def _exec_time() -> float | None:
    """time.time() when this process was exec'd, or None where /proc cannot tell."""
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def off() -> None:
    """No phases from now on (`run` of several sites: their runtimes' phases would mix)."""
    global _on
    _on = False


def mark(phase: str) -> None:
    """`phase` ends now."""
    if _on:
        _marks.append((phase, time.time()))


def phases() -> dict[str, int]:
    """Each phase marked since the last call, in milliseconds; the process's first phase
    from the exec, if known (a later runtime in the same process, as in tests, has no
    exec of its own: its first phase is left out). Empty after `off`."""
    global _reported
    out: dict[str, int] = {}
    before = None if _reported or not _marks else _exec_time()
    for phase, at in _marks:
        if before is not None:
            out[phase] = round((at - before) * 1000)
        before = at
    _marks.clear()
    _reported = True
    return out
