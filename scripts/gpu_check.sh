#!/usr/bin/env bash
# GPU smoke test for chatcap, under 8 minutes: serve a small local model, run the `openai`
# client checks (completion, stream, json_schema, tool call), print a table with tokens/s.
#
#   scripts/gpu_check.sh                 # uses .venv/bin/python if present, else python3
#   MODEL_DIR=/models/SmolLM2-135M-Instruct scripts/gpu_check.sh
#
# Runtime: SGLang (`--engine sglang`, launched by chatcap on the local model) when `sglang`
# and `sgl_kernel` import and CUDA is available, else the embedded engine (on CUDA when torch sees a GPU). No network is
# needed: without MODEL_DIR the bundled SmolLM2-135M-Instruct GGUF is converted once to a
# Hugging Face directory (the embedded engine's cache), which SGLang can load.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PORT=${PORT:-8765}
WORK=$(mktemp -d)
START=$(date +%s)

if [ -z "${MODEL_DIR:-}" ]; then
  CACHED=$("$PY" -c '
from mcp_server.engines.embedded.model_files import cache_root, load_model
load_model()  # converts the bundled GGUF once and keeps the copy
print(next(p.parent for p in cache_root().glob("*/config.json")))')
  # Named like the catalog entry, so chatcap picks its parsers and served name from the catalog.
  MODEL_DIR="$WORK/SmolLM2-135M-Instruct"
  ln -s "$CACHED" "$MODEL_DIR"
fi

# A --no-deps sglang (as in the CPU test set-up) imports but cannot serve: also ask for CUDA and sgl_kernel.
if "$PY" -c 'import sglang, sgl_kernel, torch; assert torch.cuda.is_available()' 2>/dev/null; then
  RUNTIME="sglang $("$PY" -c 'import sglang; print(sglang.__version__)')"
  ARGS=(--engine sglang --model-path "$MODEL_DIR" --sglang-args "--mem-fraction-static 0.3 --tool-call-parser hermes")
else
  RUNTIME="embedded"
  ARGS=(--engine embedded --model-path "$MODEL_DIR" --served-model-name HuggingFaceTB/SmolLM2-135M-Instruct)
  if "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    ARGS+=(--device cuda); RUNTIME="embedded (cuda)"
  else
    RUNTIME="embedded (no CUDA: CPU)"
  fi
fi

echo "runtime: $RUNTIME   model: $MODEL_DIR"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
timeout 460 "$PY" -m mcp_server serve --port "$PORT" "${ARGS[@]}" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT

for _ in $(seq 1 360); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  if ! kill -0 "$SERVER" 2>/dev/null; then echo "server exited:"; tail -40 "$WORK/server.log"; exit 1; fi
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "not healthy after 360 s:"; tail -40 "$WORK/server.log"; exit 1; }
echo "ready after $(( $(date +%s) - START )) s"

"$PY" - "$PORT" <<'PYEOF'
import json, sys, time
import openai

client = openai.OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="none", timeout=120, max_retries=0)
model = client.models.list().data[0].id
ask = [{"role": "user", "content": "Write a short paragraph about the sea."}]
tool = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
person = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False}}}


def completion():
    r = client.chat.completions.create(model=model, messages=ask, max_tokens=128, temperature=0)
    return bool(r.choices[0].message.content), r.usage.completion_tokens, r.choices[0].finish_reason


def stream():
    tokens, first = 0, None
    started = time.monotonic()
    for c in client.chat.completions.create(model=model, messages=ask, max_tokens=128, temperature=0,
                                            stream=True, stream_options={"include_usage": True}):
        if c.choices and c.choices[0].delta.content and first is None:
            first = time.monotonic() - started
        if c.usage:
            tokens = c.usage.completion_tokens
    return tokens > 0, tokens, f"first token {first or 0:.2f} s"


def json_schema():
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Invent a person."}],
                                       response_format=person, max_tokens=64, temperature=0)
    data = json.loads(r.choices[0].message.content)
    return set(data) == {"name", "age"} and isinstance(data["age"], int), r.usage.completion_tokens, json.dumps(data)[:40]


def tool_call():
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                       tools=[tool], tool_choice="required", max_tokens=64, temperature=0)
    calls = r.choices[0].message.tool_calls or []
    ok = bool(calls) and "city" in json.loads(calls[0].function.arguments)
    return ok, r.usage.completion_tokens, f"{r.choices[0].finish_reason}: {calls[0].function.arguments[:30] if calls else '-'}"


rows, failed = [], 0
for name, check in [("completion", completion), ("stream", stream), ("json_schema", json_schema), ("tool call", tool_call)]:
    started = time.monotonic()
    try:
        ok, tokens, note = check()
    except Exception as exc:  # report every check, whatever fails
        ok, tokens, note = False, 0, f"{type(exc).__name__}: {exc}"[:60]
    seconds = time.monotonic() - started
    failed += not ok
    rows.append((name, "ok" if ok else "FAIL", f"{seconds:.2f}", str(tokens), f"{tokens / seconds:.1f}", str(note)))
print(f"\nmodel: {model}")
widths = [max(len(r[i]) for r in rows + [("check", "result", "s", "tokens", "tok/s", "note")]) for i in range(6)]
for row in [("check", "result", "s", "tokens", "tok/s", "note")] + rows:
    print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
sys.exit(1 if failed else 0)
PYEOF
echo "total $(( $(date +%s) - START )) s"
