"""Runner selection and the llama.cpp runner's sequence bookkeeping, on the bundled model."""

from __future__ import annotations

import pytest

from mcp_server.engines.embedded.runners import default_threads, resolve_runner
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


def test_llamacpp_runner_reuses_released_sequences_and_keeps_rows_independent():
    from mcp_server.engines.embedded.model_files import default_gguf_path
    from mcp_server.engines.embedded.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(default_gguf_path(), max_batch_size=2, context_length=256, threads=1)
    try:
        assert runner.context_length == 256
        prompt = [1, 9690, 198, 2683, 359, 253]
        a, first = runner.prefill(prompt)
        b, _ = runner.prefill([1, 2683, 359])
        with pytest.raises(RuntimeError, match="No free"):
            runner.prefill(prompt)
        both = runner.decode([a, b], [int(first.argmax()), 42])
        assert both.shape == (2, runner.vocab_size)
        runner.release(a)
        again, logits = runner.prefill(prompt)  # the released id is reused, its cache empty
        assert again == a
        assert (logits == first).all()
        alone = runner.decode([again], [int(first.argmax())])
        assert (alone[0] == both[0]).all()  # the same row, batched or alone: identical logits
        runner.clear()
        with pytest.raises(RuntimeError, match="does not fit"):
            runner.prefill(list(range(300)))
        assert {runner.prefill(prompt)[0], runner.prefill(prompt)[0]} == {0, 1}  # all ids free again
    finally:
        runner.close()


def test_threads_flag_and_environment_reach_the_settings(monkeypatch):
    from mcp_server.cli import _settings, build_parser

    args = build_parser().parse_args(["serve", "--threads", "3", "--runner", "torch"])
    settings = _settings(args)
    assert (settings.threads, settings.runner, settings.max_running_requests) == (3, "torch", None)
    monkeypatch.setenv("CHATCAP_THREADS", "2")
    assert _settings(build_parser().parse_args(["serve"])).threads == 2
