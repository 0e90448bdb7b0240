// The chatcap playground: talks to this server's own OpenAI-compatible /v1 API.
// No framework, no build step, no network access beyond this server. Paths are relative, so the
// page also works behind a reverse proxy that serves the API under a prefix.
"use strict";

const KEY_STORAGE = "chatcap.apiKey";
const $ = (id) => document.getElementById(id);
const history = [];  // the conversation sent with each request: [{role, content}]
let running = null;  // the AbortController of the request in flight

function headers() {
  const result = {"Content-Type": "application/json"};
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) result["Authorization"] = "Bearer " + key;
  return result;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const error = body.error || {};
    return `${response.status}: ${error.message || response.statusText}` + (error.param ? ` (${error.param})` : "");
  } catch (_) {
    return `${response.status}: ${response.statusText}`;
  }
}

function needKey(response) {
  if (response.status !== 401) return false;
  $("key-row").hidden = false;
  $("api-key").focus();
  return true;
}

async function loadModels() {
  const response = await fetch("v1/models", {headers: headers()});
  if (!response.ok) {
    needKey(response);
    showError("Models: " + await errorText(response));
    return;
  }
  showError("");
  const select = $("model");
  const previous = select.value;
  select.replaceChildren();
  for (const model of (await response.json()).data) {
    const option = document.createElement("option");
    option.value = option.textContent = model.id;
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

function bubble(role, text) {
  const item = document.createElement("div");
  item.className = "message " + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("div");
  body.className = "content";
  body.textContent = text;
  item.append(label, body);
  $("messages").append(item);
  item.scrollIntoView({block: "end"});
  return item;
}

function parseJson(id, what) {
  try {
    return JSON.parse($(id).value);
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
}

function buildBody() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({role: "system", content: system});
  messages.push(...history);
  const body = {
    model: $("model").value || undefined,
    messages,
    stream: true,
    stream_options: {include_usage: true},
  };
  const temperature = $("temperature").value;
  if (temperature !== "") body.temperature = Number(temperature);
  const maxTokens = $("max-tokens").value;
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  const mode = $("mode").value;
  if (mode === "json") {
    body.response_format = {type: "json_schema", json_schema: {name: "answer", schema: parseJson("schema", "The schema"), strict: true}};
  } else if (mode === "tools") {
    body.tools = parseJson("tools", "The tools");
    body.tool_choice = $("tool-choice").value;
  }
  return body;
}

// Server-sent events from a fetch body: yields the data of each event, until [DONE].
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    const events = buffer.split(/\r\n\r\n|\n\n|\r\r/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r\n|\n|\r/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;  // a comment (keep-alive ping)
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function renderStats(stats) {
  const parts = [];
  if (stats.ttft !== null) parts.push(`first token ${stats.ttft.toFixed(0)} ms`);
  if (stats.usage) {
    const u = stats.usage;
    const cached = (u.prompt_tokens_details || {}).cached_tokens || 0;
    parts.push(`prompt ${u.prompt_tokens} (cached ${cached})`, `completion ${u.completion_tokens}`, `total ${u.total_tokens}`);
    const seconds = (stats.end - stats.first) / 1000;
    if (u.completion_tokens > 1 && seconds > 0) {
      parts.push(`${((u.completion_tokens - 1) / seconds).toFixed(1)} tokens/s`);
    }
  }
  if (stats.finish) parts.push(`finish_reason ${stats.finish}`);
  $("stats").textContent = parts.join(" · ");
}

async function send(text) {
  let body;
  history.push({role: "user", content: text});
  bubble("user", text);
  try {
    body = buildBody();
  } catch (error) {
    history.pop();
    showError(error.message);
    return;
  }
  showError("");
  const item = bubble("assistant", "");
  item.classList.add("streaming");
  const content = item.querySelector(".content");
  const calls = [];
  let answer = "";
  const stats = {start: performance.now(), first: null, end: null, ttft: null, usage: null, finish: null};
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (!response.ok) {
      needKey(response);
      throw new Error(await errorText(response));
    }
    for await (const chunk of sseData(response.body)) {
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.usage) stats.usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (stats.first === null && (delta.content || delta.tool_calls)) {
          stats.first = performance.now();
          stats.ttft = stats.first - stats.start;
        }
        if (delta.content) answer += delta.content;
        for (const piece of delta.tool_calls || []) {
          if (!calls[piece.index]) calls[piece.index] = {id: piece.id, type: "function", function: {name: piece.function.name, arguments: ""}};
          calls[piece.index].function.arguments += piece.function.arguments || "";
        }
        if (choice.finish_reason) stats.finish = choice.finish_reason;
      }
      content.textContent = answer;
      showCalls(item, calls);
      stats.end = performance.now();
      renderStats(stats);
    }
    if (answer) history.push({role: "assistant", content: answer});
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
    if (!answer) history.pop();
  } finally {
    item.classList.remove("streaming");
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

function showCalls(item, calls) {
  if (!calls.length) return;
  let box = item.querySelector(".tool-calls");
  if (!box) {
    box = document.createElement("pre");
    box.className = "tool-calls";
    item.append(box);
  }
  box.textContent = "tool_calls:\n" + calls.map((call) => {
    let args = call.function.arguments;
    try { args = JSON.stringify(JSON.parse(args), null, 2); } catch (_) { /* still streaming */ }
    return `${call.function.name} (${call.id})\n${args}`;
  }).join("\n\n");
}

function setMode() {
  const mode = $("mode").value;
  $("schema-row").hidden = mode !== "json";
  $("tools-row").hidden = mode !== "tools";
}

document.addEventListener("DOMContentLoaded", () => {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  if (key.value) $("key-row").hidden = false;
  key.addEventListener("change", () => {
    if (key.value.trim()) localStorage.setItem(KEY_STORAGE, key.value.trim());
    else localStorage.removeItem(KEY_STORAGE);
    loadModels();
  });
  $("mode").addEventListener("change", setMode);
  setMode();
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || running) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => running && running.abort());
  $("clear").addEventListener("click", () => {
    history.length = 0;
    $("messages").replaceChildren();
    $("stats").textContent = "";
    showError("");
  });
  loadModels();
});
