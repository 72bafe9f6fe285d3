"""The unit's EnvironmentFile read as systemd reads it (monitor/envfile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import envfile


def assignments(text: str) -> list[tuple[str, str]]:
    return [(key, value) for _, key, value in envfile.parse(text)]


@pytest.mark.parametrize(("text", "expected"), [
    # the cases of systemd's own tests (src/test/test-env-file.c)
    ("a=a\nb=b\\\nc\nd=d\\\ne\\\nf\ng=g\\ \nh=h\ni=i\\",
     [("a", "a"), ("b", "bc"), ("d", "def"), ("g", "g "), ("h", "h"), ("i", "i")]),
    ("a=a\\\n", [("a", "a")]),
    ("# Generated\n\nHWMON_MODULES=\"coretemp f71882fg\"\n\n# For compatibility reasons\n\n"
     "MODULE_0=coretemp\nMODULE_1=f71882fg",
     [("HWMON_MODULES", "coretemp f71882fg"), ("MODULE_0", "coretemp"),
      ("MODULE_1", "f71882fg")]),
    ("a=\nb=", [("a", ""), ("b", "")]),
    # systemd 254 on: a comment ends at its line even after a backslash
    ("#SPAMD_ARGS=\"-d \\\n#--nouser-config \\\nnormal=line", [("normal", "line")]),
])
def test_systemd_own_cases(text: str, expected: list[tuple[str, str]]) -> None:
    """The file reads as systemd's tests say it does."""
    assert assignments(text) == expected


def test_where_dotenv_would_read_otherwise() -> None:
    """The lines python-dotenv reads differently from systemd read as systemd reads them."""
    text = ("B=abc #kept\n;D=comment\nE=a\\$b\nF=\"x\\ny\\\"z\"\nG='single # q \\'\n"
            " H = spaced \nK=\"quoted\" tail\n")
    assert assignments(text) == [("B", "abc #kept"), ("E", "a$b"), ("F", 'x\\ny"z'),
                                 ("G", "single # q \\"), ("H", "spaced"), ("K", "quotedtail")]


def test_read_names_the_lines_systemd_ignores(tmp_path: Path) -> None:
    """`export KEY=...` and other names that are not variable names are problems with their
    line; the last of two assignments wins."""
    env = tmp_path / "env"
    env.write_text("export BOOTHWATCH_MQTT_PASSWORD=pw\nBOOTHWATCH_SECRET=1\n"
                   "2BAD=x\nBOOTHWATCH_SECRET=2\n")
    variables, problems = envfile.read(env)
    assert variables == {"BOOTHWATCH_SECRET": "2"}
    assert problems == [
        f'{env} line 1: "export BOOTHWATCH_MQTT_PASSWORD": systemd ignores the line (it reads '
        'no "export"): write it as BOOTHWATCH_MQTT_PASSWORD=...',
        f"{env} line 3: '2BAD' is not a variable name: systemd ignores the line",
    ]


def test_read_names_an_unreadable_file(tmp_path: Path) -> None:
    """A missing file, or one that is not UTF-8, is one problem naming it."""
    assert envfile.read(tmp_path / "none") == (
        {}, [f"{tmp_path / 'none'}: cannot read: No such file or directory"])
    (tmp_path / "latin1").write_bytes(b"A=caf\xe9\n")
    _, problems = envfile.read(tmp_path / "latin1")
    assert problems[0].startswith(f"{tmp_path / 'latin1'}: not UTF-8 text")
