"""Many sites in one process: `boothwatch run --config DIR`, one site per TOML file.

Each site runs as its own `Runtime` (its store, its broker session, its HTTP address),
side by side on one event loop. On PostgreSQL several processes given the same sites
share them (`monitor.lease.Share`): each owns about as many as the others, and the
sites of a process that dies are taken over by the rest within the lease's ttl. A site
this process loses (its lease taken after a freeze) or hands over (it owns more than its
share) is not the end of the process: that site alone goes back to standing by, and the
others carry on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from monitor.core.settings import Config
from monitor.lease import Handover, LeaseLost, Share
from monitor.runtime import Runtime

log = structlog.get_logger(__name__)


def site_files(directory: Path) -> list[Path]:
    """The site configs of a directory: every ``*.toml`` in it, by name."""
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


async def run_sites(configs: list[Config]) -> None:
    """Run every site until cancelled; a site whose runtime fails takes the process down
    (systemd restarts it), as one site's would."""
    share = Share(len(configs))
    async with asyncio.TaskGroup() as tg:
        for config in configs:
            tg.create_task(_site(config, share), name=f"site {config.site.id}")


async def _site(config: Config, share: Share) -> None:
    # every log line of this site's runtime (its tasks and callbacks inherit this task's
    # context) names the site: several sites share one process's log
    structlog.contextvars.bind_contextvars(site=config.site.id)
    while True:
        try:
            await Runtime(config, share=share).run()
            return
        except* (LeaseLost, Handover) as group:
            # stand by again for this site; the process and its other sites go on
            log.warning("site_standing_by_again", site=config.site.id,
                        reason=str(group.exceptions[0]))
        await asyncio.sleep(0)
