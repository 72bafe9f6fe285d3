"""Languages: the message catalogs (gettext, managed with Babel), their checks, a site's
own catalogs, and a Portuguese site through the real service, Mosquitto and HTTP."""

from __future__ import annotations

import fnmatch
import html
import io
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import write_po

from monitor import i18n
from monitor.config import ConfigError, parse_config
from monitor.core.incident import Trigger
from monitor.core.settings import BoothConfig
from monitor.core.words import Duration, english, page_message, say
from monitor.station import COOKIE
from tests.harness.broker import Mosquitto, Publish
from tests.harness.process import ROOT
from tests.harness.service import HandClock, event, events_topic, eventually, start_service
from tests.harness.site import Site
from tests.test_config import _data

PT_PT = i18n.catalog_file(i18n.PACKAGE_CATALOGS, "pt_PT")
PASSWORD = "station-password-for-the-test"


def _ids(catalog: Catalog) -> set[tuple[str | None, str]]:
    return {(m.context, str(m.id)) for m in catalog if m.id}


def write_catalog(directory: Path, language: str, strings: dict[str, str],
                  context: str | None = None) -> Path:
    """A site's catalog in gettext's layout, as a translator's `pybabel init` makes one."""
    catalog = Catalog(locale=language, domain=i18n.DOMAIN)
    for msgid, msgstr in strings.items():
        catalog.add(msgid, msgstr, context=context)
    path = i18n.catalog_file(directory, language)
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        write_po(handle, catalog)
    return path


# --- the shipped catalogs --------------------------------------------------------------


def test_the_template_holds_every_message_of_the_code(tmp_path: Path) -> None:
    """`make pot` run now finds exactly the committed template's messages: a text added
    or reworded without `make messages` fails here (and so reaches no translator)."""
    fresh = tmp_path / "fresh.pot"
    subprocess.run(["make", "--silent", "pot", f"POT={fresh}",
                    f"BIN={Path(sys.executable).parent}"], cwd=ROOT, check=True,
                   capture_output=True)
    assert _ids(i18n.read_catalog(fresh)) == _ids(i18n.read_catalog(i18n.TEMPLATE))


def test_every_message_has_a_european_portuguese_translation() -> None:
    """Each message of the template has a non-empty, non-fuzzy pt_PT translation."""
    pt = {(m.context, str(m.id)): m for m in i18n.read_catalog(PT_PT, "pt_PT") if m.id}
    missing = [key for key in _ids(i18n.read_catalog(i18n.TEMPLATE))
               if key not in pt or not pt[key].string or pt[key].fuzzy]
    assert missing == []
    assert "pt_PT" in i18n.languages()


def test_the_shipped_catalogs_pass_the_checks() -> None:
    """Every shipped catalog compiles and passes Babel's checkers and ours, as `run` and
    `check-config` load it."""
    for language in i18n.languages():
        assert i18n.load(language).code == language


def test_make_messages_checks_what_the_service_loads() -> None:
    """`python -m monitor.i18n` (the last step of `make messages`) says how much of each
    catalog is translated."""
    done = subprocess.run([sys.executable, "-m", "monitor.i18n"], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    total = len(_ids(i18n.read_catalog(i18n.TEMPLATE)))
    assert done.stdout == f"pt_PT: {total} of {total} messages translated\n"


def test_the_catalogs_ship_inside_the_package() -> None:
    """pyproject's package-data takes the template and every catalog into the wheel: the
    site box builds nothing."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["monitor"]
    shipped = [p.relative_to(ROOT / "monitor").as_posix()
               for p in i18n.PACKAGE_CATALOGS.rglob("*") if p.is_file()]
    assert len(shipped) >= 2
    assert [p for p in shipped if not any(fnmatch.fnmatch(p, pat) for pat in patterns)] == []


# --- checks of a catalog -----------------------------------------------------------------


@pytest.mark.parametrize(("msgid", "msgstr", "problem"), [
    ("%(booth)s: all clear", "%(cabine)s: tudo resolvido", "unknown named placeholder 'cabine'"),
    ("%(booth)s: all clear", "tudo resolvido", "the translation drops %(booth)s"),
    ("Choose what happened; a note has at most %(max)d characters.", "no máximo %(max)s",
     "incompatible format for placeholder 'max'"),
    ("%(site)s: monitoring restored after %(duration)s down.", "%s: restabelecida",
     "the format strings are of different kinds"),
    ("%(booth)s: all clear", "%(booth)s: 100% resolvido", "the translation does not format"),
])
def test_a_placeholder_mismatch_is_refused_naming_file_and_line(
    tmp_path: Path, msgid: str, msgstr: str, problem: str
) -> None:
    """A translation whose placeholders are not its msgid's is refused with the file and
    line: at load (`run`), and by `check-config` at site.catalogs."""
    path = write_catalog(tmp_path, "pt_PT", {"call button pressed": "chamada", msgid: msgstr})
    with pytest.raises(i18n.CatalogError) as info:
        i18n.load("pt_PT", str(tmp_path))
    found = info.value.problems
    assert all(re.match(rf"{re.escape(str(path))}:\d+: ", p) for p in found), found
    assert any(problem in p for p in found), found
    data = _data()
    data["site"] = {**data["site"], "language": "pt_PT", "catalogs": str(tmp_path)}  # type: ignore[dict-item]
    with pytest.raises(ConfigError) as refused:
        parse_config(data, {})
    assert refused.value.problems == [f"site.catalogs: {p}" for p in found]


def test_a_board_text_must_keep_its_fields(tmp_path: Path) -> None:
    """The board's script fills {fields} by name: a translation with other fields is
    refused, one with the same fields in another order is fine."""
    write_catalog(tmp_path, "pt_PT", {"In use for {duration}": "Em uso há {duração}"},
                  context=i18n.BOARD)
    with pytest.raises(i18n.CatalogError) as info:
        i18n.load("pt_PT", str(tmp_path))
    assert "the translation has the fields {duração}, the English {duration}" in (
        info.value.problems[0])
    good = tmp_path / "good"
    write_catalog(good, "pt_PT", {"{name} at {time}": "às {time}, {name}"}, context=i18n.BOARD)
    assert i18n.load("pt_PT", str(good)).board_texts({"k": "{name} at {time}"}) == {
        "k": "às {time}, {name}"}


def test_a_broken_po_file_is_refused(tmp_path: Path) -> None:
    path = i18n.catalog_file(tmp_path, "pt_PT")
    path.parent.mkdir(parents=True)
    path.write_text('msgid "a"\nmsgstr "b"\nmsgid\n')
    with pytest.raises(i18n.CatalogError) as info:
        i18n.load("pt_PT", str(tmp_path))
    assert info.value.problems[0].startswith(f"{path}: not a valid .po file")


# --- a site's own catalogs ---------------------------------------------------------------


def test_a_site_catalog_overrides_some_messages_and_adds_a_language(tmp_path: Path) -> None:
    """A site's pt_PT catalog rewords one message, the rest comes from the package's; a
    site's German catalog adds a language, its missing messages said in English."""
    write_catalog(tmp_path, "pt_PT", {"call button pressed": "carregaram no botão de chamada"})
    write_catalog(tmp_path, "de", {"call button pressed": "Rufknopf gedrückt",
                                   "%(booth)s: %(what)s": "%(booth)s: %(what)s"})
    booth = BoothConfig(id="b1", name="Kabine 1", long_session=1200, stillness=180,
                        device_timeout=900)
    call = page_message(booth, [Trigger.CALL])
    still = page_message(booth, [Trigger.UNRESPONSIVE])
    assert i18n.languages(str(tmp_path)) == ["de", "en", "pt_PT"]
    pt = i18n.load("pt_PT", str(tmp_path))
    assert pt.say(call) == "Kabine 1: carregaram no botão de chamada"
    assert pt.say(still) == "Kabine 1: sem movimento há 3 min"  # the package's
    de = i18n.load("de", str(tmp_path))
    assert de.say(call) == "Kabine 1: Rufknopf gedrückt"
    assert de.say(still) == "Kabine 1: no movement for 3 Min."  # English, German units
    assert de.tag == "de"
    data = _data()
    data["site"] = {**data["site"], "language": "de", "catalogs": str(tmp_path)}  # type: ignore[dict-item]
    assert parse_config(data, {}).site.language == "de"


# --- words -------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "en", "pt"), [
    (7, "7s", "7 s"),
    (180, "3m", "3 min"),
    (160, "2m 40s", "2 min e 40 s"),
    (5400, "1h 30m", "1 h e 30 min"),
    (3725.4, "1h 2m 5s", "1 h, 2 min e 5 s"),
    (0.2, "0s", "0 s"),
])
def test_durations_read_naturally(seconds: float, en: str, pt: str) -> None:
    """A duration in whole seconds, in each language's short units (CLDR, by Babel)."""
    assert i18n.ENGLISH.duration(seconds) == en
    assert i18n.load("pt_PT").duration(seconds) == pt


def test_english_is_the_source_text() -> None:
    """English needs no catalog: the pages read as the core's source text, durations as
    people write them."""
    booth = BoothConfig(id="b1", name="Booth 1", long_session=1200, stillness=180,
                        device_timeout=900)
    words = page_message(booth, [Trigger.LONG_SESSION, Trigger.UNRESPONSIVE], urgent=False,
                         maintenance=True)
    expected = "Booth 1: session over 20m; no movement for 3m (booth in maintenance)"
    assert i18n.ENGLISH.say(words) == english(words) == expected
    pt = i18n.load("pt_PT")
    assert pt.say(words) == ("Booth 1: sessão com mais de 20 min; sem movimento há 3 min "
                             "(cabine em manutenção)")
    urgent = page_message(booth, [Trigger.CALL], urgent=True)
    assert pt.say(urgent) == "URGENTE: Booth 1: botão de chamada premido de novo"


def test_a_lone_percent_in_a_plain_message_is_a_character() -> None:
    """Only a sentence with values is %-formatted: "100%" in a plain text stays."""
    assert i18n.ENGLISH.say(say("battery at 100%")) == "battery at 100%"
    assert i18n.ENGLISH.say(say("%(n)s%% left", n=Duration(60))) == "1m% left"


def test_the_extractor_takes_the_board_texts_and_refuses_what_it_cannot(tmp_path: Path
                                                                        ) -> None:
    """The board's TEXTS values are extracted in the board's context with their key as
    the translators' comment; a value that is no string literal cannot be translated."""
    source = b'TEXTS: dict[str, str] = {\n    "title": "Station board",\n' \
             b'    "session": "In use for " "{duration}",\n}\n'
    found = list(i18n.extract_texts(io.BytesIO(source), (), (), {}))
    assert found == [
        (2, "pgettext", ("board", "Station board"), ["board: title"]),
        (3, "pgettext", ("board", "In use for {duration}"),
         ["board: session; keep {duration} as they are"])]
    with pytest.raises(ValueError, match="line 1: TEXTS holds string literals only"):
        list(i18n.extract_texts(io.BytesIO(b'TEXTS = {"a": NAME}\n'), (), (), {}))


# --- a Portuguese site, end to end ----------------------------------------------------------


def portuguese(site: Site) -> None:
    site.site["language"] = "pt_PT"
    site.booths[1]["stillness"] = "2m40s"


@pytest.mark.integration
async def test_a_portuguese_site_pages_and_answers_in_portuguese(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_publish: Publish
) -> None:
    """With [site] language = "pt_PT", the webhook's pages and notices, the ack page, its
    answer, and the board are in European Portuguese, durations in its words."""
    async with start_service(tmp_path, mosquitto, mqtt_publish, edit=portuguese,
                             env={"BOOTHWATCH_BOARD_PASSWORD": PASSWORD},
                             step2="1h", repeat="1h", ack_timeout="1h",
                             clock=HandClock()) as svc:
        svc.publish(events_topic("b1"), event("button", press="call"))
        (page,) = await svc.hook.wait(1)
        assert page["message"] == "Booth 1: botão de chamada premido"
        assert page["priority"] == "high" and page["triggers"] == ["call"]  # data stays data

        async with svc.http.get(page["ack_url"]) as resp:
            assert resp.status == 200
            text = html.unescape(await resp.text())
        assert '<html lang="pt-PT">' in text
        for words in ("ALTA · botão de chamada premido", "Estado: aberta",
                      "Vou a caminho (ana)", "<title>Booth 1: confirmar</title>"):
            assert words in text, (words, text)

        async with svc.http.post(page["ack_url"]) as resp:
            assert resp.status == 200
            text = html.unescape(await resp.text())
        for words in ("<h1>Confirmada</h1>", "Vai a caminho: Booth 1.", "Quando terminar:",
                      "Estou na cabine", "Naloxona administrada", "Bateu à porta",
                      "Sobredosagem: naloxona administrada", 'placeholder="Nota (opcional)"',
                      "Resolver com este desfecho"):
            assert words in text, (words, text)

        svc.publish(events_topic("b2"), event("occupancy", occupied=True))
        svc.publish(events_topic("b2"), event("motion", state="still"))
        await eventually(lambda: any(b["booth"] == "b2" and b["motion"] == "still"
                                     for b in svc.runtime.booths_json()))
        svc.advance(160)
        pages = await svc.hook.wait(2)
        assert pages[1]["message"] == "Booth 2: sem movimento há 2 min e 40 s"

        async with svc.http.get(f"{svc.base}/board") as resp:
            text = await resp.text()
        assert '<html lang="pt-PT">' in text and "Palavra-passe do posto" in text
        async with svc.http.post(f"{svc.base}/board/login", data={"password": "wrong"},
                                 allow_redirects=False) as resp:
            assert resp.status == 401 and "Palavra-passe errada." in await resp.text()
        async with svc.http.post(f"{svc.base}/board/login", data={"password": PASSWORD},
                                 allow_redirects=False) as resp:
            assert resp.status == 303
            cookie = resp.cookies[COOKIE].value
        async with svc.http.get(f"{svc.base}/board",
                                headers={"Cookie": f"{COOKIE}={cookie}"}) as resp:
            text = await resp.text()
        assert '<html lang="pt-PT">' in text and "<title>Sala Mouraria: Painel do posto" in text
