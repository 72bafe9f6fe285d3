"""The site configuration (interface section 3): read, checked against its schema, built.

`load_config` reads a TOML file and `parse_config` a parsed one; each returns the
core's `Config` (monitor/core/settings.py) or raises `ConfigError` listing every
problem, each named by its key path (``booths[2].long_session: ...``).

- values.py: the kinds of value a key takes, each problem worded as it reads;
- schema.py: the file's tables as pydantic models (channels.py: the [channels] ones);
- problems.py: pydantic's errors worded and ordered as the file reads;
- loader.py: reading, the checks across tables, building `Config`.
"""

from monitor.config.loader import load_config, parse_config
from monitor.config.problems import ConfigError

__all__ = ["ConfigError", "load_config", "parse_config"]
