"""The station board: one screen at the staff station with every booth, live.

* `feed.py`: every booth, incident and duty change, to each open board (no aiohttp);
* `http.py`: ``GET /board`` (the page), ``GET /board/stream`` (Server-Sent Events) and
  ``/board/static/`` (the page's CSS and JS, shipped in this package);
* `texts.py`: every text the board shows, in one dict the page embeds for its script;
* `board.html`, `static/`: the page itself.
"""
