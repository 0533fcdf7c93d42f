/* RunnerHost console — plain JS, no build step. Data comes only from the JSON API with the
   operator's API key (kept in sessionStorage); every DOM node is built with textContent, never
   innerHTML, so no stored value can become markup. Routes live in the URL hash. */
"use strict";

const KEY = "runnerhost.apiKey";
const STATUSES = ["created", "running", "completed", "failed", "cancelled", "timeout"];
const TERMINAL = new Set(["completed", "failed", "cancelled", "timeout"]);
const STRATEGIES = ["parallel", "steer", "enqueue", "reject", "interrupt", "rollback"];
const main = () => document.getElementById("main");
const mount = (...nodes) => main().append(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
let page = { timers: [], aborts: [] };   // what the current page must stop when the route changes
let me = null;                            // whoami of the current key

// -- tiny DOM helpers ------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
const fmtDur = (a, b) => (a && b ? (b - a < 1 ? "<1 s" : `${b - a} s`) : "—");  // ledger times are whole seconds
const json = (v) => JSON.stringify(v, null, 2);
const badge = (status) => el("span", { class: `badge ${status}`, text: status });
function toast(message) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.classList.add("show");
  setTimeout(() => t.classList.remove("show"), 2500);
}
function table(columns, rows, { caption, empty = "none" } = {}) {
  if (!rows.length) return el("p", { class: "muted", text: empty });
  return el("div", { class: "table-wrap" }, el("table", { class: "stack" },
    caption ? el("caption", { class: "muted", text: caption }) : null,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c.label })))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) => {
      const value = c.render ? c.render(row) : row[c.key];
      return el("td", { "data-label": c.label, class: c.mono ? "mono" : null },
        value instanceof Node ? value : (value === null || value === undefined || value === "" ? "—" : String(value)));
    }))))));
}
function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const isCheck = input.type === "checkbox";
  const error = el("span", { class: "field-error", id: `${id}-error`, role: "alert" });
  const hintNode = hint ? el("span", { class: "hint", id: `${id}-hint`, text: hint }) : null;
  if (hint) input.setAttribute("aria-describedby", `${id}-hint`);
  const labelNode = el("label", { for: id, text: label });
  return el("div", { class: isCheck ? "field check" : "field" },
    isCheck ? [input, labelNode] : [labelNode, input], hintNode, error);
}
function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return el("section", { class: "panel", "aria-labelledby": id }, el("h2", { id, text: title }), ...children);
}

// -- the API ---------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}
function headers(extra) {
  const key = sessionStorage.getItem(KEY);
  return { ...(key ? { Authorization: `Bearer ${key}` } : {}), ...(extra || {}) };
}
async function api(path, { method = "GET", body, raw = false, signal } = {}) {
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) {
    let payload = null;
    try { payload = await response.json(); } catch (_) { /* not JSON */ }
    if (response.status === 401 && path === "/v1/console/whoami") throw new ApiError(401, payload);
    if (response.status === 401) { showLogin(payload && payload.message); }
    throw new ApiError(response.status, payload);
  }
  return raw ? response : response.json();
}
function qs(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) search.append(k, item);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
/** Read an NDJSON response frame by frame; resolves when the stream ends. */
async function readFrames(response, onFrame) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) onFrame(JSON.parse(line));
    }
  }
  if (buffer.trim()) onFrame(JSON.parse(buffer));
}
function showError(where, error) {
  where.replaceChildren(el("p", { class: "error-summary", role: "alert",
    text: error instanceof ApiError ? `${error.body.code || error.status}: ${error.message}` : String(error) }));
}

// -- session -----------------------------------------------------------------------------------
function showLogin(reason) {
  stopPage();
  const input = el("input", { type: "password", name: "api-key", autocomplete: "current-password", required: true });
  const summary = el("p", { class: "error-summary", role: "alert", text: reason && sessionStorage.getItem(KEY) ? reason : "" });
  const form = el("form", { class: "login", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    try {
      me = await api("/v1/console/whoami");
      renderSession();
      route();
    } catch (err) {
      sessionStorage.removeItem(KEY);
      summary.textContent = err instanceof ApiError ? err.message : String(err);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  } }, field("API key", input, "Kept in this tab's session storage only."), summary, el("button", { type: "submit", text: "Sign in" }));
  main().replaceChildren(el("h1", { text: "Sign in" }), el("p", { text: "This console uses the API's keys (read scope; ingest to start or cancel runs, admin to edit agents)." }), form);
  input.focus();
}
function renderSession() {
  const box = document.getElementById("session");
  if (!me) { box.replaceChildren(); return; }
  box.replaceChildren(el("span", { text: `${me.name} · ${me.scopes.join(", ")}` }),
    me.auth === "api_keys" ? el("button", { type: "button", class: "secondary", text: "Sign out", onclick: () => {
      sessionStorage.removeItem(KEY); me = null; renderSession(); showLogin();
    } }) : null);
}

// -- router ------------------------------------------------------------------------------------
function stopPage() {
  page.timers.forEach(clearInterval);
  page.aborts.forEach((c) => c.abort());
  page = { timers: [], aborts: [] };
}
function every(ms, fn) { page.timers.push(setInterval(fn, ms)); }
function abortable() { const c = new AbortController(); page.aborts.push(c); return c.signal; }
function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "") || "runs";
  const [path, query] = hash.split("?");
  return { parts: path.split("/").map(decodeURIComponent), params: new URLSearchParams(query || "") };
}
async function route() {
  stopPage();
  if (!me) {
    try { me = await api("/v1/console/whoami"); renderSession(); } catch (err) { showLogin(); return; }
  }
  const { parts, params } = parseHash();
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (a.dataset.nav === parts[0]) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  const view = { runs: parts[1] ? () => runPage(parts[1]) : () => runsPage(params),
    conversations: parts[1] ? () => conversationPage(parts[1], params) : () => conversationsPage(),
    agents: parts[1] ? () => agentPage(parts[1]) : () => agentsPage(),
    health: () => healthPage() }[parts[0]];
  main().replaceChildren();
  try {
    if (view) await view(); else mount(el("h1", { text: "Not found" }));
  } catch (err) {
    if (err.name !== "AbortError") showError(main(), err);
  }
  const heading = main().querySelector("h1");
  document.title = `${heading ? heading.textContent : "Console"} · RunnerHost`;
  if (document.activeElement === document.body || !main().contains(document.activeElement)) main().focus({ preventScroll: true });
}
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// -- Runs --------------------------------------------------------------------------------------
async function runsPage(params) {
  const filters = { status: params.get("status") || "", agent_id: params.get("agent") || "",
    conversation_id: params.get("conversation") || "", since: params.get("since") || "", until: params.get("until") || "" };
  const agents = await api("/v1/agents");
  const counts = el("ul", { class: "counts", "aria-label": "Runs by status", "aria-live": "polite" });
  const list = el("div", { id: "runs-table" });
  const liveBox = el("div", { id: "live-runs", "aria-live": "polite" });
  const toEpoch = (v) => (v ? String(Math.floor(new Date(v).getTime() / 1000)) : "");
  const fromEpoch = (v) => (v ? new Date(Number(v) * 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "");

  const status = el("select", { name: "status" }, el("option", { value: "", text: "any" }),
    STATUSES.map((s) => el("option", { value: s, text: s, selected: s === filters.status })));
  const agent = el("select", { name: "agent" }, el("option", { value: "", text: "any" }),
    agents.map((a) => el("option", { value: a.agent_id, text: a.agent_id, selected: a.agent_id === filters.agent_id })));
  const conversation = el("input", { name: "conversation", value: filters.conversation_id, autocomplete: "off" });
  const since = el("input", { type: "datetime-local", name: "since", value: fromEpoch(filters.since) });
  const until = el("input", { type: "datetime-local", name: "until", value: fromEpoch(filters.until) });
  const filterForm = el("form", { class: "row", "aria-label": "Filter runs", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/runs${qs({ status: status.value, agent: agent.value, conversation: conversation.value.trim(),
      since: toEpoch(since.value), until: toEpoch(until.value) })}`;
  } }, field("Status", status), field("Agent", agent), field("Conversation", conversation),
  field("Created from", since), field("Created before", until),
  el("button", { type: "submit", text: "Apply" }),
  el("button", { type: "button", class: "secondary", text: "Reset", onclick: () => { location.hash = "#/runs"; } }));

  const startAgent = el("select", { name: "start-agent" }, agents.map((a) => el("option", { value: a.agent_id, text: a.agent_id })));
  const startConv = el("input", { name: "start-conversation", value: `console-${Date.now().toString(36)}`, autocomplete: "off" });
  const startText = el("input", { name: "start-text", value: "", autocomplete: "off", required: true });
  const startError = el("p", { class: "error-summary", role: "alert" });
  const startForm = el("form", { class: "row", novalidate: true, "aria-label": "Start a run", onsubmit: async (e) => {
    e.preventDefault();
    startError.textContent = "";
    try {
      const accepted = await api("/v1/events?wait=false", { method: "POST", body: { agent_id: startAgent.value,
        event: { event_type: "message.received", source: "webui", conversation_id: startConv.value.trim() || null,
          input: { text: startText.value } } } });
      location.hash = `#/runs/${encodeURIComponent(accepted.run_id)}`;
    } catch (err) { startError.textContent = err.message; }
  } }, field("Agent", startAgent), field("Conversation", startConv), field("Message", startText),
  el("button", { type: "submit", text: "Start run" }));

  let cursor = null;
  async function refresh() {
    const base = { agent_id: filters.agent_id, conversation_id: filters.conversation_id, since: filters.since, until: filters.until };
    const [stats, runs, live] = await Promise.all([
      api(`/v1/stats/runs${qs(base)}`),
      api(`/v1/runs${qs({ ...base, status: filters.status, cursor, limit: 25 })}`),
      api(`/v1/runs${qs({ ...base, status: ["created", "running"], limit: 10 })}`)]);
    liveBox.replaceChildren(...[live.items.length ? el("ul", {}, live.items.map((r) => el("li", {},
      el("a", { href: `#/runs/${encodeURIComponent(r.run_id)}`, text: r.run_id }), ` · ${r.agent_id || "—"} · `, badge(r.status),
      ` · since ${fmtTime(r.started_at || r.created_at)}`))) : el("p", { class: "muted", text: "No live runs." }),
    live.total_count > live.items.length ? el("p", { class: "muted", text: `${live.total_count - live.items.length} more` }) : null]
      .filter(Boolean));
    counts.replaceChildren(el("li", {}, el("a", { href: `#/runs${qs({ agent: filters.agent_id, conversation: filters.conversation_id, since: filters.since, until: filters.until })}`,
      "aria-current": filters.status ? null : "true" }, "all ", el("strong", { text: stats.total }))),
      ...STATUSES.map((s) => el("li", {}, el("a", { href: `#/runs${qs({ status: s, agent: filters.agent_id, conversation: filters.conversation_id, since: filters.since, until: filters.until })}`,
        "aria-current": filters.status === s ? "true" : null, "data-status": s }, `${s} `, el("strong", { text: stats.counts[s] })))));
    list.replaceChildren(table([
      { label: "Run", render: (r) => el("a", { href: `#/runs/${encodeURIComponent(r.run_id)}`, text: r.run_id }), mono: true },
      { label: "Agent", key: "agent_id" },
      { label: "Status", render: (r) => badge(r.status) },
      { label: "Reason", key: "status_reason" },
      { label: "Conversation", render: (r) => (r.conversation_id ? el("a", { href: `#/conversations/${encodeURIComponent(r.conversation_id)}`, text: r.conversation_id }) : "—") },
      { label: "Created", render: (r) => fmtTime(r.created_at) },
      { label: "Duration", render: (r) => fmtDur(r.started_at, r.finished_at) },
    ], runs.items, { empty: "No runs match." }),
    el("div", { class: "row" }, el("span", { class: "muted", text: `${runs.total_count} matching` }),
      cursor ? el("button", { type: "button", class: "secondary", text: "Newest", onclick: () => { cursor = null; refresh(); } }) : null,
      runs.has_more ? el("button", { type: "button", class: "secondary", text: "Older", onclick: () => { cursor = runs.next_cursor; refresh(); } }) : null));
  }
  mount(el("h1", { text: "Runs" }), counts, section("Live now", liveBox), section("Filter", filterForm),
    me.scopes.some((s) => s === "ingest" || s === "admin") ? section("Start a run", startForm, startError) : null, list);
  await refresh();
  every(2000, () => refresh().catch(() => {}));
}

// -- Run ------------------------------------------------------------------------------------------
async function runPage(runId) {
  const id = encodeURIComponent(runId);
  let run = await api(`/v1/runs/${id}`);
  const header = el("dl", { class: "facts", id: "run-header" });
  const statusLine = el("p", { id: "run-status", "aria-live": "polite" });
  const cancel = el("button", { type: "button", class: "danger", id: "cancel-run", text: "Cancel run" });
  const output = el("div", { class: "output", id: "run-output", "aria-live": "polite", "aria-label": "Assistant output" });
  const frameList = el("ol", { class: "frames", id: "run-frames", "aria-label": "Frames" });
  const ledger = el("div"), steering = el("div"), tools = el("div"), state = el("div"), artifacts = el("div"), deliveries = el("div");
  const frames = [];

  function renderHeader() {
    header.replaceChildren(...[
      ["Status", badge(run.status)], ["Reason", run.status_reason || "—"], ["Agent", run.agent_id || "—"],
      ["Runner", run.runner_id || "—"], ["Binding", run.binding_id || "—"],
      ["Conversation", run.conversation_id ? el("a", { href: `#/conversations/${encodeURIComponent(run.conversation_id)}`, text: run.conversation_id }) : "—"],
      ["Event", run.event_id || "—"], ["Created", fmtTime(run.created_at)], ["Started", fmtTime(run.started_at)],
      ["Finished", fmtTime(run.finished_at)], ["Duration", fmtDur(run.started_at, run.finished_at)],
      ["Deadline", fmtTime(run.deadline_at)], ["Cancel requested", fmtTime(run.cancel_requested_at)],
    ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-fact": k.toLowerCase() }, v)]));
    statusLine.textContent = `Status: ${run.status}${run.status_reason ? ` (${run.status_reason})` : ""}`;
    statusLine.dataset.status = run.status;
    cancel.disabled = TERMINAL.has(run.status) || !me.scopes.some((s) => s === "ingest" || s === "admin");
  }
  function addFrame(frame) {
    if (frame.sequence !== null && frame.sequence !== undefined && frames.some((f) => f.sequence === frame.sequence)) return;
    frames.push(frame);
    if (frame.type === "message.delta") {  // rebuilt in sequence order: live and ledger frames may interleave
      output.textContent = frames.filter((f) => f.type === "message.delta")
        .sort((a, b) => (a.sequence ?? 1e9) - (b.sequence ?? 1e9)).map((f) => (f.data.chunk || {}).content || "").join("");
    }
    frameList.append(el("li", {}, el("span", { class: "mono", text: `#${frame.sequence ?? "–"} ` }), el("strong", { text: frame.type }),
      " ", el("span", { class: "mono muted", text: JSON.stringify(frame.data).slice(0, 240) })));
    frameList.scrollTop = frameList.scrollHeight;
  }
  function renderFromFrames() {
    const calls = new Map();
    for (const f of frames) {
      if (!f.type.startsWith("tool.call.")) continue;
      const key = f.data.tool_call_id || `${f.sequence}`;
      const call = calls.get(key) || { tool_call_id: key };
      Object.assign(call, { tool_name: f.data.tool_name || call.tool_name, parameters: f.data.parameters ?? call.parameters });
      if (f.type === "tool.call.completed") Object.assign(call, { result: f.data.result, error: f.data.error });
      calls.set(key, call);
    }
    tools.replaceChildren(table([
      { label: "Tool", key: "tool_name" }, { label: "Call id", key: "tool_call_id", mono: true },
      { label: "Parameters", render: (c) => el("pre", { text: json(c.parameters ?? null) }) },
      { label: "Result", render: (c) => el("pre", { text: c.error ? `error: ${json(c.error)}` : json(c.result ?? null) }) },
    ], [...calls.values()]));
    state.replaceChildren(table([
      { label: "Scope", render: (f) => f.data.scope }, { label: "Key", render: (f) => f.data.key },
      { label: "Value", render: (f) => el("pre", { text: json(f.data.value) }) }, { label: "Sequence", key: "sequence" },
    ], frames.filter((f) => f.type === "state.updated")));
    const delivered = frames.filter((f) => f.type.startsWith("delivery."));
    deliveries.replaceChildren(table([
      { label: "Type", key: "type" }, { label: "Data", render: (f) => el("pre", { text: json(f.data) }) },
    ], delivered, { empty: "none" }));
  }
  async function loadFacts() {
    const events = [];
    let cursor = null;
    for (let i = 0; i < 20; i++) {
      const pageData = await api(`/v1/runs/${id}/events${qs({ cursor, limit: 100 })}`);
      events.push(...pageData.items);
      if (!pageData.has_more) break;
      cursor = pageData.next_cursor;
    }
    events.forEach((e) => addFrame({ run_id: runId, type: e.type, data: e.data, sequence: e.sequence }));
    ledger.replaceChildren(table([
      { label: "Seq", key: "sequence" }, { label: "Type", key: "type" }, { label: "At", render: (e) => fmtTime(e.created_at) },
      { label: "Data", render: (e) => el("pre", { text: json(e.data) }) },
    ], events, { empty: "No ledger events yet." }));
    const [audit, arts] = await Promise.all([api(`/v1/runs/${id}/steering`), api(`/v1/runs/${id}/artifacts`)]);
    steering.replaceChildren(table([
      { label: "Event", key: "event_id", mono: true }, { label: "Text", key: "text" },
      { label: "Status", render: (s) => badge(s.status) },
      { label: "Claimed", render: (s) => fmtTime(s.claimed_at) }, { label: "Resolved", render: (s) => fmtTime(s.resolved_at) },
    ], audit.items));
    artifacts.replaceChildren(table([
      { label: "Name", render: (a) => a.name || a.artifact_id }, { label: "Type", key: "artifact_type" },
      { label: "MIME", key: "mime_type" }, { label: "Size", render: (a) => `${a.size_bytes} B` },
      { label: "SHA-256", render: (a) => a.sha256.slice(0, 16) + "…", mono: true },
      { label: "Download", render: (a) => el("button", { type: "button", class: "secondary", text: "Download",
        "aria-label": `Download ${a.name || a.artifact_id}`, onclick: () => download(runId, a) }) },
    ], arts));
    renderFromFrames();
  }
  async function follow() {
    const signal = abortable();
    try {
      const response = await api(`/v1/runs/${id}/stream`, { raw: true, signal });
      await readFrames(response, (frame) => { addFrame(frame); renderFromFrames(); });
    } catch (err) {
      if (err.name === "AbortError") return;
      // e.g. a read-only key may not join: poll the ledger instead
      while (!signal.aborted && !TERMINAL.has(run.status)) {
        await new Promise((r) => setTimeout(r, 1000));
        run = await api(`/v1/runs/${id}`);
        await loadFacts();
      }
    }
    if (signal.aborted) return;
    for (let i = 0; i < 20 && !TERMINAL.has(run.status); i++) {  // the ledger row trails the terminal frame
      run = await api(`/v1/runs/${id}`);
      if (!TERMINAL.has(run.status)) await new Promise((r) => setTimeout(r, 250));
    }
    renderHeader();
    await loadFacts();
  }
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api(`/v1/runs/${id}/cancel`, { method: "POST", body: { reason: "cancelled from the console" } });
      toast("Cancel requested");
    } catch (err) { toast(err.message); cancel.disabled = false; }
  });

  mount(el("div", { class: "row" }, el("h1", { text: `Run ${runId}` }), el("span", { class: "spacer" }), cancel),
    statusLine, section("Summary", header), section("Output", output, el("details", {}, el("summary", { text: "Frames" }), frameList)),
    section("Ledger events", ledger), section("Steering", steering), section("Tool calls", tools),
    section("State writes", state), section("Artifacts", artifacts), section("Deliveries", deliveries));
  renderHeader();
  if (TERMINAL.has(run.status)) await loadFacts();
  else {
    await loadFacts();
    follow();
    every(3000, async () => {
      if (TERMINAL.has(run.status)) return;
      run = await api(`/v1/runs/${id}`);
      renderHeader();
      await loadFacts();  // ledger, steering audit and artifacts fill in while the run is live
    });
  }
}
async function download(runId, artifact) {
  try {
    const response = await api(`/v1/runs/${encodeURIComponent(runId)}/artifacts/${encodeURIComponent(artifact.artifact_id)}`, { raw: true });
    const url = URL.createObjectURL(await response.blob());
    const a = el("a", { href: url, download: artifact.name || artifact.artifact_id });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) { toast(err.message); }
}

// -- Conversations -----------------------------------------------------------------------------
async function conversationsPage() {
  const input = el("input", { name: "conversation-id", autocomplete: "off", required: true });
  const recent = await api(`/v1/runs${qs({ limit: 50 })}`);
  const ids = [...new Set(recent.items.map((r) => r.conversation_id).filter(Boolean))];
  mount(el("h1", { text: "Conversations" }),
    el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); if (input.value.trim()) location.hash = `#/conversations/${encodeURIComponent(input.value.trim())}`; } },
      field("Conversation id", input), el("button", { type: "submit", text: "Open" })),
    section("Recently active", ids.length ? el("ul", {}, ids.map((c) => el("li", {}, el("a", { href: `#/conversations/${encodeURIComponent(c)}`, text: c })))) : el("p", { class: "muted", text: "none" })));
}

async function conversationPage(conversationId, params) {
  const id = encodeURIComponent(conversationId);
  const transcript = el("ol", { class: "transcript", id: "transcript", "aria-live": "polite" });
  const pagerInfo = el("span", { class: "muted", id: "transcript-info" });
  const older = el("button", { type: "button", class: "secondary", id: "transcript-older", text: "Older" });
  const newer = el("button", { type: "button", class: "secondary", id: "transcript-newer", text: "Newer" });
  const size = el("select", { name: "page-size" }, [5, 20, 50, 100].map((n) => el("option", { value: n, text: n, selected: n === Number(params.get("limit") || 20) })));
  const results = el("div", { id: "search-results" });
  const q = el("input", { type: "search", name: "q", autocomplete: "off" });
  let cursors = { older: null, newer: null };

  async function load(which) {
    const limit = size.value;
    const query = which === "older" ? { before_cursor: cursors.older, limit } : which === "newer"
      ? { after_cursor: cursors.newer, limit, direction: "forward" } : { limit };
    const pageData = await api(`/v1/conversations/${id}/transcript${qs(query)}`);
    if (!pageData.items.length && which) { toast(`No ${which} items`); (which === "older" ? older : newer).disabled = true; return; }
    const backward = which !== "newer";
    const head = pageData.items.length ? pageData.items[0].cursor : null;
    const tail = pageData.items.length ? pageData.items[pageData.items.length - 1].cursor : null;
    cursors = backward ? { older: pageData.has_more ? pageData.next_cursor : null, newer: tail }
      : { older: head, newer: pageData.has_more ? pageData.next_cursor : null };
    older.disabled = !cursors.older;
    newer.disabled = !which ? true : !cursors.newer;
    transcript.replaceChildren(...pageData.items.map((item) => el("li", { class: item.role, "data-seq": item.seq },
      el("div", { class: "meta" }, `#${item.seq} · ${item.role} · ${fmtTime(item.created_at)}`,
        item.run_id ? [" · ", el("a", { href: `#/runs/${encodeURIComponent(item.run_id)}`, text: item.run_id })] : null),
      el("div", { text: item.content || (item.content_json ? json(item.content_json) : "") }))));
    const seqs = pageData.items.map((i) => i.seq);
    pagerInfo.textContent = seqs.length ? `items ${Math.min(...seqs)}–${Math.max(...seqs)}` : "empty";
  }
  older.addEventListener("click", () => load("older"));
  newer.addEventListener("click", () => load("newer"));
  size.addEventListener("change", () => load(null));

  const searchForm = el("form", { class: "row", role: "search", onsubmit: async (e) => {
    e.preventDefault();
    if (!q.value.trim()) return;
    try {
      const found = await api(`/v1/conversations/${id}/search${qs({ q: q.value.trim(), top_k: 20 })}`);
      results.replaceChildren(el("p", { class: "muted", text: `${found.total_count} match(es) for “${found.query}”` }),
        el("ol", { class: "transcript" }, found.items.map((item) => el("li", { class: item.role },
          el("div", { class: "meta", text: `#${item.seq} · ${item.role}` }), el("div", { text: item.content || "" })))));
    } catch (err) { showError(results, err); }
  } }, field("Search the transcript", q), el("button", { type: "submit", text: "Search" }));

  const [state, runs] = await Promise.all([api(`/v1/conversations/${id}/state`), api(`/v1/runs${qs({ conversation_id: conversationId, limit: 50 })}`)]);
  const stateBox = state.scopes.length ? state.scopes.map((s) => el("div", {},
    el("h3", { text: `${s.scope}${s.detail ? ` · ${s.detail}` : ""} — ${s.agent_id}` }),
    table([{ label: "Key", key: "key" }, { label: "Value", render: (e) => el("pre", { text: json(e.value) }) },
      { label: "Updated", render: (e) => fmtTime(e.updated_at) }], s.items))) : el("p", { class: "muted", text: "No state." });

  mount(el("h1", { text: `Conversation ${conversationId}` }),
    section("Transcript", el("div", { class: "row" }, older, newer, field("Page size", size), pagerInfo), transcript),
    section("Search", searchForm, results), section("State", stateBox),
    section("Runs", table([
      { label: "Run", render: (r) => el("a", { href: `#/runs/${encodeURIComponent(r.run_id)}`, text: r.run_id }), mono: true },
      { label: "Agent", key: "agent_id" }, { label: "Status", render: (r) => badge(r.status) },
      { label: "Reason", key: "status_reason" }, { label: "Created", render: (r) => fmtTime(r.created_at) }], runs.items)));
  await load(null);
}

// -- Agents --------------------------------------------------------------------------------------
async function agentsPage() {
  const [agents, runners] = await Promise.all([api("/v1/agents"), api("/v1/runners")]);
  mount(el("h1", { text: "Agents and runners" }),
    section("Agents", table([
      { label: "Agent", render: (a) => el("a", { href: `#/agents/${encodeURIComponent(a.agent_id)}`, text: a.agent_id }) },
      { label: "Runner", render: (a) => a.config.runner_id, mono: true }, { label: "Strategy", render: (a) => a.config.multitask_strategy },
      { label: "Enabled", render: (a) => (a.config.enabled ? "yes" : "no") }, { label: "Version", key: "version" },
    ], agents), me.scopes.includes("admin") ? el("p", {}, el("a", { href: "#/agents/new", text: "New agent" })) : null),
    section("Runners", table([
      { label: "Runner", key: "id", mono: true }, { label: "Label", key: "label" }, { label: "Version", key: "version" },
      { label: "Execution", key: "execution" },
      { label: "Capabilities", render: (r) => Object.entries(r.capabilities).filter(([, v]) => v).map(([k]) => k).join(", ") || "—" },
      { label: "Config fields", render: (r) => r.config_schema.map((f) => f.name).join(", ") || "—" },
    ], runners)));
}

/** One input per config_schema item; returns {node, read(), input} for the runner_config form. */
function configInput(spec, value) {
  const type = (spec.type || "string").toLowerCase();
  const name = `runner_config.${spec.name}`;
  const label = (spec.label && (spec.label.en_US || spec.label.en || Object.values(spec.label)[0])) || spec.name;
  const hint = spec.description ? (spec.description.en_US || Object.values(spec.description)[0]) : null;
  const current = value === undefined ? spec.default : value;
  let input, read;
  if (type === "boolean" || type === "bool") {
    input = el("input", { type: "checkbox", name, checked: Boolean(current) });
    read = () => input.checked;
  } else if (type === "select" && spec.options) {
    input = el("select", { name }, spec.options.map((o) => el("option", { value: o.name, text: (o.label && Object.values(o.label)[0]) || o.name, selected: o.name === current })));
    read = () => input.value;
  } else if (["integer", "int", "number", "float"].includes(type)) {
    input = el("input", { type: "number", name, step: type.startsWith("int") ? "1" : "any", value: current ?? "", inputmode: "decimal" });
    read = () => (input.value.trim() === "" ? null : Number(input.value));
  } else if (["json", "object", "array", "list", "dict"].includes(type)) {
    input = el("textarea", { name }, current === undefined || current === null ? "" : json(current));
    read = () => { try { return input.value.trim() ? JSON.parse(input.value) : null; } catch (_) { return input.value; } };
  } else if (["secret", "password", "secret-input"].includes(type)) {
    input = el("input", { type: "password", name, value: current ?? "", autocomplete: "off" });
    read = () => input.value;
  } else if (type === "text" || type === "textarea" || type === "prompt-editor") {
    input = el("textarea", { name }, current ?? "");
    read = () => input.value;
  } else {
    input = el("input", { type: "text", name, value: current ?? "" });
    read = () => (input.value === "" && current === null ? null : input.value);
  }
  input.dataset.field = name;
  return { node: field(`${label}${spec.required ? " (required)" : ""}`, input, hint), read, input, name: spec.name };
}

async function agentPage(agentId) {
  const isNew = agentId === "new";
  const [runners, agents] = await Promise.all([api("/v1/runners"), api("/v1/agents")]);
  const existing = agents.find((a) => a.agent_id === agentId);
  if (!isNew && !existing) throw new ApiError(404, { code: "not_found", message: `unknown agent ${agentId}` });
  const config = existing ? existing.config : { runner_id: runners[0].id, runner_config: {}, event_types: ["message.received"],
    multitask_strategy: "parallel", timeout_s: 300, enabled: true };
  const summary = el("div", { class: "error-summary", role: "alert", id: "agent-errors", tabindex: "-1" });
  const idInput = el("input", { name: "agent_id", value: isNew ? "" : agentId, readonly: !isNew, autocomplete: "off", "data-field": "agent_id" });
  const runner = el("select", { name: "runner_id", "data-field": "runner_id" }, runners.map((r) => el("option", { value: r.id, text: `${r.label} (${r.id})`, selected: r.id === config.runner_id })));
  const description = el("input", { name: "description", value: config.description || "", "data-field": "description" });
  const strategy = el("select", { name: "multitask_strategy", "data-field": "multitask_strategy" }, STRATEGIES.map((s) => el("option", { value: s, text: s, selected: s === config.multitask_strategy })));
  const timeout = el("input", { type: "number", name: "timeout_s", step: "any", value: config.timeout_s, "data-field": "timeout_s" });
  const enabled = el("input", { type: "checkbox", name: "enabled", checked: config.enabled !== false, "data-field": "enabled" });
  const eventTypes = el("input", { name: "event_types", value: (config.event_types || []).join(", "), "data-field": "event_types" });
  const policies = ["resource_policy", "state_policy", "delivery_policy", "scope"].map((name) => {
    const input = el("textarea", { name, "data-field": name }, config[name] ? json(config[name]) : "");
    return { name, input, node: field(name.replace("_", " "), input, "JSON; empty = defaults") };
  });
  const configBox = el("fieldset", { id: "runner-config" });
  let configInputs = [];
  function renderConfig() {
    const descriptor = runners.find((r) => r.id === runner.value);
    const values = runner.value === config.runner_id ? config.runner_config || {} : {};
    configInputs = (descriptor ? descriptor.config_schema : []).map((spec) => configInput(spec, values[spec.name]));
    configBox.replaceChildren(el("legend", { text: `runner_config (${descriptor ? descriptor.label : "?"})` }),
      configInputs.length ? el("div", { class: "row" }, configInputs.map((c) => c.node)) : el("p", { class: "muted", text: "This runner declares no config fields." }));
  }
  runner.addEventListener("change", renderConfig);
  renderConfig();

  const form = el("form", { id: "agent-form", novalidate: true, "aria-describedby": "agent-errors", onsubmit: async (e) => {
    e.preventDefault();
    clearErrors();
    const body = { runner_id: runner.value, description: description.value || null, multitask_strategy: strategy.value,
      timeout_s: timeout.value.trim() === "" ? null : Number(timeout.value), enabled: enabled.checked,
      event_types: eventTypes.value.split(",").map((s) => s.trim()).filter(Boolean), runner_config: {} };
    for (const c of configInputs) { const v = c.read(); if (v !== null && v !== undefined) body.runner_config[c.name] = v; }
    for (const p of policies) {
      if (!p.input.value.trim()) continue;
      try { body[p.name] = JSON.parse(p.input.value); } catch (err) { return markError(p.name, `not valid JSON: ${err.message}`); }
    }
    const target = isNew ? idInput.value.trim() : agentId;
    if (!target) return markError("agent_id", "an agent id is required");
    try {
      const saved = await api(`/v1/agents/${encodeURIComponent(target)}`, { method: "PUT", body });
      toast(`Saved ${saved.agent_id} (version ${saved.version})`);
      if (isNew) location.hash = `#/agents/${encodeURIComponent(saved.agent_id)}`;
      else { summary.textContent = ""; document.getElementById("agent-version").textContent = `version ${saved.version}`; }
    } catch (err) {
      if (!(err instanceof ApiError)) { summary.textContent = String(err); return; }
      summary.replaceChildren(el("strong", { text: `${err.body.code || err.status}: ` }), err.message);
      const errors = (err.body.details && err.body.details.errors) || [];
      let marked = false;
      for (const item of errors) {
        const loc = (item.loc || []).filter((p) => p !== "body");
        for (let n = loc.length; n > 0 && !marked; n--) marked = markError(loc.slice(0, n).join("."), item.msg, true) || marked;
        marked = false;
      }
      summary.focus();
    }
  } },
  el("div", { class: "row" }, field("Agent id", idInput), field("Runner", runner), field("Description", description)),
  configBox,
  el("div", { class: "row" }, field("Multitask strategy", strategy), field("Timeout (s)", timeout), field("Event types", eventTypes, "comma-separated"), field("Enabled", enabled)),
  el("details", {}, el("summary", { text: "Policies and scope (JSON)" }), el("div", { class: "row" }, policies.map((p) => p.node))),
  summary,
  el("div", { class: "row" }, el("button", { type: "submit", text: "Save agent", disabled: !me.scopes.includes("admin") }),
    me.scopes.includes("admin") ? null : el("span", { class: "muted", text: "Saving needs an admin key." })));

  function clearErrors() {
    summary.replaceChildren();
    form.querySelectorAll("[aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
    form.querySelectorAll(".field-error").forEach((n) => { n.textContent = ""; });
  }
  function markError(name, message, quiet) {
    const input = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!input) return false;
    input.setAttribute("aria-invalid", "true");
    const error = document.getElementById(`${input.id}-error`);
    if (error) error.textContent = message;
    input.setAttribute("aria-describedby", `${input.id}-error`);
    if (!quiet) { summary.textContent = message; input.focus(); }
    return true;
  }

  const testText = el("input", { name: "test-message", value: "hello from the console", autocomplete: "off" });
  const testOut = el("div", { class: "output", id: "test-output", "aria-live": "polite", "aria-label": "Reply" });
  const testStatus = el("p", { class: "muted", id: "test-status" });
  const testForm = el("form", { class: "row", onsubmit: async (e) => {
    e.preventDefault();
    testOut.textContent = ""; testStatus.textContent = "sending…";
    try {
      const response = await api("/v1/events", { method: "POST", raw: true, signal: abortable(), body: { agent_id: agentId,
        event: { event_type: "message.received", source: "webui", conversation_id: `console-test-${agentId}`, input: { text: testText.value } } } });
      await readFrames(response, (f) => {
        if (f.type === "message.delta") testOut.append(document.createTextNode((f.data.chunk || {}).content || ""));
        if (f.type === "run.started") testStatus.replaceChildren("running ", el("a", { href: `#/runs/${encodeURIComponent(f.run_id)}`, text: f.run_id }));
        if (f.type === "run.completed" || f.type === "run.failed") testStatus.append(` — ${f.type}${f.data.code ? ` (${f.data.code})` : ""}`);
      });
    } catch (err) { if (err.name !== "AbortError") testStatus.textContent = err.message; }
  } }, field("Test message", testText), el("button", { type: "submit", text: "Send", disabled: isNew }));

  mount(el("h1", { text: isNew ? "New agent" : `Agent ${agentId}` }),
    el("p", { class: "muted", id: "agent-version", text: existing ? `version ${existing.version}` : "not saved yet" }),
    section("Configuration", form),
    isNew ? null : section("Send a test message", testForm, testStatus, testOut));
}

// -- Health -----------------------------------------------------------------------------------------
async function healthPage() {
  const box = el("div", { id: "health" });
  async function refresh() {
    const h = await api("/v1/health");
    const storage = h.storage || {};
    box.replaceChildren(
      section("Pools", table([
        { label: "Pool", key: "name" }, { label: "Size", key: "size" }, { label: "Leased", key: "leased" },
        { label: "Creating", key: "creating" }, { label: "Max", key: "max" }, { label: "Queue length", key: "queue_length" }], h.pools || [])),
      section("Storage", table([{ label: "Batches", key: "batches" }, { label: "Ops", key: "ops" }, { label: "Pending", key: "pending" },
        { label: "Ops per batch", render: (s) => (s.batches ? (s.ops / s.batches).toFixed(1) : "—") }], [storage])),
      section("Workers", generic(h.workers || [])),
      section("Nodes", table([{ label: "Node", key: "node_id", mono: true }, { label: "Alive", render: (n) => (n.alive ? "yes" : "no") },
        { label: "Address", key: "address" },
        { label: "Resources", render: (n) => Object.entries(n.resources || {}).filter(([k]) => !k.startsWith("node:")).map(([k, v]) => `${k}=${v}`).join(", ") }], h.nodes || [])),
      el("p", { class: "muted", text: `updated ${new Date().toLocaleTimeString()}` }));
  }
  function generic(rows) {
    const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    return table(keys.map((k) => ({ label: k, render: (r) => (typeof r[k] === "object" && r[k] !== null ? JSON.stringify(r[k]) : r[k]) })), rows);
  }
  mount(el("h1", { text: "Health" }), box);
  await refresh();
  every(3000, () => refresh().catch(() => {}));
}
