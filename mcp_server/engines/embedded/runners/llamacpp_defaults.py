"""The llama.cpp runner's defaults, and the measurements behind them (:mod:`.llamacpp`)."""

from __future__ import annotations

__all__ = [
    "ATTENTION_SPANS", "DEFAULT_CONTEXT_LENGTH", "DEFAULT_KV_CACHE_DTYPE", "DEFAULT_MAX_BATCH_SIZE", "KV_CACHE_DTYPES",
    "MIN_COPIED_PREFIX", "N_UBATCH",
]

DEFAULT_CONTEXT_LENGTH = 2048
"""Tokens per sequence when ``--context-length`` is not given: 8 x 2048 tokens of KV cache,
191 MiB at q8_0 (about 12 KB per token for SmolLM2-135M), 360 MiB at f16 (23 KB), resident
only as sequences write into it (:mod:`.kv_pages`).

Measured resident memory of ``chatcap serve`` on this runner (SmolLM2-135M Q4_1, AMX Xeon,
``benchmarks/bench_serving.py``): 313 MB idle (Python and the web stack 70 MB, llama.cpp's
model and buffers 168 MB with the weights repacked for AMX, tokenizer 71 MB, llguidance's
token table 31 MB), plus the KV cache's pages written so far; the peak, 429 MB, is the
moment llama.cpp zero-fills the whole cache at start."""

KV_CACHE_DTYPES = ("q8_0", "f16")
"""KV cache element types (llama.cpp's ``--cache-type-k/v``), for ``--kv-cache-dtype``."""

DEFAULT_KV_CACHE_DTYPE = "q8_0"
"""The KV cache type for ``--kv-cache-dtype auto``. Measured on one core, 8 sequences, a
step at 40 / 400 tokens of context: q8_0 with flash attention 60 / 81 ms, f16 with
llama.cpp's default (flash attention on) 66 / 128 ms, f16 without flash attention
72 / 86 ms; q8_0 also halves the cache. Its values are rounded to 8 bits per block of 32,
so answers differ slightly from an f16 cache's."""

DEFAULT_MAX_BATCH_SIZE = 8
"""Sequences decoded together when ``--max-running-requests`` is not given. Measured on
one core (Q4_1, q8_0 cache, 40 tokens of context): a step takes 17 ms for 1 sequence and
60 ms for 8 (58 and 134 tok/s) with the plain kernels, which cost almost the same per row
at any batch size. Repacked for AMX: 5.4 ms for 1, 20.7 ms for 8 and 26.9 ms for 16
(185, 386 and 594 tok/s), so ``--max-running-requests 16`` pays there, for another
196 MB of KV cache at 2048 tokens a sequence (the default keeps memory down)."""

ATTENTION_SPANS = {"q8_0": 256, "f16": 512}
""":attr:`.ModelRunner.attention_span` per KV cache type. Over a q8_0 cache llama.cpp's CPU
flash attention takes one query row at a time, dequantizing every cached value for each
(per layer and head), so a prompt token's cost grows with its position much faster than
over f16, whose prompt chunks take a tiled kernel. Measured on one busy AMX core, prompt
chunks of 16 and 64 tokens (ms per token at position 0 / 512 / 1,024 / 1,900): q8_0 3.1-3.5 /
10-13 / 17-28 / 20-31, f16 1.3 / 2.2 / 3.5 / 4.8-5.7. A 2,000-token prompt took 56 s to
prefill over q8_0 against 7.4 s over f16, and one 64-token chunk at position 1,800 took
1.2-4.9 s: a running stream's gap, were chunks counted in tokens alone."""

N_UBATCH = 128
"""Tokens per llama.cpp micro-batch (``n_ubatch``); the compute buffer grows with it (~25 MB
here, against ~98 MB at llama.cpp's default 512)."""

MIN_COPIED_PREFIX = 8
"""Shortest cached prefix worth copying from another sequence id. Chosen when a copy was
``llama_memory_seq_cp``'s whole stream (~8 ms, about 2 prompt tokens' compute); a copy of
the cells in use (:func:`.kv_pages.copy_sequence`) now costs ~0.5 ms for 50 tokens, so a
shorter prefix may pay too (not re-measured)."""
