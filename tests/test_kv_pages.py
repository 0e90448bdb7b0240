"""The llama.cpp KV cache is resident only where sequences have written (``runners/kv_pages.py``), on the bundled model."""

from __future__ import annotations

import numpy as np

from mcp_server.engines.embedded.model_files import default_gguf_path
from mcp_server.engines.embedded.runners.llamacpp import LlamaCppRunner


def _resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) * 1024


def _kv_bytes_per_token(runner: LlamaCppRunner) -> float:
    """Keys and values of one token, all layers, at q8_0 (34 bytes per 32 values)."""
    lib, model = runner._lib, runner._model
    head = lib.llama_model_n_embd(model) // lib.llama_model_n_head(model)
    return lib.llama_model_n_layer(model) * 2 * head * lib.llama_model_n_head_kv(model) * 34 / 32


def test_the_kv_cache_is_resident_only_where_cells_are_written():
    """Creating the runner leaves the cache unresident; prefilling and copying a sequence
    bring back about its cells' bytes (a whole-stream copy would bring back 2,048 cells')."""
    before = _resident_bytes()
    runner = LlamaCppRunner(default_gguf_path(), 8, 2048, 1, True, "q8_0")
    try:
        created = _resident_bytes() - before
        per_token = _kv_bytes_per_token(runner)
        whole_cache = per_token * runner.context_length * 8
        assert created < whole_cache, (
            f"creating the runner made {created / 2**20:.0f} MB resident, the whole KV cache is {whole_cache / 2**20:.0f} MB"
        )
        first, _ = runner.admit(list(range(100, 140)))
        runner.prefill(first, 40)  # the compute buffer's pages, touched once
        grown_from = _resident_bytes()
        second, _ = runner.admit(list(range(200, 700)))
        runner.prefill(second, 500)
        grown = _resident_bytes() - grown_from
        assert grown >= 0.9 * 500 * per_token, f"500 tokens' cells written, {grown / 2**20:.1f} MB more resident"
        assert grown < 0.5 * whole_cache
        copied_from = _resident_bytes()
        third, cached = runner.admit(list(range(200, 600)) + [5])  # the running second's prefix, copied
        assert cached == 400 and runner._seq_ids[third] != runner._seq_ids[second]
        runner.prefill(third, 1)  # llama_memory_seq_cp would copy here, at the next decode
        copied = _resident_bytes() - copied_from
        stream = per_token * runner.context_length
        assert copied < 0.5 * stream, f"a 500-token sequence's copy made {copied / 2**20:.1f} MB resident"
    finally:
        runner.close()


def test_clearing_the_cache_keeps_it_unresident_and_answers_unchanged():
    runner = LlamaCppRunner(default_gguf_path(), 8, 2048, 1, False, "q8_0")
    try:
        prompt = list(range(300, 420))
        slot, _ = runner.admit(prompt)
        _, before = runner.prefill(slot, len(prompt))
        runner.release(slot)
        resident = _resident_bytes()
        runner.clear()  # llama_memory_clear(data=True) would write zeros over every cell
        assert _resident_bytes() - resident < 0.5 * _kv_bytes_per_token(runner) * runner.context_length * 8
        slot, cached = runner.admit(prompt)
        _, after = runner.prefill(slot, len(prompt))
        assert cached == 0 and np.array_equal(before, after)
    finally:
        runner.close()


def test_a_sequence_with_no_cells_yet_moves_onto_an_id_that_held_another():
    """Compaction copies an admitted, not yet prefilled sequence onto a freed id: the id's old
    cells must go (restoring an empty state drops nothing), or its prefill at position 0 fails."""
    runner = LlamaCppRunner(default_gguf_path(), 3, 256, 1, False, "q8_0")
    alone = LlamaCppRunner(default_gguf_path(), 1, 256, 1, False, "q8_0")
    try:
        first, _ = runner.admit(list(range(100, 140)))
        runner.prefill(first, 40)
        second, _ = runner.admit(list(range(200, 230)))
        runner.prefill(second, 30)
        late, _ = runner.admit(list(range(500, 520)))  # id 2, no cells yet
        runner.release(first)
        runner.decode([second], [7])  # closes the gap: the late sequence moves to id 0
        assert runner._seq_ids[late] == 0
        _, logits = runner.prefill(late, 20)
        slot, _ = alone.admit(list(range(500, 520)))
        _, expected = alone.prefill(slot, 20)
        assert np.array_equal(logits, expected)
    finally:
        runner.close()
        alone.close()
