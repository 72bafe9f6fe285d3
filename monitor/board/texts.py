"""Every text the station board shows, in one dict.

The page embeds it as JSON for its script (``monitor.board.http``), so the board's
words live here and nowhere else: a translation wraps this one dict.
"""

from __future__ import annotations

TEXTS: dict[str, str] = {
    "title": "Station board",
}
