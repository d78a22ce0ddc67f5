// voxgate pages: what the console and the playground share. The page never stores a key:
// it is sent once to sign in; afterwards an HttpOnly cookie carries the session, and the
// session's CSRF token lives in this page's memory only.
"use strict";

const VG = (() => {
  let csrf = null;
  let api = null; // this page's API base, once signed in

  // Elements are built with text only (never HTML from data).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v === true) node.setAttribute(k, "");
      else node.setAttribute(k, String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // An API error: the envelope's message and code.
  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function failure(response) {
    let message = `HTTP ${response.status}`;
    let code = null;
    try {
      const body = await response.json();
      if (body && body.error) {
        message = body.error.message || message;
        code = body.error.code || null;
      }
    } catch (_) { /* not JSON */ }
    return new ApiError(response.status, message, code);
  }

  // A request to this page's API. `body`: an object (sent as JSON) or FormData. A change
  // refused for its CSRF token (another tab signed in since: a new session, a new token)
  // is retried once with the current session's token.
  async function request(method, path, body, extra) {
    try {
      return await send(method, path, body, extra);
    } catch (err) {
      if (err.code !== "csrf_refused" || !api) throw err;
      await resume(api);
      return send(method, path, body, extra);
    }
  }

  async function send(method, path, body, extra) {
    const headers = Object.assign({}, (extra && extra.headers) || {});
    if (method !== "GET" && method !== "HEAD" && csrf) headers["X-CSRF-Token"] = csrf;
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, {
      method, headers, body: payload, credentials: "same-origin", cache: "no-store",
    });
    if (!response.ok) throw await failure(response);
    return response;
  }

  async function json(method, path, body) {
    const response = await request(method, path, body);
    if (response.status === 204) return null;
    return response.json();
  }

  // Exchanges `key` for a session of this page; the key is not kept anywhere.
  async function signIn(base, key) {
    const response = await fetch(`${base}/session`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}` },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok) throw await failure(response);
    const session = await response.json();
    csrf = session.csrf;
    api = base;
    return session;
  }

  // The current session, or null when signed out.
  async function resume(base) {
    try {
      const session = await (await send("GET", `${base}/session`)).json();
      csrf = session.csrf;
      api = base;
      return session;
    } catch (e) {
      if (e.status === 401) return null;
      throw e;
    }
  }

  async function signOut(base) {
    try {
      await json("DELETE", `${base}/session`);
    } finally {
      csrf = null;
      api = null;
    }
  }

  // Shows `err` (or clears) in a role=alert element.
  function report(target, err) {
    target.replaceChildren();
    target.className = "";
    if (!err) return;
    target.className = "error";
    target.append(err.code ? `${err.message} (${err.code})` : err.message || String(err));
  }

  function time(secs) {
    if (secs === null || secs === undefined) return "—";
    return new Date(secs * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  // A bar chart of `points` [{label, value}] with an optional limit line; the same figures
  // are given as a table for screen readers (and for anyone who prefers numbers).
  function barChart(title, points, limit) {
    const w = 600, h = 200, pad = 30;
    const max = Math.max(1, limit || 0, ...points.map((p) => p.value));
    const bw = points.length ? (w - 2 * pad) / points.length : 0;
    const chart = svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img", "aria-label": title });
    points.forEach((p, i) => {
      const bh = ((h - 2 * pad) * p.value) / max;
      const bar = svg("rect", {
        x: pad + i * bw + 2, y: h - pad - bh, width: Math.max(1, bw - 4), height: bh,
        class: limit && p.value > limit ? "bar over" : "bar",
      }, svg("title", {}, `${p.label}: ${p.value}`));
      chart.append(bar);
      if (points.length <= 16) {
        chart.append(svg("text", { x: pad + i * bw + 2, y: h - pad + 14 }, p.label));
      }
    });
    if (limit) {
      const y = h - pad - ((h - 2 * pad) * limit) / max;
      chart.append(svg("line", { x1: pad, x2: w - pad, y1: y, y2: y, class: "limit" }));
      chart.append(svg("text", { x: w - pad - 90, y: y - 4 }, `limit ${limit}`));
    }
    chart.append(svg("text", { x: 2, y: 12 }, String(max)));
    const table = el("table", {},
      el("caption", { class: "muted" }, title),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "window"), el("th", { scope: "col", class: "num" }, "value"))),
      el("tbody", {}, points.map((p) => el("tr", {}, el("td", {}, p.label), el("td", { class: "num" }, p.value)))));
    const details = el("details", {}, el("summary", {}, "Figures"), el("div", { class: "table-wrap" }, table));
    return el("figure", {}, chart, details);
  }

  // A line chart of `points` [{label, value}].
  function lineChart(title, points, unit) {
    const w = 600, h = 180, pad = 30;
    const max = Math.max(1e-9, ...points.map((p) => p.value));
    const step = points.length > 1 ? (w - 2 * pad) / (points.length - 1) : 0;
    const coords = points.map((p, i) => `${pad + i * step},${h - pad - ((h - 2 * pad) * p.value) / max}`);
    const chart = svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img", "aria-label": title },
      svg("polyline", { points: coords.join(" "), class: "line" }),
      svg("text", { x: 2, y: 12 }, `${+max.toFixed(3)} ${unit}`));
    const last = points.length ? points[points.length - 1] : null;
    return el("figure", {}, chart,
      el("figcaption", {}, `${title}: ${last ? `${+last.value.toFixed(3)} ${unit} now` : "collecting…"}`));
  }

  // Prometheus text → [{name, labels, value}].
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const pair of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
      out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
  }

  function download(name, blob) {
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  return { el, svg, request, json, signIn, resume, signOut, report, time, barChart, lineChart, parseMetrics, download, ApiError };
})();
