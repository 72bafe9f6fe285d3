"""/metrics' per-booth gauges, made from kept text (`BoothGauges`), are byte for byte what
prometheus_client writes, as the site's state changes between scrapes."""

from __future__ import annotations

import math

from prometheus_client import generate_latest

from monitor.core.events import Button, Event, MarkSession, Motion, MotionState, Occupancy, Press
from monitor.metrics import BoothGauges, Metrics, Text, _Families, core_gauges, gauge
from tests.harness.core import T0, CoreDriver, make_config


class Written(BoothGauges):
    """Every family written by prometheus_client afresh, as before the kept text (the
    counters' ``_created`` samples differ between two registries: the live gauges are
    compared)."""

    def family(self, name: str, doc: str, booths: list[str], values: list[float]) -> Text:
        return Text(generate_latest(_Families([
            gauge(name, doc, ["booth"], {(b,): v for b, v in zip(booths, values, strict=True)})])))


def test_a_family_is_prometheus_clients_text_for_any_booth_id_and_value() -> None:
    kept, written = BoothGauges(), Written()
    booths = ["b1", 'quote"d', "back\\slash", "new\nline", "caf\u00e9", "b 2"]
    for values in ([0.0, 1.0, 2.0, 3.0, 0.5, 1e21], [1.0, 0.0, math.inf, -1.0, 3.0, 2.0]):
        ours = kept.family("boothwatch_booth_x", 'Help with "quotes" and \\', booths, values)
        theirs = written.family("boothwatch_booth_x", 'Help with "quotes" and \\', booths,
                                values)
        assert ours.text == theirs.text
    # a booth learnt later (and the order is the caller's)
    more = ["b9", *reversed(booths)]
    assert (kept.family("boothwatch_booth_x", "h", more, [0.0] * len(more)).text
            == written.family("boothwatch_booth_x", "h", more, [0.0] * len(more)).text)


def test_the_live_gauges_render_as_before_while_booths_change() -> None:
    driver = CoreDriver(make_config(booths=12), start=True)
    kept, written = Metrics(), Metrics()
    kept.watch(lambda: core_gauges(driver.core, lambda: T0 + 5, kept.per_booth))
    written.watch(lambda: core_gauges(driver.core, lambda: T0 + 5, Written()))
    steps: list[Event] = [
        Occupancy("b1", True), Motion("b1", MotionState.STILL), Occupancy("b2", True),
        MarkSession("b2", "high", by="ana"), Button("b3", Press.CALL),
        Occupancy("b1", False), Button("b3", Press.CLEAR),
    ]
    assert kept._render_live() == written._render_live()
    for event in steps:
        driver.send(event)
        body = kept._render_live()
        assert body == written._render_live()
    assert b'boothwatch_booth_high_risk{booth="b2"} 1.0\n' in body
    assert b'boothwatch_booth_occupied{booth="b1"} 0.0\n' in body
