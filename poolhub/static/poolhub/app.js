// poolhub web page for pool members. Vanilla JS, no dependencies, served from this server.
// Tokens live in sessionStorage and only ever travel in an Authorization header or in the
// websocket's first `connect` frame, never in a URL. Data reaches the DOM through textContent.
"use strict";

(function () {
  const API = "/api/v1";
  const KEY_ACCESS = "poolhub.access";
  const KEY_REFRESH = "poolhub.refresh";
  const KEY_SEQ = "poolhub.lastSeq";
  const WRITER_ROLES = ["contributor", "manager"];
  const MAX_NOTIFICATIONS = 100;

  const state = {
    user: null,
    pools: [],
    pool: null, // {id, name, role}
    latestResult: null,
    ws: null,
    wsRetry: 0,
    wsTimer: null,
    aliveTimer: null,
    refreshTimer: null,
    seenSeqs: new Set(),
    everConnected: false,
  };

  const $ = (id) => document.getElementById(id);

  // --- small DOM helpers (text only) ---------------------------------------------------------
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) tr.appendChild(el("td", cell));
    return tr;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function fmtBytes(n) {
    if (typeof n !== "number") return "";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / (1024 * 1024)).toFixed(1) + " MiB";
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function nowIso() {
    return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
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
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function errorFrom(res) {
    let code = "error";
    let message = "request failed (HTTP " + res.status + ")";
    try {
      const body = await res.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (e) { /* not JSON: keep the generic message */ }
    return new ApiError(res.status, code, message);
  }

  // options: {method, json, form, raw}; raw returns the Response (for downloads).
  async function api(path, options, retried) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (tokens.access) headers.Authorization = "Bearer " + tokens.access;
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.form) {
      body = opts.form; // the browser sets the multipart boundary
    }
    let res;
    try {
      res = await fetch(API + path, { method: opts.method || "GET", headers, body, credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, "network", "the server cannot be reached");
    }
    if (res.ok) {
      if (opts.raw) return res;
      return res.status === 204 ? null : res.json();
    }
    const err = await errorFrom(res);
    if (res.status === 401 && err.code === "invalid_token" && !retried && await refreshTokens()) {
      return api(path, opts, true);
    }
    if (res.status === 401 && path.indexOf("/auth/login") !== 0) sessionEnded(err.message);
    throw err;
  }

  // --- session --------------------------------------------------------------------------------
  function sessionEnded(message) {
    wsClose();
    clearTimeout(state.refreshTimer);
    tokens.clear();
    state.user = null;
    state.pool = null;
    state.seenSeqs.clear();
    state.everConnected = false;
    $("session").hidden = true;
    $("app-view").hidden = true;
    $("login-view").hidden = false;
    showError(message ? "Logged out: " + message : "");
  }

  async function login(event) {
    event.preventDefault();
    showError("");
    const form = event.target;
    const username = form.elements.username.value;
    const password = form.elements.password.value;
    try {
      const body = await api("/auth/login", { method: "POST", json: { username, password } });
      tokens.clear();
      tokens.set(body.access, body.refresh);
      form.reset();
      await start();
    } catch (e) {
      showError(e.message);
    }
  }

  async function logout() {
    const refresh = tokens.refresh;
    try {
      await api("/auth/logout", { method: "POST", json: refresh ? { refresh } : {} });
    } catch (e) { /* logged out locally either way */ }
    sessionEnded("");
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
    $("whoami").textContent = me.user.username + (me.user.role === "admin" ? " (admin)" : "");
    $("session").hidden = false;
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    renderPools();
    if (state.pools.length === 1) selectPool(state.pools[0]);
    wsOpen();
  }

  // --- pools ----------------------------------------------------------------------------------
  function renderPools() {
    const list = $("pools");
    clear(list);
    $("no-pools").hidden = state.pools.length > 0;
    for (const pool of state.pools) {
      const li = document.createElement("li");
      const button = el("button", pool.name);
      button.type = "button";
      button.appendChild(el("span", pool.role, "role"));
      if (state.pool && state.pool.id === pool.id) button.className = "selected";
      button.addEventListener("click", () => selectPool(pool));
      li.appendChild(button);
      list.appendChild(li);
    }
  }

  function canUpload(pool) {
    return WRITER_ROLES.indexOf(pool.role) >= 0 || (state.user && state.user.role === "admin");
  }

  function selectPool(pool) {
    state.pool = pool;
    showError("");
    renderPools();
    $("pool-view").hidden = false;
    $("pool-title").textContent = pool.name + " — " + pool.role;
    $("upload-box").hidden = !canUpload(pool);
    $("upload-status").textContent = "";
    loadPool();
  }

  function loadPool() {
    if (!state.pool) return;
    loadGroups();
    loadResult();
    loadUploads();
  }

  function current(pool) {
    return state.pool && state.pool.id === pool.id;
  }

  async function loadGroups() {
    const pool = state.pool;
    try {
      const body = await api("/pools/" + encodeURIComponent(pool.id) + "/groups");
      if (!current(pool)) return;
      const groups = Array.isArray(body) ? body : (body.results || []);
      const tbody = $("groups");
      clear(tbody);
      if (!groups.length) {
        const tr = row(["no groups yet"]);
        tr.firstChild.colSpan = 5;
        tr.className = "muted";
        tbody.appendChild(tr);
      }
      for (const g of groups) {
        tbody.appendChild(row([fmtTime(g.window_start), fmtTime(g.window_end), g.status, g.upload_count,
          fmtBytes(g.bytes)]));
      }
    } catch (e) {
      if (current(pool)) showError(e.message);
    }
  }

  async function loadResult() {
    const pool = state.pool;
    try {
      const result = await api("/pools/" + encodeURIComponent(pool.id) + "/results/latest");
      if (!current(pool)) return;
      state.latestResult = result;
      $("result-meta").textContent = fmtTime(result.created_at) + " · " + fmtBytes(result.size) +
        " · sha256 " + String(result.sha256 || "").slice(0, 16) + "…";
      $("result-none").hidden = true;
      $("result-some").hidden = false;
    } catch (e) {
      if (!current(pool)) return;
      state.latestResult = null;
      $("result-none").hidden = false;
      $("result-some").hidden = true;
      if (e.status !== 404) showError(e.message);
    }
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

  async function downloadResult() {
    const result = state.latestResult;
    if (!result) return;
    showError("");
    try {
      // The content endpoint needs the Authorization header: fetch it, then save the blob.
      const res = await api("/results/" + encodeURIComponent(result.id) + "/content", { raw: true });
      const blob = await res.blob();
      const href = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = href;
      a.download = filenameFrom(res, "result-" + result.id);
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
    } catch (e) {
      showError(e.message);
    }
  }

  async function upload(event) {
    event.preventDefault();
    const pool = state.pool;
    const form = event.target;
    const file = form.elements.file.files[0];
    if (!pool || !file) return;
    showError("");
    const status = $("upload-status");
    status.textContent = "uploading " + file.name + "…";
    const data = new FormData();
    data.append("file", file, file.name);
    data.append("timestamp", nowIso());
    try {
      const up = await api("/pools/" + encodeURIComponent(pool.id) + "/uploads", { method: "POST", form: data });
      status.textContent = "accepted: " + up.filename + " (" + up.status + ")";
      form.reset();
      if (current(pool)) loadUploads();
    } catch (e) {
      status.textContent = "";
      showError(e.message);
    }
  }

  async function loadUploads() {
    const pool = state.pool;
    try {
      const body = await api("/uploads?pool=" + encodeURIComponent(pool.id) + "&limit=20");
      if (!current(pool)) return;
      const uploads = Array.isArray(body) ? body : (body.results || []);
      const tbody = $("uploads");
      clear(tbody);
      if (!uploads.length) {
        const tr = row(["no uploads yet"]);
        tr.firstChild.colSpan = 5;
        tr.className = "muted";
        tbody.appendChild(tr);
      }
      for (const u of uploads) {
        const tr = row([u.filename, fmtBytes(u.size), fmtTime(u.timestamp), u.status, u.attempts]);
        tr.dataset.uploadId = String(u.id);
        tr.children[3].className = "status-" + String(u.status).replace(/[^a-z]/g, "");
        tbody.appendChild(tr);
      }
    } catch (e) {
      if (current(pool)) showError(e.message);
    }
  }

  // --- live notifications over /ws/ ------------------------------------------------------------
  function setLive(text, on) {
    const badge = $("live");
    badge.textContent = text;
    badge.className = on ? "badge on" : "badge";
  }

  function lastSeq() {
    const raw = sessionStorage.getItem(KEY_SEQ);
    const n = raw === null ? NaN : parseInt(raw, 10);
    return isNaN(n) ? null : n;
  }

  function rememberSeq(seq) {
    const last = lastSeq();
    if (last === null || seq > last) sessionStorage.setItem(KEY_SEQ, String(seq));
  }

  function wsSend(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
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
      clearInterval(state.aliveTimer);
      setLive("offline", false);
      if (!state.user) return;
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
    if (ws) ws.close(1000);
    setLive("offline", false);
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "connected": {
        setLive("live", true);
        if (frame.request_id !== "open") break; // a renewed token on the same socket
        state.wsRetry = 0;
        clearInterval(state.aliveTimer);
        state.aliveTimer = setInterval(() => wsSend({ type: "alive" }), 60000);
        const after = lastSeq();
        if (after !== null) wsSend({ type: "resume", after: after, request_id: "resume" });
        // A reconnect: the REST views catch up too (state changes since the socket dropped).
        if (state.everConnected) loadPool();
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
      if (state.seenSeqs.has(frame.seq)) return;
      state.seenSeqs.add(frame.seq);
      rememberSeq(frame.seq);
    }
    let text;
    if (frame.type === "upload.status") {
      text = "upload " + String(frame.upload_id).slice(0, 8) + " is " + frame.status +
        " (attempts " + frame.attempts + ")";
      const tr = document.querySelector('#uploads tr[data-upload-id="' + CSS.escape(String(frame.upload_id)) + '"]');
      if (tr) {
        tr.children[3].textContent = String(frame.status);
        tr.children[3].className = "status-" + String(frame.status).replace(/[^a-z]/g, "");
        tr.children[4].textContent = String(frame.attempts);
      }
    } else if (frame.type === "group.closed") {
      text = "a group of " + poolName(frame.pool) + " closed";
      if (state.pool && state.pool.id === frame.pool) loadGroups();
    } else {
      text = "a result is available in " + poolName(frame.pool) + " (" + fmtBytes(frame.size) + ")";
      if (state.pool && state.pool.id === frame.pool) { loadResult(); loadGroups(); }
    }
    const li = el("li");
    li.appendChild(el("time", new Date().toLocaleTimeString(), "muted"));
    li.appendChild(el("span", " " + text));
    const list = $("notifications");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_NOTIFICATIONS) list.removeChild(list.lastChild);
  }

  // --- wiring ---------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("upload-form").addEventListener("submit", upload);
    $("result-download").addEventListener("click", downloadResult);
    $("uploads-refresh").addEventListener("click", () => { showError(""); loadUploads(); });
    if (tokens.access) {
      scheduleRefresh();
      start();
    }
  });
})();
