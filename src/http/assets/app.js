// durq dashboard: polls /v1/dashboard every second and redraws. No framework, no build step.
"use strict";
(function () {
  const HISTORY = 60;
  const history = [];  // {t, completed, failed}
  let polls = 0;

  const $ = (id) => document.getElementById(id);
  // The session's CSRF token (empty without a login); sent back on every change.
  const meta = document.querySelector('meta[name="csrf-token"]');
  const CSRF = meta ? meta.getAttribute("content") : "";
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  const fmt = (x) => (x === null || x === undefined) ? "-" : (Math.round(x * 100) / 100).toString();
  const age = (s) => s === null || s === undefined ? "-" : s < 60 ? s.toFixed(1) + "s" : s < 3600 ? (s / 60).toFixed(1) + "m" : (s / 3600).toFixed(1) + "h";

  function drawQueues(stats) {
    const body = $("queues").tBodies[0];
    body.replaceChildren();
    const names = Object.keys(stats.queues).sort();
    $("no-queues").hidden = names.length > 0;
    for (const name of names) {
      const q = stats.queues[name];
      const tr = el("tr", { "data-queue": name });
      tr.appendChild(el("td", {}, name));
      for (const st of ["waiting", "delayed", "active", "dead", "completed"]) {
        tr.appendChild(el("td", { class: "num", "data-state": st }, q[st]));
      }
      tr.appendChild(el("td", { "data-state": "paused" }, q.paused ? "paused" : "no"));
      tr.appendChild(el("td", { class: "num" }, age(q.oldest_waiting_secs)));
      body.appendChild(tr);
    }
  }

  function spark(svg, values) {
    svg.replaceChildren();
    if (values.length < 2) return;
    const max = Math.max(1e-9, ...values);
    const pts = values.map((v, i) => `${(i / (HISTORY - 1)) * 300},${58 - (v / max) * 56}`).join(" ");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts);
    svg.appendChild(line);
  }

  function drawRates(metrics) {
    let completed = 0, failed = 0;
    for (const s of metrics.series) { completed += s.completed; failed += s.failed; }
    history.push({ t: performance.now() / 1000, completed, failed });
    while (history.length > HISTORY + 1) history.shift();
    const tput = [], fails = [];
    for (let i = 1; i < history.length; i++) {
      const a = history[i - 1], b = history[i];
      const dt = Math.max(b.t - a.t, 1e-3);
      const dc = Math.max(0, b.completed - a.completed), df = Math.max(0, b.failed - a.failed);
      tput.push(dc / dt);
      fails.push(dc + df > 0 ? df / (dc + df) : 0);
    }
    spark($("spark-throughput"), tput);
    spark($("spark-failures"), fails);
    $("throughput").textContent = fmt(tput.length ? tput[tput.length - 1] : 0);
    $("failure-rate").textContent = fmt(100 * (fails.length ? fails[fails.length - 1] : 0)) + "%";
  }

  function drawWorkers(metrics) {
    $("workers-busy").textContent = metrics.busy;
    $("workers-idle").textContent = Math.max(0, metrics.workers - metrics.busy);
    const ul = $("breakers");
    ul.replaceChildren();
    const kinds = Object.keys(metrics.breakers || {});
    if (!kinds.length) ul.appendChild(el("li", { class: "muted" }, "none"));
    for (const k of kinds) {
      const st = metrics.breakers[k];
      ul.appendChild(el("li", { class: "breaker-" + st }, `${k}: ${st.replace("_", "-")}`));
    }
    const alerts = metrics.alerts_firing || [];
    $("alerts-section").hidden = alerts.length === 0;
    $("alerts").replaceChildren(...alerts.map((a) => el("li", {}, a)));
  }

  function drawLatency(metrics) {
    const body = $("latency").tBodies[0];
    body.replaceChildren();
    for (const s of metrics.series) {
      const tr = el("tr", { "data-queue": s.queue, "data-kind": s.kind });
      const cells = [s.queue, s.kind, s.completed, s.failed, s.dead,
        s.success_rate === null ? "-" : fmt(100 * s.success_rate) + "%",
        fmt(s.processing.p50_ms), fmt(s.processing.p95_ms), fmt(s.processing.p99_ms),
        fmt(s.wait.p50_ms), fmt(s.wait.p95_ms), fmt(s.wait.p99_ms)];
      cells.forEach((c, i) => tr.appendChild(el("td", i > 1 ? { class: "num" } : {}, c)));
      body.appendChild(tr);
    }
  }

  function drawDead(dead) {
    const body = $("dead").tBodies[0];
    body.replaceChildren();
    let n = 0;
    for (const queue of Object.keys(dead).sort()) {
      for (const job of dead[queue]) {
        n++;
        const tr = el("tr", { "data-job": job.id, "data-queue": queue });
        const last = job.errors.length ? job.errors[job.errors.length - 1].error : "";
        tr.appendChild(el("td", {}, queue));
        tr.appendChild(el("td", {}, job.id));
        tr.appendChild(el("td", {}, job.kind));
        tr.appendChild(el("td", { class: "num" }, job.attempts));
        const err = el("td", { class: "error", title: last }, last);
        tr.appendChild(err);
        const td = el("td");
        const b = el("button", { class: "requeue", "data-id": job.id, "data-queue": queue }, "Requeue");
        b.addEventListener("click", () => requeue(b, queue, job.id));
        td.appendChild(b);
        tr.appendChild(td);
        body.appendChild(tr);
      }
    }
    $("no-dead").hidden = n > 0;
  }

  async function requeue(button, queue, id) {
    button.disabled = true;
    try {
      const r = await fetch(`/v1/queues/${encodeURIComponent(queue)}/dlq/requeue`, {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": CSRF },
        body: JSON.stringify({ ids: [id] }),
      });
      if (!r.ok) throw new Error((await r.json()).error || r.statusText);
      button.textContent = "Requeued";
      await poll();
    } catch (e) {
      button.disabled = false;
      button.title = String(e);
      setStatus(false, "requeue failed: " + e);
    }
  }

  function setStatus(ok, text) {
    const s = $("status");
    s.className = "status " + (ok ? "ok" : "bad");
    s.textContent = text;
  }

  let inflight = false;
  async function poll() {
    if (inflight) return;
    inflight = true;
    try {
      const r = await fetch("/v1/dashboard", { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) throw new Error(r.statusText);
      const d = await r.json();
      drawQueues(d.stats);
      drawRates(d.metrics);
      drawWorkers(d.metrics);
      drawLatency(d.metrics);
      drawDead(d.dead);
      polls++;
      document.body.setAttribute("data-polls", String(polls));
      $("updated").textContent = new Date().toLocaleTimeString();
      setStatus(true, "live");
    } catch (e) {
      setStatus(false, "disconnected");
    } finally {
      inflight = false;
    }
  }

  poll();
  setInterval(poll, 1000);
})();
