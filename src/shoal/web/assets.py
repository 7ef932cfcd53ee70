"""The dashboard's stylesheet and script, served from memory at
`/ui/static/`: hand-written, no framework, nothing fetched from elsewhere."""

from __future__ import annotations

CSS = """
:root { --fg: #1d232b; --muted: #687382; --line: #dde2e8; --bg: #f6f8fa; --accent: #1f6feb;
  --submitted: #8c959f; --pending: #bf8700; --runnable: #9a6700; --starting: #0969da;
  --running: #1f6feb; --succeeded: #1a7f37; --failed: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: #fff; }
header { display: flex; gap: 24px; align-items: center; padding: 10px 24px;
  background: #0d1117; color: #fff; }
header a { color: #c9d1d9; text-decoration: none; margin-right: 16px; }
header a[aria-current], header a:hover { color: #fff; }
header .brand { font-weight: 700; font-size: 16px; color: #fff; }
main { padding: 16px 24px 48px; max-width: 1500px; }
h1 { font-size: 20px; margin: 18px 0 8px; display: flex; gap: 10px; align-items: center; }
h2 { font-size: 16px; margin: 24px 0 8px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
a { color: var(--accent); }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; background: var(--bg); }
tbody tr:hover { background: #f3f6fb; }
.num { font-variant-numeric: tabular-nums; }
td a.mono, td time, table.jobs td { white-space: nowrap; }
table.jobs td .reason { white-space: normal; }
a.num { display: inline-block; min-width: 2.5em; text-decoration: none; font-weight: 600; }
a.num.zero { color: #b6bec8; font-weight: 400; }
.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.reason { color: #57606a; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 11.5px;
  font-weight: 700; color: #fff; background: var(--submitted); letter-spacing: .02em; }
.s-PENDING { background: var(--pending); } .s-RUNNABLE { background: var(--runnable); }
.s-STARTING { background: var(--starting); } .s-RUNNING { background: var(--running); }
.s-SUCCEEDED { background: var(--succeeded); } .s-FAILED { background: var(--failed); }
.f-SUBMITTED { fill: var(--submitted); background: var(--submitted); }
.f-PENDING { fill: var(--pending); background: var(--pending); }
.f-RUNNABLE { fill: var(--runnable); background: var(--runnable); }
.f-STARTING { fill: var(--starting); background: var(--starting); }
.f-RUNNING { fill: var(--running); background: var(--running); }
.f-SUCCEEDED { fill: var(--succeeded); background: var(--succeeded); }
.f-FAILED { fill: var(--failed); background: var(--failed); }
.f-gone { fill: #d0d7de; }
svg.bar { width: 100%; max-width: 640px; height: 12px; display: block; background: #eaeef2;
  border-radius: 3px; }
td svg.bar { width: 120px; height: 8px; display: inline-block; margin-right: 6px; }
.legend { margin-right: 12px; white-space: nowrap; }
.sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
meter { width: 120px; vertical-align: middle; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 8px 0; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; }
.flash, .error { padding: 8px 12px; border-radius: 6px; }
.flash { background: #ddf4ff; border: 1px solid #54aeff; }
.error { background: #ffebe9; border: 1px solid #ff8182; }
form.filters { display: flex; gap: 14px; align-items: end; flex-wrap: wrap; margin: 8px 0; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
input, select, button { font: inherit; padding: 4px 8px; border: 1px solid #c4ccd5;
  border-radius: 6px; }
button { background: #f6f8fa; cursor: pointer; }
button:hover { background: #eef1f4; }
button:disabled { opacity: .45; cursor: default; }
button.danger { color: #fff; background: var(--failed); border-color: var(--failed); }
.actions { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin: 6px 0 10px; }
form.inline { display: flex; gap: 6px; align-items: center; }
.graph-wrap { overflow-x: auto; }
svg.graph text { font-size: 12px; fill: #fff; }
svg.graph text.small { font-size: 10.5px; fill: #f0f3f6; }
svg.graph .edge { fill: none; stroke: #8c959f; stroke-width: 1.5; }
svg.graph text.edge-label { fill: var(--muted); font-size: 10px; }
svg.graph .node { stroke: rgba(0,0,0,.15); }
.log { background: #0d1117; color: #e6edf3; padding: 8px 10px; border-radius: 6px;
  max-height: 480px; overflow: auto;
  font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace;
  white-space: pre-wrap; word-break: break-all; min-height: 3em; }
.log .line time { color: #7d8590; margin-right: 10px; user-select: none; }
.log .sep { color: #d29922; }
.pager a { margin-right: 12px; }
code.command span + span { margin-left: .5em; }
code.command span { background: var(--bg); padding: 0 3px; border-radius: 3px; }
"""

JS = r"""
"use strict";
(function () {
  var STATUSES = ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"];

  function pad(n, w) { n = String(n); while (n.length < (w || 2)) n = "0" + n; return n; }
  function clock(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function localTime(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clock(ms);
  }
  function localize(root) {
    root.querySelectorAll("time[data-ms]").forEach(function (t) {
      var ms = Number(t.getAttribute("data-ms"));
      if (!ms) return;
      t.textContent = t.closest(".log") ? clock(ms) : localTime(ms);
      t.title = new Date(ms).toISOString();
    });
  }
  function stamp(id, ms) {
    var el = document.getElementById(id);
    if (!el) return;
    el.textContent = "";
    if (!ms) { el.textContent = "-"; return; }
    var t = document.createElement("time");
    t.setAttribute("data-ms", String(ms));
    t.textContent = localTime(ms);
    el.appendChild(t);
  }
  function vcpus(n) { return String(Math.round(n * 1000) / 1000); }

  // Polls `url()` every `ms` until `handle` returns false. Nothing while the
  // tab is hidden; errors (a restarting server) just wait for the next turn.
  function poll(url, ms, handle) {
    function tick() {
      if (document.hidden) { setTimeout(tick, ms); return; }
      var again = true;
      fetch(url(), { headers: { Accept: "application/json" }, cache: "no-store",
                     credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (doc) { again = handle(doc) !== false; })
        .catch(function () {})
        .then(function () { if (again) setTimeout(tick, ms); });
    }
    setTimeout(tick, ms);
  }

  document.addEventListener("submit", function (ev) {
    var button = ev.submitter;
    var message = button && button.getAttribute("data-confirm");
    if (message && !window.confirm(message)) ev.preventDefault();
  });

  localize(document);

  var overview = document.querySelector('[data-live="overview"]');
  if (overview) {
    poll(function () { return "/ui/api/overview"; }, 2000, function (doc) {
      overview.querySelectorAll("[data-count]").forEach(function (el) {
        var key = el.getAttribute("data-count");
        var cut = key.lastIndexOf("|");
        var n = (doc.counts[key.slice(0, cut)] || {})[key.slice(cut + 1)] || 0;
        el.textContent = String(n);
        el.classList.toggle("zero", !n);
      });
      overview.querySelectorAll("[data-used]").forEach(function (el) {
        el.textContent = vcpus(doc.used[el.getAttribute("data-used")] || 0);
      });
      overview.querySelectorAll("meter[data-meter]").forEach(function (m) {
        m.value = doc.used[m.getAttribute("data-meter")] || 0;
      });
    });
  }

  var job = document.querySelector("[data-job-id]");
  if (!job) return;
  var base = "/ui/api/jobs/" + encodeURIComponent(job.getAttribute("data-job-id"));
  var attemptsHtml = null;

  function progress(summary) {
    var bar = document.getElementById("array-progress");
    var total = 0, x = 0;
    STATUSES.forEach(function (s) { total += summary[s] || 0; });
    STATUSES.forEach(function (s) {
      var n = summary[s] || 0;
      var width = total ? 1000 * n / total : 0;
      var rect = bar && bar.querySelector('rect[data-status="' + s + '"]');
      if (rect) {
        rect.setAttribute("x", x.toFixed(1));
        rect.setAttribute("width", width.toFixed(1));
      }
      x += width;
      var count = document.querySelector('[data-summary="' + s + '"]');
      if (count) count.textContent = String(n);
    });
    var done = document.getElementById("array-done");
    if (done) done.textContent = String((summary.SUCCEEDED || 0) + (summary.FAILED || 0));
  }

  if (job.getAttribute("data-terminal") !== "1") {
    poll(function () { return base; }, 1000, function (doc) {
      var badge = document.getElementById("job-status");
      badge.textContent = doc.status;
      badge.className = "badge s-" + doc.status;
      document.getElementById("job-reason").textContent = doc.statusReason;
      stamp("job-started", doc.startedAt);
      stamp("job-stopped", doc.stoppedAt);
      var body = document.getElementById("attempts");
      if (body && doc.attemptsHtml !== attemptsHtml) {
        attemptsHtml = doc.attemptsHtml;
        body.innerHTML = doc.attemptsHtml;  // rendered and escaped by the server
        localize(body);
      }
      if (doc.summary) progress(doc.summary);
      if (doc.terminal) {
        document.querySelectorAll("[data-stop]").forEach(function (b) { b.disabled = true; });
        job.setAttribute("data-terminal", "1");
        return false;
      }
    });
  }

  var lines = document.getElementById("log-lines");
  if (lines) {
    var state = {
      stream: lines.getAttribute("data-stream") || "",
      token: lines.getAttribute("data-token") || "",
      follow: lines.getAttribute("data-follow") || "0"
    };
    lines.scrollTop = lines.scrollHeight;
    poll(function () {
      return base + "/log?" + new URLSearchParams(state).toString();
    }, 1000, function (doc) {
      var bottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 8;
      if (doc.switched && lines.children.length) {
        var sep = document.createElement("div");
        sep.className = "line sep";
        sep.textContent = "--- next attempt: " + doc.stream + " ---";
        lines.appendChild(sep);
      }
      state.stream = doc.stream;
      state.token = doc.token;
      document.getElementById("log-where").textContent = doc.where;
      doc.events.forEach(function (e) {
        var line = document.createElement("div");
        line.className = "line";
        var t = document.createElement("time");
        t.setAttribute("data-ms", String(e[0]));
        t.textContent = clock(e[0]);
        line.appendChild(t);
        line.appendChild(document.createTextNode(e[1]));
        lines.appendChild(line);
      });
      if (bottom) lines.scrollTop = lines.scrollHeight;
      return !(doc.terminal && !doc.events.length && !doc.switched);
    });
  }
})();
"""

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1f6feb"/>'
    '<path d="M3 10c2-3 4-3 5 0s3 3 5 0" stroke="#fff" stroke-width="1.6" fill="none"/></svg>'
)

FILES: dict[str, tuple[str, bytes]] = {
    "favicon.svg": ("image/svg+xml", FAVICON.encode()),
    "dashboard.css": ("text/css; charset=utf-8", CSS.encode()),
    "dashboard.js": ("text/javascript; charset=utf-8", JS.encode()),
}
