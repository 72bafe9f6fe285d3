"""The site's language: what people read, from gettext message catalogs (managed with
Babel), with numbers, durations and dates in that language's words (Babel's CLDR data).

Every person-facing text (pages and notices, the ack page, test pages, the board) is
an English message id looked up in the catalog of ``[site] language``; logs, metrics,
the technician's config problems and the command line stay English. The message ids
are the English text, so English needs no catalog.

Catalogs are in gettext's layout, ``<dir>/<language>/LC_MESSAGES/boothwatch.po``:
the package ships its own in ``monitor/locale/`` with the template
``boothwatch.pot`` (``make messages`` extracts, updates and checks them), and
``[site] catalogs`` names a directory in the same layout searched first, so a site
adds a language, or rewords some messages, without touching code. A message missing
from the site's catalog comes from the package's, then English.

A ``.po`` is compiled when it is loaded (Babel, in memory; no ``.mo`` files, no build
step): one file a translator edits, which ``check-config`` checks as the service will
read it. A catalog is refused, naming file and line, when Babel's checkers find a
placeholder the English has not (``%(boot)s``) or of another kind, or when a
translation drops one: a page without its ``%(booth)s`` sends a nurse nowhere.
Untranslated and fuzzy entries are said in English.
"""

from __future__ import annotations

import ast
import datetime
import functools
import gettext
import io
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from babel import Locale, UnknownLocaleError

from monitor.core.words import Words, render

if TYPE_CHECKING:
    from babel.messages.catalog import Catalog

DOMAIN = "boothwatch"
SOURCE = "en"  # the message ids' language
PACKAGE_CATALOGS = Path(__file__).with_name("locale")
TEMPLATE = PACKAGE_CATALOGS / f"{DOMAIN}.pot"
BOARD = "board"  # the message context of the station board's texts (monitor/board/texts.py)


class CatalogError(Exception):
    """A language that cannot be used: unknown, or a catalog that is unreadable or wrong."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def catalog_file(directory: Path, language: str) -> Path:
    return directory / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def languages(site_catalogs: str | None = None) -> list[str]:
    """Every language there is a catalog for (English always), sorted.

    OSError if `site_catalogs` cannot be listed."""
    found = {SOURCE}
    for directory in _directories(site_catalogs):
        found |= {d.name for d in directory.iterdir() if catalog_file(directory, d.name).is_file()}
    return sorted(found)


def load(language: str, site_catalogs: str | None = None) -> Language:
    """The language, its catalogs compiled and checked; CatalogError says why not.

    Only the language's own files are read: the service's user needs no right to list
    the site's directory, only to read the catalog in it."""
    paths = [path for directory in _directories(site_catalogs)
             if (path := catalog_file(directory, language)).is_file()]
    if language != SOURCE and not paths:
        try:
            known = ", ".join(languages(site_catalogs))
        except OSError as exc:
            known = f"? ({site_catalogs}: {exc.strerror or exc})"
        raise CatalogError([f"no catalog for {language!r} (there are: {known})"])
    try:
        locale = Locale.parse(language)
    except (UnknownLocaleError, ValueError) as exc:
        raise CatalogError([f"{language!r} is not a language Babel knows: {exc}"]) from exc
    translations: gettext.NullTranslations = gettext.NullTranslations()  # English
    problems: list[str] = []
    for path in reversed(paths):  # the site's comes first, so it is compiled last
        compiled = _compile(path, locale, problems)
        if compiled is not None:
            compiled.add_fallback(translations)
            translations = compiled
    if problems:
        raise CatalogError(problems)
    return Language(language, locale, translations)


def _directories(site_catalogs: str | None) -> list[Path]:
    return [PACKAGE_CATALOGS] if site_catalogs is None else [Path(site_catalogs), PACKAGE_CATALOGS]


def read_catalog(path: Path, locale: Locale | str | None = None) -> Catalog:
    """A .po or .pot file; PoFileError if it is not one, OSError if it cannot be read."""
    # Babel's catalog modules, dates and units are imported where used: English (no
    # catalog) needs none of them to start
    from babel.messages.pofile import read_po

    with path.open("rb") as handle:
        return read_po(handle, locale=locale, domain=DOMAIN, abort_invalid=True)


def _compile(path: Path, locale: Locale, problems: list[str]) -> gettext.GNUTranslations | None:
    """The catalog at `path` as gettext reads a .mo; its problems appended to `problems`."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import PoFileError

    try:
        catalog = read_catalog(path, locale)
    except PoFileError as exc:
        problems.append(f"{path}: not a valid .po file: {exc}")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return None
    found = list(catalog_problems(catalog))
    problems += [f"{path}:{line}: {text}" for line, text in found]
    if found:
        return None
    mo = io.BytesIO()
    write_mo(mo, catalog)  # fuzzy entries left out: said in English
    mo.seek(0)
    return gettext.GNUTranslations(mo)


def catalog_problems(catalog: Catalog) -> Iterator[tuple[int, str]]:
    """``(line, problem)`` for each translation Babel's checkers refuse, that drops a
    placeholder of its message id, or (the board's) that fills in other fields. Fuzzy
    entries are not used (they are said in English), so they are not refused either:
    `pybabel update` leaves guesses that the translator has yet to see."""
    for message, errors in catalog.check():
        for error in errors:
            if not message.fuzzy:
                yield message.lineno or 0, f"{error} (msgid {message.id!r})"
    for message in catalog:
        if not message.id or not message.string or message.fuzzy:
            continue
        ids = message.id if isinstance(message.id, tuple | list) else (message.id,)
        strings = (message.string if isinstance(message.string, tuple | list)
                   else (message.string,))
        for text in filter(None, strings):
            if "python-format" in message.flags:
                wanted = {name for msgid in ids for name in _placeholders(msgid)}
                if dropped := wanted - _placeholders(text):
                    names = ", ".join(f"%({name})s" for name in sorted(dropped))
                    yield (message.lineno or 0,
                           f"the translation drops {names} (msgid {message.id!r})")
                try:  # what the checkers let through must still format ("100%" does not)
                    text % _Zeros()
                except (ValueError, TypeError) as exc:
                    yield (message.lineno or 0,
                           f"the translation does not format: {exc} (msgid {message.id!r})")
            # the board's script fills in exactly the English's {fields}, by name
            if message.context == BOARD and _fields(text) != _fields(ids[0]):
                yield message.lineno or 0, (
                    f"the translation has the fields {_listed(_fields(text))}, the English "
                    f"{_listed(_fields(ids[0]))} (msgid {message.id!r})")


class _Zeros(dict[str, int]):
    """Any placeholder's value: 0 suits %s, %d and %f alike."""

    def __missing__(self, key: str) -> int:
        return 0


def _listed(fields: set[str]) -> str:
    return ", ".join(f"{{{name}}}" for name in sorted(fields)) or "none"


def _placeholders(text: str) -> set[str]:
    from babel.messages.catalog import PYTHON_FORMAT

    return {m.group(1) for m in PYTHON_FORMAT.finditer(text) if m.group(1)}


def _fields(text: str) -> set[str]:
    """The ``{name}`` fields the board's script fills in (str.format's syntax)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError:  # an unmatched brace: not a field (Babel's checks see the rest)
        return set()


class Language:
    """One language's words: messages from its catalogs, durations and dates from CLDR."""

    def __init__(self, code: str, locale: Locale, translations: gettext.NullTranslations
                 ) -> None:
        self.code = code
        self.locale = locale
        self.tag = str(locale).replace("_", "-")  # BCP 47, as <html lang> takes it
        self.gettext = translations.gettext
        self.pgettext = translations.pgettext

    def say(self, words: Words) -> str:
        """A sentence of the core (monitor.core.words) in this language."""
        return render(words, self.gettext, self.duration)

    def board_texts(self, texts: Mapping[str, str]) -> dict[str, str]:
        """The station board's texts (`monitor.board.texts.TEXTS`) in this language."""
        return {key: self.pgettext(BOARD, text) for key, text in texts.items()}

    def duration(self, seconds: float) -> str:
        """Whole seconds in this language's short units: "2m 40s", "2 min e 40 s"."""
        return _duration(str(self.locale), round(seconds))

    def time(self, when: datetime.datetime, *, day: bool) -> str:
        """A wall-clock time ("20:15:03"), with the day before it when `day` ("23 Nov")."""
        from babel.dates import format_datetime

        return format_datetime(when, "d MMM HH:mm:ss" if day else "HH:mm:ss",
                               locale=self.locale)


@functools.lru_cache(maxsize=1024)  # a page says its booth's few thresholds again and again
def _duration(locale: str, seconds: int) -> str:
    from babel.lists import format_list
    from babel.units import format_unit

    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(n, unit) for n, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second"))
             if n] or [(0, "second")]
    return format_list([format_unit(n, f"duration-{unit}", length="narrow", locale=locale)
                        for n, unit in parts], style="unit-narrow", locale=locale)


ENGLISH = Language(SOURCE, Locale.parse(SOURCE), gettext.NullTranslations())


def extract_texts(fileobj: IO[bytes], keywords: object, comment_tags: object,
                  options: object) -> Iterator[tuple[int, str, tuple[str, str], list[str]]]:
    """pybabel's extractor for the board's texts (babel.cfg): each value of the module's
    ``TEXTS`` dict, in the board's message context, its key as the translators' comment.

    The board keeps its words as plain strings in one dict for its script, so they are
    marked here rather than by a call around each one."""
    for node in ast.walk(ast.parse(fileobj.read())):
        if not (isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "TEXTS" for t in
                        (node.targets if isinstance(node, ast.Assign) else [node.target]))):
            continue
        for key, value in zip(node.value.keys, node.value.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)
                    and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                raise ValueError(f"line {value.lineno}: TEXTS holds string literals only "
                                 "(a translator sees each one)")
            fields = _fields(value.value)
            keep = f"; keep {_listed(fields)} as they are" if fields else ""
            yield value.lineno, "pgettext", (BOARD, value.value), [f"board: {key.value}{keep}"]


def main() -> int:
    """``python -m monitor.i18n`` (make messages): each catalog the package ships, compiled
    and checked as the service loads it, and what it has left to translate."""
    ids = {(m.context, str(m.id)) for m in read_catalog(TEMPLATE) if m.id}
    status = 0
    for language in languages():
        if language == SOURCE:
            continue
        try:
            load(language)
        except CatalogError as exc:
            print("\n".join(exc.problems))
            status = 1
            continue
        catalog = read_catalog(catalog_file(PACKAGE_CATALOGS, language), language)
        missing = ids - {(m.context, str(m.id)) for m in catalog
                         if m.id and m.string and not m.fuzzy}
        print(f"{language}: {len(ids) - len(missing)} of {len(ids)} messages translated"
              + "".join(f"\n  to translate: {msgid!r}" + (f" ({context})" if context else "")
                        for context, msgid in sorted(missing, key=lambda m: m[1])))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
