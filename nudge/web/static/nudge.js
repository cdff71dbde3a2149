// The dashboard's own script (no inline scripts: the CSP forbids them).
"use strict";

function csrfToken() {
  const m = document.cookie.match(/(?:^|; )nudge_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function postJSON(url, body) {
  const resp = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken()},
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  return {ok: resp.ok, status: resp.status, data};
}

function showError(form, message) {
  const box = form.querySelector("[data-error]");
  if (box) { box.textContent = message; box.hidden = false; box.focus(); }
}

// Forms that post JSON to the API (sign-in steps): data-json-post="/auth/login".
// On success: data-next-<stage> or data-next decides where to go.
document.addEventListener("submit", async (ev) => {
  const form = ev.target;
  if (!form.matches("form[data-json-post]")) return;
  ev.preventDefault();
  const body = Object.fromEntries(new FormData(form).entries());
  const button = form.querySelector("button[type=submit]");
  if (button) button.disabled = true;
  const r = await postJSON(form.dataset.jsonPost, body);
  if (button) button.disabled = false;
  if (!r.ok) { showError(form, r.data.error || r.data.message || ("error " + r.status)); return; }
  if (r.data.recovery_codes && form.dataset.showCodes) {
    const out = document.querySelector(form.dataset.showCodes);
    out.querySelector("pre").textContent = r.data.recovery_codes.join("\n");
    out.hidden = false; form.hidden = true; return;
  }
  const stage = r.data.stage || "full";
  const next = form.dataset["next" + stage[0].toUpperCase() + stage.slice(1)] || form.dataset.next;
  window.location.assign(next || "/ui");
});

document.addEventListener("click", async (ev) => {
  const t = ev.target;
  if (t.matches("[data-signout]")) {
    await postJSON("/auth/logout");
    window.location.assign("/ui/login");
  }
  // Confirmation dialogs: <button data-open="#dialog-id">.
  if (t.matches("[data-open]")) document.querySelector(t.dataset.open).showModal();
  if (t.matches("[data-close]")) t.closest("dialog").close();
});

document.addEventListener("change", (ev) => {
  if (ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
});

document.addEventListener("htmx:afterRequest", (ev) => {
  const d = ev.target.closest("dialog");
  if (d && ev.detail.successful) d.close();
});

// Every action shows progress: while a request sent by a button (erase, suppress, send,
// pause, stop, save, preview, ...) runs, the button is disabled and busy and a "Working…"
// status follows it. Forms with their own indicator (hx-indicator / hx-disabled-elt, e.g.
// Settings' "Saving…") and live requests (typing in the builder) are left alone.
document.addEventListener("htmx:beforeRequest", (ev) => {
  const elt = ev.detail.elt, how = ev.detail.requestConfig && ev.detail.requestConfig.triggeringEvent;
  if (elt.hasAttribute("hx-indicator") || elt.hasAttribute("hx-disabled-elt")) return;
  const b = elt instanceof HTMLButtonElement ? elt
    : elt instanceof HTMLFormElement && how && how.type === "submit" ? elt.querySelector("button[type=submit], button:not([type])") : null;
  if (!b || b.disabled) return;
  b.disabled = true;
  b.setAttribute("aria-busy", "true");
  const note = document.createElement("span");
  note.className = "busy muted";
  note.setAttribute("role", "status");
  note.textContent = " Working…";
  b.after(note);
  const done = () => { b.disabled = false; b.removeAttribute("aria-busy"); note.remove(); };
  elt.addEventListener("htmx:afterRequest", done, {once: true});
});

// Charts: <div class="chart" data-chart='{"type": "line", "x": [...], "series": {...}}'>.
function drawCharts(root) {
  if (!window.echarts) return;
  root.querySelectorAll("[data-chart]").forEach((el) => {
    if (el.dataset.drawn) return;
    const spec = JSON.parse(el.dataset.chart);
    const series = Object.entries(spec.series).map(([name, data]) => (
      {name, type: spec.type || "line", data, smooth: true, showSymbol: false}));
    const chart = echarts.init(el, null, {renderer: "svg"});
    chart.setOption({
      aria: {enabled: true}, tooltip: {trigger: "axis"}, legend: {bottom: 0},
      grid: {left: 48, right: 16, top: 16, bottom: 48},
      xAxis: {type: "category", data: spec.x}, yAxis: {type: "value"}, series,
    });
    el.dataset.drawn = "1";
    window.addEventListener("resize", () => chart.resize());
  });
}
document.addEventListener("DOMContentLoaded", () => drawCharts(document));
document.addEventListener("htmx:afterSettle", (ev) => drawCharts(ev.target));

// Live event stream (Events page): <ol data-sse="/1/analytics/live/stream" data-account="...">.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-sse]").forEach((list) => {
    const src = new EventSource(list.dataset.sse);
    const status = document.querySelector(list.dataset.status || "#stream-status");
    src.onopen = () => { if (status) status.textContent = "connected"; };
    src.onerror = () => { if (status) status.textContent = "reconnecting…"; };
    src.addEventListener("event", (m) => {
      const e = JSON.parse(m.data);
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = JSON.stringify(e);
      li.appendChild(code);
      list.prepend(li);
      while (list.children.length > 200) list.lastChild.remove();
    });
  });
});
