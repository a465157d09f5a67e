// The live page of one StreamForge job: polls api/status every second and
// draws it. Read-only; every value goes into the page as text (never as
// HTML). The document's shape is described in src/telemetry/status.rs.
"use strict";
(function () {
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  const charts = {};
  const drawn = {};
  let polls = 0;
  const PALETTE = ["#2b6cb0", "#2f855a", "#805ad5", "#c05621", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];

  // ---- formatting (money stays a string: exact, as the sink holds it)
  const int = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
  function money(s) {
    const neg = s.startsWith("-");
    const [whole, cents] = (neg ? s.slice(1) : s).split(".");
    return (neg ? "-" : "") + whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + cents;
  }
  const iso = (ms) => new Date(ms).toISOString();
  const utcSeconds = (ms) => iso(ms).slice(0, 19).replace("T", " ");
  const utcMillis = (ms) => iso(ms).slice(11, 23);
  function endOf(startS, endS) {
    const a = utcSeconds(startS * 1000), b = utcSeconds(endS * 1000);
    return a.slice(0, 10) === b.slice(0, 10) ? b.slice(11) : b;
  }
  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }
  const millis = (x) => (x < 10 ? x.toFixed(2) : x.toFixed(1)) + " ms";
  function span(ms) {
    const s = Math.abs(ms) / 1000;
    if (s < 90) return s.toFixed(1) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400).toLocaleString("en-US") + " days";
  }
  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    return String(v);
  }

  // ---- DOM helpers
  function text(id, value, cls) {
    const el = $(id);
    el.textContent = value;
    if (cls !== undefined) el.className = cls;
  }
  function row(cells, attrs) {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c);
      else if (Array.isArray(c)) { td.textContent = c[0]; td.className = c[1]; }
      else td.textContent = c;
      tr.appendChild(td);
    }
    return tr;
  }
  // Replaces a table's body when its data changed (keeps selection and
  // scrolling otherwise).
  function fill(tableId, data, toRows, empty) {
    const sig = JSON.stringify(data);
    if (drawn[tableId] === sig) return;
    drawn[tableId] = sig;
    const body = $(tableId).tBodies[0];
    const rows = data.length ? toRows(data) : [row([[empty, "muted"]])];
    body.replaceChildren(...rows);
  }

  // ---- charts (uPlot, vendored; times in UTC like the tables)
  function chart(el, series) {
    return new uPlot({
      width: Math.max(el.clientWidth, 200),
      height: 200,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      scales: { x: { time: true } },
      cursor: { drag: { x: false, y: false } },
      series: [{ label: "window start (UTC)", value: (u, v) => (v == null ? "–" : utcSeconds(v * 1000)) }].concat(series.map((s, i) => ({
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        width: 2,
        fill: series.length === 1 ? (s.color || PALETTE[0]) + "1f" : undefined,
        value: (u, v) => (v == null ? "–" : s.format ? s.format(v) : int(v)),
      }))),
      axes: [
        { stroke: "#677685", grid: { stroke: "#eef2f6" }, values: timeTicks },
        { stroke: "#677685", grid: { stroke: "#eef2f6" }, size: 56, values: (u, vs) => vs.map(compact) },
      ],
    }, [[]].concat(series.map(() => [])), el);
  }
  // Tick labels in UTC: hours and minutes (and seconds when ticks are
  // closer than a minute or off the minute, so no two labels read the
  // same), with the day under the first and wherever it changes.
  function timeTicks(u, vals) {
    let day = "";
    const seconds = vals.some((v, i) => v % 60 !== 0 || (i > 0 && v - vals[i - 1] < 60));
    return vals.map((v) => {
      const t = utcSeconds(v * 1000), d = t.slice(5, 10);
      const label = t.slice(11, seconds ? 19 : 16) + (d !== day ? "\n" + d : "");
      day = d;
      return label;
    });
  }
  function plot(key, el, series, data) {
    const sig = series.map((s) => s.label).join("\u0000");
    if (!charts[key] || charts[key].sig !== sig) {
      if (charts[key]) charts[key].u.destroy();
      el.replaceChildren();
      charts[key] = { u: chart(el, series), el, sig };
    }
    charts[key].u.setData(data);
  }
  window.addEventListener("resize", () => {
    for (const c of Object.values(charts)) c.u.setSize({ width: Math.max(c.el.clientWidth, 200), height: 200 });
  });

  // ---- the sections
  function drawCards(doc) {
    const j = doc.job;
    if (doc.pipeline) text("pipeline", doc.pipeline.source + "  →  " + doc.pipeline.sink);
    if (j.watermark_ms != null) {
      text("watermark", utcMillis(j.watermark_ms).slice(0, 8));
      text("watermark-lag", utcSeconds(j.watermark_ms).slice(0, 10) + " · " + span(doc.now_ms - j.watermark_ms) + " behind");
    } else {
      text("watermark", j.watermark);
      text("watermark-lag", j.watermark === "+inf" ? "end of a bounded input" : "a partition has seen no event yet");
    }
    text("events-read", int(j.events_read));
    text("events-split", int(j.events_accepted) + " accepted · " + int(j.events_duplicate) + " duplicates");
    text("events-anomalous", int(j.events_anomalous), j.events_anomalous ? "warn" : "");
    text("events-late", int(j.events_late) + " late");
    text("windows-emitted", int(j.windows_emitted));
    text("windows-re-emitted", int(j.windows_re_emitted) + " re-emitted after late events");
    if (j.sink_pending_rows > 0) text("sink-state", int(j.sink_pending_rows) + " rows pending", "warn");
    else text("sink-state", "up to date", "good");
    text("sink-detail", int(j.sink_retries) + " retries · " + int(j.sink_dead_letters) + " dead letters");
    text("ready", j.ready ? "ready" : "not ready", j.ready ? "good" : "warn");
    text("recovered", j.recovered_from_checkpoint < 0 ? "starting up"
      : j.recovered_from_checkpoint === 0 ? "started from the beginning of the input"
      : "recovered from checkpoint #" + j.recovered_from_checkpoint);
  }

  function drawWindows(doc) {
    const w = doc.windows;
    const xs = w.map((r) => r.window_start);
    plot("orders", $("chart-orders"), [{ label: "orders", color: "#2b6cb0" }], [xs, w.map((r) => r.order_cnt)]);
    plot("gmv", $("chart-gmv"), [{ label: "GMV", color: "#2f855a", format: (v) => money(v.toFixed(2)) }],
      [xs, w.map((r) => Number(r.gmv_total))]);
    plot("users", $("chart-users"), [{ label: "users", color: "#805ad5" }], [xs, w.map((r) => r.user_cnt)]);
    fill("windows", w, (rows) => rows.slice().reverse().map((r) => row([
      utcSeconds(r.window_start * 1000), endOf(r.window_start, r.window_end),
      [int(r.order_cnt), "num"], [money(r.gmv_total), "num"], [int(r.user_cnt), "num"], [String(r.version), "num"],
    ], { "data-window-start": r.window_start, "data-window-end": r.window_end })),
    "no window acknowledged by the sink yet");
    text("windows-note", w.length + " windows shown (the last " + doc.limits.windows_kept +
      " the sink acknowledged in this run, by window start)");
  }

  function drawTables(doc) {
    fill("partitions", doc.partitions, (ps) => ps.map((p) => row([
      String(p.partition), p.watermark_ms == null ? p.watermark : utcSeconds(p.watermark_ms),
      [p.state, p.state === "active" ? "good" : "muted"],
      [p.next_offset == null ? "–" : int(p.next_offset), "num"], [p.lag == null ? "–" : int(p.lag), "num"],
    ], { "data-partition": p.partition })), "no partition yet");
    fill("checkpoints", doc.checkpoints, (cs) => cs.slice().reverse().map((c) => row([
      [String(c.id), "num"], utcMillis(c.at_ms), [bytes(c.bytes), "num"], [millis(c.pause_ms), "num"], [millis(c.commit_ms), "num"],
    ], { "data-checkpoint": c.id })), "no checkpoint committed yet");
    const most = Math.max(1, ...doc.anomalies.map((a) => a.count));
    fill("anomalies", doc.anomalies, (as) => as.slice().sort((a, b) => b.count - a.count).map((a) => {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = (100 * a.count / most).toFixed(1) + "%";
      return row([a.reason, [int(a.count), "num"], bar], { "data-reason": a.reason });
    }), "none so far");
  }

  // One chart of orders per grouping: a line per top group (issue 17).
  function drawGroupings(doc) {
    const box = $("groupings");
    const sig = doc.groupings.map((g) => g.name).join(",");
    if (box.dataset.sig !== sig) {
      box.dataset.sig = sig;
      box.replaceChildren();
      for (const key of Object.keys(charts)) if (key.startsWith("group:")) { charts[key].u.destroy(); delete charts[key]; }
      if (doc.groupings.length) {
        const h = document.createElement("h2");
        h.textContent = "Orders by dimension (top groups)";
        const grid = document.createElement("div");
        grid.className = "group-grid";
        box.append(h, grid);
      }
    }
    const grid = box.querySelector(".group-grid");
    for (const g of doc.groupings) {
      let el = document.getElementById("group-" + g.name);
      if (!el) {
        const fig = document.createElement("figure");
        const cap = document.createElement("figcaption");
        cap.textContent = g.name;
        el = document.createElement("div");
        el.id = "group-" + g.name;
        el.className = "chart";
        fig.append(cap, el);
        grid.appendChild(fig);
      }
      const xs = [...new Set(g.groups.flatMap((gr) => gr.windows.map((w) => w.window_start)))].sort((a, b) => a - b);
      const series = g.groups.map((gr) => ({ label: gr.values.join(" · ") }));
      const data = [xs].concat(g.groups.map((gr) => {
        const at = new Map(gr.windows.map((w) => [w.window_start, w.order_cnt]));
        return xs.map((x) => (at.has(x) ? at.get(x) : null));
      }));
      plot("group:" + g.name, el, series, data);
    }
  }

  function draw(doc) {
    drawCards(doc);
    drawWindows(doc);
    drawGroupings(doc);
    drawTables(doc);
  }

  async function tick() {
    let doc;
    try {
      const answer = await fetch("api/status", { cache: "no-store" });
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      doc = await answer.json();
    } catch (e) {
      text("conn", "the job is not answering (" + e.message + "); retrying", "conn bad");
      setTimeout(tick, POLL_MS);
      return;
    }
    try {
      draw(doc);
      text("conn", "live · updated " + utcMillis(doc.now_ms).slice(0, 8) + " UTC", "conn ok");
      // How many answers were drawn since the page loaded (tests read it).
      $("conn").dataset.polls = ++polls;
    } catch (e) {
      text("conn", "cannot draw the status: " + e.message, "conn bad");
    }
    setTimeout(tick, POLL_MS);
  }
  tick();
})();
