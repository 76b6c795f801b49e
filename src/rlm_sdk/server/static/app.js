// The rlm_sdk run viewer: start a run (or open a saved trajectory), follow its events over
// server-sent events and draw them as nested steps. Everything the model or the context
// wrote is put in the page with textContent, never parsed as HTML.
"use strict";

// ---------------------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

const formatInt = (n) => Number(n || 0).toLocaleString("en-US");
const formatSeconds = (s) => (s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`);
const formatCost = (c) => (c === null || c === undefined ? "—" : `$${c.toFixed(c < 0.01 ? 4 : 2)}`);

const PREVIEW_CHARS = 4000;

/** A <pre> holding text, cut to PREVIEW_CHARS with a button to show the rest. */
function textBlock(text, className) {
  const wrap = el("div", "text-block");
  const pre = el("pre", className || "plain");
  const full = String(text ?? "");
  if (full.length <= PREVIEW_CHARS) {
    pre.textContent = full;
    wrap.append(pre);
    return wrap;
  }
  pre.textContent = full.slice(0, PREVIEW_CHARS) + "…";
  const more = el("button", "link-button small", `show all ${formatInt(full.length)} characters`);
  more.type = "button";
  more.addEventListener("click", () => {
    pre.textContent = full;
    more.remove();
  });
  wrap.append(pre, more);
  return wrap;
}

function oneLine(text, max = 90) {
  const flat = String(text ?? "").replace(/\s+/g, " ").trim();
  return flat.length > max ? flat.slice(0, max - 1) + "…" : flat;
}

// ---------------------------------------------------------------------------------------
// A tiny Python highlighter: comments, strings, numbers, keywords, a few builtins.

const PY_KEYWORDS = new Set(
  ("False None True and as assert async await break case class continue def del elif else " +
    "except finally for from global if import in is lambda match nonlocal not or pass raise " +
    "return try while with yield").split(" "),
);
const PY_BUILTINS = new Set(
  ("print len range str int float bool list dict set tuple enumerate zip sorted reversed min " +
    "max sum any all isinstance type open repr abs map filter round hasattr getattr " +
    "llm_query llm_query_batched rlm_query rlm_query_batched FINAL FINAL_VAR context answer").split(" "),
);
const PY_TOKEN = new RegExp(
  [
    String.raw`(#[^\n]*)`, // 1 comment
    String.raw`((?:[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?))`, // 2 string
    String.raw`(\b(?:0[xXoObB][0-9a-fA-F_]+|\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d+)?j?)\b|\.\d[\d_]*\b)`, // 3 number
    String.raw`([A-Za-z_][A-Za-z0-9_]*)`, // 4 name
  ].join("|"),
  "g",
);

function highlightPython(code) {
  const out = document.createDocumentFragment();
  let last = 0;
  let previousName = "";
  for (const m of code.matchAll(PY_TOKEN)) {
    if (m.index > last) out.append(code.slice(last, m.index));
    let cls = null;
    if (m[1] !== undefined) cls = "tok-com";
    else if (m[2] !== undefined) cls = "tok-str";
    else if (m[3] !== undefined) cls = "tok-num";
    else if (PY_KEYWORDS.has(m[4])) cls = "tok-kw";
    else if (previousName === "def" || previousName === "class") cls = "tok-fn";
    else if (PY_BUILTINS.has(m[4])) cls = "tok-bi";
    if (cls) out.append(el("span", cls, m[0]));
    else out.append(m[0]);
    previousName = m[4] !== undefined ? m[4] : "";
    last = m.index + m[0].length;
  }
  if (last < code.length) out.append(code.slice(last));
  return out;
}

function codeBlock(code) {
  const pre = el("pre", "code");
  pre.append(highlightPython(code));
  return pre;
}

/** A reply without its reasoning blocks (shown apart, collapsed). */
function withoutReasoning(text) {
  return String(text ?? "").replace(/^[ \t]*<(think|thinking)>[\s\S]*?(?:<\/\1>|$(?![\s\S]))/gim, "").trim();
}

/** A model reply: prose as text; ```repl blocks become a note pointing at their cell. */
function renderReply(text) {
  const box = el("div", "reply");
  const lines = withoutReasoning(text).replace(/\r\n?/g, "\n").split("\n");
  let prose = [];
  let block = 0;
  const flush = () => {
    const chunk = prose.join("\n").trim();
    if (chunk) box.append(textBlock(chunk, "prose"));
    prose = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const open = /^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\n`]*?)[ \t]*$/.exec(lines[i]);
    if (!open) {
      prose.push(lines[i]);
      continue;
    }
    const fence = open[1];
    const info = open[2].split(" ")[0];
    const close = new RegExp(`^[ \\t]{0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}[ \\t]*$`);
    // a run of backticks glued to the end of a code line closes the block too
    const glued = fence[0] === "`" ? new RegExp(`[^\`\\s][ \\t]*\`{${fence.length},}[ \\t]*$`) : null;
    let j = i + 1;
    let last = null;
    while (j < lines.length && !close.test(lines[j])) {
      if (glued && glued.test(lines[j])) {
        last = lines[j].replace(/`+[ \t]*$/, "");
        break;
      }
      j++;
    }
    const inside = lines.slice(i + 1, j);
    if (last !== null) inside.push(last);
    const body = inside.join("\n");
    flush();
    if (info === "repl") {
      block += 1;
      box.append(el("div", "reply-code-note", `▸ code block ${block} — runs as cell ${block} below`));
    } else {
      box.append(codeBlock(body));
    }
    i = j;
  }
  flush();
  if (!box.childNodes.length) box.append(el("div", "muted small", "(empty reply)"));
  return box;
}

// ---------------------------------------------------------------------------------------
// The run view: one object per run shown; events arrive in order (seq).

class RunView {
  constructor(kind) {
    this.kind = kind; // "live" | "saved"
    this.runs = new Map(); // run_id -> {node, turns, turn, cell, depth}
    this.calls = new Map(); // call_id -> {node, summary, body, children, status}
    this.childHosts = new Map(); // child run_id -> element to hold its run
    this.stats = { turns: 0, cells: 0, calls: 0, tokens: 0, cost: null };
    this.firstTs = null;
    this.lastTs = null;
    this.startedAt = performance.now();
    this.finished = false;
    this.timer = null;

    $("empty-state").hidden = true;
    $("run").hidden = false;
    $("steps").replaceChildren();
    $("final").hidden = true;
    $("final").classList.remove("no-answer");
    $("final-meta").textContent = "";
    $("run-error").hidden = true;
    $("run-error").replaceChildren();
    $("run-title").textContent = kind === "saved" ? "Saved trajectory" : "Run";
    $("run-meta").textContent = "";
    this.setStatus(kind === "saved" ? "loading" : "running");
    this.renderStats();
    if (kind === "live") {
      this.timer = setInterval(() => this.renderTime(), 250);
    }
  }

  setStatus(status, label) {
    const pill = $("run-status");
    const labels = {
      running: "running",
      finished: "finished",
      cancelled: "stopped",
      stopping: "stopping…",
      error: "failed",
      saved: "saved run",
      loading: "loading…",
    };
    pill.textContent = label || labels[status] || status;
    pill.dataset.status = status;
    pill.className = `pill pill-${status}`;
  }

  renderStats() {
    const s = this.stats;
    $("stat-turns").textContent = formatInt(s.turns);
    $("stat-cells").textContent = formatInt(s.cells);
    $("stat-calls").textContent = formatInt(s.calls);
    $("stat-tokens").textContent = formatInt(s.tokens);
    $("stat-cost").textContent = formatCost(s.cost);
    this.renderTime();
  }

  renderTime(seconds) {
    let s = seconds;
    if (s === undefined) {
      if (this.kind === "live" && !this.finished) s = (performance.now() - this.startedAt) / 1000;
      else s = this.firstTs !== null ? this.lastTs - this.firstTs : 0;
    }
    $("stat-time").textContent = formatSeconds(Math.max(0, s));
  }

  stopTimer() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  // --- structure ---------------------------------------------------------------------

  runFor(ev) {
    let run = this.runs.get(ev.run_id);
    if (!run) run = this.createRun(ev.run_id, ev.parent_run_id, ev.depth, null);
    return run;
  }

  createRun(runId, parentId, depth, started) {
    const node = el("section", `rlm-run depth-${Math.min(depth, 4)}`);
    node.dataset.runId = runId;
    node.dataset.depth = String(depth);
    const head = el("div", "rlm-run-head");
    const turns = el("div", "turns");
    node.append(head, turns);
    const run = { node, head, turns, turn: null, cell: null, depth, turnsByIteration: new Map() };
    this.runs.set(runId, run);
    const host = this.childHosts.get(runId);
    if (host) host.append(node);
    else $("steps").append(node);
    if (started) this.fillRunHead(run, started);
    return run;
  }

  fillRunHead(run, ev) {
    run.head.replaceChildren();
    const title = el("div", "rlm-run-title");
    title.append(
      el("span", "depth-badge", ev.depth === 0 ? "root run" : `child run · depth ${ev.depth}`),
      el("span", "model-name", ev.model),
    );
    if (ev.sub_model && ev.sub_model !== ev.model) {
      title.append(el("span", "muted small", `sub-calls → ${ev.sub_model}`));
    }
    run.head.append(title);
    if (ev.query) run.head.append(el("div", "run-query", ev.query));
    const ctx = el("details", "context-desc");
    ctx.append(el("summary", "muted small", "context as the model sees it"));
    ctx.append(textBlock(ev.context_description, "plain small"));
    run.head.append(ctx);
  }

  turnFor(run, iteration) {
    return run.turnsByIteration.get(iteration) || run.turn;
  }

  // --- events ------------------------------------------------------------------------

  handle(ev) {
    if (this.firstTs === null) this.firstTs = ev.ts;
    this.lastTs = ev.ts;
    const handler = this[`on_${ev.type}`];
    if (handler) handler.call(this, ev);
    this.renderStats();
  }

  on_run_started(ev) {
    let run = this.runs.get(ev.run_id);
    if (!run) run = this.createRun(ev.run_id, ev.parent_run_id, ev.depth, ev);
    else this.fillRunHead(run, ev);
    if (ev.depth === 0) {
      const parts = [`${ev.model} → ${ev.sub_model}`, `max ${ev.max_iterations} iterations`, `depth ${ev.max_depth}`];
      $("run-meta").textContent = parts.join(" · ");
    }
  }

  on_turn_started(ev) {
    const run = this.runFor(ev);
    this.stats.turns += 1;
    const details = el("details", "turn");
    details.open = true;
    const summary = el("summary");
    const label = el("span", "turn-label", `Turn ${ev.iteration}`);
    const meta = el("span", "turn-meta muted small");
    const state = el("span", "turn-state spinner", "waiting for the model");
    summary.append(label, meta, state);
    const body = el("div", "turn-body");
    details.append(summary, body);
    run.turns.append(details);
    const turn = { node: details, summary, meta, state, body, cells: null, reply: null, cellCount: 0 };
    run.turn = turn;
    run.turnsByIteration.set(ev.iteration, turn);
  }

  on_model_request(ev) {
    if (ev.purpose === "final") {
      const run = this.runFor(ev);
      if (run.turn) run.turn.state.textContent = "asking for the final answer";
    }
  }

  on_model_response(ev) {
    this.stats.tokens += (ev.prompt_tokens || 0) + (ev.completion_tokens || 0);
    if (ev.cost !== null && ev.cost !== undefined) this.stats.cost = (this.stats.cost || 0) + ev.cost;
    if (ev.purpose === "sub_call") return;
    const run = this.runFor(ev);
    const turn = run.turn;
    if (!turn) return;
    turn.meta.textContent = `${ev.model} · ${formatSeconds(ev.latency_s)} · ${formatInt(ev.prompt_tokens + ev.completion_tokens)} tokens`;
    turn.state.className = "turn-state";
    turn.state.textContent = "";
    const section = el("div", "step-section");
    section.append(el("div", "section-label", ev.purpose === "final" ? "Final call — model reply" : "Model reply"));
    if (ev.reasoning) {
      const thought = el("details", "reasoning");
      thought.append(
        el("summary", "muted small", `reasoning · ${formatInt(ev.reasoning.length)} characters`),
        textBlock(ev.reasoning, "plain small"),
      );
      section.append(thought);
    }
    const calls = ev.tool_calls || [];
    if (withoutReasoning(ev.text) || !calls.length) section.append(renderReply(ev.text));
    for (const call of calls) {
      const line = el("div", "tool-call");
      line.append(el("span", "call-fn", call.name), el("span", "muted small", oneLine(call.arguments, 160)));
      section.append(line);
    }
    turn.body.append(section);
    turn.reply = section;
  }

  on_reply_parsed(ev) {
    const run = this.runFor(ev);
    const turn = this.turnFor(run, ev.iteration);
    if (!turn) return;
    const host = turn.reply || turn.body;
    const notes = (ev.notes || []).filter((n) => n !== "reasoning set aside");
    if ((ev.fence && ev.fence !== "repl") || notes.length) {
      const read = ev.fence ? `code from ${ev.fence}` : "no code";
      host.append(el("div", "note read", [read, ...notes].join(" · ")));
    }
    for (const problem of ev.problems || []) host.append(el("div", "note warn", problem));
  }

  on_history_compacted(ev) {
    const run = this.runFor(ev);
    const turn = this.turnFor(run, ev.iteration);
    const host = turn ? turn.body : run.node;
    const box = el("details", "note compaction");
    const what = ev.summary ? `turns 1–${ev.turns} summarised` : "messages cut to fit";
    const where = ev.variable ? `; in full in the REPL as ${ev.variable}` : "";
    box.append(
      el(
        "summary",
        null,
        `History compacted (${what}): ${formatInt(ev.tokens_before)} → ${formatInt(ev.tokens_after)} tokens of a ${formatInt(ev.window)}-token window${where}`,
      ),
    );
    if (ev.summary) box.append(textBlock(ev.summary, "plain small"));
    host.prepend(box);
  }

  on_protocol_switched(ev) {
    const run = this.runFor(ev);
    const turn = this.turnFor(run, ev.iteration);
    const host = turn ? turn.body : run.node;
    host.append(el("div", "note warn switched", `The server refused tools: going on with fenced text (${oneLine(ev.reason, 160)})`));
  }

  on_confirmation_asked(ev) {
    const run = this.runFor(ev);
    const turn = this.turnFor(run, ev.iteration);
    const host = turn ? turn.body : run.node;
    host.append(
      el(
        "div",
        "note warn confirmation",
        `Final answer not taken yet (written before the output): ${oneLine(ev.answer, 200)} — the model is asked to confirm it.`,
      ),
    );
  }

  on_output_rejected(ev) {
    const run = this.runFor(ev);
    const turn = this.turnFor(run, ev.iteration);
    const host = turn ? turn.body : run.node;
    const left = ev.retries_left === 1 ? "1 try left" : `${ev.retries_left} tries left`;
    host.append(
      el("div", "note warn rejected", `Answer rejected by the output type (${left}): ${oneLine(ev.errors.join("; "), 240)}`),
    );
  }

  on_cell_started(ev) {
    const run = this.runFor(ev);
    const turn = this.turnFor(run, ev.iteration);
    if (!turn) return;
    this.stats.cells += 1;
    turn.cellCount += 1;
    const node = el("div", "cell");
    const head = el("div", "cell-head");
    const title = el("span", "cell-title", `Cell ${ev.cell + 1}`);
    const status = el("span", "cell-status spinner", "running");
    head.append(title, status);
    const calls = el("div", "subcalls");
    const output = el("div", "cell-output");
    node.append(head, codeBlock(ev.code), calls, output);
    turn.body.append(node);
    run.cell = { node, status, output, calls };
    turn.state.className = "turn-state spinner";
    turn.state.textContent = "running code";
  }

  on_cell_finished(ev) {
    const run = this.runFor(ev);
    const cell = run.cell;
    if (!cell) return;
    run.cell = null;
    const failed = Boolean(ev.error) || ev.timed_out;
    cell.status.className = `cell-status ${failed ? "bad" : "good"}`;
    let label = `${failed ? (ev.timed_out ? "timed out" : ev.error_type || "error") : "ok"} · ${formatSeconds(ev.duration_s)}`;
    if (ev.restarted) label += " · worker restarted";
    cell.status.textContent = label;
    if (ev.stdout) cell.output.append(this.outputBlock("output", ev.stdout, "stdout"));
    if (ev.stderr) cell.output.append(this.outputBlock("stderr", ev.stderr, "stderr"));
    if (ev.error) cell.output.append(this.outputBlock("error", ev.error, "stderr"));
    if (!ev.stdout && !ev.stderr && !ev.error) cell.output.append(el("div", "muted small no-output", "no output"));
    if (ev.final_answer !== null && ev.final_answer !== undefined) {
      cell.output.append(el("div", "cell-final", `set the final answer: ${oneLine(ev.final_answer, 200)}`));
    }
    const turn = this.turnFor(run, ev.iteration);
    if (turn) {
      turn.state.className = "turn-state";
      turn.state.textContent = "";
    }
  }

  outputBlock(label, text, cls) {
    const box = el("div", `output ${cls}`);
    box.append(el("div", "output-label", label), textBlock(text, "plain"));
    return box;
  }

  on_sub_call_started(ev) {
    const run = this.runFor(ev);
    this.stats.calls += 1;
    const host = run.cell ? run.cell.calls : run.turn ? run.turn.body : run.turns;
    const node = el("details", `subcall kind-${ev.kind}`);
    node.dataset.callId = ev.call_id;
    const summary = el("summary");
    const fn = ev.kind === "rlm" ? "rlm_query" : "llm_query";
    const status = el("span", "call-status spinner", "");
    summary.append(
      el("span", "call-fn", fn),
      el("span", "call-model", ev.model),
      el("span", "call-preview muted", oneLine(ev.prompt, 80)),
      status,
    );
    const body = el("div", "subcall-body");
    const prompt = el("div", "step-section");
    prompt.append(el("div", "section-label", "Prompt"), textBlock(ev.prompt, "plain"));
    const children = el("div", "child-runs");
    body.append(prompt, children);
    node.append(summary, body);
    host.append(node);
    this.calls.set(ev.call_id, { node, status, body, children });
  }

  on_child_run_started(ev) {
    const call = this.calls.get(ev.call_id);
    if (!call) return;
    call.node.open = true;
    this.childHosts.set(ev.child_run_id, call.children);
  }

  on_sub_call_finished(ev) {
    const call = this.calls.get(ev.call_id);
    if (!call) return;
    const tokens = (ev.prompt_tokens || 0) + (ev.completion_tokens || 0);
    const parts = [formatSeconds(ev.duration_s)];
    if (tokens) parts.push(`${formatInt(tokens)} tokens`);
    call.status.className = `call-status ${ev.error ? "bad" : "good"}`;
    call.status.textContent = ev.error ? `failed · ${parts.join(" · ")}` : parts.join(" · ");
    const section = el("div", "step-section");
    section.append(el("div", "section-label", ev.error ? "Error" : "Response"));
    section.append(textBlock(ev.error ? ev.error : ev.response, ev.error ? "plain bad-text" : "plain"));
    call.body.append(section);
  }

  on_turn_finished(ev) {
    const run = this.runFor(ev);
    const turn = this.turnFor(run, ev.iteration);
    if (!turn) return;
    const n = turn.cellCount;
    if (n) turn.meta.textContent += ` · ${n} cell${n === 1 ? "" : "s"}`;
    if (ev.final_answer !== null && ev.final_answer !== undefined) {
      turn.node.classList.add("answered");
      turn.state.className = "turn-state good";
      turn.state.textContent = "answered";
    } else if (ev.feedback) {
      const fb = el("details", "feedback");
      fb.append(el("summary", "muted small", "what the model is told next"), textBlock(ev.feedback, "plain small"));
      turn.body.append(fb);
    }
  }

  on_final_answer(ev) {
    if (ev.depth === 0) {
      $("final").hidden = false;
      $("final-answer").textContent = ev.answer;
      return;
    }
    const run = this.runFor(ev);
    const box = el("div", "child-answer");
    box.append(el("span", "section-label", "Child answer"), el("div", "child-answer-text", ev.answer));
    run.node.append(box);
  }

  on_limit_reached(ev) {
    this.runFor(ev).node.append(el("div", "note warn", `Limit reached (${ev.limit}): ${ev.detail}`));
  }

  on_retry_scheduled(ev) {
    const run = this.runFor(ev);
    const host = run.turn ? run.turn.body : run.node;
    host.append(el("div", "note", `Retrying ${ev.provider} in ${ev.delay_s.toFixed(1)} s (attempt ${ev.attempt}): ${ev.reason}`));
  }

  on_worker_restarted(ev) {
    const run = this.runFor(ev);
    const host = run.turn ? run.turn.body : run.node;
    host.append(el("div", "note warn", `REPL worker restarted: ${ev.reason}`));
  }

  on_run_finished(ev) {
    const run = this.runFor(ev);
    run.node.classList.add("done");
    if (ev.depth !== 0) return;
    const r = ev.result;
    const usage = r.usage || { models: {} };
    let prompt = 0;
    let completion = 0;
    let cost = null;
    for (const m of Object.values(usage.models || {})) {
      prompt += m.prompt_tokens || 0;
      completion += m.completion_tokens || 0;
      if (m.cost !== null && m.cost !== undefined) cost = (cost || 0) + m.cost;
    }
    this.stats.tokens = prompt + completion;
    this.stats.cost = cost;
    this.finished = true;
    this.renderStats();
    this.renderTime(r.wall_time_s);
    const turns = `${r.iterations} turn${r.iterations === 1 ? "" : "s"}`;
    $("final-meta").textContent = [`stop reason: ${r.stop_reason.replace("_", " ")}`, turns, formatSeconds(r.wall_time_s)].join(" · ");
    if (r.answer === null || r.answer === undefined) {
      $("final").hidden = false;
      $("final").classList.add("no-answer");
      $("final-answer").textContent = r.error ? `No answer: ${r.error}` : "No answer.";
    }
  }

  // --- the end of the stream -----------------------------------------------------------

  end(summary) {
    this.finished = true;
    this.stopTimer();
    this.renderTime();
    const interrupted = { cancelled: "stopped", error: "interrupted" }[summary.status];
    for (const node of document.querySelectorAll("#steps .spinner")) {
      node.classList.remove("spinner");
      if (interrupted) node.textContent = interrupted;
    }
    this.setStatus(summary.status);
    if (summary.status === "error" || summary.status === "cancelled") {
      const box = $("run-error");
      box.hidden = false;
      box.classList.toggle("stopped", summary.status === "cancelled");
      box.textContent =
        summary.status === "cancelled"
          ? "Stopped. The run was cancelled on the server and its REPL workers were shut down."
          : summary.error || "The run failed.";
    }
    if (this.kind === "saved" && this.runs.size === 0) {
      $("run-error").hidden = false;
      $("run-error").textContent = "The file holds no run.";
    }
  }
}

// ---------------------------------------------------------------------------------------
// The page: form, uploads, the current run

const page = {
  config: null,
  contextFile: null, // a File or Blob chosen instead of the textarea
  view: null,
  source: null, // the EventSource of the current run
  runId: null,
  followUps: 0, // follow-up questions asked in the current session
};

async function apiError(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) {
    /* not JSON */
  }
  return `${response.status} ${response.statusText}`;
}

function showFormError(message) {
  const box = $("form-error");
  box.hidden = !message;
  box.textContent = message || "";
}

function contextBytes() {
  if (page.contextFile) return page.contextFile.size;
  return new Blob([$("context").value]).size;
}

function updateContextSize() {
  const n = contextBytes();
  const limit = page.config ? page.config.max_body_bytes : Infinity;
  const size = $("context-size");
  size.textContent = n ? `${formatBytes(n)}${n > limit ? ` — over the ${formatBytes(limit)} limit` : ""}` : "";
  size.classList.toggle("bad-text", n > limit);
}

function setContextFile(file, name) {
  page.contextFile = file;
  const chip = $("context-file");
  if (file) {
    $("context-file-name").textContent = name || file.name || "context";
    $("context-file-size").textContent = formatBytes(file.size);
  }
  chip.hidden = !file;
  $("context").hidden = Boolean(file);
  $("context-upload").value = "";
  updateContextSize();
}

function fillSelect(select, models, chosen) {
  select.replaceChildren();
  for (const name of models) {
    const option = el("option", null, name);
    option.value = name;
    select.append(option);
  }
  select.value = chosen;
}

async function loadConfig() {
  const response = await fetch("/api/config");
  if (!response.ok) throw new Error(await apiError(response));
  const config = await response.json();
  page.config = config;
  fillSelect($("model"), config.models, config.default_model);
  fillSelect($("sub-model"), config.models, config.default_sub_model);
  $("max-iterations").value = config.default_max_iterations;
  $("max-iterations").max = config.max_iterations_cap;
  $("max-depth").value = config.default_max_depth;
  $("max-depth").max = config.max_depth_cap;
  $("offline-banner").hidden = !config.offline;
  $("server-status").textContent = config.offline
    ? "offline demo · scripted stand-in, no model called"
    : `${config.models.length} model${config.models.length === 1 ? "" : "s"} available`;
  document.body.classList.toggle("offline", Boolean(config.offline));
}

function setRunning(running) {
  $("run-button").disabled = running;
  $("stop-button").disabled = !running;
}

function follow(runId, kind) {
  if (page.source) page.source.close();
  if (page.view) page.view.stopTimer();
  page.runId = runId;
  $("followup").hidden = true;
  const view = new RunView(kind);
  page.view = view;
  const source = new EventSource(`/api/runs/${encodeURIComponent(runId)}/events`);
  page.source = source;
  source.onmessage = (message) => view.handle(JSON.parse(message.data));
  source.addEventListener("end", (message) => {
    source.close();
    if (page.source === source) page.source = null;
    const summary = JSON.parse(message.data);
    view.end(summary);
    if (page.view === view) {
      setRunning(false);
      offerFollowUp(summary);
    }
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && !view.finished) {
      view.end({ status: "error", error: "Lost the connection to the server." });
      setRunning(false);
    }
  };
  setRunning(kind === "live");
}

async function startRun(event) {
  event.preventDefault();
  showFormError("");
  const config = page.config;
  if (!config) return showFormError("The server's configuration did not load.");
  if (contextBytes() > config.max_body_bytes) {
    return showFormError(`The context is larger than this server accepts (${formatBytes(config.max_body_bytes)}).`);
  }
  const params = new URLSearchParams({
    query: $("query").value,
    model: $("model").value,
    sub_model: $("sub-model").value,
    max_iterations: $("max-iterations").value,
    max_depth: $("max-depth").value,
  });
  const body = page.contextFile || $("context").value;
  const button = $("run-button");
  button.disabled = true;
  button.textContent = contextBytes() > 1024 * 1024 ? "Uploading…" : "Starting…";
  let response;
  try {
    response = await fetch(`/api/runs?${params}`, {
      method: "POST",
      headers: { "content-type": "text/plain; charset=utf-8" },
      body,
    });
  } catch (err) {
    return showFormError(`Could not reach the server: ${err.message}`);
  } finally {
    button.textContent = "Run";
    button.disabled = false;
  }
  if (!response.ok) return showFormError(await apiError(response));
  const started = await response.json();
  page.followUps = 0;
  follow(started.id, "live");
}

/** A finished run kept in a session on the server: offer a follow-up question. */
function offerFollowUp(summary) {
  const form = $("followup");
  form.hidden = !(summary.status === "finished" && summary.session);
  $("followup-error").hidden = true;
  if (!form.hidden) $("followup-query").focus();
}

async function askFollowUp(event) {
  event.preventDefault();
  const box = $("followup-error");
  box.hidden = true;
  const query = $("followup-query").value.trim();
  if (!query || !page.runId) return;
  const button = $("followup-button");
  button.disabled = true;
  let response;
  try {
    const params = new URLSearchParams({ query });
    response = await fetch(`/api/runs/${encodeURIComponent(page.runId)}/follow-up?${params}`, {
      method: "POST",
    });
  } catch (err) {
    response = null;
    box.textContent = `Could not reach the server: ${err.message}`;
  } finally {
    button.disabled = false;
  }
  if (response && !response.ok) box.textContent = await apiError(response);
  if (!response || !response.ok) {
    box.hidden = false;
    return;
  }
  const started = await response.json();
  page.followUps += 1;
  $("followup-query").value = "";
  follow(started.id, "live");
  $("run-title").textContent = `Follow-up ${page.followUps} · ${oneLine(query, 60)}`;
}

async function stopRun() {
  if (!page.runId) return;
  $("stop-button").disabled = true;
  if (page.view) page.view.setStatus("stopping");
  const response = await fetch(`/api/runs/${encodeURIComponent(page.runId)}/stop`, { method: "POST" });
  if (!response.ok) showFormError(await apiError(response));
}

async function openTrajectory(file) {
  showFormError("");
  const params = new URLSearchParams({ name: file.name });
  const response = await fetch(`/api/trajectories?${params}`, {
    method: "POST",
    headers: { "content-type": "application/x-ndjson" },
    body: file,
  });
  if (!response.ok) return showFormError(await apiError(response));
  const opened = await response.json();
  follow(opened.id, "saved");
  $("run-title").textContent = `Saved trajectory · ${file.name}`;
}

async function loadDemoHaystack() {
  const button = $("demo-haystack");
  button.disabled = true;
  button.textContent = "Building…";
  try {
    const response = await fetch("/api/demo/haystack?lines=100000");
    if (!response.ok) throw new Error(await apiError(response));
    setContextFile(await response.blob(), "demo-haystack.txt");
    if (page.config && page.config.demo_query) $("query").value = page.config.demo_query;
  } catch (err) {
    showFormError(`Could not build the demo haystack: ${err.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Demo haystack";
  }
}

function toggleAll() {
  const button = $("toggle-all");
  const open = button.textContent !== "collapse all";
  for (const node of document.querySelectorAll("#steps details.turn, #steps details.subcall")) node.open = open;
  button.textContent = open ? "collapse all" : "expand all";
}

function init() {
  $("run-form").addEventListener("submit", startRun);
  $("stop-button").addEventListener("click", stopRun);
  $("followup").addEventListener("submit", askFollowUp);
  $("context").addEventListener("input", updateContextSize);
  $("context-upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) setContextFile(file, file.name);
  });
  $("context-file-clear").addEventListener("click", () => setContextFile(null));
  $("demo-haystack").addEventListener("click", loadDemoHaystack);
  $("toggle-all").addEventListener("click", toggleAll);
  $("trajectory-upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) openTrajectory(file);
  });
  loadConfig().catch((err) => {
    $("server-status").textContent = "server unreachable";
    showFormError(`Could not load the server's configuration: ${err.message}`);
  });
}

document.addEventListener("DOMContentLoaded", init);
