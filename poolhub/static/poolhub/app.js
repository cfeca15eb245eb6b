// poolhub web page: every role's work in one page. Vanilla JS, no dependencies, served from this server.
// Tokens live in sessionStorage and only ever travel in an Authorization header or in the
// websocket's first `connect` frame, never in a URL nor in persistent storage. Data reaches the DOM
// through textContent only.
"use strict";

(function () {
  const API = "/api/v1";
  const KEY_ACCESS = "poolhub.access";
  const KEY_REFRESH = "poolhub.refresh";
  const KEY_SEQ = "poolhub.lastSeq"; // the resume cursor: every seq up to it has settled
  const KEY_RECENT = "poolhub.recentSeqs"; // [[ms, seq], ...] delivered within the settle time
  // Events of concurrent transactions can commit in another order than their seq, so a
  // reconnect resumes from the newest seq seen at least this long ago and drops repeats.
  const SETTLE_MS = 30000;
  const KEY_POOL = "poolhub.pool";
  const KEY_RESUME = "poolhub.resume."; // + pool, kind and file fingerprint: an unfinished large upload
  const ROLES = ["manager", "contributor", "listener", "exporter"];
  const LATE_POLICIES = ["accept", "next", "reject"];
  const MAX_NOTIFICATIONS = 100;
  const PAGE_SIZE = 20;
  const TUS_CHUNK = 4 * 1024 * 1024; // at most; never more than the large-file size
  const RETRIES = 8; // per large-upload step after a dropped connection

  const state = {
    user: null,
    pools: [],
    pool: null, // {id, name, role} from /auth/validate
    detail: null, // the pool's settings (GET /pools/{id})
    groups: [],
    latestResult: null,
    lease: null,
    tab: "overview",
    features: new Set(),
    largeFile: 8 * 1024 * 1024,
    tus: null, // per pool: true when OPTIONS on its tus endpoint answers
    ws: null,
    wsReady: false,
    wsWaiters: [],
    wsPending: new Map(), // request_id -> {resolve, reject}
    wsNextId: 1,
    wsRetry: 0,
    wsTimer: null,
    aliveTimer: null,
    refreshTimer: null,
    clockTimer: null,
    seenSeqs: new Set(),
    everConnected: false,
    items: new Map(), // upload id -> transfer item of this page
    early: new Map(), // upload id -> an upload.status that came before its item knew its id
    histories: [],
  };

  const $ = (id) => document.getElementById(id);

  // --- small DOM helpers (text only) ---------------------------------------------------------
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function button(text, onClick, className) {
    const b = el("button", text, className);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else if (cell !== undefined && cell !== null) td.textContent = String(cell);
      tr.appendChild(td);
    }
    return tr;
  }

  function emptyRow(tbody, text, span) {
    const tr = row([text]);
    tr.firstChild.colSpan = span;
    tr.className = "muted";
    tbody.appendChild(tr);
  }

  // The options of a <select>; `initial` is also what a form reset goes back to.
  function options(select, values, labels, initial) {
    clear(select);
    values.forEach((value, i) => {
      const o = el("option", labels ? labels[i] : value);
      o.value = value;
      if (value === initial) o.defaultSelected = true;
      select.appendChild(o);
    });
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  // The error next to the control that caused it: the [data-error] of its form or box.
  function fieldError(scope, message) {
    const box = scope.matches && scope.matches("[data-error], .error") ? scope : scope.querySelector("[data-error]");
    if (!box) { showError(message); return; }
    box.textContent = message || "";
    box.hidden = !message;
  }

  function fieldOk(scope, message) {
    const box = scope.querySelector("[data-ok]");
    if (!box) return;
    box.textContent = message || "";
    box.hidden = !message;
  }

  let noticeTimer = null;
  function notice(text) {
    const box = $("notice");
    clear(box);
    box.appendChild(el("span", text));
    box.appendChild(button("Dismiss", () => { box.hidden = true; }, "ghost small"));
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { box.hidden = true; }, 60000);
  }

  function fmtBytes(n) {
    if (typeof n !== "number") return "";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1024 * 1024 * 1024) return (n / (1024 * 1024)).toFixed(1) + " MiB";
    return (n / (1024 * 1024 * 1024)).toFixed(2) + " GiB";
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function fmtDuration(ms) {
    if (ms <= 0) return "closing";
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const parts = [];
    if (d) parts.push(d + " d");
    if (d || h) parts.push(h + " h");
    parts.push(m + " min", (s % 60) + " s");
    return parts.join(" ");
  }

  // <input type=datetime-local> holds local time without a zone; the API takes UTC.
  function localInputValue(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + "T" +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function utcIso(date) {
    return date.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function uuid4() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function b64text(text) {
    const bytes = new TextEncoder().encode(text);
    let s = "";
    for (const byte of bytes) s += String.fromCharCode(byte);
    return btoa(s);
  }

  function b64blob(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function untilOnline() {
    if (navigator.onLine) return Promise.resolve();
    return new Promise((resolve) => window.addEventListener("online", () => resolve(), { once: true }));
  }

  function saveBlob(blob, filename) {
    const href = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = href;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  }

  // --- tokens ---------------------------------------------------------------------------------
  const tokens = {
    get access() { return sessionStorage.getItem(KEY_ACCESS); },
    get refresh() { return sessionStorage.getItem(KEY_REFRESH); },
    set(access, refresh) {
      sessionStorage.setItem(KEY_ACCESS, access);
      if (refresh) sessionStorage.setItem(KEY_REFRESH, refresh);
      scheduleRefresh();
    },
    clear() {
      sessionStorage.removeItem(KEY_ACCESS);
      sessionStorage.removeItem(KEY_REFRESH);
      sessionStorage.removeItem(KEY_SEQ);
      sessionStorage.removeItem(KEY_RECENT);
      sessionStorage.removeItem(KEY_POOL);
    },
  };

  function accessExpiry(token) {
    // The `exp` claim, read only to refresh in time; the server is the one that checks it.
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
      return typeof claims.exp === "number" ? claims.exp * 1000 : null;
    } catch (e) {
      return null;
    }
  }

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    const exp = tokens.access && accessExpiry(tokens.access);
    if (!exp) return;
    const wait = Math.max(5000, exp - Date.now() - 30000);
    state.refreshTimer = setTimeout(async () => {
      if (await refreshTokens()) wsSendConnect("renew"); // keeps an open socket past the old token's expiry
    }, wait);
  }

  let refreshing = null;
  function refreshTokens() {
    // One refresh at a time: the refresh token is spent by each use.
    if (!refreshing) {
      refreshing = (async () => {
        const refresh = tokens.refresh;
        if (!refresh) return false;
        const res = await fetch(API + "/auth/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ refresh: refresh }),
          credentials: "omit",
        });
        if (!res.ok) return false;
        const body = await res.json();
        tokens.set(body.access, body.refresh);
        return true;
      })().catch(() => false).finally(() => { refreshing = null; });
    }
    return refreshing;
  }

  // --- API ------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }

  function errorFromBody(status, body) {
    if (body && body.error) {
      return new ApiError(status, body.error.code || "error", body.error.message || "request failed",
        body.error.details);
    }
    return new ApiError(status, "error", "request failed (HTTP " + status + ")");
  }

  async function errorFrom(res) {
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    return errorFromBody(res.status, body);
  }

  const cancelled = () => new ApiError(0, "cancelled", "cancelled");
  const offline = () => new ApiError(0, "network", "the server cannot be reached");

  // options: {method, json, form, headers, raw}; raw returns the Response (downloads, headers).
  async function api(path, options, retried) {
    const opts = options || {};
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (tokens.access) headers.Authorization = "Bearer " + tokens.access;
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.form) {
      body = opts.form; // the browser sets the multipart boundary
    }
    if (!navigator.onLine) throw offline(); // no request while the browser knows it is offline
    let res;
    try {
      res = await fetch(path.charAt(0) === "/" && path.indexOf(API) !== 0 ? API + path : path,
        { method: opts.method || "GET", headers, body, credentials: "omit" });
    } catch (e) {
      throw offline();
    }
    if (res.ok) {
      if (opts.raw) return res;
      return res.status === 204 ? null : res.json();
    }
    const err = await errorFrom(res);
    if (res.status === 401 && err.code === "invalid_token" && !retried && await refreshTokens()) {
      return api(path, opts, true);
    }
    if (res.status === 401 && path.indexOf("/auth/") !== 0) sessionEnded(err.message);
    throw err;
  }

  // An XMLHttpRequest, for upload progress (fetch has none). job.abort() cancels it.
  function xhr(method, url, opts, job, retried) {
    return new Promise((resolve, reject) => {
      if (!navigator.onLine) { reject(offline()); return; }
      const req = new XMLHttpRequest();
      req.open(method, url);
      req.setRequestHeader("Accept", "application/json");
      if (tokens.access) req.setRequestHeader("Authorization", "Bearer " + tokens.access);
      for (const [k, v] of Object.entries(opts.headers || {})) req.setRequestHeader(k, v);
      if (opts.onProgress) {
        req.upload.addEventListener("progress", (e) => opts.onProgress(e.loaded, e.total));
      }
      req.onload = () => {
        let body = null;
        try { body = req.responseText ? JSON.parse(req.responseText) : null; } catch (e) { /* empty */ }
        if (req.status >= 200 && req.status < 300) {
          resolve({ status: req.status, body, header: (name) => req.getResponseHeader(name) });
        } else {
          reject(errorFromBody(req.status, body));
        }
      };
      req.onerror = () => reject(offline());
      req.onabort = () => reject(cancelled());
      if (job) job.abort = () => req.abort();
      req.send(opts.body === undefined ? null : opts.body);
    }).catch(async (err) => {
      if (err.status === 401 && err.code === "invalid_token" && !retried && await refreshTokens()) {
        return xhr(method, url, opts, job, true);
      }
      throw err;
    });
  }

  // A download with progress: fetched with the Authorization header, then saved from a blob.
  async function download(path, fallbackName, progress) {
    const res = await api(path, { raw: true });
    const total = Number(res.headers.get("Content-Length")) || 0;
    const parts = [];
    let received = 0;
    if (progress) { progress.hidden = false; progress.value = 0; }
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      received += value.length;
      if (progress && total) progress.value = received / total;
    }
    if (progress) { progress.value = 1; progress.hidden = true; }
    const blob = new Blob(parts, { type: res.headers.get("Content-Type") || "application/octet-stream" });
    saveBlob(blob, filenameFrom(res, fallbackName));
  }

  function filenameFrom(res, fallback) {
    const header = res.headers.get("Content-Disposition") || "";
    const star = /filename\*=UTF-8''([^;]+)/i.exec(header);
    if (star) {
      try { return decodeURIComponent(star[1]); } catch (e) { /* fall through */ }
    }
    const plain = /filename="?([^";]+)"?/i.exec(header);
    return plain ? plain[1] : fallback;
  }

  const poolPath = (pool, rest) => "/pools/" + encodeURIComponent(pool.id) + (rest || "");

  function isAdmin() {
    return Boolean(state.user && state.user.role === "admin");
  }

  function hasRole(pool, roles) {
    return isAdmin() || roles.indexOf(pool.role) >= 0;
  }

  // --- session --------------------------------------------------------------------------------
  function sessionEnded(message) {
    wsClose();
    clearTimeout(state.refreshTimer);
    clearInterval(state.clockTimer);
    tokens.clear();
    state.user = null;
    state.pool = null;
    state.lease = null;
    state.seenSeqs.clear();
    state.everConnected = false;
    $("session").hidden = true;
    $("app-view").hidden = true;
    $("account-view").hidden = true;
    $("auth-view").hidden = false;
    clear($("notifications"));
    showError(message ? "Logged out: " + message : "");
  }

  async function signedIn(body, form) {
    tokens.clear();
    tokens.set(body.access, body.refresh);
    form.reset();
    await start();
  }

  // Log in or create a user (the form with a repeated password) and start the session.
  function authForm(path) {
    return async (event) => {
      event.preventDefault();
      const form = event.target;
      fieldError(form, "");
      showError("");
      const username = form.elements.username.value;
      const password = form.elements.password.value;
      if (form.elements.password2 && password !== form.elements.password2.value) {
        fieldError(form, "the two passwords differ");
        return;
      }
      try {
        await signedIn(await api(path, { method: "POST", json: { username, password } }), form);
      } catch (e) {
        fieldError(form, e.message);
      }
    };
  }

  async function logout() {
    const refresh = tokens.refresh;
    wsClose(); // first: the server closes a logged-out token's socket, which must not look like an expiry
    try {
      await api("/auth/logout", { method: "POST", json: refresh ? { refresh } : {} });
    } catch (e) { /* logged out locally either way */ }
    sessionEnded("");
  }

  async function changePassword(event) {
    event.preventDefault();
    const form = event.target;
    fieldError(form, "");
    fieldOk(form, "");
    try {
      const body = await api("/auth/password", {
        method: "POST",
        json: {
          current_password: form.elements.current_password.value,
          new_password: form.elements.new_password.value,
          refresh: tokens.refresh || "",
        },
      });
      tokens.set(body.access, body.refresh);
      wsSendConnect("renew");
      form.reset();
      fieldOk(form, "Password changed; your other sessions end when their tokens expire.");
    } catch (e) {
      fieldError(form, e.message);
    }
  }

  async function start() {
    let me;
    try {
      me = await api("/auth/validate");
    } catch (e) {
      if (e.status !== 401) showError(e.message);
      return;
    }
    state.user = me.user;
    state.pools = me.pools || [];
    $("whoami").textContent = me.user.username + (isAdmin() ? " (admin)" : "");
    $("admin-link").hidden = !isAdmin();
    $("admin-files-item").hidden = !isAdmin();
    $("session").hidden = false;
    $("auth-view").hidden = true;
    $("app-view").hidden = false;
    renderPools();
    const saved = sessionStorage.getItem(KEY_POOL);
    const pool = state.pools.find((p) => p.id === saved) || (state.pools.length ? state.pools[0] : null);
    if (pool) selectPool(pool);
    else openFiles(false);
    wsOpen();
  }

  async function refreshPools() {
    try {
      const me = await api("/auth/validate");
      state.pools = me.pools || [];
      renderPools();
      if (!state.pool && state.pools.length) selectPool(state.pools[0]);
    } catch (e) {
      showError(e.message);
    }
  }

  // --- pools ----------------------------------------------------------------------------------
  function renderPools() {
    const list = $("pools");
    clear(list);
    $("no-pools").hidden = state.pools.length > 0;
    for (const pool of state.pools) {
      const li = document.createElement("li");
      const b = button(pool.name, () => selectPool(pool));
      b.appendChild(el("span", pool.role, "role"));
      if (state.pool && state.pool.id === pool.id && !$("pool-view").hidden) b.className = "selected";
      b.setAttribute("aria-current", b.className ? "true" : "false");
      li.appendChild(b);
      list.appendChild(li);
    }
  }

  function current(pool) {
    return state.pool && pool && state.pool.id === pool.id;
  }

  const TABS = ["overview", "upload", "history", "export", "manage"];

  function tabAllowed(tab, pool) {
    if (tab === "upload") return hasRole(pool, ["contributor", "manager"]);
    if (tab === "export") return hasRole(pool, ["exporter"]);
    if (tab === "manage") return hasRole(pool, ["manager"]);
    return true;
  }

  function showTab(tab) {
    if (!state.pool || !tabAllowed(tab, state.pool)) tab = "overview";
    state.tab = tab;
    for (const name of TABS) {
      const t = $("tab-" + name);
      const on = name === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      $("panel-" + name).hidden = !on;
    }
    if (tab === "overview" && state.detail) loadGroups();
    if (tab === "history") loadPoolHistory();
    if (tab === "manage") loadManage();
    if (tab === "export") renderExport();
    if (tab === "upload") renderResumable();
  }

  function onTabKey(event) {
    const visible = TABS.filter((name) => !$("tab-" + name).hidden);
    const i = visible.indexOf(state.tab);
    let next = null;
    if (event.key === "ArrowRight") next = visible[(i + 1) % visible.length];
    else if (event.key === "ArrowLeft") next = visible[(i + visible.length - 1) % visible.length];
    else if (event.key === "Home") next = visible[0];
    else if (event.key === "End") next = visible[visible.length - 1];
    if (next) {
      event.preventDefault();
      showTab(next);
      $("tab-" + next).focus();
    }
  }

  async function selectPool(pool) {
    state.pool = pool;
    state.detail = null;
    state.groups = [];
    state.tus = null;
    state.lease = state.lease && state.lease.pool === pool.id ? state.lease : null;
    sessionStorage.setItem(KEY_POOL, pool.id);
    showError("");
    $("files-view").hidden = true;
    $("pool-view").hidden = false;
    renderPools();
    $("pool-title").textContent = pool.name + " — " + pool.role;
    for (const name of TABS) $("tab-" + name).hidden = !tabAllowed(name, pool);
    state.histories = state.histories.filter((h) => h.global);
    const historyPanel = $("panel-history");
    clear(historyPanel);
    state.poolHistory = makeHistory(historyPanel, { pool: pool });
    showTab(state.tab);
    clearInterval(state.clockTimer);
    state.clockTimer = setInterval(renderWindowLeft, 1000);
    try {
      const detail = await api(poolPath(pool));
      if (!current(pool)) return;
      state.detail = detail;
    } catch (e) {
      if (current(pool)) showError(e.message);
    }
    loadOverview();
    if (state.tab === "manage") fillSettings();
  }

  function loadOverview() {
    if (!state.pool) return;
    loadGroups();
  }

  // --- overview: current window, groups, latest result ----------------------------------------
  async function loadGroups() {
    const pool = state.pool;
    try {
      const body = await api(poolPath(pool, "/groups"));
      if (!current(pool)) return;
      state.groups = Array.isArray(body) ? body : (body.results || []);
      renderGroups();
      renderWindow();
      renderExport();
      if (state.groups.some((g) => g.status === "completed")) loadResult();
      else renderResult(null);
    } catch (e) {
      if (current(pool)) showError(e.message);
    }
  }

  function renderGroups() {
    const tbody = $("groups");
    clear(tbody);
    if (!state.groups.length) emptyRow(tbody, "no groups yet", 5);
    for (const g of state.groups) {
      const tr = row([fmtTime(g.window_start), fmtTime(g.window_end), g.status, g.upload_count, fmtBytes(g.bytes)]);
      tr.children[2].className = "group-" + String(g.status).replace(/[^a-z]/g, "");
      tbody.appendChild(tr);
    }
  }

  function currentWindow() {
    const d = state.detail;
    if (!d || !d.window_seconds) return null;
    const origin = d.origin ? Date.parse(d.origin) : 0;
    const size = d.window_seconds * 1000;
    const start = origin + Math.floor((Date.now() - origin) / size) * size;
    return { start, end: start + size };
  }

  function openGroup() {
    // The open group to close now: the current window's, else the newest still open.
    const win = currentWindow();
    const open = state.groups.filter((g) => g.status === "open");
    return open.find((g) => win && Date.parse(g.window_start) === win.start) || open[0] || null;
  }

  function renderWindow() {
    const win = currentWindow();
    if (!win) return;
    const group = state.groups.find((g) => Date.parse(g.window_start) === win.start);
    $("window-start").textContent = fmtTime(new Date(win.start).toISOString());
    $("window-end").textContent = fmtTime(new Date(win.end).toISOString());
    $("window-uploads").textContent = String(group ? group.upload_count : 0) +
      (group && group.status !== "open" ? " (" + group.status + ")" : "");
    $("window-contributors").textContent = String(group && group.contributor_count !== undefined
      ? group.contributor_count : 0);
    renderWindowLeft();
    const canClose = hasRole(state.pool, ["manager", "exporter"]);
    $("window-close-box").hidden = !canClose;
    $("window-close").disabled = !openGroup();
  }

  function renderWindowLeft() {
    const win = currentWindow();
    if (!win) return;
    // Other members' uploads are not pushed to this page: the counts catch up every 15 s.
    state.ticks = (state.ticks || 0) + 1;
    if (state.ticks % 15 === 0 && state.tab === "overview" && !document.hidden && navigator.onLine) loadGroups();
    if (Date.now() >= win.end) { renderWindow(); return; } // the next window started
    $("window-left").textContent = fmtDuration(win.end - Date.now());
  }

  async function closeGroupNow() {
    const box = $("window-close-box");
    fieldError(box, "");
    const group = openGroup();
    if (!group) return;
    const b = $("window-close");
    b.disabled = true;
    try {
      await api("/groups/" + encodeURIComponent(group.id) + "/close", { method: "POST" });
      loadGroups();
    } catch (e) {
      fieldError(box, e.message);
      b.disabled = false;
    }
  }

  function renderResult(result) {
    state.latestResult = result;
    $("result-none").hidden = Boolean(result);
    $("result-some").hidden = !result;
    if (!result) return;
    $("result-created").textContent = fmtTime(result.created_at);
    $("result-size").textContent = fmtBytes(result.size) + " (" + result.size + " bytes)";
    $("result-sha256").textContent = String(result.sha256 || "");
  }

  async function loadResult() {
    const pool = state.pool;
    try {
      const result = await api(poolPath(pool, "/results/latest"));
      if (current(pool)) renderResult(result);
    } catch (e) {
      if (!current(pool)) return;
      renderResult(null);
      if (e.status !== 404) showError(e.message);
    }
  }

  async function downloadResult() {
    const result = state.latestResult;
    const box = $("result-some");
    if (!result) return;
    fieldError(box, "");
    try {
      await download("/results/" + encodeURIComponent(result.id) + "/content", result.filename || "result.bin",
        $("result-progress"));
    } catch (e) {
      fieldError(box, e.message);
    }
  }

  // --- uploads: one or many files, progress, cancel, resume -----------------------------------
  function resetTimestamp() {
    $("upload-form").elements.timestamp.value = localInputValue(new Date());
  }

  function fingerprint(pool, kind, file) {
    return KEY_RESUME + kind + "." + pool.id + "." + file.name + "." + file.size + "." + file.lastModified;
  }

  function renderResumable() {
    // Unfinished large uploads of this tab (sessionStorage survives a reload): choose the file again.
    const list = $("transfers");
    for (const li of Array.from(list.querySelectorAll("li.resumable"))) li.remove();
    if (!state.pool) return;
    for (let i = 0; i < sessionStorage.length; i++) {
      const key = sessionStorage.key(i);
      if (!key || key.indexOf(KEY_RESUME) !== 0 || key.indexOf("." + state.pool.id + ".") < 0) continue;
      let saved;
      try { saved = JSON.parse(sessionStorage.getItem(key)); } catch (e) { continue; }
      if ([...state.items.values()].some((item) => item.key === key && !item.done)) continue;
      const li = el("li", "Unfinished: " + saved.filename + " — choose this file again to resume it.",
        "resumable muted");
      list.appendChild(li);
    }
  }

  function makeItem(file, pool, timestamp) {
    const li = el("li", null, "transfer");
    const name = el("span", file.name, "name");
    const size = el("span", fmtBytes(file.size), "muted");
    const bar = el("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-label", "Progress of " + file.name);
    const status = el("span", "waiting", "status");
    const item = { file, pool, timestamp, li, bar, status, job: {}, cancelled: false, done: false, id: null };
    const cancel = button("Cancel", () => cancelItem(item), "ghost small");
    cancel.setAttribute("aria-label", "Cancel " + file.name);
    item.cancel = cancel;
    li.append(name, size, bar, status, cancel);
    $("transfers").prepend(li);
    return item;
  }

  function itemStatus(item, text, className) {
    item.status.textContent = text;
    item.status.className = "status " + (className || "");
    item.li.dataset.status = className || "";
  }

  function itemProgress(item, done, total) {
    item.bar.value = total ? done / total : 0;
    itemStatus(item, "uploading " + Math.floor(100 * (total ? done / total : 0)) + "%", "uploading");
  }

  function cancelItem(item) {
    if (item.done) return;
    item.cancelled = true;
    if (item.job.abort) item.job.abort();
    itemStatus(item, "cancelled", "cancelled");
    item.cancel.disabled = true;
  }

  function itemAccepted(item, upload) {
    item.done = true;
    item.id = String(upload.id);
    item.li.dataset.uploadId = item.id;
    item.cancel.disabled = true;
    item.bar.value = 1;
    state.items.set(item.id, item);
    applyStatus(item, upload.status);
    const early = state.early.get(item.id);
    if (early) { state.early.delete(item.id); applyStatus(item, early.status); }
  }

  async function applyStatus(item, status) {
    const order = { cached: 1, stored: 2, failed: 2 };
    if ((order[status] || 0) < (order[item.li.dataset.status] || 0)) return; // a late `cached`
    itemStatus(item, status, "status-" + String(status).replace(/[^a-z]/g, ""));
    if (status === "failed") {
      try {
        const detail = await api("/uploads/" + encodeURIComponent(item.id));
        const failed = (detail.events || []).filter((e) => e.type === "upload.failed").pop();
        const reason = failed && failed.data && (failed.data.error || failed.data.reason);
        if (reason) itemStatus(item, "failed: " + reason, "status-failed");
      } catch (e) { /* the status is shown either way */ }
    }
  }

  async function uploadFiles(event) {
    event.preventDefault();
    const form = $("upload-form");
    fieldError(form, "");
    const pool = state.pool;
    const files = Array.from(form.elements.files.files || []);
    if (!pool) return;
    if (!files.length) { fieldError(form, "choose at least one file"); return; }
    const when = new Date(form.elements.timestamp.value);
    if (isNaN(when.getTime())) { fieldError(form, "timestamp: not a date and time"); return; }
    const timestamp = utcIso(when);
    form.elements.files.value = "";
    await Promise.all(files.map((file) => runItem(makeItem(file, pool, timestamp))));
    renderResumable();
    if (state.poolHistory && current(pool)) state.poolHistory.load();
  }

  async function runItem(item) {
    try {
      let upload;
      if (item.file.size > state.largeFile) {
        upload = (await tusAvailable(item.pool)) ? await tusUpload(item) : await socketUpload(item);
      } else {
        upload = await postUpload(item);
      }
      if (!item.cancelled) itemAccepted(item, upload);
    } catch (e) {
      if (item.cancelled || e.code === "cancelled") return;
      item.done = true;
      item.cancel.disabled = true;
      itemStatus(item, e.message, "status-failed");
    }
  }

  // Up to RETRIES tries of `step` while the connection drops (status 0), waiting to be online.
  async function retrying(item, step) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await step();
      } catch (e) {
        if (e.code !== "network" || item.cancelled || attempt >= RETRIES) throw e;
        itemStatus(item, "connection lost; retrying", "uploading");
        await untilOnline();
        await sleep(Math.min(10000, 500 * Math.pow(2, attempt)));
      }
    }
  }

  function postUpload(item) {
    // One multipart POST; after a dropped connection it is sent again under the same
    // Idempotency-Key, so the server stores it once.
    const key = uuid4();
    return retrying(item, async () => {
      const data = new FormData();
      data.append("file", item.file, item.file.name);
      data.append("timestamp", item.timestamp);
      const res = await xhr("POST", API + poolPath(item.pool, "/uploads"),
        { body: data, headers: { "Idempotency-Key": key }, onProgress: (d, t) => itemProgress(item, d, t) }, item.job);
      return res.body;
    });
  }

  // tus 1.0 (creation, termination) against /pools/{pool}/tus, used when OPTIONS on it answers.
  async function tusAvailable(pool) {
    if (!state.features.has("tus")) return false;
    if (state.tus && state.tus.pool === pool.id) return state.tus.ok;
    let ok = false;
    try {
      const res = await api(poolPath(pool, "/tus"), { method: "OPTIONS", raw: true, headers: { "Tus-Resumable": "1.0.0" } });
      ok = (res.headers.get("Tus-Version") || "").indexOf("1.0.0") >= 0;
    } catch (e) { ok = false; }
    state.tus = { pool: pool.id, ok };
    return ok;
  }

  function tusPath(location) {
    try { return new URL(location, window.location.href).pathname; } catch (e) { return location; }
  }

  async function tusUpload(item) {
    const file = item.file;
    const key = fingerprint(item.pool, "tus", file);
    item.key = key;
    const tusHeaders = { "Tus-Resumable": "1.0.0" };
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(key)); } catch (e) { saved = null; }
    let location = saved && saved.location;
    let offset = 0;
    const head = async () => {
      const res = await xhr("HEAD", location, { headers: tusHeaders }, item.job);
      return Number(res.header("Upload-Offset")) || 0;
    };
    if (location) {
      try {
        offset = await retrying(item, head);
        itemStatus(item, "resuming at " + Math.floor(100 * offset / file.size) + "%", "uploading");
      } catch (e) {
        if (e.code === "cancelled") throw e;
        location = null;
        offset = 0;
      }
    }
    if (!location) {
      const meta = "filename " + b64text(file.name) + ",timestamp " + b64text(item.timestamp);
      const res = await retrying(item, () => xhr("POST", API + poolPath(item.pool, "/tus"), {
        headers: Object.assign({ "Upload-Length": String(file.size), "Upload-Metadata": meta }, tusHeaders),
      }, item.job));
      location = tusPath(res.header("Location"));
      sessionStorage.setItem(key, JSON.stringify({ location, filename: file.name }));
    }
    let uploadId = null;
    const terminate = () => {
      // Cancelled: the server releases the staged bytes (tus termination); nothing to resume.
      sessionStorage.removeItem(key);
      xhr("DELETE", location, { headers: tusHeaders }).catch(() => undefined);
      return cancelled();
    };
    while (offset < file.size || uploadId === null) {
      if (item.cancelled) throw terminate();
      const start = offset;
      const chunk = file.slice(start, start + Math.min(TUS_CHUNK, state.largeFile));
      try {
        const res = await xhr("PATCH", location, {
          body: chunk,
          headers: Object.assign({ "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(start) },
            tusHeaders),
          onProgress: (d) => itemProgress(item, start + d, file.size),
        }, item.job);
        offset = Number(res.header("Upload-Offset")) || start + chunk.size;
        uploadId = res.header("Poolhub-Upload-Id");
        if (offset >= file.size && !uploadId) break;
      } catch (e) {
        if (e.code === "cancelled" || item.cancelled) throw terminate();
        if (e.code === "network" || e.status === 409) {
          offset = await retrying(item, head); // where the server stands, then go on from there
          continue;
        }
        sessionStorage.removeItem(key); // refused for good (type, size, late, ...): start over next time
        throw e;
      }
    }
    sessionStorage.removeItem(key);
    if (!uploadId) throw new ApiError(0, "error", "the server did not name the stored upload");
    return api("/uploads/" + encodeURIComponent(uploadId));
  }

  // The websocket transfer verbs: start-transfer, write-chunk, complete-upload (get-transfer to resume).
  async function socketUpload(item) {
    const file = item.file;
    const key = fingerprint(item.pool, "ws", file);
    item.key = key;
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(key)); } catch (e) { saved = null; }
    let transferId = saved && saved.transfer_id;
    let chunkSize = 0;
    let offset = 0;
    const where = async () => {
      const r = await retrying(item, async () => { await wsUntilReady(item); return wsRequest({ type: "get-transfer", transfer_id: transferId }); });
      chunkSize = r.chunk_size;
      return r.offset;
    };
    if (transferId) {
      try {
        offset = await where();
        itemStatus(item, "resuming at " + Math.floor(100 * offset / file.size) + "%", "uploading");
      } catch (e) {
        transferId = null;
        offset = 0;
      }
    }
    if (!transferId) {
      const r = await retrying(item, async () => {
        await wsUntilReady(item);
        return wsRequest({ type: "start-transfer", pool: item.pool.id, filename: file.name, size: file.size,
          timestamp: item.timestamp });
      });
      transferId = r.transfer_id;
      chunkSize = r.chunk_size;
      sessionStorage.setItem(key, JSON.stringify({ transfer_id: transferId, filename: file.name }));
    }
    item.job.abort = () => { item.cancelled = true; };
    while (offset < file.size) {
      if (item.cancelled) throw cancelled();
      const data = await b64blob(file.slice(offset, offset + chunkSize));
      try {
        const r = await wsRequest({ type: "write-chunk", transfer_id: transferId, offset, data }, item);
        offset = r.offset;
        itemProgress(item, offset, file.size);
      } catch (e) {
        if (e.code === "cancelled" || item.cancelled) { sessionStorage.removeItem(key); throw cancelled(); }
        if (e.code !== "network" && e.code !== "conflict") { sessionStorage.removeItem(key); throw e; }
        offset = await where();
      }
    }
    const done = await retrying(item, async () => {
      await wsUntilReady(item);
      return wsRequest({ type: "complete-upload", transfer_id: transferId });
    });
    sessionStorage.removeItem(key);
    return done.upload;
  }

  // --- history: paging and filters; every row downloadable -------------------------------------
  function makeHistory(host, opts) {
    const fragment = $("history-template").content.cloneNode(true);
    host.appendChild(fragment);
    const form = host.querySelector("form.filters");
    const tbody = host.querySelector("[data-rows]");
    const errorBox = host.querySelector("[data-error]");
    const page = host.querySelector("[data-page]");
    const prev = host.querySelector("[data-prev]");
    const next = host.querySelector("[data-next]");
    const poolSelect = form.elements.pool;
    const groupSelect = form.elements.group;
    const view = { offset: 0, count: 0, global: !opts.pool, host };
    host.querySelector('[data-for="user"]').hidden = !opts.admin;
    host.querySelector('[data-for="pool"]').hidden = Boolean(opts.pool);
    if (!opts.pool) {
      options(poolSelect, [""].concat(state.pools.map((p) => p.id)), ["any"].concat(state.pools.map((p) => p.name)));
    }

    async function fillGroups() {
      const poolId = opts.pool ? opts.pool.id : poolSelect.value;
      options(groupSelect, [""], ["any"]);
      host.querySelector('[data-for="group"]').hidden = !poolId;
      if (!poolId) return;
      try {
        const body = await api("/pools/" + encodeURIComponent(poolId) + "/groups");
        const groups = Array.isArray(body) ? body : (body.results || []);
        options(groupSelect, [""].concat(groups.map((g) => g.id)),
          ["any"].concat(groups.map((g) => fmtTime(g.window_start) + " (" + g.status + ")")));
      } catch (e) { fieldError(errorBox, e.message); }
    }

    async function load() {
      fieldError(errorBox, "");
      const q = new URLSearchParams();
      const poolId = opts.pool ? opts.pool.id : poolSelect.value;
      if (poolId) q.set("pool", poolId);
      if (form.elements.status.value) q.set("status", form.elements.status.value);
      if (groupSelect.value) q.set("group", groupSelect.value);
      if (opts.admin && form.elements.user.value.trim()) q.set("user", form.elements.user.value.trim());
      q.set("limit", String(PAGE_SIZE));
      q.set("offset", String(view.offset));
      try {
        const body = await api("/uploads?" + q.toString());
        const uploads = Array.isArray(body) ? body : (body.results || []);
        view.count = typeof body.count === "number" ? body.count : uploads.length;
        clear(tbody);
        if (!uploads.length) emptyRow(tbody, "no uploads", 7);
        for (const u of uploads) tbody.appendChild(historyRow(u));
        const last = Math.min(view.offset + uploads.length, view.count);
        page.textContent = view.count ? (view.offset + 1) + "–" + last + " of " + view.count : "";
        prev.disabled = view.offset === 0;
        next.disabled = last >= view.count;
      } catch (e) {
        fieldError(errorBox, e.message);
      }
    }

    form.addEventListener("submit", (event) => { event.preventDefault(); view.offset = 0; load(); });
    poolSelect.addEventListener("change", fillGroups);
    prev.addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE_SIZE); load(); });
    next.addEventListener("click", () => { view.offset += PAGE_SIZE; load(); });
    view.load = load;
    view.loaded = false;
    view.show = () => {
      if (!view.loaded) { view.loaded = true; fillGroups(); }
      load();
    };
    state.histories.push(view);
    return view;
  }

  function historyRow(u) {
    const dl = button("Download", async () => {
      dl.disabled = true;
      try {
        await download("/uploads/" + encodeURIComponent(u.id) + "/content", u.filename);
      } catch (e) {
        showError(e.message);
      } finally {
        dl.disabled = false;
      }
    }, "ghost small");
    dl.setAttribute("aria-label", "Download " + u.filename);
    const pool = state.pools.find((p) => p.id === u.pool);
    const tr = row([u.filename, pool ? pool.name : u.pool, u.uploader_username || "", fmtBytes(u.size),
      fmtTime(u.timestamp), u.status, dl]);
    tr.dataset.uploadId = String(u.id);
    tr.children[5].className = "status-" + String(u.status).replace(/[^a-z]/g, "");
    tr.children[5].dataset.status = "";
    return tr;
  }

  function loadPoolHistory() {
    if (state.poolHistory) state.poolHistory.show();
  }

  function openFiles(admin) {
    $("pool-view").hidden = true;
    $("files-view").hidden = false;
    $("files-title").textContent = admin ? "Every user's files" : "All my uploads";
    renderPools();
    const host = $("files-host");
    clear(host);
    state.histories = state.histories.filter((h) => !h.global);
    makeHistory(host, { admin }).show();
  }

  // --- export: claim, archive, result ----------------------------------------------------------
  function renderExport() {
    const tbody = $("export-groups");
    if (!tbody || !state.pool) return;
    clear(tbody);
    const waiting = state.groups.filter((g) => g.status === "closed" || g.status === "exporting");
    if (!waiting.length) emptyRow(tbody, "no closed group waiting", 5);
    for (const g of waiting) {
      let action;
      if (state.lease && state.lease.group === String(g.id)) {
        action = el("span", "claimed by you", "muted");
      } else {
        // An `exporting` group is someone's until its lease expires: the server says which.
        action = button("Claim", () => claimGroup(g, action), "small");
        action.setAttribute("aria-label", "Claim the group of " + fmtTime(g.window_start));
      }
      tbody.appendChild(row([fmtTime(g.window_start), g.status, g.upload_count, fmtBytes(g.bytes), action]));
    }
    const lease = state.lease;
    $("lease-box").hidden = !lease;
    if (lease) {
      $("lease-group").textContent = lease.group;
      $("lease-expires").textContent = fmtTime(lease.expires_at);
    }
  }

  async function claimGroup(group, b) {
    const errorBox = $("export-error");
    fieldError(errorBox, "");
    b.disabled = true;
    try {
      const lease = await api("/groups/" + encodeURIComponent(group.id) + "/claim", { method: "POST" });
      state.lease = { pool: state.pool.id, group: String(lease.group || group.id), lease_id: String(lease.lease_id),
        expires_at: lease.expires_at };
      await loadGroups();
    } catch (e) {
      fieldError(errorBox, e.message);
      b.disabled = false;
    }
  }

  async function downloadArchive() {
    const lease = state.lease;
    const box = $("lease-box");
    if (!lease) return;
    fieldError(box.querySelector("span[data-error]"), "");
    try {
      // The lease id is not a credential: the request is authorised by the bearer header.
      await download("/groups/" + encodeURIComponent(lease.group) + "/archive?lease=" + encodeURIComponent(lease.lease_id),
        "group-" + lease.group + ".tar", $("archive-progress"));
    } catch (e) {
      fieldError(box.querySelector("span[data-error]"), e.message);
    }
  }

  async function postResult(event) {
    event.preventDefault();
    const form = event.target;
    const lease = state.lease;
    fieldError(form, "");
    const file = form.elements.file.files[0];
    if (!lease || !file) { fieldError(form, "choose the result file"); return; }
    const bar = $("result-upload-progress");
    bar.hidden = false;
    bar.value = 0;
    const data = new FormData();
    data.append("file", file, file.name);
    data.append("lease_id", lease.lease_id);
    try {
      await xhr("POST", API + "/groups/" + encodeURIComponent(lease.group) + "/result",
        { body: data, onProgress: (d, t) => { bar.value = t ? d / t : 0; } }, {});
      form.reset();
      state.lease = null;
      notice("Result posted for group " + lease.group.slice(0, 8) + ".");
      loadGroups();
    } catch (e) {
      fieldError(form, e.message);
    } finally {
      bar.hidden = true;
    }
  }

  // --- manage: members, provisioning, usage, settings -------------------------------------------
  function loadManage() {
    loadMembers();
    fillSettings();
    loadUsage();
    $("provision-box").hidden = !state.features.has("provision");
    $("webhook-test").hidden = !state.features.has("webhook-test");
  }

  async function loadMembers() {
    const pool = state.pool;
    const errorBox = $("members-error");
    fieldError(errorBox, "");
    try {
      const members = await api(poolPath(pool, "/members"));
      if (!current(pool)) return;
      const tbody = $("members");
      clear(tbody);
      for (const m of (Array.isArray(members) ? members : members.results || [])) {
        const select = el("select");
        options(select, ROLES);
        select.value = m.role;
        select.setAttribute("aria-label", "Role of " + m.username);
        select.addEventListener("change", async () => {
          fieldError(errorBox, "");
          try {
            await api(poolPath(pool, "/members/" + encodeURIComponent(m.username)),
              { method: "PATCH", json: { role: select.value } });
            m.role = select.value;
          } catch (e) {
            fieldError(errorBox, e.message);
            select.value = m.role;
          }
        });
        const remove = button("Remove", async () => {
          fieldError(errorBox, "");
          try {
            await api(poolPath(pool, "/members/" + encodeURIComponent(m.username)), { method: "DELETE" });
            loadMembers();
          } catch (e) {
            fieldError(errorBox, e.message);
          }
        }, "ghost small");
        remove.setAttribute("aria-label", "Remove " + m.username);
        const tr = row([m.username, select, remove]);
        tr.dataset.username = m.username;
        tbody.appendChild(tr);
      }
    } catch (e) {
      fieldError(errorBox, e.message);
    }
  }

  async function addMember(event) {
    event.preventDefault();
    const form = event.target;
    fieldError(form, "");
    try {
      await api(poolPath(state.pool, "/members"), {
        method: "POST", json: { username: form.elements.username.value.trim(), role: form.elements.role.value },
      });
      form.reset();
      loadMembers();
    } catch (e) {
      fieldError(form, e.message);
    }
  }

  function csvCell(value) {
    const s = String(value);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  async function provision(event) {
    event.preventDefault();
    const form = event.target;
    fieldError(form, "");
    fieldOk(form, "");
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    fieldOk(form, "provisioning…");
    try {
      const body = await api(poolPath(state.pool, "/members/provision"), {
        method: "POST",
        headers: { "Idempotency-Key": uuid4() },
        json: { count: Number(form.elements.count.value), prefix: form.elements.prefix.value.trim(),
          role: form.elements.role.value },
      });
      const members = body.members || [];
      const lines = [["username", "password", "role"]].concat(members.map((m) => [m.username, m.password, m.role]));
      saveBlob(new Blob([lines.map((l) => l.map(csvCell).join(",")).join("\r\n") + "\r\n"], { type: "text/csv" }),
        "poolhub-" + state.pool.name.replace(/[^\w.-]+/g, "_") + "-accounts.csv");
      fieldOk(form, members.length + " accounts created; their passwords are in the downloaded CSV only.");
      loadMembers();
    } catch (e) {
      fieldOk(form, "");
      fieldError(form, e.message);
    } finally {
      submit.disabled = false;
    }
  }

  async function loadUsage() {
    const box = $("usage-box");
    box.hidden = true;
    if (!state.features.has("usage")) return;
    const pool = state.pool;
    try {
      const u = await api(poolPath(pool, "/usage"));
      if (!current(pool)) return;
      $("usage-stored").textContent = fmtBytes(u.stored_bytes);
      $("usage-uploads").textContent = String(u.uploads);
      $("usage-results").textContent = String(u.results);
      $("usage-quota").textContent = u.quota_bytes === null || u.quota_bytes === undefined ? "none"
        : fmtBytes(u.quota_bytes) + " (" + Math.round(100 * u.stored_bytes / Math.max(1, u.quota_bytes)) + "% used)";
      $("usage-retention").textContent = u.retention_days === null || u.retention_days === undefined
        ? "keeps everything" : u.retention_days + " days";
      box.hidden = false;
    } catch (e) {
      showError(e.message);
    }
  }

  // Numbers the pool must have, numbers it may leave empty (null), and choices. A setting this
  // server's pools do not have (not in GET /pools/{id}) is hidden and never sent.
  const SETTINGS_NUMBERS = ["window_seconds", "grace_seconds", "max_file_bytes", "max_result_bytes"];
  const SETTINGS_OPTIONAL = ["close_min_uploads", "close_min_contributors", "quota_bytes", "retention_days",
    "max_uploads_per_contributor", "min_contributors"];
  const SETTINGS_CHOICES = ["late_policy", "short_round_policy"];
  const SETTINGS_ALL = SETTINGS_NUMBERS.concat(SETTINGS_OPTIONAL, SETTINGS_CHOICES);

  function fillSettings() {
    const d = state.detail;
    const form = $("settings-form");
    if (!d) return;
    for (const name of SETTINGS_ALL) {
      const known = Object.prototype.hasOwnProperty.call(d, name);
      form.elements[name].closest("label").hidden = !known;
      if (known) form.elements[name].value = d[name] === null ? "" : String(d[name]);
    }
    form.elements.allowed_types.value = (d.allowed_types || []).join(", ");
    form.elements.webhook_url.value = d.webhook_url || "";
    form.elements.webhook_secret.value = "";
  }

  async function saveSettings(event) {
    event.preventDefault();
    const form = event.target;
    fieldError(form, "");
    fieldOk(form, "");
    const body = {};
    const known = (name) => state.detail && Object.prototype.hasOwnProperty.call(state.detail, name);
    for (const name of SETTINGS_NUMBERS.filter(known)) body[name] = Number(form.elements[name].value);
    for (const name of SETTINGS_OPTIONAL.filter(known)) {
      body[name] = form.elements[name].value === "" ? null : Number(form.elements[name].value);
    }
    for (const name of SETTINGS_CHOICES.filter(known)) body[name] = form.elements[name].value;
    body.allowed_types = form.elements.allowed_types.value.split(",").map((s) => s.trim()).filter(Boolean);
    body.webhook_url = form.elements.webhook_url.value.trim();
    if (form.elements.webhook_secret.value) body.webhook_secret = form.elements.webhook_secret.value;
    const pool = state.pool;
    try {
      const detail = await api(poolPath(pool), { method: "PATCH", json: body });
      if (!current(pool)) return;
      state.detail = detail;
      fillSettings();
      renderWindow();
      fieldOk(form, "Saved.");
    } catch (e) {
      const field = e.details && (e.details.field || Object.keys(e.details.fields || {})[0]);
      fieldError(form, e.message);
      if (field && form.elements[field]) form.elements[field].focus();
    }
  }

  async function webhookTest() {
    const form = $("settings-form");
    fieldError(form, "");
    fieldOk(form, "sending a test delivery…");
    try {
      const r = await api(poolPath(state.pool, "/webhook/test"), { method: "POST" });
      if (r.delivered) fieldOk(form, "Test delivery: the receiver answered " + r.status + ".");
      else { fieldOk(form, ""); fieldError(form, "Test delivery failed: " + (r.error || "no answer")); }
    } catch (e) {
      fieldOk(form, "");
      fieldError(form, e.message);
    }
  }

  // --- live notifications over /ws/ ------------------------------------------------------------
  function setLive(text, on) {
    const badge = $("live");
    badge.textContent = text;
    badge.className = on ? "badge on" : "badge";
  }

  function recentSeqs() {
    try {
      const list = JSON.parse(sessionStorage.getItem(KEY_RECENT) || "[]");
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return [];
    }
  }

  // Where a (re)connect resumes from; entries older than the settle time move into the cursor.
  function lastSeq() {
    const raw = sessionStorage.getItem(KEY_SEQ);
    let settled = raw === null ? NaN : parseInt(raw, 10);
    const now = Date.now();
    const recent = recentSeqs().filter(([at, seq]) => {
      if (now - at < SETTLE_MS) return true;
      settled = isNaN(settled) ? seq : Math.max(settled, seq);
      return false;
    });
    sessionStorage.setItem(KEY_RECENT, JSON.stringify(recent));
    if (!isNaN(settled)) {
      sessionStorage.setItem(KEY_SEQ, String(settled));
      return settled;
    }
    return recent.length ? Math.min(...recent.map(([, seq]) => seq)) - 1 : null;
  }

  function rememberSeq(seq) {
    const recent = recentSeqs();
    recent.push([Date.now(), seq]);
    sessionStorage.setItem(KEY_RECENT, JSON.stringify(recent.slice(-500)));
  }

  // A page reload keeps what was shown within the settle time, so a replay does not show it twice.
  function seenBefore(seq) {
    if (state.seenSeqs.size === 0) recentSeqs().forEach(([, s]) => state.seenSeqs.add(s));
    return state.seenSeqs.has(seq);
  }

  function wsSend(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // A request frame whose reply (or `error`) carries the same request_id.
  // With a transfer item, its Cancel button rejects the request in flight.
  function wsRequest(frame, item) {
    return new Promise((resolve, reject) => {
      const id = "r" + (state.wsNextId++);
      if (!state.wsReady || !wsSend(Object.assign({}, frame, { request_id: id }))) {
        reject(offline());
        return;
      }
      state.wsPending.set(id, { resolve, reject });
      if (item) {
        item.job.abort = () => {
          item.cancelled = true;
          if (state.wsPending.delete(id)) reject(cancelled());
        };
      }
    });
  }

  function wsUntilReady(item) {
    if (state.wsReady) return Promise.resolve();
    if (!state.ws && state.user && navigator.onLine) wsOpen();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(offline()), 30000);
      state.wsWaiters.push(() => { clearTimeout(timer); if (item && item.cancelled) reject(cancelled()); else resolve(); });
    });
  }

  function wsFailPending() {
    state.wsReady = false;
    for (const pending of state.wsPending.values()) pending.reject(offline());
    state.wsPending.clear();
  }

  // "open": the first frame of a socket (then resume); "renew": a fresh token on the same socket.
  function wsSendConnect(requestId) {
    if (tokens.access) wsSend({ type: "connect", access_token: tokens.access, request_id: requestId });
  }

  function wsOpen() {
    wsClose();
    if (!tokens.access) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/ws/");
    state.ws = ws;
    setLive("connecting", false);
    ws.addEventListener("open", () => wsSendConnect("open"));
    ws.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (state.ws !== ws) return; // replaced or closed on purpose
      state.ws = null;
      wsFailPending();
      clearInterval(state.aliveTimer);
      setLive("offline", false);
      if (!state.user || !navigator.onLine) return; // the `online` event reconnects
      if (event.code === 4401) {
        // Token refused: a fresh one, if the refresh token still works; else the session is over.
        refreshTokens().then((ok) => (ok ? wsReconnectSoon() : sessionEnded("the session expired")));
      } else {
        wsReconnectSoon();
      }
    });
  }

  function wsReconnectSoon() {
    clearTimeout(state.wsTimer);
    const delay = Math.min(30000, 1000 * Math.pow(2, state.wsRetry)) * (0.5 + Math.random() / 2);
    state.wsRetry = Math.min(state.wsRetry + 1, 5);
    state.wsTimer = setTimeout(wsOpen, delay);
  }

  function wsClose() {
    clearTimeout(state.wsTimer);
    clearInterval(state.aliveTimer);
    const ws = state.ws;
    state.ws = null;
    wsFailPending();
    if (ws) ws.close(1000);
    setLive("offline", false);
  }

  function onFrame(frame) {
    const pending = frame.request_id !== undefined ? state.wsPending.get(frame.request_id) : null;
    if (pending) {
      state.wsPending.delete(frame.request_id);
      if (frame.type === "error") pending.reject(new ApiError(0, frame.code, frame.message || frame.code, frame.details));
      else pending.resolve(frame);
      return;
    }
    switch (frame.type) {
      case "connected": {
        setLive("live", true);
        if (frame.request_id !== "open") break; // a renewed token on the same socket
        state.wsRetry = 0;
        state.wsReady = true;
        const waiters = state.wsWaiters;
        state.wsWaiters = [];
        waiters.forEach((resolve) => resolve());
        clearInterval(state.aliveTimer);
        state.aliveTimer = setInterval(() => wsSend({ type: "alive" }), 60000);
        const after = lastSeq();
        if (after !== null) wsSend({ type: "resume", after: after, request_id: "resume" });
        // A reconnect: the REST views catch up too (state changes since the socket dropped).
        if (state.everConnected) { loadOverview(); refreshPools(); }
        state.everConnected = true;
        break;
      }
      case "upload.status":
      case "group.closed":
      case "result.available":
        onNotification(frame);
        break;
      case "error":
        if (frame.code !== "invalid_token" && frame.code !== "token_revoked") {
          showError(frame.message || frame.code);
        }
        break;
      default:
        break; // alive, resumed, ...
    }
  }

  function poolName(id) {
    const pool = state.pools.find((p) => p.id === id);
    return pool ? pool.name : String(id);
  }

  function onNotification(frame) {
    if (typeof frame.seq === "number") {
      if (seenBefore(frame.seq)) return;
      state.seenSeqs.add(frame.seq);
      rememberSeq(frame.seq);
    }
    let text;
    const here = state.pool && state.pool.id === frame.pool;
    if (frame.type === "upload.status") {
      const id = String(frame.upload_id);
      const item = state.items.get(id);
      const shown = document.querySelector('tr[data-upload-id="' + CSS.escape(id) + '"] td');
      const name = item ? item.file.name : (shown ? shown.textContent : "");
      text = (name ? "upload " + name : "an upload of yours (" + id.slice(0, 8) + ")") + " is " + frame.status;
      if (item) applyStatus(item, frame.status);
      else state.early.set(id, frame);
      for (const tr of document.querySelectorAll('tr[data-upload-id="' + CSS.escape(id) + '"]')) {
        tr.children[5].textContent = String(frame.status);
        tr.children[5].className = "status-" + String(frame.status).replace(/[^a-z]/g, "");
      }
    } else if (frame.type === "group.closed") {
      text = "A group of " + poolName(frame.pool) + " closed.";
      notice(text);
      if (here) loadGroups();
    } else {
      text = "A result is available in " + poolName(frame.pool) + " (" + fmtBytes(frame.size) + ").";
      notice(text);
      if (here) loadGroups();
    }
    if (frame.pool && !state.pools.some((p) => p.id === frame.pool)) refreshPools(); // a pool we just joined
    const li = el("li");
    li.dataset.type = frame.type;
    li.appendChild(el("time", new Date().toLocaleTimeString(), "muted"));
    li.appendChild(el("span", " " + text));
    const list = $("notifications");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_NOTIFICATIONS) list.removeChild(list.lastChild);
  }

  // --- wiring ---------------------------------------------------------------------------------
  function wireDrop() {
    const drop = $("drop");
    const input = $("upload-form").elements.files;
    ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        $("upload-form").requestSubmit();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    state.features = new Set((document.body.dataset.features || "").split(/\s+/).filter(Boolean));
    state.largeFile = Number(document.body.dataset.largeFileBytes) || state.largeFile;
    options($("member-form").elements.role, ROLES, null, "contributor");
    options($("provision-form").elements.role, ROLES, null, "contributor");
    options($("settings-form").elements.late_policy, LATE_POLICIES);
    options($("settings-form").elements.short_round_policy, ["roll", "skip"],
      ["moves its uploads to the next window", "is skipped, never exported"]);
    $("login-form").addEventListener("submit", authForm("/auth/login"));
    $("signup-form").addEventListener("submit", authForm("/auth/signup"));
    $("logout").addEventListener("click", logout);
    $("account-open").addEventListener("click", () => { $("account-view").hidden = false; $("password-form").elements.current_password.focus(); });
    $("account-close").addEventListener("click", () => { $("account-view").hidden = true; });
    $("password-form").addEventListener("submit", changePassword);
    $("pools-refresh").addEventListener("click", refreshPools);
    $("history-open").addEventListener("click", () => openFiles(false));
    $("admin-files-open").addEventListener("click", () => openFiles(true));
    for (const name of TABS) {
      $("tab-" + name).addEventListener("click", () => showTab(name));
      $("tab-" + name).addEventListener("keydown", onTabKey);
    }
    $("window-close").addEventListener("click", closeGroupNow);
    $("result-download").addEventListener("click", downloadResult);
    $("upload-form").addEventListener("submit", uploadFiles);
    $("timestamp-now").addEventListener("click", resetTimestamp);
    resetTimestamp();
    wireDrop();
    $("archive-download").addEventListener("click", downloadArchive);
    $("result-form").addEventListener("submit", postResult);
    $("member-form").addEventListener("submit", addMember);
    $("provision-form").addEventListener("submit", provision);
    $("settings-form").addEventListener("submit", saveSettings);
    $("webhook-test").addEventListener("click", webhookTest);
    window.addEventListener("offline", () => { if (state.user) wsClose(); });
    window.addEventListener("online", () => { if (state.user) { state.wsRetry = 0; wsOpen(); } });
    if (tokens.access) {
      scheduleRefresh();
      start();
    }
  });
})();
