// The operators' console: every action is a call to the admin API under /console/api,
// made with this browser's session (the API audits each with the session's key id).
"use strict";

(() => {
  const API = "/console/api";
  const { el, json, report, time } = VG;
  const $ = (id) => document.getElementById(id);
  const SCOPES = ["models.read", "speech", "transcription", "voices.manage", "account.read", "delete", "admin"];
  const KINDS = ["account_created", "account_deactivated", "account_exported", "account_erased", "key_created",
    "key_revoked", "key_rotated", "client_secret_created", "auth_failed", "auth_blocked", "auth_failures_repeated",
    "admin_refused", "admin_read", "access_denied", "voice_created", "voice_deleted", "session_opened", "session_closed"];
  let accounts = [];
  let timer = null;
  const samples = [];

  // ---- sign-in and navigation ----
  function show(page) {
    for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== `page-${page}`;
    for (const b of document.querySelectorAll("nav [data-page]")) {
      if (b.dataset.page === page) b.setAttribute("aria-current", "page");
      else b.removeAttribute("aria-current");
    }
    if (location.hash !== `#${page}`) history.replaceState(null, "", `#${page}`);
    clearInterval(timer);
    timer = null;
    const load = { overview: loadOverview, accounts: loadAccounts, keys: loadKeys, usage: loadUsage, audit: () => loadAudit(null) }[page];
    if (load) load();
    const heading = document.querySelector(`#page-${page} h2`);
    if (heading) { heading.tabIndex = -1; heading.focus(); }
  }

  // `data-session` says what the page knows of its session ("in" or "out"), once it knows.
  function signedIn(session) {
    document.body.dataset.session = "in";
    $("signin").hidden = true;
    $("nav").hidden = false;
    $("who").textContent = `signed in as key ${session.keyid} (account ${session.account_id})`;
    const page = location.hash.slice(1);
    show(["overview", "accounts", "keys", "usage", "audit"].includes(page) ? page : "overview");
  }

  function signedOut() {
    document.body.dataset.session = "out";
    clearInterval(timer);
    for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "signin";
    $("nav").hidden = true;
    $("who").textContent = "";
    $("new-key").hidden = true;
    $("new-key-value").textContent = "";
  }

  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("signin-key");
    const key = input.value.trim();
    input.value = "";
    report($("signin-error"), null);
    try {
      signedIn(await VG.signIn(API, key));
    } catch (err) {
      report($("signin-error"), err);
    }
  });

  $("signout").addEventListener("click", async () => {
    try { await VG.signOut(API); } catch (_) { /* ended already */ }
    signedOut();
  });

  for (const b of document.querySelectorAll("nav [data-page]")) {
    b.addEventListener("click", () => show(b.dataset.page));
  }

  // A failed call: a 401 means the session ended (signed out, expired, key revoked).
  function failed(target, err) {
    if (err && err.status === 401) {
      signedOut();
      report($("signin-error"), err);
      return;
    }
    report(target, err);
  }

  // ---- overview ----
  async function loadOverview() {
    report($("overview-error"), null);
    try {
      const h = await json("GET", `${API}/health`);
      const card = (label, value) => el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
      $("health").replaceChildren(
        card("Status", h.status),
        card("Engines ready", h.ready ? "yes" : "no"),
        card("Store", h.store),
        card("Rate-limit backend", h.rate_limit_backend),
        card("Audit entries", h.audit.entries ?? "—"),
        card("Checkpoints", h.audit.checkpoints ?? "—"),
        card("Cache entries", h.cache.entries));
      $("engines").tBodies[0].replaceChildren(...h.engines.map((e) => el("tr", {},
        el("td", {}, e.id), el("td", {}, e.ready ? "yes" : "no"), el("td", {}, e.remote ? "yes" : "no"),
        el("td", {}, e.breaker || "—"))));
      $("alerts").replaceChildren(...(h.alerts_firing.length
        ? h.alerts_firing.map((a) => el("li", { class: "bad" }, a))
        : [el("li", { class: "ok" }, "none")]));
      await sample();
      if (!timer) {
        timer = setInterval(() => {
          if (!document.hidden) sample().catch((err) => failed($("overview-error"), err));
        }, 10000);
      }
    } catch (err) {
      failed($("overview-error"), err);
    }
  }

  async function sample() {
    // A refresh, not a use: it does not keep the session from idling out.
    const text = await (await VG.request("GET", `${API}/metrics`, undefined,
      { headers: { "X-Voxgate-Background": "1" } })).text();
    let requests = 0, seconds = 0, count = 0;
    for (const m of VG.parseMetrics(text)) {
      if (m.name === "voxgate_http_requests_total") requests += m.value;
      if (m.name === "voxgate_http_response_seconds_sum") seconds += m.value;
      if (m.name === "voxgate_http_response_seconds_count") count += m.value;
    }
    samples.push({ at: Date.now(), requests, seconds, count });
    if (samples.length > 61) samples.shift();
    const rate = [], latency = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1], b = samples[i];
      const minutes = (b.at - a.at) / 60000;
      const label = new Date(b.at).toISOString().slice(11, 19);
      rate.push({ label, value: minutes > 0 ? (b.requests - a.requests) / minutes : 0 });
      const n = b.count - a.count;
      latency.push({ label, value: n > 0 ? ((b.seconds - a.seconds) / n) * 1000 : 0 });
    }
    $("charts").replaceChildren(
      VG.lineChart("Requests per minute", rate, "req/min"),
      VG.lineChart("Mean time to response head", latency, "ms"));
  }

  // ---- accounts ----
  // Fetches are numbered: an answer older than one already applied is dropped, so the list
  // ends as the latest answer says, and a caller overtaken by a newer fetch uses that.
  let accountsAsked = 0;
  let accountsApplied = 0;
  async function fetchAccounts() {
    const mine = ++accountsAsked;
    const fetched = await json("GET", `${API}/accounts`);
    if (mine < accountsApplied) return;
    accountsApplied = mine;
    accounts = fetched;
    const options = (all) => [
      ...(all ? [el("option", { value: "" }, "all accounts")] : []),
      ...accounts.map((a) => el("option", { value: a.id }, `${a.name} (${a.id})`)),
    ];
    for (const [id, all] of [["key-account", false], ["key-filter", true], ["usage-account", false]]) {
      const select = $(id);
      const was = select.value;
      select.replaceChildren(...options(all));
      if ([...select.options].some((o) => o.value === was)) select.value = was;
    }
  }

  function renderAccounts() {
    const q = $("account-search").value.trim().toLowerCase();
    const rows = accounts.filter((a) => !q || a.name.toLowerCase().includes(q) || a.id.toLowerCase().includes(q));
    $("accounts").tBodies[0].replaceChildren(...rows.map((a) => el("tr", {},
      el("td", {}, el("code", {}, a.id)), el("td", {}, a.name), el("td", {}, a.tier),
      el("td", {}, a.active ? "active" : "deactivated"), el("td", {}, time(a.created_at)),
      el("td", {}, el("div", { class: "row" },
        el("button", { type: "button", onclick: () => { $("key-filter").value = a.id; show("keys"); } }, "Keys"),
        el("button", { type: "button", onclick: () => { $("usage-account").value = a.id; show("usage"); } }, "Usage"),
        el("button", { type: "button", onclick: () => exportAccount(a) }, "Export"),
        a.active ? el("button", { type: "button", onclick: () => deactivate(a) }, "Deactivate") : null,
        el("button", { type: "button", class: "danger", onclick: () => erase(a) }, "Erase"))))));
  }

  let accountsShown = 0;
  async function loadAccounts() {
    const mine = ++accountsShown;
    report($("accounts-error"), null);
    try {
      await fetchAccounts();
      if (mine !== accountsShown) return;
      renderAccounts();
    } catch (err) {
      if (mine === accountsShown || err?.status === 401) failed($("accounts-error"), err);
    }
  }

  $("account-search").addEventListener("input", renderAccounts);

  $("account-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const status = $("account-form-status");
    report(status, null);
    try {
      const body = { name: $("account-name").value, tier: $("account-tier").value.trim() };
      const contact = $("account-contact").value.trim();
      if (contact) body.contact = contact;
      const a = await json("POST", `${API}/accounts`, body);
      status.className = "ok";
      status.textContent = `Created ${a.id}`;
      $("account-name").value = "";
      $("account-contact").value = "";
      await loadAccounts();
    } catch (err) {
      failed(status, err);
    }
  });

  async function deactivate(a) {
    if (!confirm(`Deactivate ${a.name} (${a.id})? Its keys stop working.`)) return;
    try {
      await json("POST", `${API}/accounts/${encodeURIComponent(a.id)}/deactivate`);
      await loadAccounts();
    } catch (err) {
      failed($("accounts-error"), err);
    }
  }

  async function exportAccount(a) {
    try {
      const blob = await (await VG.request("GET", `${API}/accounts/${encodeURIComponent(a.id)}/export`)).blob();
      VG.download(`${a.id}-export.json`, blob);
    } catch (err) {
      failed($("accounts-error"), err);
    }
  }

  function erase(a) {
    const dialog = $("erase-dialog");
    $("erase-confirm").value = "";
    dialog.returnValue = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "erase") return;
      if ($("erase-confirm").value.trim() !== a.id) {
        report($("accounts-error"), new Error("The id typed does not match; nothing was erased."));
        return;
      }
      try {
        await json("DELETE", `${API}/accounts/${encodeURIComponent(a.id)}`);
        await loadAccounts();
      } catch (err) {
        failed($("accounts-error"), err);
      }
    };
    dialog.showModal();
  }

  // ---- keys ----
  $("key-scopes").replaceChildren(...SCOPES.map((s) => el("label", { class: "inline" },
    el("input", { type: "checkbox", value: s, name: "scope" }), s)));

  let keysShown = 0; // the latest load: an older answer arriving late is dropped
  async function loadKeys() {
    const mine = ++keysShown;
    report($("keys-error"), null);
    try {
      await fetchAccounts();
      const filter = $("key-filter").value;
      const keys = await json("GET", `${API}/keys${filter ? `?account_id=${encodeURIComponent(filter)}` : ""}`);
      if (mine !== keysShown) return;
      const now = Date.now() / 1000;
      const status = (k) => k.revoked_at ? "revoked"
        : k.grace_until ? (k.grace_until > now ? "rotating" : "rotated")
          : k.expires_at && k.expires_at <= now ? "expired" : "active";
      $("keys").tBodies[0].replaceChildren(...keys.map((k) => el("tr", {},
        el("td", {}, el("code", {}, k.keyid)), el("td", {}, el("code", {}, k.account_id)), el("td", {}, k.name),
        el("td", {}, k.tier || "(account's)"), el("td", {}, k.scopes || "(tier's)"), el("td", {}, status(k)),
        el("td", { class: "num" }, k.request_count), el("td", {}, time(k.last_used_at)),
        el("td", {}, status(k) === "active" ? el("div", { class: "row" },
          el("button", { type: "button", onclick: () => rotate(k) }, "Rotate"),
          el("button", { type: "button", class: "danger", onclick: () => revoke(k) }, "Revoke")) : null))));
    } catch (err) {
      if (mine === keysShown || err?.status === 401) failed($("keys-error"), err);
    }
  }

  $("key-filter").addEventListener("change", loadKeys);

  function showNewKey(key) {
    $("new-key-value").textContent = key;
    $("new-key-copied").textContent = "";
    $("new-key").hidden = false;
    $("new-key-copy").focus();
  }

  $("new-key-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("new-key-value").textContent);
      $("new-key-copied").textContent = "Copied.";
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents($("new-key-value"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("new-key-copied").textContent = "Selected: press Ctrl+C to copy.";
    }
  });

  $("new-key-done").addEventListener("click", () => {
    $("new-key").hidden = true;
    $("new-key-value").textContent = "";
  });

  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const status = $("key-form-status");
    report(status, null);
    const body = { account_id: $("key-account").value };
    const name = $("key-name").value.trim();
    if (name) body.name = name;
    const tier = $("key-tier").value.trim();
    if (tier) body.tier = tier;
    const scopes = [...document.querySelectorAll("#key-scopes input:checked")].map((i) => i.value);
    if (scopes.length) body.scopes = scopes.join(" ");
    const expiry = $("key-expiry").value.trim();
    if (expiry) body.expires_in = expiry;
    const origins = $("key-origins").value.split(",").map((o) => o.trim()).filter(Boolean);
    if (origins.length) body.origins = origins;
    try {
      const created = await json("POST", `${API}/keys`, body);
      showNewKey(created.key);
      status.className = "ok";
      status.textContent = `Created ${created.keyid}`;
      await loadKeys();
    } catch (err) {
      failed(status, err);
    }
  });

  async function revoke(k) {
    if (!confirm(`Revoke key ${k.keyid}? It stops working within seconds.`)) return;
    try {
      await json("POST", `${API}/keys/${encodeURIComponent(k.keyid)}/revoke`);
      await loadKeys();
    } catch (err) {
      failed($("keys-error"), err);
    }
  }

  async function rotate(k) {
    if (!confirm(`Rotate key ${k.keyid}? The old key keeps working for the rotation grace period.`)) return;
    try {
      const created = await json("POST", `${API}/keys/${encodeURIComponent(k.keyid)}/rotate`);
      showNewKey(created.key);
      await loadKeys();
    } catch (err) {
      failed($("keys-error"), err);
    }
  }

  // ---- usage ----
  const PERIOD = { second: 1, minute: 60, hour: 3600, day: 86400 };

  function quotaCharts(title, quotas, windows) {
    if (!quotas.length) return [el("p", { class: "muted" }, `${title}: no quotas of this kind.`)];
    return quotas.map((q) => {
      // One quota per (per, metric) in a tier: the metric names its counters.
      const secs = PERIOD[q.period] || 86400;
      const now = Math.floor(Date.now() / 1000);
      const current = now - (now % secs);
      const mine = windows.filter((w) => w.metric === q.metric);
      const points = mine
        .slice(-14)
        .map((w) => ({ label: time(w.window_start).slice(5, secs >= 86400 ? 10 : 16), value: w.used }));
      const currentWindow = mine.find((w) => w.window_start === current);
      const latest = currentWindow ? currentWindow.used : 0;
      const share = ((100 * latest) / q.limit).toFixed(latest && latest < q.limit / 1000 ? 3 : 1);
      return el("div", {},
        el("p", {}, `${title}: ${q.metric} per ${q.period}: ${latest} of ${q.limit} used in the current window (${share} %)`),
        VG.barChart(`${title}: ${q.metric} per ${q.period} (limit ${q.limit})`, points, q.limit));
    });
  }

  let usageShown = 0; // the latest load: an older answer arriving late is dropped
  async function loadUsage() {
    const mine = ++usageShown;
    report($("usage-error"), null);
    try {
      await fetchAccounts();
      if (mine !== usageShown) return;
      const id = $("usage-account").value;
      if (!id) { $("usage").replaceChildren(el("p", {}, "No accounts yet.")); return; }
      const u = await json("GET", `${API}/accounts/${encodeURIComponent(id)}/usage`);
      if (mine !== usageShown) return;
      const parts = [el("h3", {}, `Account ${u.account_id} (tier ${u.tier})`), ...quotaCharts("account", u.quotas, u.windows)];
      for (const k of u.keys) {
        const total = k.windows.reduce((n, w) => n + w.used, 0);
        parts.push(el("h3", {}, `Key ${k.keyid}${k.name ? ` (${k.name})` : ""}`));
        parts.push(el("p", { class: "muted" }, `tier ${k.tier}; ${total} units counted in these windows`));
        parts.push(...quotaCharts(`key ${k.keyid}`, k.quotas, k.windows));
      }
      $("usage").replaceChildren(...parts);
    } catch (err) {
      if (mine === usageShown || err?.status === 401) failed($("usage-error"), err);
    }
  }

  $("usage-account").addEventListener("change", loadUsage);

  // ---- audit ----
  $("audit-kinds").replaceChildren(...KINDS.map((k) => el("option", { value: k })));
  const PAGE = 50;
  let pages = []; // the `before` cursor of each page shown so far (null: the newest)
  let auditShown = 0;

  function epoch(input) {
    return input.value ? Math.floor(Date.parse(`${input.value}Z`) / 1000) : null;
  }

  async function loadAudit(before) {
    report($("audit-error"), null);
    const params = new URLSearchParams({ limit: String(PAGE) });
    const account = $("audit-account").value.trim();
    if (account) params.set("account_id", account);
    const kind = $("audit-kind").value.trim();
    if (kind) params.set("kind", kind);
    const since = epoch($("audit-since"));
    if (since !== null) params.set("since", String(since));
    const until = epoch($("audit-until"));
    if (until !== null) params.set("until", String(until));
    if (before !== null) params.set("before", String(before));
    const mine = ++auditShown;
    try {
      const events = await json("GET", `${API}/audit?${params}`);
      if (mine !== auditShown) return;
      if (before === null) pages = [null];
      $("audit").tBodies[0].replaceChildren(...events.map((e) => el("tr", {},
        el("td", { class: "num" }, e.seq), el("td", {}, time(e.at)), el("td", {}, e.kind), el("td", {}, e.actor || "—"),
        el("td", {}, e.account_id || "—"), el("td", {}, e.subject || "—"), el("td", {}, e.source || "—"),
        el("td", {}, el("code", {}, JSON.stringify(e.detail))))));
      $("audit-older").disabled = events.length < PAGE;
      $("audit-older").dataset.before = events.length ? events[events.length - 1].seq : "";
      $("audit-newer").disabled = pages.length <= 1;
      $("audit-page").textContent = `page ${pages.length}, ${events.length} events`;
    } catch (err) {
      if (mine === auditShown || err?.status === 401) failed($("audit-error"), err);
    }
  }

  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(null); });
  $("audit-older").addEventListener("click", () => {
    const before = Number($("audit-older").dataset.before);
    pages.push(before);
    loadAudit(before).then(() => { $("audit-newer").disabled = false; });
  });
  $("audit-newer").addEventListener("click", () => {
    pages.pop();
    const before = pages[pages.length - 1];
    if (before === null || before === undefined) loadAudit(null);
    else loadAudit(before).then(() => { $("audit-newer").disabled = pages.length <= 1; });
  });

  $("audit-verify").addEventListener("click", async () => {
    const out = $("audit-verification");
    out.replaceChildren(el("p", {}, "Verifying…"));
    try {
      const v = await json("GET", `${API}/audit/verify`);
      out.replaceChildren(
        el("p", { class: v.ok ? "ok" : "bad" }, v.ok
          ? `The log checks out against this server's verifier key: ${v.entries} entries, ${v.checkpoints} checkpoint signatures verified, ${v.covered} entries covered. For an independent check, run voxgate audit verify with an off-host copy of the key and witness.`
          : v.first_bad ? `TAMPERED: entry ${v.first_bad[0]}: ${v.first_bad[1]}` : `Not vouched for: ${v.stale}`),
        el("h4", {}, "Latest checkpoint"),
        el("pre", {}, v.latest_checkpoint || "none yet"));
    } catch (err) {
      out.replaceChildren();
      failed($("audit-error"), err);
    }
  });

  // ---- start ----
  VG.resume(API).then((session) => (session ? signedIn(session) : signedOut()))
    .catch((err) => report($("signin-error"), err));
})();
