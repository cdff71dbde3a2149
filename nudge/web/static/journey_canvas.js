// Journey canvas (journey.html): draws a journey definition as an SVG graph, edits it in a
// side panel and talks to the JSON API (/1/journeys, /validate, /publish, /report) with the
// session cookie and the CSRF header, so what it saves is exactly what the API accepts.
// No inline script (CSP): the page hands over its state in data-state.
"use strict";
(() => {
  const root = document.getElementById("journey-canvas");
  if (!root) return;
  const S = JSON.parse(root.dataset.state);
  const W = S.size.w, H = S.size.h, GAP_X = 36, GAP_Y = 56, NS = "http://www.w3.org/2000/svg";
  let def = JSON.parse(JSON.stringify(S.journey.definition));
  const pos = S.positions;
  let jid = S.journey.id, status = S.journey.status, report = S.report;
  let selected = null;        // a node id, or null for the journey's settings
  let problems = [];          // [{node, field, reason}] from the API
  const editable = S.editable;
  const svg = document.getElementById("journey-svg");
  const panel = document.getElementById("journey-panel");

  // ---- the model --------------------------------------------------------------------
  const NEXT = {send: ["next"], delay: ["next"], update_profile: ["next"], webhook: ["next"],
    wait_event: ["on_event", "on_timeout"], condition: ["yes", "no"], exit: [], split: []};
  const DEFAULTS = {
    send: () => (S.campaigns.length ? {campaign_id: S.campaigns[0].id} : {}),
    delay: () => ({duration: {hours: 1}}),
    wait_event: () => ({event: "", timeout: {hours: 1}}),
    condition: () => ({did: {event: ""}}),
    split: () => ({branches: [{percent: 50}, {percent: 50}]}),
    update_profile: () => ({set: {}}),
    webhook: () => ({url: "https://"}),
    exit: () => ({}),
  };
  const node = (id) => def.nodes.find((n) => n.id === id);
  // Every way out of a node: {label, target, set(target)}.
  function outs(n) {
    if (n.type === "split") {
      return (n.branches || []).map((b, i) => ({label: `branch ${i + 1} (${b.percent}%)`,
        short: `${b.percent}%`, target: b.next, set: (t) => { setOpt(b, "next", t); }}));
    }
    return (NEXT[n.type] || []).map((k) => ({label: k, short: k === "next" ? "" : k,
      target: n[k], set: (t) => { setOpt(n, k, t); }}));
  }
  function setOpt(o, k, v) { if (v === "" || v === null || v === undefined) delete o[k]; else o[k] = v; }
  function newId(type) {
    const base = type.replace("_", "-");
    let i = 1, id = base;
    while (node(id)) id = `${base}-${++i}`;
    return id;
  }
  // Drawn top to bottom: the entry box above the start node, a new node in the row below
  // its parent at the first free place.
  function freeX(y) {
    let x = 20;
    while (Object.values(pos).some((p) => Math.abs(p.x - x) < W + 10 && Math.abs(p.y - y) < H + 10)) x += W + GAP_X;
    return x;
  }
  function entryBox() {
    const p = pos[def.start];
    return {x: p ? p.x : 20, y: 20, w: W, h: H};
  }
  function addNode(type) {
    const id = newId(type);
    const n = Object.assign({id, type}, DEFAULTS[type]());
    const parent = selected && node(selected);
    const free = parent && outs(parent).find((o) => !o.target);
    def.nodes.push(n);
    if (!def.start) def.start = id;
    if (free) free.set(id);
    const y = parent ? pos[parent.id].y + H + GAP_Y : 20 + H + GAP_Y;
    pos[id] = {x: freeX(y), y};
    select(id);
    changed();
  }
  function removeNode(id) {
    def.nodes = def.nodes.filter((n) => n.id !== id);
    for (const n of def.nodes) for (const o of outs(n)) if (o.target === id) o.set(null);
    if (def.start === id) def.start = def.nodes.length ? def.nodes[0].id : "";
    delete pos[id];
    select(null);
    changed();
  }
  function renameNode(from, to) {
    if (!to || to === from || node(to)) return false;
    for (const n of def.nodes) for (const o of outs(n)) if (o.target === from) o.set(to);
    node(from).id = to;
    if (def.start === from) def.start = to;
    pos[to] = pos[from]; delete pos[from];
    selected = to;
    return true;
  }

  // Entry kinds: the definition's entry, plus "date property" = people with the property
  // enter (an inline segment "property exists") and wait at a start delay until that date.
  function entryKind() {
    const e = def.entry || {};
    if (e.api) return "api";
    if ("event" in e) return "event";
    const p = e.segment && e.segment.profile, start = node(def.start);
    if (p && p.op === "exists" && start && start.type === "delay" && start.until_property === p.property) return "date";
    return "segment";
  }
  function setEntryKind(kind) {
    const old = entryKind();
    if (old === "date" && kind !== "date") {
      const start = node(def.start);
      if (start && start.next) def.start = start.next;
      if (start) removeNodeQuiet(start.id);
    }
    if (kind === "event") def.entry = {event: ""};
    else if (kind === "api") def.entry = {api: true};
    else if (kind === "segment") def.entry = S.segments.length ? {segment_id: S.segments[0].id} : {segment: {}};
    else if (kind === "date" && old !== "date") {
      const id = newId("on-date"), below = pos[def.start];
      def.nodes.unshift({id, type: "delay", until_property: "", next: def.start || undefined});
      if (!def.start) delete def.nodes[0].next;
      for (const p of Object.values(pos)) p.y += H + GAP_Y;  // room above the old start
      pos[id] = {x: below ? below.x : 20, y: 20 + H + GAP_Y};
      def.start = id;
      def.entry = {segment: {profile: {property: "", op: "exists"}}};
    }
  }
  function removeNodeQuiet(id) {
    def.nodes = def.nodes.filter((n) => n.id !== id);
    delete pos[id];
  }

  // The body for the API: the definition without the empty optional fields the panel keeps.
  function body() {
    const d = JSON.parse(JSON.stringify(def));
    if (d.goal && !d.goal.event) delete d.goal;
    if (d.exit_when) { d.exit_when = d.exit_when.filter((x) => x.event); if (!d.exit_when.length) delete d.exit_when; }
    for (const m of [d.goal, ...(d.exit_when || [])]) if (m && Array.isArray(m.where) && !m.where.length) delete m.where;
    if (d.entry && Array.isArray(d.entry.where) && !d.entry.where.length) delete d.entry.where;
    for (const n of d.nodes) {
      if (n.label === "") delete n.label;
      if (Array.isArray(n.where) && !n.where.length) delete n.where;
      if (Array.isArray(n.match) && !n.match.length) delete n.match;
    }
    if (d.reentry && !d.reentry.mode) delete d.reentry;
    return d;
  }

  // ---- drawing ----------------------------------------------------------------------
  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const passed = (id) => Object.values((report.steps || {})[id] || {}).reduce((a, b) => a + b, 0);
  const waiting = (id) => (report.at_node || {})[id] || 0;
  const problemsOf = (id) => problems.filter((p) => p.node === id);
  function summary(n) {
    switch (n.type) {
      case "send": { const c = S.campaigns.find((x) => x.id === n.campaign_id); return c ? `${c.name} (${c.channels.join(", ")})` : "send: choose a message"; }
      case "delay": return n.until_time ? `until ${n.until_time}` : n.until_property !== undefined ? `until ${n.until_property || "?"}` : `wait ${fmtDur(n.duration)}`;
      case "wait_event": return `wait for ${n.event || "?"} ≤ ${fmtDur(n.timeout)}`;
      case "condition": return n.did ? `did ${n.did.event || "?"}?` : n.profile ? `${n.profile.property || "?"} ${n.profile.op || ""}?` : n.segment_id ? `in segment ${n.segment_id}?` : "in segment?";
      case "split": return `A/B split ${(n.branches || []).map((b) => b.percent + "%").join("/")}`;
      case "update_profile": return `set ${Object.keys(n.set || {}).join(", ") || "?"}`;
      case "webhook": return `POST ${n.url || "?"}`;
      default: return n.type;
    }
  }
  function fmtDur(d) {
    if (!d) return "?";
    return Object.entries(d).map(([k, v]) => `${v}${k[0] === "m" && k !== "months" ? "m" : k[0]}`).join(" ") || "?";
  }
  function entryText() {
    const e = def.entry || {};
    switch (entryKind()) {
      case "api": return "API call";
      case "event": return `event ${e.event || "?"}`;
      case "date": return `date ${e.segment.profile.property || "?"}`;
      default: { const s = S.segments.find((x) => x.id === e.segment_id); return s ? `segment ${s.name}` : "segment"; }
    }
  }
  function draw() {
    svg.replaceChildren();
    const defs = svgEl("defs");
    const m = svgEl("marker", {id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse"});
    m.append(svgEl("path", {d: "M 0 0 L 10 5 L 0 10 z", fill: "#5b6473"}));
    defs.append(m); svg.append(defs);
    const ENTRY = entryBox();
    let maxX = ENTRY.x + ENTRY.w, maxY = ENTRY.y + ENTRY.h;
    const entry = svgEl("g", {class: "entry", "aria-label": "Entry: " + entryText()});
    entry.append(svgEl("rect", {x: ENTRY.x, y: ENTRY.y, width: ENTRY.w, height: ENTRY.h, rx: 30}),
      svgEl("text", {x: ENTRY.x + 12, y: ENTRY.y + 24, "font-size": 13, "font-weight": 600}, "Entry"),
      svgEl("text", {x: ENTRY.x + 12, y: ENTRY.y + 42, "font-size": 11, fill: "#4f5862", "data-entry": ""}, entryText().slice(0, 24)));
    svg.append(entry);
    if (def.start && pos[def.start]) {
      const p = pos[def.start];
      svg.append(svgEl("line", {x1: ENTRY.x + W / 2, y1: ENTRY.y + H, x2: p.x + W / 2, y2: p.y, stroke: "#1a7f37", "stroke-width": 1.5, "marker-end": "url(#arrow)", "data-entry-edge": def.start}));
    }
    for (const n of def.nodes) {
      for (const o of outs(n)) {
        if (!o.target || !pos[o.target]) continue;
        const a = pos[n.id], b = pos[o.target];
        // Down to the target's top; an edge back up (a loop) enters the target's side.
        const up = b.y <= a.y;
        const [x1, y1] = [a.x + W / 2, a.y + H], [x2, y2] = up ? [b.x + W, b.y + H / 2] : [b.x + W / 2, b.y];
        svg.append(svgEl("line", {x1, y1, x2, y2, stroke: "#5b6473", "stroke-width": 1.5, "marker-end": "url(#arrow)", "data-edge": `${n.id}-${o.target}`}));
        if (o.short) svg.append(svgEl("text", {x: x1 + (x2 - x1) * 0.3 + 4, y: y1 + (y2 - y1) * 0.3 + 4, "font-size": 11, fill: "#4f5862", "data-edge-label": o.short}, o.short));
      }
    }
    for (const n of def.nodes) {
      const p = pos[n.id];
      const bad = problemsOf(n.id);
      const g = svgEl("g", {"data-node": n.id, tabindex: "0", role: "button", class: [n.id === selected ? "selected" : "", bad.length ? "invalid" : ""].join(" ").trim(),
        "aria-label": `${n.id}, ${n.type}: ${summary(n)}; ${passed(n.id)} passed, ${waiting(n.id)} here now${bad.length ? "; problem: " + bad.map((x) => x.reason).join("; ") : ""}`});
      g.append(svgEl("rect", {x: p.x, y: p.y, width: W, height: H, rx: 8}),
        svgEl("text", {x: p.x + 10, y: p.y + 18, "font-size": 13, "font-weight": 600}, (n.label || n.id).slice(0, 22) + (n.id === def.start ? " ▸ start" : "")),
        svgEl("text", {x: p.x + 10, y: p.y + 35, "font-size": 11, fill: "#4f5862"}, summary(n).slice(0, 28)));
      const counts = svgEl("text", {x: p.x + 10, y: p.y + 54, "font-size": 11});
      counts.append(svgEl("tspan", {"data-passed": ""}, String(passed(n.id))), document.createTextNode(" passed · "),
        svgEl("tspan", {"data-waiting": ""}, String(waiting(n.id))), document.createTextNode(" here now"));
      g.append(counts);
      if (bad.length) {
        const t = svgEl("text", {x: p.x + W - 18, y: p.y + 18, "font-size": 15, class: "problem", "data-problem": bad.map((x) => x.reason).join("; ")}, "!");
        t.append(svgEl("title", {}, bad.map((x) => x.reason).join("\n")));
        g.append(t);
      }
      svg.append(g);
      maxX = Math.max(maxX, p.x + W); maxY = Math.max(maxY, p.y + H);
    }
    svg.setAttribute("width", maxX + 40); svg.setAttribute("height", maxY + 40);
  }

  // Selecting and moving nodes: click or Enter/Space selects; drag moves; arrow keys move the
  // selected node (keyboard users can lay out too); Delete removes it.
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    const g = ev.target.closest("g[data-node]");
    if (!g) { select(null); return; }
    const id = g.dataset.node;
    select(id);
    drag = {id, x: ev.clientX, y: ev.clientY, p: {...pos[id]}};
    svg.setPointerCapture(ev.pointerId);
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    pos[drag.id] = {x: Math.max(0, drag.p.x + ev.clientX - drag.x), y: Math.max(0, drag.p.y + ev.clientY - drag.y)};
    draw();
  });
  svg.addEventListener("pointerup", () => {
    if (drag) { const id = drag.id; drag = null; draw(); focusNode(id); }
  });
  svg.addEventListener("keydown", (ev) => {
    const g = ev.target.closest("g[data-node]");
    if (!g) return;
    const id = g.dataset.node, step = {ArrowLeft: [-20, 0], ArrowRight: [20, 0], ArrowUp: [0, -20], ArrowDown: [0, 20]}[ev.key];
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(id); const f = panel.querySelector("input, select, textarea"); if (f) f.focus(); }
    else if (step) { ev.preventDefault(); pos[id] = {x: Math.max(0, pos[id].x + step[0]), y: Math.max(0, pos[id].y + step[1])}; draw(); focusNode(id); }
    else if (ev.key === "Delete" && editable) { ev.preventDefault(); removeNode(id); }
  });
  function focusNode(id) { const g = svg.querySelector(`g[data-node="${CSS.escape(id)}"]`); if (g) g.focus(); }
  function select(id) { selected = id; draw(); renderPanel(); }

  // ---- the side panel ---------------------------------------------------------------
  let uid = 0;
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "on") for (const [evn, fn] of Object.entries(v)) e.addEventListener(evn, fn);
      else if (v === true) e.setAttribute(k, "");
      else if (v !== false && v !== undefined && v !== null) e.setAttribute(k, v);
    }
    e.append(...kids.filter((k) => k !== null && k !== undefined));
    return e;
  }
  function field(label, control) {
    const id = control.id || (control.id = `jf-${++uid}`);
    return [h("label", {for: id}, label), control];
  }
  function text(label, value, set, attrs) {
    const i = h("input", {value: value ?? "", disabled: !editable, ...(attrs || {}),
      on: {input: () => { set(i.value); changed(); }}});
    return field(label, i);
  }
  function number(label, value, set, attrs) {
    return text(label, value, (v) => set(v === "" ? undefined : Number(v)), {type: "number", ...(attrs || {})});
  }
  function choice(label, options, value, set) {
    const s = h("select", {disabled: !editable, on: {change: () => { set(s.value); changed(); renderPanel(); }}},
      ...options.map(([v, t]) => h("option", {value: v, selected: String(v) === String(value ?? "")}, t)));
    return field(label, s);
  }
  function json(label, value, set, hint) {
    const t = h("textarea", {rows: 3, spellcheck: "false", disabled: !editable, "aria-describedby": `jh-${uid + 1}`});
    t.value = value === undefined ? "" : JSON.stringify(value);
    const help = h("small", {id: `jh-${++uid}`, class: "muted"}, hint);
    t.addEventListener("input", () => {
      if (!t.value.trim()) { set(undefined); t.removeAttribute("aria-invalid"); changed(); return; }
      try { set(JSON.parse(t.value)); t.removeAttribute("aria-invalid"); help.textContent = hint; changed(); }
      catch (e) { t.setAttribute("aria-invalid", "true"); help.textContent = "Not valid JSON yet."; }
    });
    return [...field(label, t), help];
  }
  function duration(legend, value, set) {
    const d = {...(value || {})};
    const fs = h("fieldset", {class: "duration"}, h("legend", {}, legend));
    for (const unit of ["days", "hours", "minutes", "seconds"]) {
      const i = h("input", {type: "number", min: "0", step: "any", value: d[unit] ?? "", disabled: !editable,
        on: {input: () => { if (i.value === "") delete d[unit]; else d[unit] = Number(i.value); set({...d}); changed(); }}});
      fs.append(h("label", {}, unit, i));
    }
    return fs;
  }
  // A duration of one unit ({"minutes": 30}): timeouts, re-entry, offsets.
  function span(legend, value, set) {
    const [unit0, n0] = Object.entries(value || {hours: 1})[0] || ["hours", 1];
    const fs = h("fieldset", {class: "duration"}, h("legend", {}, legend));
    const n = h("input", {type: "number", min: "0", step: "any", value: n0, disabled: !editable});
    const u = h("select", {disabled: !editable}, ...["minutes", "hours", "days", "weeks"].map((x) => h("option", {value: x, selected: x === unit0}, x)));
    const update = () => { set(n.value === "" ? undefined : {[u.value]: Number(n.value)}); changed(); };
    n.addEventListener("input", update); u.addEventListener("change", update);
    fs.append(h("label", {}, "amount", n), h("label", {}, "unit", u));
    return fs;
  }
  // Property filters: the segment builder's filter rows (static/filter_rows.js).
  function filters(legend, list, set, max, noOp) {
    return window.NudgeFilterRows.rows(legend, list, (v) => { set(v); changed(); }, {editable, max, noOp});
  }
  // A segment definition: the segment builder's condition editor (segment_conditions.html,
  // cloned from <template id="segment-editor">). Like the builder it posts its fields to
  // /segments/reach, which builds the definition on the server (value typing included),
  // checks it and counts it; the definition in that answer is what the node keeps. A stored
  // definition opens in "Edit as JSON" (which overrides the rows, as in the builder).
  function segmentEditor(legend, value, set) {
    const tpl = document.getElementById("segment-editor");
    if (!tpl || !editable) return json(`${legend} (JSON)`, value, set, "the segmentation language of docs/segments.md");
    const fs = h("fieldset", {class: "segment-editor", "data-segment-editor": legend}, h("legend", {}, legend));
    fs.append(tpl.content.cloneNode(true));
    const form = fs.querySelector("form");
    if (value && Object.keys(value).length) {
      form.querySelector("textarea[name=json]").value = JSON.stringify(value, null, 2);
      form.querySelector("details").open = true;
    }
    form.addEventListener("submit", (ev) => ev.preventDefault());
    form.addEventListener("htmx:afterSwap", () => {
      const d = form.querySelector("[data-definition]");
      if (d) { set(JSON.parse(d.textContent)); changed(); }
    });
    return [fs];
  }
  // Goal and exit events: an event name with the filter rows.
  function eventMatch(legend, filterLegend, m, setEvent) {
    return [...text(legend, m.event, setEvent),
      filters(filterLegend, m.where, (v) => setOpt(m, "where", v.length ? v : undefined))];
  }
  const targets = (self) => [["", "(not connected)"], ...def.nodes.filter((n) => n.id !== self).map((n) => [n.id, `${n.id} (${n.type})`])];

  function renderPanel() {
    // Rebuilding the panel must not lose the keyboard focus: refocus the control that has
    // the same label as the focused one had.
    const f = document.activeElement, lab = f && f.id && panel.contains(f) && panel.querySelector(`label[for="${f.id}"]`);
    const was = lab ? lab.textContent : null;
    panel.replaceChildren();
    if (selected && node(selected)) nodePanel(node(selected)); else journeyPanel();
    if (window.htmx && panel.querySelector("[data-segment-editor]")) window.htmx.process(panel);
    if (was) {
      const again = [...panel.querySelectorAll("label[for]")].find((l) => l.textContent === was);
      if (again) document.getElementById(again.htmlFor).focus();
    }
  }
  function journeyPanel() {
    const e = def.entry || (def.entry = {event: ""});
    const kind = entryKind();
    panel.append(h("h2", {}, "Journey settings"),
      ...text("Name", def.name, (v) => { def.name = v; document.querySelector("[data-journey-name]").textContent = v || "New journey"; }, {id: "j-name"}),
      ...choice("Entry", [["event", "When an event happens"], ["segment", "When someone is in a segment"], ["date", "On a date property (e.g. renewal)"], ["api", "When the API enters people"]], kind, setEntryKind));
    if (kind === "event") {
      panel.append(...text("Entry event", e.event, (v) => { e.event = v; }, {id: "j-entry-event"}),
        filters("Entry event filters", e.where, (v) => setOpt(e, "where", v.length ? v : undefined)));
    } else if (kind === "segment") {
      if (S.segments.length) panel.append(...choice("Saved segment", [...S.segments.map((s) => [s.id, s.name]), ["", "(a segment definition)"]], e.segment_id ?? "",
        (v) => { def.entry = v ? {segment_id: Number(v)} : {segment: {}}; }));
      if ("segment" in e) panel.append(...segmentEditor("Entry segment definition", e.segment, (v) => { def.entry = {segment: v || {}}; }));
    } else if (kind === "date") {
      panel.append(...text("Date property", e.segment.profile.property, (v) => { e.segment.profile.property = v; node(def.start).until_property = v; }, {id: "j-date-property"}),
        h("p", {class: "muted"}, `People with this profile property enter and wait at node ${def.start} until its date (set an offset there).`));
    }
    const goal = def.goal || (def.goal = {event: ""});
    panel.append(...eventMatch("Goal event (converts and exits)", "Goal filters", goal, (v) => { goal.event = v; }));
    const exits = def.exit_when || (def.exit_when = []);
    const exitSet = h("fieldset", {class: "exits"}, h("legend", {}, "Exit when any of these events happen"));
    exits.forEach((m, i) => {
      exitSet.append(...eventMatch(`Exit event ${i + 1}`, `Exit ${i + 1} filters`, m, (v) => { m.event = v; }));
      if (editable) exitSet.append(h("button", {type: "button", class: "secondary", on: {click: () => { exits.splice(i, 1); changed(); renderPanel(); }}}, `Remove exit event ${i + 1}`));
    });
    if (editable) exitSet.append(h("button", {type: "button", class: "secondary", id: "add-exit", on: {click: () => { exits.push({event: ""}); renderPanel(); }}}, "Add exit event"));
    panel.append(exitSet);
    const r = def.reentry || {};
    panel.append(...choice("Re-entry", [["never", "Never: once per person"], ["after_exit", "Again after leaving"], ["after", "Again after a while"]], r.mode || "never",
      (v) => { def.reentry = {...(def.reentry || {}), mode: v}; if (v === "after") def.reentry.after = def.reentry.after || {days: 1}; else delete def.reentry.after; }));
    if (r.mode === "after") panel.append(span("Re-enter after", r.after, (v) => setOpt(def.reentry, "after", v)));
    panel.append(...number("Most entries per person", r.max_entries, (v) => { def.reentry = {mode: "never", ...(def.reentry || {})}; setOpt(def.reentry, "max_entries", v); }, {min: "1", id: "j-max-entries"}),
      ...number("Most people in the journey (user limit)", def.max_users, (v) => setOpt(def, "max_users", v), {min: "1", id: "j-max-users"}));
    if (def.nodes.length) panel.append(...choice("Start node", def.nodes.map((n) => [n.id, n.id]), def.start, (v) => { def.start = v; }));
    journeyProblems(null);
  }
  function nodePanel(n) {
    panel.append(h("h2", {}, `Node ${n.id}`), h("p", {class: "muted"}, `${n.type} · ${passed(n.id)} passed · ${waiting(n.id)} here now`));
    const idInput = h("input", {value: n.id, id: "n-id", disabled: !editable, pattern: "[A-Za-z0-9_-]{1,32}",
      on: {change: () => { if (renameNode(n.id, idInput.value.trim())) { changed(); renderPanel(); } else idInput.value = n.id; }}});
    panel.append(...field("Node id", idInput), ...text("Label (optional)", n.label, (v) => setOpt(n, "label", v)));
    const fill = NODE_FIELDS[n.type];
    if (fill) fill(n);
    for (const o of outs(n)) panel.append(...choice(`Then (${o.label})`, targets(n.id), o.target, (v) => o.set(v)));
    if (editable) {
      panel.append(h("div", {class: "actions"},
        h("button", {type: "button", class: "secondary", on: {click: () => { select(null); }}}, "Journey settings"),
        h("button", {type: "button", class: "danger", id: "delete-node", on: {click: () => removeNode(n.id)}}, "Delete node")));
    }
    journeyProblems(n.id);
  }
  function journeyProblems(id) {
    const list = problems.filter((p) => (id === null ? !p.node : p.node === id));
    if (list.length) panel.append(h("ul", {class: "problems"}, ...list.map((p) => h("li", {}, `${p.field}: ${p.reason}`))));
  }
  const NODE_FIELDS = {
    send(n) {
      const make = h("p", {class: "muted"}, "The message is a campaign (best of kind API: it goes out only from journeys and the API). ",
        S.can_campaign ? h("a", {href: `${S.base}/campaigns/new?kind=api`, target: "_blank", rel: "noopener"}, "New message (opens the campaign wizard)") : null);
      if (!S.campaigns.length) { panel.append(make); return; }
      panel.append(...choice("Message (a campaign: its channels, fallback, template and policy)", [["", "(choose)"], ...S.campaigns.map((c) => [c.id, `${c.name} — ${c.channels.join(" → ")} (${c.kind})`])],
        n.campaign_id, (v) => setOpt(n, "campaign_id", v ? Number(v) : undefined)), make);
    },
    delay(n) {
      const kind = n.until_time !== undefined ? "until_time" : n.until_property !== undefined ? "until_property" : "duration";
      panel.append(...choice("Delay kind", [["duration", "For a duration"], ["until_time", "Until a time of day (person's timezone)"], ["until_property", "Until a date in a profile property"]], kind, (v) => {
        for (const k of ["duration", "until_time", "until_property", "offset"]) delete n[k];
        n[v] = v === "duration" ? {hours: 1} : v === "until_time" ? "09:00" : "";
      }));
      if (kind === "duration") panel.append(duration("Wait for", n.duration, (v) => { n.duration = v; }));
      else if (kind === "until_time") panel.append(...text("Time (HH:MM)", n.until_time, (v) => { n.until_time = v; }, {type: "time"}));
      else {
        panel.append(...text("Date property", n.until_property, (v) => { n.until_property = v; }));
        const off = n.offset || {};
        panel.append(span("Offset (optional)", Object.keys(off).some((k) => k !== "before") ? Object.fromEntries(Object.entries(off).filter(([k]) => k !== "before")) : {days: ""}, (v) => {
          const before = n.offset && n.offset.before;
          if (v) n.offset = {...v, ...(before ? {before: true} : {})}; else delete n.offset;
        }));
        const cb = h("input", {type: "checkbox", checked: !!off.before, disabled: !editable, on: {change: () => { n.offset = {...(n.offset || {}), before: cb.checked}; if (!cb.checked) delete n.offset.before; changed(); }}});
        panel.append(h("label", {class: "check"}, cb, " before the date (not after)"));
      }
    },
    wait_event(n) {
      panel.append(...text("Wait for event", n.event, (v) => { n.event = v; }, {id: "n-event"}),
        filters("Event filters", n.where, (v) => setOpt(n, "where", v.length ? v : undefined)),
        ...text("Match entry event properties (comma-separated)", (n.match || []).join(", "), (v) => setOpt(n, "match", v.split(",").map((x) => x.trim()).filter(Boolean))),
        span("Time out after", n.timeout, (v) => setOpt(n, "timeout", v)));
    },
    condition(n) {
      const kind = n.did ? "did" : n.profile ? "profile" : "segment_id" in n ? "segment_id" : "segment";
      panel.append(...choice("Condition", [["did", "Did an event since entering"], ["profile", "A profile property"], ["segment_id", "Is in a saved segment"], ["segment", "Matches a segment definition"]], kind, (v) => {
        for (const k of ["did", "profile", "segment_id", "segment"]) delete n[k];
        n[v] = v === "did" ? {event: ""} : v === "profile" ? {property: "", op: "eq", value: ""} : v === "segment_id" ? (S.segments[0] || {}).id : {};
      }));
      if (kind === "did") {
        panel.append(...text("Event", n.did.event, (v) => { n.did.event = v; }),
          filters("Event filters", n.did.where, (v) => setOpt(n.did, "where", v.length ? v : undefined)),
          ...number("At least this many times since entering", n.did.count, (v) => setOpt(n.did, "count", v), {min: "1", step: "1"}));
      } else if (kind === "profile") {
        panel.append(filters("Profile property filter", [n.profile], (v) => { n.profile = v[0] || {}; }, 1));
      }
      else if (kind === "segment_id") panel.append(...choice("Segment", S.segments.map((s) => [s.id, s.name]), n.segment_id, (v) => { n.segment_id = Number(v); }));
      else panel.append(...segmentEditor("Segment definition", n.segment, (v) => { n.segment = v || {}; }));
    },
    split(n) {
      n.branches.forEach((b, i) => panel.append(...number(`Branch ${i + 1} share (%)`, b.percent, (v) => { b.percent = v; }, {min: "0", max: "100", step: "any"})));
      if (editable) {
        panel.append(h("div", {class: "actions"},
          h("button", {type: "button", class: "secondary", on: {click: () => { n.branches.push({percent: 0}); changed(); renderPanel(); }}}, "Add branch"),
          n.branches.length > 2 ? h("button", {type: "button", class: "secondary", on: {click: () => { n.branches.pop(); changed(); renderPanel(); }}}, "Remove last branch") : null));
      }
    },
    update_profile(n) {
      // Rows of property and value; values typed as filter values are (10, true, text).
      const rows = Object.entries(n.set || {}).map(([property, value]) => ({property, op: "eq", value}));
      panel.append(filters("Set profile properties", rows, (v) => { n.set = Object.fromEntries(v.map((f) => [f.property, f.value ?? ""])); }, 50, true));
    },
    webhook(n) { panel.append(...text("URL (POST)", n.url, (v) => { n.url = v; }, {type: "url"})); },
  };

  // ---- talking to the API ------------------------------------------------------------
  async function api(method, path, payload) {
    const resp = await fetch(path, {method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken(), "X-Nudge-Account-Id": S.account},
      body: payload === undefined ? undefined : JSON.stringify(payload)});
    let data = {};
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    return {ok: resp.ok, status: resp.status, data};
  }
  // A 400 names the field ("nodes[2].timeout") and, for graph problems, every node at fault.
  function takeProblems(data) {
    if (Array.isArray(data.problems)) return data.problems;
    const m = /^nodes\[(\d+)\]/.exec(data.field || "");
    const n = m && def.nodes[Number(m[1])];
    return [{node: n ? n.id : null, field: data.field || "", reason: (data.message || data.error || "invalid").replace(`${data.field}: `, "")}];
  }
  function say(message, ok) {
    const box = document.getElementById("journey-message");
    box.className = message ? `notice ${ok ? "ok" : "error"}` : "";
    box.textContent = message;
  }
  function showProblems(list) {
    problems = list;
    const box = document.getElementById("journey-problems");
    box.replaceChildren();
    if (list.length) {
      box.append(h("ul", {}, ...list.map((p) => h("li", {"data-problem-node": p.node || ""},
        p.node ? h("button", {type: "button", class: "link", on: {click: () => { select(p.node); focusNode(p.node); }}}, p.node) : "journey",
        `: ${p.field} — ${p.reason}`))));
    }
    draw(); renderPanel();
  }
  async function check(r) {
    if (r.ok) { showProblems([]); return true; }
    if (r.status === 400) { showProblems(takeProblems(r.data)); say(`Not valid: ${problems.length} problem(s), marked on the canvas.`, false); }
    else say(r.data.message || `error ${r.status}`, false);
    return false;
  }
  async function validate() {
    say("Validating…", true);
    if (await check(await api("POST", "/1/journeys/validate", body()))) say("Valid: ready to publish.", true);
  }
  async function save() {
    say("Saving…", true);
    const r = jid ? await api("PUT", `/1/journeys/${jid}`, body()) : await api("POST", "/1/journeys", body());
    if (!(await check(r))) return false;
    if (!jid) { jid = r.data.id; history.replaceState(null, "", `${S.base}/journeys/${jid}`); }
    setStatus(r.data.status, r.data.version);
    say(["published", "paused"].includes(status) ? "Saved as the draft: people keep following the published version until you publish again." : "Saved.", true);
    return true;
  }
  async function transition(name) {
    if (name === "publish" && !(await save())) return;
    if (name === "stop" && !window.confirm("Stop this journey for good? Everyone in it exits.")) return;
    say({publish: "Publishing…", pause: "Pausing…", resume: "Resuming…", stop: "Stopping…"}[name], true);
    const r = await api("POST", `/1/journeys/${jid}/${name}`);
    if (!(await check(r))) return;
    setStatus(r.data.status, r.data.version);
    say({publish: `Published version ${r.data.version}.`, pause: "Paused.", resume: "Running again.", stop: "Stopped."}[name], true);
    poll();
  }
  function setStatus(s, version) {
    status = s;
    document.querySelector("[data-journey-status]").textContent = s;
    const show = {"#pause-journey": s === "published", "#resume-journey": s === "paused", "#stop-journey": ["published", "paused"].includes(s),
      "#publish-journey": s !== "stopped", "#save-journey": s !== "stopped"};
    for (const [sel, on] of Object.entries(show)) { const b = document.querySelector(sel); if (b) b.hidden = !on; }
    if (version) { const v = document.querySelector("[data-journey-version]"); if (v) v.textContent = `version ${version}`; }
  }
  let timer = null;
  async function poll() {
    clearTimeout(timer);
    if (!jid || status === "new" || status === "draft") return;
    const r = await api("GET", `/1/journeys/${jid}/report`);
    if (r.ok) {
      report = r.data;
      for (const k of ["entered", "active", "converted"]) document.querySelector(`[data-figure=${k}]`).textContent = report[k].toLocaleString("en-US");
      if (!drag) draw();
    }
    timer = setTimeout(poll, document.hidden ? 10000 : 2000);
  }
  let dirty = false;
  function changed() { dirty = true; draw(); }
  window.addEventListener("beforeunload", (ev) => { if (dirty && editable) ev.preventDefault(); });

  const on = (sel, fn) => { const b = document.querySelector(sel); if (b) b.addEventListener("click", fn); };
  on("#add-node", () => addNode(document.getElementById("add-type").value));
  on("#journey-settings", () => select(null));
  on("#validate-journey", validate);
  on("#save-journey", async () => { if (await save()) dirty = false; });
  on("#publish-journey", async () => { await transition("publish"); dirty = false; });
  on("#pause-journey", () => transition("pause"));
  on("#resume-journey", () => transition("resume"));
  on("#stop-journey", () => transition("stop"));
  setStatus(status, S.journey.version);
  draw(); renderPanel(); poll();
})();
