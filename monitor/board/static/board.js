/* The station board: every booth of the site, live, with its alarm sound and its answers.
 *
 * Theory of operation
 * -------------------
 * The service pushes Server-Sent Events on /board/stream: a `snapshot` with the whole
 * state first (and after every reconnect), then one `booth`, `incident` or `responders`
 * message on every change, and a `ping` every second when nothing else was sent. The
 * board keeps no model of its own: it holds the last JSON the service sent and draws
 * the tiles from it, so the service's state wins on every message. Between messages
 * only the clocks move (session time, stillness, the countdown), computed from the
 * service's times and the service's clock (`now` of each message) so a wrong clock on
 * this screen does not shift them.
 *
 * Supervision: an error on the stream, or 3 s without any message, turns the board into
 * the full-screen NOT WATCHING warning with its own sound; it reconnects with backoff
 * and takes the fresh snapshot whole.
 *
 * Sound: browsers allow it only after a touch, so a blocking screen asks for one until
 * the AudioContext runs. An open high incident (nobody has said "I'm going") sounds the
 * alarm until someone acknowledges it anywhere; a new medium incident chimes once.
 *
 * Every word comes from the page's texts (monitor/board/texts.py), never from here.
 */
"use strict";

(function () {
  const CONFIG = JSON.parse(document.getElementById("board-config").textContent);
  const T = JSON.parse(document.getElementById("board-texts").textContent);
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const STREAM = "/board/stream";
  const SILENCE_MS = 3000; // no message for this long: the link is lost
  const BACKOFF_MS = [500, 1000, 2000, 3000, 5000]; // then 5 s, with jitter
  const PROBE = "/api/responders"; // small, and only for a station still logged in
  const PROBE_TIMEOUT_MS = 5000;
  const STORE_RESPONDER = "boothwatch.board.responder";
  const STORE_THEME = "boothwatch.board.theme";
  const PRIORITIES = ["high", "medium", "low"];

  // --- what the service last said --------------------------------------------------

  const state = {
    site: null,
    booths: [], // in config order, as the snapshot lists them
    incidents: new Map(), // open incidents by id
    responders: [],
    offset: 0, // the service's clock minus ours, in seconds
    live: false,
  };
  const chimed = new Set(); // medium incidents this board has chimed for

  const now = () => Date.now() / 1000 + state.offset;
  const epoch = (iso) => (iso ? Date.parse(iso) / 1000 : null);

  // --- words -----------------------------------------------------------------------

  function t(key, fields) {
    const text = T[key];
    if (text === undefined) {
      throw new Error("no text " + key);
    }
    return fields ? text.replace(/\{(\w+)\}/g, (m, name) => String(fields[name])) : text;
  }

  const timeFormat = new Intl.DateTimeFormat(CONFIG.lang || "en", {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    timeZone: CONFIG.timezone || undefined,
  });
  const clockTime = (at) => timeFormat.format(new Date(at * 1000));
  // a step's time on a tile: minutes are enough ("Naloxone ×2 18:03 Ana")
  const shortFormat = new Intl.DateTimeFormat(CONFIG.lang || "en", {
    hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: CONFIG.timezone || undefined,
  });
  const shortTime = (at) => shortFormat.format(new Date(at * 1000));
  const STEPS_SHOWN = 3; // the latest steps a tile lists; the earlier ones are counted

  /** A span of time as people say it: 45s, 2m 40s, 20m, 1h 05m. */
  // durations as the pages word them, in the board's language: "2m 40s", "2 min e 40 s"
  const unitFormats = {};
  function unit(name, n) {
    unitFormats[name] = unitFormats[name] || new Intl.NumberFormat(
      CONFIG.lang || "en", { style: "unit", unit: name, unitDisplay: "narrow" });
    return unitFormats[name].format(n);
  }
  const unitList = new Intl.ListFormat(CONFIG.lang || "en", { type: "unit", style: "narrow" });
  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return unit("second", s);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = s % 60;
    if (h) return unitList.format(m ? [unit("hour", h), unit("minute", m)] : [unit("hour", h)]);
    return unitList.format(rest ? [unit("minute", m), unit("second", rest)] : [unit("minute", m)]);
  }

  /** A running clock: 4:05, 1:02:03. */
  function stopwatch(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const mm = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(mm).padStart(2, "0") + ":" + ss : mm + ":" + ss;
  }

  function responderName(id) {
    const r = state.responders.find((x) => x.id === id);
    return r ? r.name : id;
  }

  // --- icons: a shape goes with every colour ------------------------------------------

  const SVG = {
    high: '<path d="M12 2 1 21h22z" fill="currentColor"/><path d="M11 9h2v6h-2zm0 8h2v2h-2z" class="cut"/>',
    medium: '<path d="M12 1 23 12 12 23 1 12z" fill="currentColor"/><path d="M11 6h2v8h-2zm0 10h2v2h-2z" class="cut"/>',
    low: '<rect x="3" y="3" width="18" height="18" rx="2" fill="currentColor"/><path d="M11 6h2v8h-2zm0 10h2v2h-2z" class="cut"/>',
    vacant: '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="2.5"/>',
    occupied: '<circle cx="12" cy="12" r="10" fill="currentColor"/>',
    maintenance: '<path d="M21.7 6.3a5.5 5.5 0 0 1-7.2 7.2L6 22l-4-4 8.5-8.5a5.5 5.5 0 0 1 7.2-7.2l-3.4 3.4.6 3 3 .6z" fill="currentColor"/>',
    unmonitored: '<path d="M2 12s3.6-7 10-7 10 7 10 7-3.6 7-10 7S2 12 2 12z" fill="none" stroke="currentColor" stroke-width="2.2"/><circle cx="12" cy="12" r="3" fill="currentColor"/><path d="M3 3l18 18" stroke="currentColor" stroke-width="2.6"/>',
    moving: '<path d="M13 4a2 2 0 1 1 0 .1zM9 8l4-1 3 3 3 1-1 2-4-1-1 3 3 3v5h-2v-4l-3-2-2 6H6l3-9-2 1-1 3H4l1-5z" fill="currentColor"/>',
    still: '<rect x="5" y="4" width="5" height="16" fill="currentColor"/><rect x="14" y="4" width="5" height="16" fill="currentColor"/>',
    battery: '<rect x="2" y="7" width="18" height="10" rx="1.5" fill="none" stroke="currentColor" stroke-width="2"/><rect x="20" y="10" width="2.5" height="4" fill="currentColor"/><rect x="4" y="9" width="4" height="6" fill="currentColor"/>',
    offline: '<path d="M5 13a10 10 0 0 1 14 0M8.5 16.5a5 5 0 0 1 7 0" fill="none" stroke="currentColor" stroke-width="2.2"/><circle cx="12" cy="20" r="1.6" fill="currentColor"/><path d="M3 3l18 18" stroke="currentColor" stroke-width="2.6"/>',
    going: '<path d="M4 12h12M11 6l6 6-6 6" fill="none" stroke="currentColor" stroke-width="3"/>',
    here: '<path d="M4 12l5 5L20 6" fill="none" stroke="currentColor" stroke-width="3.2"/>',
    waiting: '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="2.5"/><path d="M12 7v5l3 3" fill="none" stroke="currentColor" stroke-width="2.5"/>',
    live: '<circle cx="12" cy="12" r="7" fill="currentColor"/>',
    lost: '<path d="M5 5l14 14M19 5 5 19" stroke="currentColor" stroke-width="3.5"/>',
    sound: '<path d="M3 9h4l5-4v14l-5-4H3z" fill="currentColor"/><path d="M15.5 8.5a5 5 0 0 1 0 7M18 6a8.5 8.5 0 0 1 0 12" fill="none" stroke="currentColor" stroke-width="2"/>',
    risk: '<path d="M12 2 3 5.5V12c0 5 3.8 9 9 10 5.2-1 9-5 9-10V5.5z" fill="currentColor"/><path d="M11 7h2v7h-2zm0 9h2v2h-2z" class="cut"/>',
    closed: '<path d="M20 15.5A8.5 8.5 0 1 1 8.5 4a7 7 0 0 0 11.5 11.5z" fill="currentColor"/>',
    test: '<rect x="4.5" y="3" width="15" height="19" rx="2" fill="none" stroke="currentColor" stroke-width="2.2"/><path d="M8 13l3 3 5-6" fill="none" stroke="currentColor" stroke-width="2.6"/>',
    muted: '<path d="M3 9h4l5-4v14l-5-4H3z" fill="currentColor"/><path d="M15 9l6 6M21 9l-6 6" stroke="currentColor" stroke-width="2.4"/>',
  };

  const icon = (name) =>
    '<svg class="icon" viewBox="0 0 24 24" aria-hidden="true">' + SVG[name] + "</svg>";

  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value).replace(/[&<>"']/g, (c) => ESC[c]);

  // --- the page's parts -------------------------------------------------------------

  const $ = (selector) => document.querySelector(selector);
  const tiles = $("#tiles");
  const linkEl = $("[data-link]");
  const picker = $("[data-responder-picker]");
  const soundEl = $("#sound");
  const gate = $("#gate");
  const lost = $("#lost");
  const connecting = $("#connecting");
  const relogin = $("#relogin");

  function fillStaticTexts() {
    document.title = t("title") + (state.site ? " · " + state.site.name : "");
    $("#picker-label").textContent = t("responder_label");
    gate.querySelector("h1").textContent = t("sound_gate_title");
    gate.querySelector("p").textContent = t("sound_gate_text");
    gate.querySelector(".gate-icon").innerHTML = icon("sound");
    connecting.querySelector("h1").textContent = t("connecting");
    relogin.textContent = t("relogin");
    $("#theme").title = t("theme_toggle");
    $("#clock").title = t("clock_label");
  }

  // --- the tiles ----------------------------------------------------------------------

  function boothState(b) {
    if (b.mode === "maintenance") return "maintenance";
    if (b.unmonitored) return "unmonitored";
    return b.occupied ? "occupied" : "vacant";
  }

  function triggerWords(trigger, booth) {
    switch (trigger) {
      case "unresponsive":
        return t("trigger_unresponsive", { duration: duration(booth.stillness) });
      case "long_session":
        return t("trigger_long_session", { duration: duration(booth.long_session) });
      default:
        return T["trigger_" + trigger] !== undefined ? t("trigger_" + trigger) : trigger;
    }
  }

  let baseUnit = 16;

  function layout() {
    const n = Math.max(1, state.booths.length);
    const width = tiles.clientWidth;
    const height = tiles.clientHeight;
    // the columns that give the largest tiles near 16:10; below a floor
    // (a tablet, many booths) the tiles keep a readable size and the page scrolls
    let best = { cols: 1, rows: n, size: 0, w: width, h: height };
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const w = width / cols;
      const h = height / rows;
      const size = Math.min(w / 1.6, h);
      if (size > best.size) best = { cols, rows, size, w, h };
    }
    const scroll = best.h < 220 || best.w < 280;
    if (scroll) best.cols = Math.max(1, Math.floor(width / 320));
    tiles.classList.toggle("scroll", scroll);
    tiles.style.setProperty("--cols", best.cols);
    tiles.style.setProperty("--rows", best.rows);
    baseUnit = scroll ? 17 : Math.max(13, Math.min(44, best.w / 18, best.h / 16));
    fit();
  }

  /** Each tile's text as large as the layout allows, smaller only where its content
   * (an alarm with its buttons, a language's longer words) would not fit; the booth's
   * name keeps the layout's size. */
  function fit() {
    tiles.style.setProperty("--name-u", baseUnit.toFixed(1) + "px");
    for (const el of tiles.children) fitTile(el);
  }

  // tiles whose content is cut off even at the smallest text: not fitted again on every tick
  const unfit = new WeakSet();

  function fitTile(el) {
    let unit = baseUnit;
    el.style.setProperty("--u", unit.toFixed(1) + "px");
    unfit.delete(el);
    if (tiles.classList.contains("scroll")) return;
    for (let i = 0; i < 16 && unit > 11 && cutOff(el); i++) {
      unit *= 0.93;
      el.style.setProperty("--u", unit.toFixed(1) + "px");
      if (overWide(el.querySelector(".name"))) {
        tiles.style.setProperty("--name-u", unit.toFixed(1) + "px");
      }
    }
    if (cutOff(el)) unfit.add(el);
  }

  const overWide = (el) => el !== null && el.scrollWidth > el.clientWidth + 1;

  /** The tile's content is taller than the tile, or its name or a line (cut with "...")
   * wider than its room. */
  function cutOff(el) {
    return el.scrollHeight > el.clientHeight + 1 ||
      [...el.querySelectorAll(".name, .line > span, .steps li > span")].some(overWide);
  }

  function tileHtml(b) {
    const st = boothState(b);
    const parts = [];
    parts.push(
      '<div class="head"><h2 class="name">' + esc(b.name) + '</h2><span class="state">' +
        icon(st) + "<span>" + esc(t("state_" + st)) + "</span></span></div>"
    );
    if (b.closed) {
      parts.push('<div class="line closed">' + icon("closed") + "<span>" + esc(t("closed")) + "</span></div>");
    }
    if (b.test) {
      const until = clockTime(epoch(b.test.until));
      parts.push('<div class="line testing">' + icon("test") + "<span>" + esc(b.test.tester
        ? t("test_running_by", { until: until, name: responderName(b.test.tester) })
        : t("test_running", { until: until })) + "</span></div>");
    }
    if (b.occupied && b.risk === "high") {
      parts.push('<div class="line risk" data-risk="high">' + icon("risk") + "<span>" + esc(b.route
        ? t("risk_high_route", { route: t("route_" + b.route) }) : t("risk_high")) + "</span></div>");
    }
    if (st === "maintenance" && b.maintenance) {
      parts.push(
        '<div class="line detail"><span>' +
          esc(t("maintenance_detail", {
            reason: b.maintenance.reason, by: responderName(b.maintenance.by),
            until: clockTime(epoch(b.maintenance.until)),
          })) + "</span></div>"
      );
    }
    if (b.unmonitored) {
      parts.push('<div class="line trouble">' + icon("unmonitored") + "<span>" +
        esc(t("unmonitored_detail")) + "</span></div>");
    }
    if (b.occupied && b.session_started_at) {
      parts.push(
        '<div class="line"><span class="tick" data-tick="session" data-at="' +
          epoch(b.session_started_at) + '"></span></div>'
      );
    }
    if (b.occupied) {
      if (b.motion === "moving") {
        parts.push('<div class="line">' + icon("moving") + "<span>" + esc(t("motion_moving")) + "</span></div>");
      } else if ((b.motion === "still" || b.motion === "absent") && b.still_since) {
        parts.push(
          '<div class="line">' + icon("still") + '<span class="tick" data-tick="' + b.motion +
            '" data-at="' + epoch(b.still_since) + '"></span></div>'
        );
      } else if (!b.motion) {
        parts.push('<div class="line detail"><span>' + esc(t("motion_unknown")) + "</span></div>");
      }
    }
    if (b.unresponsive_at && st !== "maintenance") {
      parts.push(
        '<div class="countdown" role="meter" aria-label="' + esc(t("countdown_label")) +
          '" aria-valuemin="0" aria-valuemax="' + b.stillness + '" data-tick="countdown" data-at="' +
          epoch(b.unresponsive_at) + '" data-span="' + b.stillness + '">' +
          '<div class="track"><div class="fill"></div></div><span class="left"></span></div>'
      );
    }
    for (const trouble of b.troubles || []) {
      parts.push(
        '<div class="line trouble">' + icon(trouble.trouble === "low_battery" ? "battery" : "offline") +
          "<span>" + esc(t("trouble", {
            role: T["role_" + trouble.role] !== undefined ? t("role_" + trouble.role) : trouble.device,
            trouble: t("trouble_" + trouble.trouble),
          })) + "</span></div>"
      );
    }
    if (b.incident) {
      parts.push(incidentHtml(b));
    }
    const foot = footActions(b);
    if (foot.length) {
      parts.push('<div class="foot">' + foot.map((a) => '<button type="button" data-action="' + a +
        '">' + esc(t("action_" + a.replace("-", "_"))) + "</button>").join("") + "</div>");
    }
    return parts.join("");
  }

  /** The booth's own actions under its tile, when the alarm's buttons do not need the room. */
  function footActions(b) {
    if (b.test) return ["test-end"]; // the tester goes in: ending it stays at hand
    if (b.mode === "maintenance") return ["maintenance-end"];
    // an urgent incident's buttons keep the room
    if (b.incident && b.incident.priority !== "low") return [];
    // the session under way is watched by its risk; an empty booth can be taken out of
    // use (a broken sensor's low incident is often why) or tested (not with an incident)
    if (b.occupied) return [b.risk === "high" ? "risk-standard" : "risk-high"];
    return b.incident ? ["maintenance-start"] : ["test-start", "maintenance-start"];
  }

  function incidentHtml(b) {
    // the booth names its incident; the incident's own message has the details (triggers,
    // who), and may come a moment after the booth's
    const inc = Object.assign({ triggers: [] }, b.incident, state.incidents.get(b.incident.id) || {});
    const words = inc.triggers.map((tr) => triggerWords(tr, b)).join(", ");
    const out = ['<div class="incident">'];
    out.push(
      '<div class="what">' + icon(inc.priority) + "<span>" + esc(t("priority_" + inc.priority)) +
        (words ? " · " + esc(words) : "") + "</span></div>"
    );
    const raised = epoch(inc.raised_at);
    out.push(
      '<div class="detail"><span>' + esc(t("level", { level: inc.level })) + "</span>" +
        (raised ? ' · <span class="tick" data-tick="raised" data-at="' + raised + '"></span>' : "") +
        "</div>"
    );
    if (inc.state === "open" && inc.reopened) {
      out.push('<div class="reopened">' + esc(t("reopened")) + "</div>");
    }
    if (inc.state === "open") {
      out.push('<div class="who nobody">' + icon("waiting") + " " + esc(t("incident_open")) + "</div>");
    }
    if (inc.acknowledged_by && inc.state !== "open") {
      out.push(
        '<div class="who">' + icon("going") + " " + esc(t("incident_acknowledged", {
          name: responderName(inc.acknowledged_by), time: clockTime(epoch(inc.acknowledged_at)),
        })) + "</div>"
      );
    }
    if (inc.state === "attended" && inc.presence_at) {
      out.push(
        '<div class="who">' + icon("here") + " " + esc(t("incident_attended", {
          name: responderName(inc.presence_by || inc.acknowledged_by || ""),
          time: clockTime(epoch(inc.presence_at)),
        })) + "</div>"
      );
    }
    const steps = inc.steps || [];
    if (steps.length) {
      const shown = steps.slice(-STEPS_SHOWN).reverse(); // latest first
      out.push('<ul class="steps">' + shown.map((s) => "<li><span>" + esc(stepWords(s)) +
        "</span></li>").join("") + (steps.length > shown.length ? '<li class="earlier"><span>' +
        esc(t("steps_earlier", { count: steps.length - shown.length })) + "</span></li>" : "") + "</ul>");
    }
    const buttons = [];
    if (inc.state === "open") buttons.push("ack");
    if (inc.state !== "attended") buttons.push("presence");
    if (inc.state !== "open") buttons.push("steps"); // someone is going or there
    buttons.push("resolve");
    out.push(
      '<div class="actions">' +
        buttons.map((a) => '<button type="button" data-action="' + a + '">' + esc(t("action_" + a)) + "</button>").join("") +
        "</div>"
    );
    out.push("</div>");
    return out.join("");
  }

  /** "Naloxone ×2 18:03 Ana"; a note says its text. */
  function stepWords(s) {
    let step = t("step_" + s.step);
    if (s.step === "note" && s.note) step = s.note;
    else if (s.step === "naloxone" && s.count) step = t("step_doses", { step: step, count: s.count });
    return t("step_line", { step: step, time: shortTime(epoch(s.at)), name: responderName(s.responder) });
  }

  function renderBooth(b) {
    let el = tiles.querySelector('[data-booth="' + CSS.escape(b.booth) + '"]');
    if (!el) {
      el = document.createElement("section");
      el.className = "tile";
      el.dataset.booth = b.booth;
      tiles.appendChild(el);
    }
    el.dataset.state = boothState(b);
    const inc = b.incident ? Object.assign({}, b.incident, state.incidents.get(b.incident.id) || {}) : null;
    setData(el, "incident", inc && inc.id);
    setData(el, "incidentState", inc && inc.state);
    setData(el, "priority", inc && inc.priority);
    el.setAttribute("aria-label", b.name);
    el.innerHTML = tileHtml(b);
    return el;
  }

  function setData(el, key, value) {
    if (value) el.dataset[key] = value;
    else delete el.dataset[key];
  }

  function renderAll() {
    const ids = new Set(state.booths.map((b) => b.booth));
    for (const el of [...tiles.children]) {
      if (!ids.has(el.dataset.booth)) el.remove();
    }
    for (const b of state.booths) renderBooth(b);
    // config order, whatever order the tiles were made in
    for (const b of state.booths) tiles.appendChild(tiles.querySelector('[data-booth="' + CSS.escape(b.booth) + '"]'));
    renderHeader();
    tick();
    layout();
  }

  function renderIncidentOf(incident) {
    const b = state.booths.find((x) => x.booth === incident.booth);
    return b ? renderBooth(b) : null;
  }

  // --- the bar above the tiles ----------------------------------------------------------

  function renderHeader() {
    $("#site").textContent = state.site ? state.site.name : "";
    const onDuty = state.responders.filter((r) => r.on_duty);
    $("#duty").innerHTML = esc(t("on_duty")) + ": " + (onDuty.length
      ? esc(onDuty.map((r) => r.name).join(", "))
      : '<span class="none">' + esc(t("nobody_on_duty")) + "</span>");
    const counts = { high: 0, medium: 0, low: 0 };
    for (const b of state.booths) {
      if (b.incident) counts[b.incident.priority] += 1;
    }
    const shown = PRIORITIES.filter((p) => counts[p]);
    $("#counts").innerHTML = shown.length
      ? esc(t("open_incidents")) + ": " + shown.map((p) => '<span class="count ' + p + '" data-count="' + p + '">' + icon(p) + esc(t("priority_" + p)) + " " + counts[p] + "</span>").join("")
      : '<span class="count none">' + esc(t("none_open")) + "</span>";
    renderPicker();
  }

  let pickerHtml = "";

  function renderPicker() {
    const chosen = localStorage.getItem(STORE_RESPONDER) || "";
    const known = state.responders.some((r) => r.id === chosen);
    const ordered = state.responders.filter((r) => r.on_duty).concat(state.responders.filter((r) => !r.on_duty));
    const options = ['<option value="">' + esc(t("responder_choose")) + "</option>"].concat(
      ordered.map((r) => '<option value="' + esc(r.id) + '">' +
        esc(r.on_duty ? r.name : t("responder_off_duty", { name: r.name })) + "</option>")
    );
    const html = options.join("");
    if (pickerHtml !== html) { // rebuilt only when the list changes: an open list stays open
      picker.innerHTML = html;
      pickerHtml = html;
    }
    picker.value = known ? chosen : "";
    picker.parentElement.classList.toggle("unset", !picker.value);
  }

  function renderLink() {
    linkEl.dataset.link = state.live ? "live" : "lost";
    linkEl.innerHTML = icon(state.live ? "live" : "lost") + esc(t(state.live ? "link_live" : "link_lost"));
  }

  // --- clocks that tick between messages --------------------------------------------------

  /** The clocks of ``root`` (one tile, or by default the whole board) at the service's now. */
  function tick(root) {
    const at = now();
    if (!root) $("#clock").textContent = clockTime(at);
    for (const el of (root || tiles).querySelectorAll("[data-tick]")) {
      const from = Number(el.dataset.at);
      switch (el.dataset.tick) {
        case "session":
          el.textContent = t("session", { duration: stopwatch(at - from) });
          break;
        case "still":
          el.textContent = t("motion_still", { duration: duration(at - from) });
          break;
        case "absent":
          el.textContent = t("motion_absent", { duration: duration(at - from) });
          break;
        case "raised":
          el.textContent = t("raised", { time: clockTime(from), ago: duration(at - from) });
          break;
        case "countdown": {
          const span = Number(el.dataset.span) || 1;
          const left = Math.max(0, from - at);
          const done = Math.min(1, Math.max(0, 1 - left / span));
          el.querySelector(".fill").style.width = (done * 100).toFixed(1) + "%";
          el.querySelector(".left").textContent = t("countdown", { duration: duration(Math.ceil(left)) });
          el.setAttribute("aria-valuenow", String(Math.round(span - left)));
          break;
        }
      }
    }
    // a clock's words grow ("Still for 9m 59s", "Still for 10m"): a tile they no longer
    // fit is fitted again rather than cutting its line short
    if (tiles.classList.contains("scroll")) return;
    for (const el of root ? [root] : tiles.children) {
      if (!unfit.has(el) && cutOff(el)) fitTile(el);
    }
  }

  // --- sound ----------------------------------------------------------------------------

  const sound = {
    ctx: null,
    alarm: false,
    lost: false,
    timer: null,
  };

  function soundRunning() {
    return sound.ctx !== null && sound.ctx.state === "running";
  }

  function enableSound() {
    try {
      if (!sound.ctx) {
        sound.ctx = new AudioContext();
        sound.ctx.addEventListener("statechange", renderSound);
      }
      sound.ctx.resume().then(renderSound, renderSound);
    } catch (err) {
      // no WebAudio at all: the board stays muted and says so
      sound.ctx = null;
    }
    renderSound();
  }

  function tone(freq, start, length, type, level) {
    const ctx = sound.ctx;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = type;
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(level, start + 0.02);
    gain.gain.setValueAtTime(level, start + length - 0.05);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + length);
    osc.connect(gain).connect(ctx.destination);
    osc.start(start);
    osc.stop(start + length + 0.02);
  }

  function alarmBurst() {
    // hi-lo-hi-lo, hard to sleep through, unlike any phone ring
    const t0 = sound.ctx.currentTime + 0.02;
    for (let i = 0; i < 4; i++) tone(i % 2 ? 740 : 988, t0 + i * 0.22, 0.2, "square", 0.35);
  }

  function lostBurst() {
    const t0 = sound.ctx.currentTime + 0.02;
    for (let i = 0; i < 3; i++) tone(440, t0 + i * 0.35, 0.25, "sawtooth", 0.3);
  }

  function chime() {
    if (!soundRunning()) return;
    const t0 = sound.ctx.currentTime + 0.02;
    tone(660, t0, 0.45, "sine", 0.4);
    tone(880, t0 + 0.4, 0.7, "sine", 0.4);
  }

  function soundLoop() {
    if (!soundRunning()) return;
    if (sound.lost) lostBurst();
    else if (sound.alarm) alarmBurst();
  }

  function updateSound() {
    const openHigh = state.booths.some((b) => {
      if (!b.incident) return false;
      const inc = Object.assign({}, b.incident, state.incidents.get(b.incident.id) || {});
      return inc.priority === "high" && inc.state === "open";
    });
    sound.alarm = state.live && openHigh;
    for (const inc of state.incidents.values()) {
      if (inc.priority === "medium" && inc.state === "open" && !chimed.has(inc.id)) {
        chimed.add(inc.id);
        chime();
      }
    }
    const loud = sound.alarm || sound.lost;
    if (loud && sound.timer === null) {
      soundLoop();
      sound.timer = setInterval(soundLoop, 1300);
    } else if (!loud && sound.timer !== null) {
      clearInterval(sound.timer);
      sound.timer = null;
    }
    renderSound();
  }

  function renderSound() {
    const running = soundRunning();
    gate.hidden = running;
    soundEl.dataset.sound = running ? "on" : "off";
    soundEl.dataset.alarm = (sound.alarm || sound.lost) && running ? "on" : "off";
    const word = !running ? "sound_off" : sound.alarm || sound.lost ? "sound_alarm" : "sound_on";
    soundEl.innerHTML = icon(running ? "sound" : "muted") + esc(t(word));
  }

  // --- the stream and its supervision ------------------------------------------------------

  const link = { source: null, last: Date.now(), lostSince: null, attempt: 0, retry: null };

  function connect() {
    link.retry = null;
    const source = new EventSource(STREAM);
    link.source = source;
    link.last = Date.now();
    const on = (name, handle) =>
      source.addEventListener(name, (ev) => {
        if (source !== link.source) return; // a stream we gave up on
        link.last = Date.now();
        handle(JSON.parse(ev.data));
      });
    on("snapshot", onSnapshot);
    on("booth", onBooth);
    on("incident", onIncident);
    on("responders", onResponders);
    on("ping", (msg) => setClock(msg.now));
    source.addEventListener("error", () => {
      if (source === link.source) linkLost();
    });
  }

  function setClock(serverNow) {
    if (typeof serverNow === "number") state.offset = serverNow - Date.now() / 1000;
  }

  function onSnapshot(msg) {
    setClock(msg.now);
    state.site = msg.site;
    state.booths = msg.booths;
    state.incidents = new Map(msg.incidents.map((i) => [i.id, i]));
    state.responders = msg.responders;
    state.live = true;
    link.attempt = 0;
    link.lostSince = null;
    sound.lost = false;
    lost.hidden = true;
    connecting.hidden = true;
    fillStaticTexts();
    renderLink();
    renderAll();
    updateSound();
  }

  function onBooth(booth) {
    const i = state.booths.findIndex((b) => b.booth === booth.booth);
    if (i < 0) return; // not in the snapshot: the next snapshot brings it
    state.booths[i] = booth;
    const el = renderBooth(booth); // only its tile changed
    renderHeader();
    tick(el);
    fitTile(el);
    updateSound();
  }

  function onIncident(incident) {
    if (incident.state === "resolved") state.incidents.delete(incident.id);
    else state.incidents.set(incident.id, incident);
    const el = renderIncidentOf(incident);
    if (el) {
      tick(el);
      fitTile(el);
    }
    updateSound();
  }

  function onResponders(responders) {
    state.responders = responders;
    renderHeader();
  }

  function linkLost() {
    if (link.source) {
      link.source.close();
      link.source = null;
    }
    if (link.lostSince === null) link.lostSince = link.last;
    state.live = false;
    sound.lost = true;
    renderLink();
    lost.hidden = false;
    lost.querySelector("h1").textContent = t("lost_title", { time: clockTime(link.lostSince / 1000 + state.offset) });
    lost.querySelector("p").textContent = t("lost_text", { attempt: link.attempt + 1 });
    updateSound();
    retryLater();
  }

  function retryLater() {
    if (link.retry !== null) return;
    const base = BACKOFF_MS[Math.min(link.attempt, BACKOFF_MS.length - 1)];
    link.attempt += 1;
    link.retry = setTimeout(reconnect, base * (0.8 + 0.4 * Math.random()));
  }

  /** Back to the stream once the service answers and still knows this station; a login
   * that has ended (a new station password) keeps the warning up, with a way to log in. */
  async function reconnect() {
    link.retry = null;
    let resp;
    try {
      // a hung service (or a cable pulled) must not hold the next attempt forever
      resp = await fetch(PROBE, { credentials: "same-origin", cache: "no-store",
                                  signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    } catch (err) {
      lost.querySelector("p").textContent = t("lost_text", { attempt: link.attempt + 1 });
      retryLater(); // still unreachable
      return;
    }
    if (resp.status === 401 || resp.status === 403) {
      lost.querySelector("p").textContent = t("lost_login");
      relogin.hidden = false;
      return;
    }
    connect();
  }

  function watchdog() {
    if (link.source && Date.now() - link.last > SILENCE_MS) linkLost();
  }

  // --- answers from the board --------------------------------------------------------------

  let toastTimer = null;
  function toast(text) {
    const el = $("#toast");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  function responder() {
    const id = picker.value;
    if (!id) {
      toast(t("need_responder"));
      picker.focus();
      return null;
    }
    return id;
  }

  async function post(path, body) {
    if (!state.live) {
      toast(t("action_offline"));
      return false;
    }
    let resp;
    try {
      resp = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
        body: JSON.stringify(body),
      });
    } catch (err) {
      toast(t("action_offline"));
      return false;
    }
    if (!resp.ok) {
      let error = resp.status + " " + resp.statusText;
      try {
        error = (await resp.json()).error || error;
      } catch (err) {
        // not JSON (a proxy's error page): the status says enough
      }
      toast(t("action_failed", { error: error }));
      return false;
    }
    // the change itself arrives on the stream; the answer is for words about it
    try {
      return await resp.json();
    } catch (err) {
      return true;
    }
  }

  function boothOf(el) {
    const tile = el.closest("[data-booth]");
    return tile && state.booths.find((b) => b.booth === tile.dataset.booth);
  }

  function onAction(button) {
    const b = boothOf(button);
    if (!b) return;
    const who = responder();
    if (!who) return;
    const action = button.dataset.action;
    const incident = b.incident && b.incident.id;
    if ((action === "ack" || action === "presence") && incident) {
      post("/api/incidents/" + encodeURIComponent(incident) + "/" + action, { responder: who });
    } else if (action === "resolve" && incident) {
      openResolve(b, incident, who);
    } else if (action === "maintenance-start") {
      openMaintenance(b, who);
    } else if (action === "maintenance-end") {
      openMaintenanceEnd(b, who);
    } else if (action === "steps" && incident) {
      openSteps(b, incident, who);
    } else if (action === "risk-high") {
      openRiskHigh(b, who);
    } else if (action === "risk-standard") {
      ask(t("risk_standard_title", { booth: b.name }), t("risk_standard_submit"), () =>
        post(boothPath(b, "session"), { risk: "standard", by: who }));
    } else if (action === "test-start") {
      ask(t("test_title", { booth: b.name }), t("test_submit"), () =>
        post(boothPath(b, "test"), { tester: who }), t("test_text"));
    } else if (action === "test-end") {
      ask(t("test_end_title", { booth: b.name }), t("test_end_submit"), async () => {
        const test = await post(boothPath(b, "test/end"), {});
        if (test && test.fired) {
          const fired = [...new Set(test.fired.map((f) => triggerWords(f.trigger, b)))];
          toast(fired.length ? t("test_result", { booth: b.name, fired: fired.join(", ") })
            : t("test_result_none", { booth: b.name }));
        }
        return test;
      });
    }
  }

  function dialog(html, submit) {
    const el = $("#dialog");
    el.innerHTML = '<form method="dialog">' + html +
      '<div class="buttons"><button type="button" class="secondary" value="cancel">' + esc(t("cancel")) +
      '</button><button type="submit" value="ok" data-submit></button></div></form>';
    const form = el.querySelector("form");
    form.querySelector(".secondary").addEventListener("click", () => el.close());
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      submit(new FormData(form)).then((done) => { if (done) el.close(); });
    });
    el.showModal();
    return el;
  }

  function openResolve(b, incident, who) {
    const outcomes = CONFIG.outcomes.map((key) =>
      '<label class="choice"><input type="radio" name="outcome" required value="' + esc(key) + '"> ' +
      esc(t("outcome_" + key)) + "</label>").join("");
    const el = dialog(
      "<h2>" + esc(t("resolve_title", { booth: b.name })) + "</h2>" +
      "<fieldset><legend>" + esc(t("resolve_outcome")) + "</legend>" + outcomes + "</fieldset>" +
      '<label>' + esc(t("resolve_note")) + '<textarea name="note" rows="3" maxlength="' + CONFIG.note_max + '"></textarea></label>',
      (form) => {
        const body = { responder: who, outcome: form.get("outcome") };
        const note = String(form.get("note") || "").trim();
        if (note) body.note = note;
        return post("/api/incidents/" + encodeURIComponent(incident) + "/resolve", body);
      }
    );
    el.querySelector("[data-submit]").textContent = t("resolve_submit");
  }

  function openMaintenance(b, who) {
    const spans = CONFIG.maintenance_spans.map((span, i) =>
      '<label class="choice"><input type="radio" name="until" required value="' + esc(span.value) + '"' +
      (i === 0 ? " checked" : "") + "> " + esc(span.label) + "</label>").join("");
    const el = dialog(
      "<h2>" + esc(t("maintenance_title", { booth: b.name })) + "</h2>" +
      '<label>' + esc(t("maintenance_reason")) + '<input type="text" name="reason" required maxlength="200" value="' +
      esc(t("maintenance_reason_default")) + '"></label>' +
      "<fieldset><legend>" + esc(t("maintenance_for")) + "</legend>" + spans + "</fieldset>",
      (form) => post(boothPath(b, "maintenance"), {
        until: form.get("until"), reason: String(form.get("reason") || "").trim(), by: who,
      })
    );
    el.querySelector("[data-submit]").textContent = t("maintenance_submit");
  }

  function openMaintenanceEnd(b, who) {
    ask(t("maintenance_end_title", { booth: b.name }), t("maintenance_end_submit"), () =>
      post(boothPath(b, "maintenance/end"), { by: who }));
  }

  const boothPath = (b, rest) => "/api/booths/" + encodeURIComponent(b.booth) + "/" + rest;

  /** A question, maybe a sentence under it, and the button that does it. */
  function ask(title, submit, act, text) {
    const el = dialog("<h2>" + esc(title) + "</h2>" + (text ? "<p>" + esc(text) + "</p>" : ""), act);
    el.querySelector("[data-submit]").textContent = submit;
  }

  function choices(name, keys, words, required) {
    return keys.map((key) => '<label class="choice"><input type="radio" name="' + name + '"' +
      (required ? " required" : "") + ' value="' + esc(key) + '"> ' + esc(words(key)) + "</label>").join("");
  }

  function openSteps(b, incident, who) {
    const el = dialog(
      "<h2>" + esc(t("steps_title", { booth: b.name })) + "</h2>" +
      '<fieldset class="grid"><legend>' + esc(t("steps_step")) + "</legend>" +
      choices("step", CONFIG.steps, (s) => t("step_" + s), true) + "</fieldset>" +
      '<label class="doses">' + esc(t("steps_doses")) + ' <input type="number" name="count" min="1" max="' +
      CONFIG.max_doses + '" value="1" required></label>' +
      '<label>' + esc(t("steps_note")) + '<textarea name="note" rows="2" maxlength="' + CONFIG.note_max + '"></textarea></label>',
      (form) => {
        const step = form.get("step");
        const body = { responder: who, step: step };
        if (step === "naloxone") body.count = Number(form.get("count"));
        const note = String(form.get("note") || "").trim();
        if (note) body.note = note;
        return post("/api/incidents/" + encodeURIComponent(incident) + "/steps", body);
      }
    );
    const note = el.querySelector("textarea");
    // a note step needs its text; the doses matter to naloxone alone
    el.querySelector("fieldset").addEventListener("change", (ev) => {
      note.required = ev.target.value === "note";
      el.querySelector(".doses").hidden = ev.target.value !== "naloxone";
    });
    el.querySelector(".doses").hidden = true;
    el.querySelector("[data-submit]").textContent = t("steps_submit");
  }

  function openRiskHigh(b, who) {
    const seconds = CONFIG.high_risk_stillness[b.booth];
    const el = dialog(
      "<h2>" + esc(t("risk_title", { booth: b.name })) + "</h2>" +
      (seconds ? "<p>" + esc(t("risk_text", { duration: duration(seconds) })) + "</p>" : "") +
      '<fieldset class="grid"><legend>' + esc(t("risk_route")) + "</legend>" +
      '<label class="choice"><input type="radio" name="route" value="" checked> ' + esc(t("route_none")) + "</label>" +
      choices("route", CONFIG.routes, (r) => t("route_" + r), false) + "</fieldset>",
      (form) => {
        const body = { risk: "high", by: who };
        if (form.get("route")) body.route = form.get("route");
        return post(boothPath(b, "session"), body);
      }
    );
    el.querySelector("[data-submit]").textContent = t("risk_submit");
  }

  // --- the theme ------------------------------------------------------------------------------

  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    $("#theme").textContent = t(theme === "night" ? "theme_day" : "theme_night");
  }

  // --- start ----------------------------------------------------------------------------------

  applyTheme(localStorage.getItem(STORE_THEME) ||
    (matchMedia("(prefers-color-scheme: dark)").matches ? "night" : "day"));
  $("#theme").addEventListener("click", () => {
    const theme = document.documentElement.dataset.theme === "night" ? "day" : "night";
    localStorage.setItem(STORE_THEME, theme);
    applyTheme(theme);
  });
  picker.addEventListener("change", () => {
    localStorage.setItem(STORE_RESPONDER, picker.value);
    picker.parentElement.classList.toggle("unset", !picker.value);
  });
  tiles.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button) onAction(button);
  });
  gate.addEventListener("click", enableSound);
  relogin.addEventListener("click", () => location.reload());
  gate.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") enableSound();
  });
  // a touch anywhere may also be what lets a suspended context run again
  document.addEventListener("pointerdown", () => { if (sound.ctx && !soundRunning()) enableSound(); });
  // the window, or the bar above the tiles growing a line, resizes the tiles' room
  new ResizeObserver(layout).observe(tiles);
  fillStaticTexts();
  renderLink();
  renderSound();
  // a kiosk browser allowed to play sound without a touch needs no gate at all
  enableSound();
  connect();
  setInterval(() => { watchdog(); tick(); }, 250);
})();
