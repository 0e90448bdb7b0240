"""Runner selection and the llama.cpp runner's sequence bookkeeping, on the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcp_server.engines.embedded.model_files import default_gguf_path
from mcp_server.engines.embedded.runners import (
    default_threads,
    resolve_runner,
    resolve_threads,
)
from mcp_server.engines.embedded.runners.llamacpp import LlamaCppRunner
from mcp_server.errors import InvalidRequest


def test_auto_picks_llamacpp_for_gguf_on_cpu_and_torch_otherwise(tmp_path):
    assert resolve_runner("auto", None, "cpu") == "llamacpp"
    assert resolve_runner("auto", "/models/x.gguf", "cpu") == "llamacpp"
    assert resolve_runner("auto", None, "cuda") == "torch"
    assert resolve_runner("auto", str(tmp_path), "cpu") == "torch"  # a Hugging Face directory
    assert resolve_runner("torch", None, "cpu") == "torch"


def test_impossible_runner_choices_are_refused(tmp_path):
    with pytest.raises(InvalidRequest, match="GGUF files on the CPU"):
        resolve_runner("llamacpp", None, "cuda")
    with pytest.raises(InvalidRequest, match="GGUF files on the CPU"):
        resolve_runner("llamacpp", str(tmp_path), "cpu")
    with pytest.raises(InvalidRequest, match="Unknown runner"):
        resolve_runner("vllm", None, "cpu")


def test_default_threads_leaves_a_core_free():
    import os

    assert default_threads() == max(1, len(os.sched_getaffinity(0)) - 1)


def test_threads_that_take_every_core_are_warned_about(caplog):
    import logging
    import os

    cores = len(os.sched_getaffinity(0))
    with caplog.at_level(logging.WARNING):
        assert resolve_threads(None) == default_threads()
        assert not caplog.records
        assert resolve_threads(cores) == cores
    assert ("leave none to the HTTP server" in caplog.text) == (cores > 1)


def _runner(batch: int = 2, prefix_cache: bool = True, kv_cache_dtype: str = "q8_0"):
    return LlamaCppRunner(default_gguf_path(), batch, 256, 1, prefix_cache, kv_cache_dtype)


def prefill(runner, prompt: list[int], scope=None):
    """Admit ``prompt`` and prefill it whole: ``(slot, cached_tokens, logits)``."""
    slot, cached = runner.admit(prompt, scope)
    computed, logits = runner.prefill(slot, len(prompt))
    assert computed == len(prompt) - cached
    return slot, cached, logits


def test_llamacpp_runner_reuses_released_sequences_and_keeps_rows_independent():
    runner = _runner()
    try:
        assert runner.context_length == 256
        prompt = [1, 9690, 198, 2683, 359, 253]
        a, cached, first = prefill(runner, prompt)
        assert cached == 0
        b, _, _ = prefill(runner, [1, 2683, 359])
        with pytest.raises(RuntimeError, match="No free"):
            prefill(runner, prompt)
        both = runner.decode([a, b], [int(first.argmax()), 42])
        assert both.shape == (2, runner.vocab_size)
        runner.release(a)
        again, cached, logits = prefill(runner, prompt)  # a's id, whose cells still hold the prompt
        assert cached == len(prompt) - 1  # the last token is always computed
        assert (logits == first).all()
        alone = runner.decode([again], [int(first.argmax())])
        assert (alone[0] == both[0]).all()  # the same row, batched or alone: identical logits
        runner.clear()
        with pytest.raises(RuntimeError, match="does not fit"):
            prefill(runner, list(range(300)))
        assert [prefill(runner, prompt)[1] for _ in range(2)] == [0, 0]  # all ids free again, nothing cached
    finally:
        runner.close()


def test_llamacpp_prefix_cache_reuses_the_longest_match_and_computes_the_same_logits():
    runner = _runner()
    system = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173]
    question, other = system + [198, 1, 4093, 198, 6121], [1, 4093, 198, 43, 2683, 359]
    try:
        fresh = {}
        for prompt in (question, other):  # computed with nothing cached
            _, cached, fresh[tuple(prompt)] = prefill(runner, prompt)
            assert cached == 0
            runner.clear()
        a, _, _ = prefill(runner, other)
        b, _, _ = prefill(runner, system + [198, 1, 4093, 198, 42])
        runner.decode([a, b], [7, int(fresh[tuple(question)].argmax())])  # their caches now hold a generated token
        runner.release(b)
        # b's cells share the system prompt and 4 more tokens; a, still running, shares only token 1.
        c, cached, logits = prefill(runner, question)
        assert cached == len(system) + 4
        assert (logits == fresh[tuple(question)]).all()  # cells past the match were dropped, not attended
        runner.release(a)
        runner.release(c)
        _, cached, logits = prefill(runner, other)
        assert cached == len(other) - 1
        assert (logits == fresh[tuple(other)]).all()
    finally:
        runner.close()


def test_llamacpp_rows_are_independent_across_matrix_tile_sizes():
    """Batch invariance where kernels change shape: llama.cpp's AMX kernels (when the CPU has
    AMX, the default there) take one row, up to 16 rows or more as different kernels and tiles,
    so a prompt's last logits must not depend on how much of it was cached (rows computed: 1
    to 129), nor a decode row's on 9 or 16 rows running beside it."""
    import random

    rng = random.Random(0)
    runner = _runner(batch=16)
    try:
        for length in (17, 33, 65, 129):
            prompt = [1] + [rng.randrange(100, 40000) for _ in range(length - 1)]
            runner.clear()
            _, _, fresh = prefill(runner, prompt)
            for cached in sorted({1, 15, 16, 17, length - 16, length - 1} - {length}):
                runner.clear()
                runner.release(prefill(runner, prompt[:cached])[0])
                _, reused, logits = prefill(runner, prompt)
                assert reused == cached
                assert np.array_equal(logits, fresh), (length, cached)
        for n in (9, 16):
            prompts = [[1] + [rng.randrange(100, 40000) for _ in range(rng.randrange(1, 70))] for _ in range(n)]
            steps = [[rng.randrange(100, 40000) for _ in range(n)] for _ in range(2)]
            alone = []
            for i, prompt in enumerate(prompts):
                runner.clear()
                slot, _, logits = prefill(runner, prompt)
                alone.append([logits] + [runner.decode([slot], [step[i]])[0] for step in steps])
            runner.clear()
            slots = [prefill(runner, prompt)[0] for prompt in prompts]
            together = [runner.decode(slots, step) for step in steps]
            for i in range(n):
                for k, step_logits in enumerate(together):
                    assert np.array_equal(step_logits[i], alone[i][k + 1]), (n, i, k)
    finally:
        runner.close()


def test_llamacpp_prefix_is_copied_from_a_running_sequence_and_gaps_are_closed():
    """A prompt reuses a prefix another running sequence computed (a copy between ids), and
    when a sequence in the middle ends, the others keep their logits: the same as alone."""
    runner = _runner(batch=3)
    system = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 198, 1, 4093, 198]
    prompts = [system + [6121, 30], system + [42, 43, 44], system + [5646]]
    try:
        alone = []
        for prompt in prompts:  # each alone: its prefill logits and 3 decode steps
            runner.clear()
            slot, _, logits = prefill(runner, prompt)
            rows = [logits]
            for token in (7, 8, 9):
                rows.append(runner.decode([slot], [token])[0])
            alone.append(rows)
        runner.clear()
        slots, seen = [], [[], [], []]
        for i, prompt in enumerate(prompts):
            slot, cached, logits = prefill(runner, prompt)
            assert cached == (0 if i == 0 else len(system))  # the later ones copy the first's prefix
            slots.append(slot)
            seen[i].append(logits)
        for i, row in enumerate(runner.decode(slots, [7, 7, 7])):
            seen[i].append(row)
        runner.release(slots[1])  # the middle one ends: the last moves into its place
        for token in (8, 9):
            step = runner.decode([slots[2], slots[0]], [token, token])  # any order of handles
            seen[2].append(step[0])
            seen[0].append(step[1])
        for i in (0, 2):
            assert all((got == want).all() for got, want in zip(seen[i], alone[i], strict=True))
        assert all((got == want).all() for got, want in zip(seen[1], alone[1][:2], strict=True))
    finally:
        runner.close()


def test_disable_prefix_cache_computes_every_prompt_in_full():
    from mcp_server.cli import _settings, build_parser

    assert _settings(build_parser().parse_args(["serve", "--disable-prefix-cache"])).disable_prefix_cache
    runner = _runner(prefix_cache=False)
    prompt = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 198]
    try:
        slot, cached, first = prefill(runner, prompt)
        runner.release(slot)
        slot, cached, again = prefill(runner, prompt)
        assert cached == 0 and (again == first).all()
    finally:
        runner.close()


@pytest.mark.parametrize(
    "param,value,bad,valid",
    [("kv_cache_dtype", "f16", "fp8", "auto, q8_0, f16"), ("repack", "off", "yes", "auto, on, off")],
)
def test_llamacpp_options_parse_and_are_refused_where_they_cannot_apply(param, value, bad, valid):
    from mcp_server.cli import _settings, build_parser
    from mcp_server.engines.embedded.engine import EmbeddedEngine

    flag = "--" + param.replace("_", "-")
    assert getattr(_settings(build_parser().parse_args(["serve", flag, value])), param) == value
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", flag, bad])
    with pytest.raises(InvalidRequest, match="llamacpp runner only") as refused:
        EmbeddedEngine(runner="torch", **{param: value})
    assert refused.value.param == param
    with pytest.raises(InvalidRequest, match=f"use one of {valid}") as refused:  # e.g. CHATCAP_REPACK=bogus
        EmbeddedEngine(**{param: bad})
    assert refused.value.param == param


def test_kv_cache_dtype_reaches_llama_cpp_and_changes_answers():
    prompt = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 198]
    logits, backends = {}, {}
    for dtype in ("f16", "q8_0"):
        runner = _runner(kv_cache_dtype=dtype)
        try:
            slot, _, _ = prefill(runner, prompt)
            logits[dtype] = runner.decode([slot], [42])[0]  # attends to the cached prompt
            backends[dtype] = runner.backend
        finally:
            runner.close()
    assert not (logits["f16"] == logits["q8_0"]).all()  # 8-bit keys and values round differently
    assert backends["f16"] != backends["q8_0"]  # so their answers carry different system_fingerprints


def test_f16_kv_cache_runs_without_the_prefix_cache_so_answers_do_not_change():
    """Over an f16 cache llama.cpp computes a prompt row differently depending on the rows
    prefilled with it (measured: with flash attention, a 120-token prompt's logits moved by
    up to 0.59 when 8 or 60 of its tokens came from the cache; without it, a 6-token
    prompt's moved when 5 did), so the f16 runner computes every prompt in full."""
    prompt = [1, 9690, 198] + [200 + (37 * i) % 20000 for i in range(117)]
    runner = _runner(prefix_cache=False, kv_cache_dtype="f16")
    try:
        _, _, fresh = prefill(runner, prompt)
    finally:
        runner.close()
    runner = _runner(kv_cache_dtype="f16")
    try:
        for cached in (8, 60, len(prompt) - 2):
            slot, _, _ = prefill(runner, prompt[:cached] + [5])
            runner.release(slot)
            slot, reused, logits = prefill(runner, prompt)
            runner.release(slot)
            assert reused == 0
            assert (logits == fresh).all()
    finally:
        runner.close()


def _chunked(runner, prompt: list[int], chunk: int, scope=None):
    """Admit ``prompt`` and prefill it ``chunk`` tokens at a time: ``(slot, chunks computed, logits)``."""
    slot, cached = runner.admit(prompt, scope)
    sizes, logits = [], None
    while logits is None:
        computed, logits = runner.prefill(slot, chunk)
        sizes.append(computed)
    assert sum(sizes) == len(prompt) - cached
    return slot, sizes, logits


@pytest.mark.parametrize("kv_cache_dtype", ["q8_0", "f16"])
def test_a_prompt_prefilled_in_chunks_gives_the_logits_of_one_prefill_bit_for_bit(kv_cache_dtype):
    """Chunked prefill keeps determinism: the last prompt position's logits, and the next
    decode steps over the cells the chunks wrote, equal those of the prompt computed at once.
    Over q8_0 any chunk size does (1 token, odd sizes, across the 128-row ubatch and the AMX
    tile sizes); over f16, where a row's attention depends on its neighbours, the runner ends
    chunks on 128-token boundaries, as llama.cpp splits a whole prompt."""
    import random

    rng = random.Random(1)
    prompt = [1] + [rng.randrange(100, 40000) for _ in range(299)]
    runner = LlamaCppRunner(default_gguf_path(), 1, 512, 1, True, kv_cache_dtype)
    try:
        slot, _, whole = prefill(runner, prompt)
        steps = [runner.decode([slot], [token])[0] for token in (42, 43)]
        runner.clear()
        for chunk in (1, 7, 16, 100, 128, 129, 299) if kv_cache_dtype == "q8_0" else (1, 100, 200):
            slot, sizes, logits = _chunked(runner, prompt, chunk)
            if kv_cache_dtype == "f16":
                assert len(sizes) > 1 and all(size % 128 == 0 for size in sizes[:-1]), sizes
            else:
                assert max(sizes) <= chunk
            assert np.array_equal(logits, whole), chunk
            assert all(np.array_equal(runner.decode([slot], [token])[0], step) for token, step in zip((42, 43), steps)), chunk
            runner.clear()
    finally:
        runner.close()


def test_prefix_cache_is_shared_only_within_a_scope():
    """A prompt reuses cells computed for its own scope only: another tenant's identical
    prompt is computed in full (``cached_tokens`` 0), and reuse within a scope is unchanged."""
    prompt = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 198, 1, 4093, 198, 6121]
    runner = _runner(batch=2)
    try:
        a, cached, fresh = prefill(runner, prompt, scope=("tenant", "key_a"))
        assert cached == 0
        b, cached, logits = prefill(runner, prompt, scope=("tenant", "key_b"))  # a is running: no copy across scopes
        assert cached == 0 and (logits == fresh).all()
        runner.release(a)
        runner.release(b)
        for scope in (("tenant", "key_c"), ("salt", "key_a")):
            slot, cached, _ = prefill(runner, prompt, scope=scope)
            assert cached == 0, scope
            runner.release(slot)
        slot, cached, logits = prefill(runner, prompt, scope=("tenant", "key_b"))
        assert cached == len(prompt) - 1 and (logits == fresh).all()
    finally:
        runner.close()


def test_threads_flag_and_environment_reach_the_settings(monkeypatch):
    from mcp_server.cli import _settings, build_parser

    args = build_parser().parse_args(["serve", "--threads", "3", "--runner", "torch"])
    settings = _settings(args)
    assert (settings.threads, settings.runner, settings.max_running_requests) == (3, "torch", None)
    monkeypatch.setenv("CHATCAP_THREADS", "2")
    assert _settings(build_parser().parse_args(["serve"])).threads == 2


def test_repack_auto_follows_the_cpu_and_a_probe_in_a_child_process(tmp_path):
    """Where the CPU has AMX, the set-up's llama.cpp build must run its AMX kernels (a GCC 12
    build without -fno-dse crashes there); elsewhere nothing is probed."""
    from mcp_server.engines.embedded.model_files import default_gguf_path
    from mcp_server.engines.embedded.runners.repack import (
        cpu_has_amx,
        repack_works,
        resolve_repack,
    )

    gguf = default_gguf_path()
    assert resolve_repack("on", gguf, 1, tmp_path) and not resolve_repack("off", gguf, 1, tmp_path)
    with pytest.raises(ValueError, match="Unknown repack mode"):
        resolve_repack("amx", gguf, 1, tmp_path)
    assert not (tmp_path / "repack-probe").exists()
    assert resolve_repack("auto", gguf, 1, tmp_path) == cpu_has_amx()
    assert [p.read_text() for p in (tmp_path / "repack-probe").glob("*.txt")] == (["works"] if cpu_has_amx() else [])
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(gguf.read_bytes()[:4096])  # llama.cpp cannot load it: the probe fails, and says so
    assert not repack_works(broken, 1, tmp_path)
    assert sorted(p.read_text() for p in (tmp_path / "repack-probe").glob("*.txt"))[0] == "fails"


def test_a_damaged_repack_probe_answer_is_probed_again_not_fatal(tmp_path, caplog):
    """A kept answer that is neither ``works`` nor ``fails`` (a disk error, a hand edit) is
    probed again and replaced; it once stopped the server's start with a UnicodeDecodeError."""
    import logging

    from mcp_server.engines.embedded.model_files import default_gguf_path
    from mcp_server.engines.embedded.runners.repack import repack_works

    gguf = default_gguf_path()
    first = repack_works(gguf, 1, tmp_path)
    [answer] = (tmp_path / "repack-probe").glob("*.txt")
    for damaged in (b"\xff\xfe\x00junk", b""):
        answer.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            works = repack_works(gguf, 1, tmp_path)
        assert "damaged" in caplog.text
        assert works == first
        assert answer.read_text() == ("works" if works else "fails")


def test_a_repack_probe_stopped_by_sigterm_is_not_kept_as_failed(tmp_path, caplog):
    """A service manager's SIGTERM to the process group reaches the probe too: that says
    nothing about AMX, so no answer is kept (it once kept ``fails``, for good)."""
    import logging
    import os
    import signal
    import threading
    import time

    from mcp_server.engines.embedded.model_files import default_gguf_path
    from mcp_server.engines.embedded.runners.repack import repack_works

    answers = []
    with caplog.at_level(logging.WARNING):
        probing = threading.Thread(target=lambda: answers.append(repack_works(default_gguf_path(), 1, tmp_path)))
        probing.start()
        probe = None
        while probe is None and probing.is_alive():
            probe = _child_running(os.getpid(), "repack_probe.py")
            time.sleep(0.01)
        assert probe is not None, "the probe ended before it could be stopped"
        os.kill(probe, signal.SIGTERM)
        probing.join(timeout=300)
    assert answers == [False]
    assert "stopped by SIGTERM" in caplog.text
    assert not list(tmp_path.glob("repack-probe/*.txt"))


def _child_running(parent: int, script: str) -> int | None:
    """The id of a child process of ``parent`` whose command line names ``script`` (Linux /proc), or None."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = stat.with_name("cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # it ended meanwhile
            continue
        if ppid == parent and script.encode() in cmdline:
            return int(stat.parent.name)
    return None


def test_repack_off_reaches_the_runner():
    from mcp_server.engines.embedded.model_files import default_gguf_path
    from mcp_server.engines.embedded.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(default_gguf_path(), 1, 64, 1, repack="off")
    try:
        assert not runner.repacked
    finally:
        runner.close()


def test_llamacpp_drafted_tokens_get_the_logits_of_one_token_steps_and_roll_back():
    """A row with drafts (jump-forward) is several tokens of one sequence in the batch: each
    gets the logits it gets decoded one step at a time, beside rows of other lengths, in any
    order of handles; rolled back, the sequence goes on as if the drafts were never fed."""
    runner = _runner(batch=3)
    prompts = [[1, 9690, 198, 2683, 359], [1, 4093, 198, 43], [1, 9690, 198, 6121, 30, 31]]
    feeds = [[7, 8, 9, 10], [11], [12, 13]]
    try:
        alone = []
        for prompt, feed in zip(prompts, feeds, strict=True):
            runner.clear()
            slot, _, _ = prefill(runner, prompt)
            alone.append([runner.decode([slot], [token])[0] for token in feed])
        runner.clear()
        slots = [prefill(runner, prompt)[0] for prompt in prompts]
        order = [2, 0, 1]
        together = runner.decode([slots[i] for i in order], [feeds[i][0] for i in order], [feeds[i][1:] for i in order])
        assert together.shape == (sum(map(len, feeds)), runner.vocab_size)
        start = 0
        for i in order:
            for k in range(len(feeds[i])):
                assert np.array_equal(together[start + k], alone[i][k]), (i, k)
            start += len(feeds[i])
        runner.rollback(slots[0], 2)  # 9 and 10 not taken: 8's logits again, then 9 fed alone
        again = runner.decode([slots[0]], [9])[0]
        assert np.array_equal(again, alone[0][2])
    finally:
        runner.close()
