"""Booths and incidents as the JSON of the public interface (sections 5 and 7). Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.core.booth import BoothView
from monitor.core.incident import IncidentView, TimelineEntry


def iso(at: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. 2026-11-23T20:15:03.120Z."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


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
    }


def timeline_json(entry: TimelineEntry) -> dict[str, Any]:
    return {"at": iso(entry.at), "kind": entry.kind, **entry.detail}


def incident_json(view: IncidentView, booth_name: str | None = None) -> dict[str, Any]:
    """The incident of interface section 7 (API and the incidents/<id> topic)."""
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
        "response": response_times(view),
        "timeline": [timeline_json(e) for e in view.timeline],
    }


def response_times(view: IncidentView) -> dict[str, float | None]:
    """Seconds from raised_at to the first ack, the first presence, and the resolve."""
    def since(at: float | None) -> float | None:
        return None if at is None else round(at - view.raised_at, 3)

    return {
        "to_acknowledge": since(view.acknowledged_at),
        "to_presence": since(view.presence_at),
        "to_resolve": since(view.resolved_at),
    }


def incident_from_stored(snap: dict[str, Any]) -> IncidentView:
    """An IncidentView from its stored JSON (as `dataclasses.asdict` wrote it)."""
    fields = dict(snap)
    fields.setdefault("outcome_note", None)  # views stored before 0.4 lack these
    fields.setdefault("urgent", False)
    fields["triggers"] = tuple(fields["triggers"])
    fields["cleared"] = tuple(fields["cleared"])
    fields["timeline"] = tuple(
        TimelineEntry(e["at"], e["kind"], e["detail"]) for e in fields["timeline"]
    )
    return IncidentView(**fields)
