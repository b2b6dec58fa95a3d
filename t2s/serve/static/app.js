// The t2s demo page: plain JavaScript, no build step, no external scripts. Talks to the same app's JSON API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { sql: null, dbId: null };

const KEYWORDS = new Set(("select from where group by order having limit offset join inner left right outer cross on as " +
  "and or not in is null like glob between exists distinct all union intersect except with recursive case when then " +
  "else end asc desc cast collate natural using values").split(" "));
const FUNCS = new Set("count sum avg min max abs length lower upper substr round coalesce ifnull strftime date julianday instr replace trim group_concat iif nullif total typeof".split(" "));

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// SQL syntax highlighting: keywords, functions, strings, numbers, comments (a small tokenizer).
function highlight(sql) {
  const re = /(--[^\n]*|\/\*[\s\S]*?\*\/)|('(?:[^']|'')*')|("(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|([\s\S])/g;
  let out = "", m;
  while ((m = re.exec(sql)) !== null) {
    if (m[1]) out += `<span class="cm">${esc(m[1])}</span>`;
    else if (m[2]) out += `<span class="str">${esc(m[2])}</span>`;
    else if (m[3]) out += esc(m[3]);
    else if (m[4]) out += `<span class="num">${esc(m[4])}</span>`;
    else if (m[5]) {
      const low = m[5].toLowerCase();
      if (KEYWORDS.has(low)) out += `<span class="kw">${esc(m[5].toUpperCase())}</span>`;
      else if (FUNCS.has(low) && sql[re.lastIndex] === "(") out += `<span class="fn">${esc(m[5])}</span>`;
      else out += esc(m[5]);
    } else out += esc(m[6]);
  }
  return out;
}

async function api(method, path, body) {
  const resp = await fetch(path, {
    method, headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const d = data && data.detail;
    const msg = d && d.message ? `${d.kind}: ${d.message}` : `HTTP ${resp.status}`;
    throw new Error(msg);
  }
  return data;
}

function showError(msg) {
  const box = $("error");
  if (msg) { box.textContent = msg; box.hidden = false; } else { box.textContent = ""; box.hidden = true; }
}

function setSQL(sql) {
  state.sql = sql;
  $("sql").innerHTML = sql ? highlight(sql) : '<span class="muted">(no SQL)</span>';
  $("run").disabled = !sql || !state.dbId;
}

function renderSchema(s) {
  const fks = s.foreign_keys.map((f) => `${esc(f.table)}.${esc(f.column)} → ${esc(f.ref_table)}.${esc(f.ref_column)}`);
  $("schema").innerHTML = s.tables.map((t) => `<div class="table"><span class="tname">${esc(t.name)}</span><ul>` +
    t.columns.map((c) => `<li><span class="${c.primary_key ? "pk" : ""}">${esc(c.name)}</span> <span class="type">${esc(c.type)}</span></li>`).join("") +
    "</ul></div>").join("") + (fks.length ? `<div class="fk">${fks.join("<br>")}</div>` : "");
}

function renderResult(res) {
  const table = $("result");
  if (!res || res.status !== "ok") {
    table.innerHTML = "";
    $("result-meta").textContent = res ? `${res.status}: ${res.error || ""}` : "";
    return;
  }
  const head = "<thead><tr>" + res.columns.map((c) => `<th>${esc(c)}</th>`).join("") + "</tr></thead>";
  const body = "<tbody>" + res.rows.map((r) => "<tr>" + r.map((v) => `<td>${v === null ? '<span class="muted">NULL</span>' : esc(v)}</td>`).join("") + "</tr>").join("") + "</tbody>";
  table.innerHTML = head + body;
  const cut = !res.truncated ? "" : res.truncated_by === "max_bytes" ? " (cut: the response size cap)" : " (truncated)";
  $("result-meta").textContent = `${res.rows.length} row(s)${cut} in ${(res.seconds * 1000).toFixed(1)} ms`;
}

function renderCandidates(cands, finalSql) {
  const ol = $("candidates");
  ol.innerHTML = "";
  cands.forEach((c) => {
    const li = document.createElement("li");
    li.innerHTML = `${c.sql ? highlight(c.sql) : '<span class="muted">(empty)</span>'} <span class="origin">— ${esc(c.origin)}${c.schema_view ? " / " + esc(c.schema_view) : ""}</span>`;
    if (c.sql === finalSql) li.classList.add("selected");
    li.addEventListener("click", () => {
      [...ol.children].forEach((x) => x.classList.remove("selected"));
      li.classList.add("selected");
      setSQL(c.sql);
    });
    ol.appendChild(li);
  });
}

// a stage's SQL list for the trace table: ∅ for none, (empty) for an empty string
function sqlList(list) {
  return list.length ? list.map((q) => (q ? esc(q) : '<span class="muted">(empty)</span>')).join("<br>") : "∅";
}

function renderTrace(trace) {
  const rows = trace.stages.map((s) => {
    const changed = s.sql_changed;
    const sqlCell = s.error ? `<span class="error">${esc(s.error)}</span>` :
      changed ? `${sqlList(s.sql_before)} → ${sqlList(s.sql_after)}` : '<span class="muted">unchanged</span>';
    return `<tr><td>${esc(s.stage)}/${esc(s.plugin)}</td><td>${esc(s.change)}</td><td class="sqlcell">${sqlCell}</td>` +
      `<td>${s.llm_calls}</td><td>${s.prompt_tokens}+${s.completion_tokens}</td><td>${s.seconds.toFixed(2)}</td></tr>`;
  });
  $("trace").querySelector("tbody").innerHTML = rows.join("");
}

async function loadDatabase(dbId) {
  state.dbId = dbId;
  setSQL(null);
  $("schema").textContent = "loading…";
  try {
    renderSchema(await api("GET", `/databases/${encodeURIComponent(dbId)}/schema`));
  } catch (e) { showError(e.message); }
  const db = state.databases.find((d) => d.db_id === dbId);
  $("samples").innerHTML = "";
  (db ? db.sample_questions : []).forEach((q) => {
    const a = document.createElement("a");
    a.textContent = q;
    a.addEventListener("click", () => { $("question").value = q; });
    $("samples").appendChild(a);
  });
}

async function ask() {
  showError(null);
  const question = $("question").value.trim();
  if (!question) { showError("type a question first"); return; }
  $("ask").disabled = true;
  $("status").textContent = "generating…";
  try {
    const r = await api("POST", "/generate_sql", { question, db_id: state.dbId, evidence: $("evidence").value, execute: true, max_rows: 200 });
    setSQL(r.sql);
    renderCandidates(r.candidates, r.sql);
    renderTrace(r.trace);
    renderResult(r.execution);
    if (r.error) showError(r.error);
    $("status").textContent = `${r.execution_time_ms.toFixed(0)} ms, ${r.trace.llm_calls} LLM call(s), batch of ${r.trace.batch_size}`;
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
  } finally {
    $("ask").disabled = false;
  }
}

async function runSQL() {
  showError(null);
  if (!state.sql) return;
  $("run").disabled = true;
  try {
    renderResult(await api("POST", "/execute", { db_id: state.dbId, sql: state.sql, max_rows: 200 }));
  } catch (e) {
    showError(e.message);
    renderResult(null);
  } finally {
    $("run").disabled = !state.sql;
  }
}

async function init() {
  try {
    const health = await api("GET", "/health");
    $("pipeline").textContent = `${health.dataset}: ${health.stages.join(" → ")}`;
    state.databases = await api("GET", "/databases");
    const sel = $("db-select");
    sel.innerHTML = state.databases.map((d) => `<option value="${esc(d.db_id)}">${esc(d.db_id)} (${d.n_questions} questions)</option>`).join("");
    sel.addEventListener("change", () => loadDatabase(sel.value));
    if (state.databases.length) await loadDatabase(state.databases[0].db_id);
  } catch (e) { showError(e.message); }
  $("ask").addEventListener("click", ask);
  $("run").addEventListener("click", runSQL);
  $("question").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); ask(); } });
  document.body.dataset.ready = "1";
}

init();
