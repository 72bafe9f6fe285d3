"""Every text a person reads on the station board, in one dict.

The page embeds `TEXTS` as JSON and its script takes every word from there, never from
literals of its own, so translating the board is translating this dict. A text may hold
``{name}`` fields that the script fills in (a booth, a responder, a time, a duration).

No text puts a number into a sentence: a count follows its label ("Open: HIGH 2",
"attempt 3", "Level 2"), so every language says it the same for one and for many, and
the board needs no plural forms. A text that must count ("2 booths") takes a key for one
and a key for many, chosen by the script.
"""

from __future__ import annotations

#: how long a booth taken out of use from the board stays out, at most (it comes back by
#: itself then): the choices offered, as the maintenance API reads them
MAINTENANCE_SPANS = ("30m", "1h", "2h", "4h")

TEXTS: dict[str, str] = {
    "title": "Station board",
    "clock_label": "Time now",
    # header
    "on_duty": "On duty",
    "nobody_on_duty": "NOBODY ON DUTY",
    "open_incidents": "Open",
    "none_open": "No open incidents",
    "link_live": "LIVE",
    "link_lost": "NOT LIVE",
    "responder_label": "I am",
    "responder_choose": "choose your name",
    "responder_off_duty": "{name} (off duty)",
    "theme_night": "Night",
    "theme_day": "Day",
    "theme_toggle": "Switch between the day and the night colours",
    "sound_on": "Sound on",
    "sound_off": "SOUND OFF",
    "sound_alarm": "ALARM SOUNDING",
    # the blocking screens
    "sound_gate_title": "Tap to enable sound",
    "sound_gate_text": "The board must be able to sound an alarm. Browsers allow sound only "
                       "after a touch: tap anywhere.",
    "lost_title": "NOT WATCHING: board disconnected since {time}",
    "lost_text": "This screen does not show the booths now. Check the booths in person. "
                 "Reconnecting by itself (attempt {attempt}).",
    "lost_login": "This station is no longer logged in (its login expired, or the station "
                  "password was changed). Check the booths in person, and log in again.",
    "relogin": "Log in again",
    "connecting": "Connecting to boothwatch...",
    # booth states
    "state_vacant": "Vacant",
    "state_occupied": "Occupied",
    "state_maintenance": "Maintenance",
    "state_unmonitored": "NOT MONITORED",
    "unmonitored_detail": "A sensor is offline: stillness is not detected here",
    "maintenance_detail": "{reason} (by {by}, until {until})",
    "session": "In use for {duration}",
    "motion_moving": "Moving",
    "motion_still": "Still for {duration}",
    "motion_absent": "No one seen for {duration}",
    "motion_unknown": "No motion reading yet",
    "countdown": "Alarm in {duration}",
    "countdown_label": "Stillness alarm countdown",
    # the session's risk (never who is in the booth), opening hours, a device self-test
    "risk_high": "HIGH RISK",
    "risk_high_route": "HIGH RISK: {route}",
    "route_inject": "injecting",
    "route_smoke": "smoking",
    "route_snort": "snorting",
    "route_other": "other route",
    "closed": "CLOSED (outside opening hours)",
    "test_running": "DEVICE TEST until {until}",
    "test_running_by": "DEVICE TEST until {until}, by {name}",
    # device trouble: "{device}: {trouble}"
    "trouble": "{role} {trouble}",
    "trouble_offline": "offline",
    "trouble_low_battery": "battery low",
    "role_call_button": "Call button",
    "role_presence_button": "Staff button",
    "role_motion": "Motion sensor",
    "role_occupancy": "Occupancy sensor",
    "role_door": "Door sensor",
    # incidents
    "priority_high": "HIGH",
    "priority_medium": "MEDIUM",
    "priority_low": "LOW",
    "trigger_call": "call button",
    "trigger_unresponsive": "no movement for {duration}",
    "trigger_long_session": "session over {duration}",
    "trigger_device_offline": "device offline",
    "trigger_low_battery": "battery low",
    "raised": "Raised {time} ({ago} ago)",
    "level": "Level {level}",
    "reopened": "OPEN AGAIN: nobody arrived in time",
    "incident_open": "Nobody is going yet",
    "incident_acknowledged": "{name} is going (since {time})",
    "incident_attended": "{name} is at the booth (since {time})",
    # protocol steps, as a tile lists them, latest first: naloxone with its doses, the
    # time, who ("step_doses" is a multiplication sign before the doses)
    "step_line": "{step} {time} {name}",
    "step_doses": "{step} \u00d7{count}",
    "steps_earlier": "Earlier steps: {count}",
    "step_knocked": "Knocked",
    "step_answered": "Answered",
    "step_entered": "Entered",
    "step_naloxone": "Naloxone",
    "step_oxygen": "Oxygen",
    "step_ems_called": "EMS called",
    "step_ems_arrived": "EMS arrived",
    "step_note": "Note",
    # actions
    "action_ack": "I'm going",
    "action_presence": "At the booth",
    "action_resolve": "Resolve",
    "action_maintenance_start": "Maintenance on",
    "action_maintenance_end": "Maintenance off",
    "action_steps": "Steps",
    "action_risk_high": "High risk",
    "action_risk_standard": "Standard risk",
    "action_test_start": "Test devices",
    "action_test_end": "End test",
    "need_responder": "Choose your name at the top first",
    "action_failed": "Not done: {error}",
    "action_offline": "Not done: the board is not connected",
    "cancel": "Cancel",
    # the resolve form
    "resolve_title": "Resolve {booth}",
    "resolve_outcome": "What happened?",
    "resolve_note": "Note (optional)",
    "resolve_submit": "Resolve",
    "outcome_ok": "Person OK",
    "outcome_overdose_naloxone": "Overdose: naloxone given",
    "outcome_overdose_oxygen": "Overdose: oxygen given",
    "outcome_emergency_services": "Emergency services called",
    "outcome_false_alarm": "False alarm",
    "outcome_no_one_there": "No one there",
    "outcome_other": "Other",
    # the maintenance form
    "maintenance_title": "Take {booth} out of use",
    "maintenance_reason": "Why?",
    "maintenance_reason_default": "Cleaning",
    "maintenance_for": "For how long?",
    "maintenance_submit": "Start maintenance",
    "maintenance_end_title": "Put {booth} back in use?",
    "maintenance_end_submit": "Maintenance off",
    # the protocol step form
    "steps_title": "What was done at {booth}?",
    "steps_step": "Step",
    "steps_doses": "Naloxone doses",
    "steps_note": "Note (needed for a note)",
    "steps_submit": "Record",
    # the risk forms: a risk and a route only, never who is in the booth
    "risk_title": "Watch {booth} as high risk?",
    "risk_text": "For this session only: the alarm comes after {duration} still.",
    "risk_route": "Route (optional)",
    "route_none": "Not said",
    "risk_submit": "High risk",
    "risk_standard_title": "Watch {booth} as standard risk again?",
    "risk_standard_submit": "Standard risk",
    # the device self-test form
    "test_title": "Test the devices of {booth}?",
    "test_text": "Until the test ends, this booth's alarms page only you. Go in, press the "
                 "call button, then stay still.",
    "test_submit": "Start test",
    "test_end_title": "End the device test of {booth}?",
    "test_end_submit": "End test",
    "test_result": "{booth}: triggers fired: {fired}",
    "test_result_none": "{booth}: no trigger fired",
}
