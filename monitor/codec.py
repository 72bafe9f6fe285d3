"""Booths and incidents to and from JSON: the one codec of each view. Pure.

Each view has two forms, and only this module knows them:

* **public** (`booth_json`, `incident_json`): the interface's JSON, the same on the
  MQTT state and incident topics and in the HTTP API (sections 5 and 7);
* **record** (`booth_record`/`booth_from_record`, `incident_record`/
  `incident_from_record`): what the store keeps, everything a restart needs.
  A record written by an older version reads with today's defaults.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from datetime import UTC, datetime
from typing import Any

from monitor.core.booth import BoothView, IncidentRef
from monitor.core.incident import IncidentView, TimelineEntry


def iso(at: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. 2026-11-23T20:15:03.120Z.

    datetime rounds to the microsecond and the milliseconds are cut from that, as
    ``isoformat(timespec="milliseconds")`` does; the text of the whole second is kept
    (`_SECONDS`): isoformat of an aware datetime took two thirds of the time, and the
    times a service writes (each retained booth state has up to three, every booth in
    GET /api/booths) fall in few seconds.
    """
    if at is None:
        return None
    moment = datetime.fromtimestamp(at, UTC)
    micro = moment.microsecond
    # the second `moment` is in: `at` is within half a microsecond of it plus `micro`
    second = round(at - micro / 1_000_000)
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        text = _SECONDS[second] = moment.replace(microsecond=0, tzinfo=None).isoformat()
    return f"{text}.{micro // 1000:03d}Z"


_SECONDS: dict[int, str] = {}  # epoch second -> "2026-11-23T20:15:03"
_SECONDS_KEPT = 4096


def booth_json(view: BoothView) -> dict[str, Any]:
    """The retained booth state topic, also each item of GET /api/booths."""
    inc = view.incident
    return {
        "booth": view.id,
        "name": view.name,
        "occupied": view.occupied,
        "session_started_at": iso(view.session_started_at),
        "motion": view.motion,
        "still_since": iso(view.still_since),
        "incident": None if inc is None else {
            "id": inc.id, "priority": inc.priority, "state": inc.state, "level": inc.level,
        },
        "devices_ok": view.devices_ok,
        "mode": view.mode,
        "maintenance": None if view.maintenance is None else {
            "since": iso(view.maintenance["since"]), "until": iso(view.maintenance["until"]),
            "reason": view.maintenance["reason"], "by": view.maintenance["by"],
        },
        "unmonitored": view.unmonitored,
        "door": view.door,
        # the thresholds in force: the session's risk's
        "stillness": view.stillness,
        "long_session": view.long_session,
        "unresponsive_at": iso(view.unresponsive_at),
        "troubles": list(view.troubles),
        "risk": view.risk,
        "route": view.route,
        "closed": view.closed,
        "test": None if view.test is None else {
            "until": iso(view.test["until"]), "tester": view.test["tester"]},
    }


def timeline_json(entry: TimelineEntry) -> dict[str, Any]:
    return {"at": iso(entry.at), "kind": entry.kind, **entry.detail}


def incident_json(view: IncidentView, booth_name: str | None = None) -> dict[str, Any]:
    """The incident of interface section 7 (API and the incidents/<id> topic); its protocol
    ``steps`` are the timeline's step entries, in order."""
    steps = [e for e in view.timeline if e.kind == "step"]
    return {
        "id": view.id,
        "booth": view.booth,
        "booth_name": booth_name,
        "priority": view.priority,
        "state": view.state,
        "triggers": list(view.triggers),
        "level": view.level,
        "max_level": view.max_level,
        "reopened": view.reopened,
        "raised_at": iso(view.raised_at),
        "acknowledged_at": iso(view.acknowledged_at),
        "acknowledged_by": view.acknowledged_by,
        "presence_at": iso(view.presence_at),
        "presence_by": view.presence_by,
        "resolved_at": iso(view.resolved_at),
        "resolved_by": view.resolved_by,
        "outcome": view.outcome,
        "outcome_note": view.outcome_note,
        "urgent": view.urgent,
        "entered_at": iso(view.first_steps.get("entered")),
        "naloxone_at": iso(view.first_steps.get("naloxone")),
        "naloxone_doses": sum(s.detail.get("count", 0) for s in steps),
        "steps": [timeline_json(s) for s in steps],
        "risk": view.risk,
        "after_hours": view.after_hours,
        "response": response_times(view),
        "timeline": [timeline_json(e) for e in view.timeline],
    }


def response_times(view: IncidentView) -> dict[str, float | None]:
    """Seconds from raised_at to the first ack, the first presence, the resolve, the first
    time someone entered the booth and the first naloxone."""
    def since(at: float | None) -> float | None:
        return None if at is None else round(at - view.raised_at, 3)

    return {
        "to_acknowledge": since(view.acknowledged_at),
        "to_presence": since(view.presence_at),
        "to_resolve": since(view.resolved_at),
        "to_enter": since(view.first_steps.get("entered")),
        "to_naloxone": since(view.first_steps.get("naloxone")),
    }


def booth_record(view: BoothView) -> dict[str, Any]:
    """The stored form of a booth view; `dataclasses.asdict` is too slow on the ingest path."""
    record = {name: getattr(view, name) for name in _BOOTH_FIELDS}
    inc = view.incident
    record["incident"] = None if inc is None else {
        "id": inc.id, "priority": inc.priority, "state": inc.state, "level": inc.level}
    return record


_BOOTH_FIELDS = tuple(f for f in BoothView.__dataclass_fields__ if f != "incident")
_BOOTH_NAMES = tuple(BoothView.__dataclass_fields__)
#: what each field a booth record lacks means (the record was written before it existed)
_BOOTH_DEFAULTS: dict[str, Any] = {
    **{f.name: f.default for f in fields(BoothView) if f.default is not MISSING},
    "door": None, "door_closed_at": None, "awaiting_presence": False, "maintenance": None,
    "mode": "normal", "unmonitored": False, "devices_ok": True, "test": None,
}


def booth_from_record(record: dict[str, Any]) -> BoothView:
    values = {**_BOOTH_DEFAULTS, **record}
    inc = values["incident"]
    values["incident"] = None if inc is None else IncidentRef(
        inc["id"], inc["priority"], inc["state"], inc["level"])
    values["troubles"] = tuple(values["troubles"])
    return BoothView(*_in_order(values, _BOOTH_NAMES))


def _in_order(values: dict[str, Any], names: tuple[str, ...]) -> list[Any]:
    """`values` as the positional arguments of a view whose fields are `names`.

    Not ``View(**values)``: the keys of a decoded record are not interned, so Python
    matched each of the ~30 keywords by comparing strings, and a booth's view took twice
    as long to make (10,000 of them at every start: bench/restart.py)."""
    if len(values) != len(names):
        raise TypeError(f"a stored record has the fields {sorted(values)}; "
                        f"expected {sorted(names)}")
    return [values[name] for name in names]


def incident_record(view: IncidentView) -> dict[str, Any]:
    """The stored form of an incident view (its timeline entries as objects): what
    `dataclasses.asdict` makes of it, without its deep copies, since the store encodes it
    at once (asdict was a third of the commits' time in a burst of 1,000 calls)."""
    record = {name: getattr(view, name) for name in _INCIDENT_FIELDS}
    record["timeline"] = tuple({"at": e.at, "kind": e.kind, "detail": e.detail}
                               for e in view.timeline)
    return record


_INCIDENT_FIELDS = tuple(IncidentView.__dataclass_fields__)


def incident_from_record(record: dict[str, Any]) -> IncidentView:
    values = {**_INCIDENT_DEFAULTS, **record}
    values.setdefault("first_steps", {})  # records written before protocol steps lack these
    last_ack = values["last_ack"]
    values["last_ack"] = None if last_ack is None else (last_ack[0], last_ack[1])
    values["triggers"] = tuple(values["triggers"])
    values["cleared"] = tuple(values["cleared"])
    values["timeline"] = tuple(
        TimelineEntry(e["at"], e["kind"], e["detail"]) for e in values["timeline"]
    )
    return IncidentView(*_in_order(values, _INCIDENT_FIELDS))


#: what each field an incident record lacks means (written before 0.4, or before last_ack)
_INCIDENT_DEFAULTS: dict[str, Any] = {
    **{f.name: f.default for f in fields(IncidentView) if f.default is not MISSING},
    "outcome_note": None, "urgent": False, "last_ack": None,
}
