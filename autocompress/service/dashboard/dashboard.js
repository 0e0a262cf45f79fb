// autocompress dashboard: a page over the service's own HTTP API (/v1/...), nothing else.
//
// Security: the bearer token is typed once and kept in sessionStorage (this tab only; never
// in a URL, a cookie or a log) and sent as an Authorization header. Every string that comes
// from a spec or a run is put in the page as text (textContent; no HTML is ever parsed), and the
// Content-Security-Policy the server sends allows no inline script. A search's report is
// shown in a sandboxed frame (no scripts, an opaque origin: it cannot read the token).
"use strict";

(() => {
  const TOKEN_KEY = "autocompress.token";
  const POLL_ACTIVE_MS = 2000;  // a search that runs or waits
  const POLL_IDLE_MS = 10000;  // nothing runs
  const PAGE = 200;  // searches per request (the API's largest page)
  const STATES = ["queued", "running", "done", "failed", "cancelled", "interrupted"];

  const view = document.getElementById("view");
  const live = document.getElementById("live");
  const forget = document.getElementById("forget");
  let timer = null;
  let generation = 0;  // a view's polls stop once another view is shown
  let filter = "";

  // ------------------------------------------------------------------ building the page

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(...nodes) {
    view.replaceChildren(...nodes);
  }

  function table(headers, rows, options) {
    const textual = new Set((options && options.text) || []);
    const head = el("tr", null, headers.map((h, i) => el("th", { class: textual.has(i) ? "text" : null, text: h })));
    const body = rows.map((cells) => el("tr", null, cells.map((cell, i) =>
      el("td", { class: textual.has(i) ? "text" : null }, cell))));
    return el("table", options && options.id ? { id: options.id } : null, el("thead", null, head), el("tbody", null, body));
  }

  const fmt = {
    bytes(n) {
      if (n === null || n === undefined) return "–";
      const units = ["B", "KB", "MB", "GB"];
      let value = n, unit = 0;
      while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit++; }
      return `${value.toFixed(unit ? 2 : 0)} ${units[unit]}`;
    },
    pct(x, digits = 1) { return x === null || x === undefined ? "–" : `${(100 * x).toFixed(digits)} %`; },
    acc(x) { return x === null || x === undefined ? "–" : `${x.toFixed(2)} %`; },
    pts(x) { return x === null || x === undefined ? "–" : `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(2)}`; },
    mj(x) { return x === null || x === undefined ? "–" : `${x.toPrecision(3)} mJ`; },
    num(x) { return x === null || x === undefined ? "–" : Number(x).toLocaleString("en"); },
    seconds(s) {
      if (s === null || s === undefined) return "–";
      s = Math.round(s);
      if (s < 60) return `${s} s`;
      if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
      return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, "0")} min`;
    },
    time(t) {
      if (!t) return "–";
      const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
      return isNaN(date) ? String(t) : date.toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" });
    },
  };

  function stateBadge(state) {
    return el("span", { class: `state state-${STATES.includes(state) ? state : "other"}`, text: state || "?" });
  }

  // ------------------------------------------------------------------ the API

  class AuthError extends Error {}

  class ApiError extends Error {
    constructor(status, body) {
      super(describe(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describe(status, body) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && typeof body.message === "string") return body.message;
    return `the service answered ${status}`;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(path, options) {
    const headers = Object.assign({}, (options && options.headers) || {}, { Authorization: `Bearer ${token()}` });
    const response = await fetch(path, Object.assign({}, options || {}, { headers, cache: "no-store", credentials: "omit" }));
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw new AuthError("the service refused the token");
    }
    return response;
  }

  async function answered(path, options) {
    // the response of a request that succeeded; else an ApiError with the service's own message
    const response = await api(path, options);
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    return response;
  }

  async function getJSON(path, options) {
    return (await answered(path, options)).json().catch(() => null);
  }

  function failed(error) {
    if (error instanceof AuthError) {
      refused();
      return true;
    }
    return false;
  }

  // ------------------------------------------------------------------ token

  function signIn(message) {
    forget.hidden = true;
    const input = el("input", { type: "password", id: "token", autocomplete: "off", size: 48,
                                placeholder: "the service's bearer token", required: true });
    const form = el("form", { class: "card", id: "sign-in" },
      el("h1", { text: "Sign in" }),
      el("p", { class: "muted", text: "The token the service was started with (--token or AUTOCOMPRESS_TOKEN; "
        + "on loopback without one, the file runs/service-token). It is kept for this tab only." }),
      message ? el("div", { class: "errors", text: message }) : null,
      el("div", { class: "row" }, input, el("button", { type: "submit", class: "primary", text: "Sign in" })));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        await getJSON("/v1/policy");  // checks the token; carries no run data
      } catch (error) {
        if (!failed(error)) signIn(`The service could not be reached: ${error.message}`);
        return;
      }
      route();
    });
    show(form);
    input.focus();
  }

  function refused() {
    stopPolling();
    forget.hidden = true;
    live.textContent = "";
    show(el("div", { class: "fatal", id: "refused" },
      el("h1", { text: "The service refused the token" }),
      el("p", { text: "Nothing was shown: every request for searches needs the token the service was started "
        + "with. Check it and sign in again." }),
      el("button", { type: "button", class: "primary", text: "Sign in again", onclick: () => signIn() })));
  }

  forget.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    stopPolling();
    signIn();
  });

  // ------------------------------------------------------------------ polling

  function stopPolling() {
    generation++;
    if (timer) clearTimeout(timer);
    timer = null;
  }

  function poll(refresh, active) {
    // one pending refresh at a time: an action's own refresh replaces the scheduled one
    const mine = generation;
    if (timer) clearTimeout(timer);
    timer = setTimeout(async () => {
      if (mine !== generation) return;
      await refresh(mine);
    }, active ? POLL_ACTIVE_MS : POLL_IDLE_MS);
  }

  function stamp() {
    live.textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
  }

  // ------------------------------------------------------------------ searches

  async function allSearches() {
    const searches = [];
    let after = null;
    do {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (after) query.set("after", after);
      const page = await getJSON(`/v1/searches?${query}`);
      searches.push(...page.searches);
      after = page.next;
    } while (after);
    return searches;
  }

  function progressText(p) {
    if (!p) return "–";
    const parts = [`${p.full_evaluations}${p.max_full_evaluations ? ` / ${p.max_full_evaluations}` : ""} full`,
                   `${p.proxy_evaluations} probes`];
    if (p.early_stopped) parts.push(`${p.early_stopped} stopped early`);
    if (p.in_flight) parts.push(`${p.in_flight} in flight`);
    return parts.join(" · ");
  }

  function bestText(best) {
    if (!best) return "–";
    const held = best.holdout ? ` (held out ${fmt.pts(best.holdout.accuracy_drop)})` : "";
    return `${fmt.pct(best.memory_saving)} saved, drop ${fmt.pts(best.accuracy_drop)} pts${held}`;
  }

  async function showSearches() {
    const mine = generation;
    const select = el("select", { id: "state-filter" },
      el("option", { value: "", text: "every state" }),
      STATES.map((s) => el("option", { value: s, text: s, selected: s === filter })));
    const count = el("span", { class: "muted", id: "count" });
    const holder = el("div", { class: "scroll" }, el("p", { class: "muted", text: "Loading…" }));
    select.addEventListener("change", () => { filter = select.value; render(); });
    show(el("div", { class: "row" }, el("h1", { text: "Searches" }), el("span", { class: "spacer" }),
                   el("label", null, "State ", select), count),
         holder);
    let searches = [];

    function render() {
      const shown = filter ? searches.filter((s) => s.state === filter) : searches;
      count.textContent = `${shown.length} of ${searches.length}`;
      const rows = shown.map((s) => {
        const job = s.job || {};
        return [
          el("a", { href: `#/search/${encodeURIComponent(s.id)}`, class: "search-link", text: s.name || s.id }),
          el("code", { text: s.id }),
          stateBadge(s.state),
          progressText(s.progress),
          bestText(s.best),
          fmt.time(s.submitted_at),
          fmt.time(job.started_at),
          fmt.time(job.ended_at),
          fmt.seconds(s.progress ? s.progress.wall_seconds : null),
        ];
      });
      holder.replaceChildren(rows.length ? table(
        ["name", "id", "state", "progress", "best feasible", "submitted", "started", "ended", "wall time"], rows,
        { text: [0, 1, 3, 4], id: "searches" }) : el("p", { class: "muted", id: "empty",
        text: searches.length ? "No search in this state." : "No search yet: submit one." }));
    }

    async function refresh(token_) {
      try {
        searches = await allSearches();
      } catch (error) {
        if (failed(error)) return;
        holder.replaceChildren(el("div", { class: "errors", text: error.message }));
        poll(refresh, false);
        return;
      }
      if (token_ !== generation) return;
      render();
      stamp();
      poll(refresh, searches.some((s) => s.state === "running" || s.state === "queued"));
    }

    await refresh(mine);
  }

  // ------------------------------------------------------------------ one search

  const SERIES = [
    // [key in the document, label, colour, marker]
    ["feasible", "Pareto point, feasible", "#1a7f37", "circle"],
    ["infeasible", "Pareto point, infeasible", "#c4321b", "circle"],
    ["near", "near miss", "#9a6700", "diamond"],
    ["stopped", "stopped early (estimate)", "#8250df", "cross"],
    ["holdout", "held-out accuracy of a point", "#2f5bd3", "ring"],
  ];

  function plotSeries(doc, y) {
    // the plotted points, per series: x (bytes), y (accuracy), and the ids, in pareto.json's order
    const out = Object.fromEntries(SERIES.map(([key]) => [key, { x: [], y: [], ids: [] }]));
    const add = (key, x, value, id) => {
      if (x === null || x === undefined || value === null || value === undefined) return;
      out[key].x.push(x); out[key].y.push(value); out[key].ids.push(id);
    };
    for (const p of doc.points || []) {
      add(p.feasible ? "feasible" : "infeasible", y.x(p), y.y(p), p.id);
      if (y.holdout && p.holdout) add("holdout", y.x(p), p.holdout.accuracy, p.id);
    }
    for (const p of doc.near_misses || []) add("near", y.x(p), y.y(p), p.id);
    if (y.stopped) for (const p of doc.early_stopped || []) add("stopped", y.x(p), p.accuracy_estimate, p.id);
    return out;
  }

  function marker(ctx, shape, x, y, size) {
    ctx.beginPath();
    if (shape === "diamond") {
      ctx.moveTo(x, y - size); ctx.lineTo(x + size, y); ctx.lineTo(x, y + size); ctx.lineTo(x - size, y); ctx.closePath();
      ctx.fill();
    } else if (shape === "cross") {
      ctx.moveTo(x - size, y - size); ctx.lineTo(x + size, y + size); ctx.moveTo(x + size, y - size); ctx.lineTo(x - size, y + size);
      ctx.stroke();
    } else if (shape === "ring") {
      ctx.arc(x, y, size, 0, 2 * Math.PI); ctx.stroke();
    } else {
      ctx.arc(x, y, size, 0, 2 * Math.PI); ctx.fill();
    }
  }

  function drawPoints(shape) {
    return (u, seriesIdx) => {
      const [xs, ys] = u.data[seriesIdx];
      const series = u.series[seriesIdx];
      const ratio = uPlot.pxRatio;
      const ctx = u.ctx;
      ctx.save();
      ctx.beginPath();
      ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
      ctx.clip();
      ctx.fillStyle = series._stroke || "#000";
      ctx.strokeStyle = series._stroke || "#000";
      ctx.lineWidth = 2 * ratio;
      for (let i = 0; i < xs.length; i++) {
        marker(ctx, shape, u.valToPos(xs[i], "x", true), u.valToPos(ys[i], "y", true), 4.5 * ratio);
      }
      ctx.restore();
      return null;
    };
  }

  function limitLines(limits) {
    // the constraints, drawn as dashed lines: an accuracy floor (y) and a largest size or energy (x)
    return (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.setLineDash([6 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
      ctx.lineWidth = 1.5 * uPlot.pxRatio;
      ctx.strokeStyle = "#c4321b";
      const { left, top, width, height } = u.bbox;
      if (limits.y !== null && limits.y !== undefined) {
        const y = u.valToPos(limits.y, "y", true);
        if (y >= top && y <= top + height) { ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke(); }
      }
      if (limits.x !== null && limits.x !== undefined) {
        const x = u.valToPos(limits.x, "x", true);
        if (x >= left && x <= left + width) { ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke(); }
      }
      ctx.restore();
    };
  }

  function paddedRange(extra) {
    return (u, min, max) => {
      const values = [min, max, ...extra.filter((v) => v !== null && v !== undefined)].filter((v) => v !== null && isFinite(v));
      if (!values.length) return [0, 1];
      let lo = Math.min(...values), hi = Math.max(...values);
      const pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.05 || 1;
      return [lo - pad, hi + pad];
    };
  }

  function scatter(holder, key, options) {
    // one uPlot scatter (mode 2: each series its own x and y); returns the chart, or null with nothing to draw
    const data = plotSeries(options.doc, options);
    const used = SERIES.filter(([k]) => data[k].x.length);
    holder.replaceChildren(el("h3", { text: options.title }));
    if (!used.length) {
      holder.append(el("p", { class: "muted", text: "No point yet." }));
      return null;
    }
    const width = Math.max(360, holder.clientWidth - 16);
    const chart = new uPlot({
      mode: 2, width, height: 320,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false, range: paddedRange([options.limits.x]) },
                y: { range: paddedRange([options.limits.y]) } },
      axes: [{ label: options.xLabel, values: (u, splits) => splits.map(options.xTick) },
             { label: "top-1 accuracy (%)", size: 60 }],
      series: [null, ...used.map(([k, label, colour, shape]) => ({
        label: `${label} (${data[k].x.length})`, stroke: colour, fill: colour, paths: drawPoints(shape),
        points: { show: false } }))],
      hooks: { draw: [limitLines(options.limits)] },
    }, [null, ...used.map(([k]) => [data[k].x, data[k].y])], holder);
    chart.root.dataset.plot = key;
    holder.append(el("p", { class: "legend-note", text: options.note }));
    // what the chart holds, per series, for a reader (and for the browser tests): ids with their coordinates
    chart.plotted = Object.fromEntries(used.map(([k]) => [k, data[k]]));
    return chart;
  }

  async function download(path, filename, button) {
    button.disabled = true;
    try {
      const blob = await (await answered(path)).blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: filename });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    } catch (error) {
      if (!failed(error)) alertBox(`Download failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  let messages = null;
  function alertBox(text, kind) {
    if (!messages) return;
    messages.replaceChildren(el("div", { class: kind === "ok" ? "notice" : "errors", id: "message", text }));
  }

  function pointRows(points, search, doc, choose) {
    const held = Boolean(doc.holdout);
    return points.map((p) => {
      const tuned = p.tuned || null;
      const buttons = el("span", { class: "row" });
      const plain = el("button", { type: "button", class: "download", data: { point: p.id }, text: "model" });
      plain.addEventListener("click", () => download(
        `/v1/searches/${encodeURIComponent(search)}/points/${p.id}/model`, `${search}-${p.id}.safetensors`, plain));
      buttons.append(plain);
      if (tuned && tuned.state === "done") {
        const tunedButton = el("button", { type: "button", class: "download-tuned", data: { point: p.id }, text: "tuned model" });
        tunedButton.addEventListener("click", () => download(
          `/v1/searches/${encodeURIComponent(search)}/points/${p.id}/model?tuned=true`,
          `${search}-${p.id}-tuned.safetensors`, tunedButton));
        buttons.append(tunedButton);
      }
      const box = el("input", { type: "checkbox", class: "choose", data: { point: p.id } });
      box.addEventListener("change", () => (box.checked ? choose.add(p.id) : choose.delete(p.id)));
      box.checked = choose.has(p.id);
      return [
        box,
        el("code", { text: p.id + (doc.best === p.id ? " ★" : "") }),
        fmt.bytes(p.memory_bytes),
        fmt.pct(p.memory_saving),
        fmt.acc(p.accuracy),
        fmt.pts(p.accuracy_drop),
        held ? (p.holdout ? `${fmt.acc(p.holdout.accuracy)} (${fmt.pts(p.holdout.accuracy_drop)})` : "not yet") : "–",
        p.feasible ? el("span", { class: "yes", text: "yes" }) : el("span", { class: "no", text: "no" }),
        fmt.mj(p.energy_mj),
        tuned ? (tuned.state === "done" ? `${fmt.acc(tuned.accuracy)} (${fmt.pts(tuned.accuracy_drop)})` : tuned.state) : "–",
        buttons,
      ];
    });
  }

  const POINT_HEADERS = ["", "id", "bytes", "saved", "top-1", "drop (pts)", "held out (drop)", "feasible",
                         "energy / image", "fine-tuned", "download"];

  async function showSearch(id) {
    const mine = generation;
    const path = `/v1/searches/${encodeURIComponent(id)}`;
    const title = el("h1", { id: "search-name", text: id });
    const badge = el("span", { id: "search-state" });
    const actions = el("div", { class: "row", id: "actions" });
    messages = el("div", { id: "messages" });
    const summary = el("div", { class: "card grid", id: "progress" });
    const recommendation = el("div", { id: "recommendation" });
    const sizePlot = el("div", { class: "plot", id: "plot-bytes" });
    const energyPlot = el("div", { class: "plot", id: "plot-energy" });
    const tables = el("div", { id: "tables" });
    const report = el("div", { id: "report" });
    show(el("p", null, el("a", { href: "#/", text: "← all searches" })),
         el("div", { class: "row" }, title, badge), actions, messages, summary, recommendation,
         el("div", { class: "plots" }, sizePlot, energyPlot), tables, report);
    const chosen = new Set();
    const charts = { bytes: null, energy: null };
    window.autocompressDashboard = { charts };
    let lastDoc = "";

    function button(text, cls, handler) {
      const b = el("button", { type: "button", class: cls, text });
      b.addEventListener("click", async () => {
        b.disabled = true;
        try {
          await handler();
        } catch (error) {
          if (!failed(error)) alertBox(error.message);
        } finally {
          b.disabled = false;
        }
      });
      return b;
    }

    function renderStatus(status) {
      title.textContent = status.name || status.id;
      badge.replaceChildren(stateBadge(status.state));
      const p = status.progress;
      const cells = [
        ["state", status.state],
        ["full evaluations", p ? `${p.full_evaluations}${p.max_full_evaluations ? ` / ${p.max_full_evaluations}` : ""}` : "–"],
        ["probes", p ? p.proxy_evaluations : "–"],
        ["gated out", p ? p.gated_out : "–"],
        ["stopped early", p ? `${p.early_stopped}${p.stopped_feasible ? ` (${p.stopped_feasible} feasible)` : ""}` : "–"],
        ["in flight", p ? p.in_flight : "–"],
        ["wall time", fmt.seconds(p ? p.wall_seconds : null)],
        ["best feasible", bestText(status.best)],
        ["strategy", status.strategy || "–"],
        ["submitted", fmt.time(status.submitted_at)],
        ["started", fmt.time(status.job && status.job.started_at)],
        ["ended", fmt.time(status.job && status.job.ended_at)],
      ];
      if (p && p.stopped_by) cells.push(["stopped by", p.stopped_by]);
      summary.replaceChildren(...cells.map(([label, value]) => el("div", null, el("span", { text: label }), el("b", { text: value }))));
      if (status.error) summary.append(el("div", { class: "errors", text: status.error }));
      const buttons = [];
      if (status.state === "running" || status.state === "queued") {
        buttons.push(button("Cancel", "danger", async () => {
          await getJSON(path, { method: "DELETE" });
          alertBox("Cancelled: the search stops after what it is doing.", "ok");
          await refresh(generation);
        }));
      }
      if (["interrupted", "failed", "cancelled"].includes(status.state)) {
        buttons.push(button("Resume", "primary", async () => {
          await getJSON(`${path}/resume`, { method: "POST" });
          alertBox("Resumed.", "ok");
          await refresh(generation);
        }));
      }
      if (status.state === "done") {
        buttons.push(button("Fine-tune the chosen points", null, async () => {
          const body = JSON.stringify({ points: [...chosen] });
          await getJSON(`${path}/finetune`, { method: "POST", headers: { "Content-Type": "application/json" }, body });
          alertBox(chosen.size ? `Fine-tuning ${chosen.size} point(s) queued.` : "Fine-tuning of the spec's points queued.", "ok");
          await refresh(generation);
        }));
      }
      buttons.push(button("Open report", null, async () => {
        const page = await (await answered(`${path}/report`)).text();
        // sandbox="": no scripts, no forms, an opaque origin (it cannot read this tab's token)
        report.replaceChildren(el("h2", { text: "Report" }),
          el("iframe", { class: "report", id: "report-frame", sandbox: "", srcdoc: page, title: "report" }));
        report.scrollIntoView();
      }));
      actions.replaceChildren(...buttons);
    }

    function renderDocument(doc) {
      const key = JSON.stringify(doc);
      if (key === lastDoc) return;  // unchanged: keep the plots as they are
      lastDoc = key;
      const base = doc.baseline || {};
      const limits = doc.constraints || {};
      const floor = base.accuracy !== undefined && limits.max_drop_points !== undefined ? base.accuracy - limits.max_drop_points : null;
      const maxBytes = limits.max_bytes ?? (limits.min_saving !== null && limits.min_saving !== undefined && base.memory_bytes
        ? base.memory_bytes * (1 - limits.min_saving) : null);
      if (charts.bytes) charts.bytes.destroy();
      if (charts.energy) charts.energy.destroy();
      charts.bytes = scatter(sizePlot, "bytes", {
        doc, title: "Accuracy against model size", xLabel: "model size", xTick: fmt.bytes,
        x: (p) => p.memory_bytes, y: (p) => p.accuracy, holdout: true, stopped: true,
        limits: { x: maxBytes, y: floor },
        note: "Dashed: the accuracy limit (baseline − allowed drop) and the largest size allowed. Selection accuracy; "
          + "rings: the same points on the held-out images; crosses: validation stopped early (an estimate).",
      });
      const energy = (doc.points || []).some((p) => p.energy_mj !== null && p.energy_mj !== undefined);
      energyPlot.hidden = !energy;
      charts.energy = energy ? scatter(energyPlot, "energy", {
        doc, title: "Accuracy against energy per image", xLabel: "energy per image (mJ)", xTick: (v) => v.toPrecision(3),
        x: (p) => p.energy_mj, y: (p) => p.accuracy, holdout: false, stopped: false,
        limits: { x: limits.max_energy_mj, y: floor },
        note: "Energy estimated from the counted spikes and operations (45 nm figures).",
      }) : null;
      recommendation.replaceChildren(doc.best
        ? el("div", { class: "notice", text: `Recommended point ${doc.best}${doc.holdout && doc.holdout.decided ? ", decided on the held-out images" : ""}.` })
        : el("div", { class: "muted", text: "No recommended point yet." }));
      const parts = [
        el("h2", { text: `Pareto points (${(doc.points || []).length})` }),
        table(POINT_HEADERS, pointRows(doc.points || [], id, doc, chosen), { text: [1], id: "points" }),
        el("h2", { text: `Near misses (${(doc.near_misses || []).length})` }),
        (doc.near_misses || []).length ? table(POINT_HEADERS, pointRows(doc.near_misses, id, doc, chosen), { text: [1], id: "near-misses" })
          : el("p", { class: "muted", text: "None." }),
      ];
      if ((doc.early_stopped || []).length) {
        parts.push(el("h2", { text: `Stopped early (${doc.early_stopped.length})` }),
          table(["id", "side", "images seen", "top-1 (estimate)", "drop at least", "drop at most", "bytes"],
            doc.early_stopped.map((s) => [el("code", { text: s.id }), s.side, fmt.num(s.images), fmt.acc(s.accuracy_estimate),
              fmt.pts(s.accuracy_drop_at_least), fmt.pts(s.accuracy_drop_at_most), fmt.bytes(s.memory_bytes)]),
            { text: [0, 1], id: "early-stopped" }));
      }
      const sensitivity = doc.sensitivity || [];
      parts.push(el("h2", { text: "Sensitivity (one dimension moved alone)" }), sensitivity.length
        ? el("div", { class: "scroll" }, table(["dimension", "kind", "choice", "bytes", "drift", "accuracy drop (pts)"],
            sensitivity.map((s) => [s.dimension, s.kind, String(s.choice), fmt.bytes(s.memory_bytes),
              s.proxy === null || s.proxy === undefined ? "–" : Number(s.proxy).toFixed(4), fmt.pts(s.accuracy_drop)]),
            { text: [0, 1, 2], id: "sensitivity" }))
        : el("p", { class: "muted", text: "Nothing yet." }));
      tables.replaceChildren(...parts);
    }

    async function refresh(token_) {
      let status;
      try {
        status = await getJSON(path);
      } catch (error) {
        if (failed(error)) return;
        if (error.status === 404) {
          show(el("div", { class: "fatal", text: `No search ${id}.` }));
          return;
        }
        alertBox(error.message);
        poll(refresh, false);
        return;
      }
      if (token_ !== generation) return;
      renderStatus(status);
      try {
        renderDocument(await getJSON(`${path}/pareto`));
      } catch (error) {
        if (failed(error)) return;
        if (error.status !== 409) alertBox(error.message);  // 409: no results yet
      }
      if (token_ !== generation) return;
      stamp();
      view.dataset.state = status.state;
      poll(refresh, status.state === "running" || status.state === "queued");
    }

    await refresh(mine);
  }

  // ------------------------------------------------------------------ submit

  async function showSubmit() {
    const text = el("textarea", { id: "spec", spellcheck: "false", placeholder: "name: my-search\nmodel: ..." });
    const file = el("input", { type: "file", id: "spec-file", accept: ".yaml,.yml,.json" });
    const examples = el("select", { id: "examples" }, el("option", { value: "", text: "an example spec…" }));
    const errors = el("div", { id: "errors" });
    const submit = el("button", { type: "submit", class: "primary", id: "submit", text: "Submit" });
    const form = el("form", { id: "submit-form" },
      el("h1", { text: "Submit a search" }),
      el("p", { class: "muted", text: "A constraint spec in YAML or JSON, checked by the service as the API checks it "
        + "(its caps, its data roots, its allowed factories)." }),
      el("div", { class: "row" }, examples, el("label", null, "or a file ", file)),
      text, errors, el("div", { class: "row" }, submit));
    show(form);
    examples.addEventListener("change", async () => {
      if (!examples.value) return;
      const response = await fetch(`/dashboard/examples/${encodeURIComponent(examples.value)}`, { cache: "no-store" });
      text.value = await response.text();
    });
    file.addEventListener("change", async () => {
      if (file.files.length) text.value = await file.files[0].text();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errors.replaceChildren();
      const body = text.value;
      const json = /^\s*[{[]/.test(body);
      submit.disabled = true;
      let response, answer;
      try {
        response = await api("/v1/searches", { method: "POST", body,
          headers: { "Content-Type": json ? "application/json" : "application/yaml" } });
        answer = await response.json().catch(() => null);
      } catch (error) {
        if (!failed(error)) errors.replaceChildren(el("div", { class: "errors", text: error.message }));
        submit.disabled = false;
        return;
      }
      submit.disabled = false;
      if (response.status === 201) {
        location.hash = `#/search/${encodeURIComponent(answer.id)}`;
        return;
      }
      const issues = answer && Array.isArray(answer.detail) ? answer.detail : null;
      errors.replaceChildren(el("div", { class: "errors", id: "spec-errors" },
        el("b", { text: answer && answer.message ? answer.message : describe(response.status, answer) }),
        issues ? el("ul", null, issues.map((issue) => el("li", { class: "issue" },
          el("code", { class: "loc", text: (Array.isArray(issue.loc) ? issue.loc.join(".") : String(issue.loc || "")) || "(the spec)" }), ": ",
          el("span", { class: "msg", text: issue.msg })))) : null));
    });
    try {  // the handlers are in place first: the form works while the examples load
      const index = await (await fetch("/dashboard/examples/index.json", { cache: "no-store" })).json();
      for (const example of index.examples) examples.append(el("option", { value: example.file, text: `${example.name}: ${example.title}` }));
    } catch (error) {
      examples.disabled = true;
    }
  }

  // ------------------------------------------------------------------ routing

  function route() {
    stopPolling();
    messages = null;
    window.autocompressDashboard = {};
    delete view.dataset.state;
    const hash = location.hash || "#/";
    document.getElementById("nav-submit").classList.toggle("active", hash === "#/submit");
    document.getElementById("nav-searches").classList.toggle("active", hash !== "#/submit");
    if (!token()) {
      signIn();
      return;
    }
    forget.hidden = false;
    const run = hash.startsWith("#/search/") ? showSearch(decodeURIComponent(hash.slice(9)))
      : hash === "#/submit" ? showSubmit() : showSearches();
    run.catch((error) => {
      if (!failed(error)) show(el("div", { class: "fatal", text: `The page failed: ${error.message}` }));
    });
  }

  window.addEventListener("hashchange", route);
  route();
})();
