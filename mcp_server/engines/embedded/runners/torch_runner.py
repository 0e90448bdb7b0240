"""The torch runner: a transformers causal LM with the row-wise batched KV cache of :mod:`..kv_batch`.

For Hugging Face model directories and for ``--device cuda``; GGUF files are dequantized
to bf16 or fp32 on load (:func:`..model_files.load_model`). Each sequence is prefilled
alone; its cache then joins the left-padded batch cache at its first decode step.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcp_server.engines.embedded.kv_batch import DecodeBatch, use_rowwise_attention
from mcp_server.engines.embedded.model_files import load_model

__all__ = ["TorchRunner"]


class TorchRunner:
    """Runs a transformers model (a Llama-family ``DynamicCache`` of full-attention layers).

    Args:
        model_path: a GGUF file, a Hugging Face directory, or None for the bundled GGUF.
        dtype: ``auto``, ``bfloat16``, ``float32`` or ``float16`` (:func:`..model_files.resolve_dtype`).
        cache_dir: where GGUF conversions are kept (None: the default cache).
        device: a torch device name.
        context_length: tokens per sequence; None = the model's ``max_position_embeddings``.
        threads: PyTorch intra-op threads (``torch.set_num_threads``), set again before
            each step if something else in the process changed them.
        deterministic: decode each row on its own (see :class:`..kv_batch.DecodeBatch`).

    Attributes:
        model: the transformers model.
        tokenizer: its tokenizer.
        vocab_size, context_length: see :class:`.ModelRunner`.
        eos_ids: the end-of-sequence ids of the model's generation config.
        backend: ``torch-<dtype>-<device>``, ``-deterministic`` with ``deterministic`` (see :class:`.ModelRunner`).
        attention_span: None: a prompt is computed whole (see :class:`.ModelRunner`).
        takes_drafts: False: one token per row (its batched cache has no multi-token rows).

    Raises:
        EngineUnavailable: the model cannot be loaded (:func:`..model_files.load_model`).
    """

    takes_drafts = False

    def __init__(
        self,
        model_path: str | None,
        dtype: str,
        cache_dir: Path | None,
        device: str,
        context_length: int | None,
        threads: int,
        deterministic: bool,
    ):
        self._threads = threads
        torch.set_num_threads(threads)
        loaded = load_model(model_path, dtype, cache_dir, device)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        use_rowwise_attention(self.model)
        config = self.model.config
        self.vocab_size = config.vocab_size
        self.context_length = context_length or config.max_position_embeddings
        configured = self.model.generation_config.eos_token_id
        self.eos_ids = frozenset(i for i in (configured if isinstance(configured, list) else [configured]) if i is not None)
        self._batch = DecodeBatch(deterministic)
        dtype_name = str(self.model.dtype).removeprefix("torch.")
        self.attention_span = None
        self.backend = f"torch-{dtype_name}-{self.model.device.type}" + ("-deterministic" if deterministic else "")
        self._order: list[int] = []  # slots in the batch cache, in row order
        self._fresh: dict[int, Any] = {}  # prefilled caches not yet in the batch
        self._prompts: dict[int, list[int]] = {}  # admitted, not yet prefilled
        self._released: set[int] = set()
        self._next_slot = 0

    def admit(self, prompt_ids: list[int], scope: Hashable = None) -> tuple[int, int]:
        """A new sequence for ``prompt_ids``, with no prefix cache (0 cached tokens, ``scope`` unused);
        see :class:`.ModelRunner`."""
        slot, self._next_slot = self._next_slot, self._next_slot + 1
        self._prompts[slot] = prompt_ids
        return slot, 0

    @torch.inference_mode()
    def prefill(self, slot: int, max_tokens: int) -> tuple[int, np.ndarray]:
        """Prefill the whole prompt of ``slot`` alone, whatever ``max_tokens`` (this runner does
        not chunk: its prompt cache joins the left-padded batch whole); see :class:`.ModelRunner`."""
        self._pin_threads()
        prompt_ids = self._prompts.pop(slot)
        prompt = torch.tensor([prompt_ids], device=self.model.device)
        out = self.model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        self._fresh[slot] = out.cache
        return len(prompt_ids), out.logits[0, -1].float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, slots: list[int], tokens: list[int], drafts: list[list[int]] | None = None) -> np.ndarray:
        """One step for ``slots``; see :class:`.ModelRunner`.

        Raises:
            RuntimeError: ``slots`` is not the batch's order (kept rows, then new ones), or
                ``drafts`` holds tokens (this runner takes one token per row).
        """
        if drafts and any(drafts):
            raise RuntimeError("The torch runner decodes one token per row; it takes no drafts")
        self._pin_threads()
        kept = [i for i, slot in enumerate(self._order) if slot not in self._released]
        if len(kept) < len(self._order):
            self._batch.keep(kept)
            self._order = [self._order[i] for i in kept]
        self._released.clear()
        for slot in slots[len(self._order) :]:
            self._batch.add(self._fresh.pop(slot))
            self._order.append(slot)
        if self._order != slots:
            raise RuntimeError(f"Rows {slots} do not follow the batch order {self._order}")
        return self._batch.forward(self.model, torch.tensor(tokens)).float().cpu().numpy()

    def rollback(self, slot: int, count: int) -> None:
        """Not supported (``takes_drafts`` is False).

        Raises:
            RuntimeError: always, unless ``count`` is 0.
        """
        if count:
            raise RuntimeError("The torch runner takes no drafts, so it has none to roll back")

    @torch.inference_mode()
    def release(self, slot: int) -> None:
        """Drop a sequence; a batched row leaves the cache at the next :meth:`decode`."""
        if self._fresh.pop(slot, None) is None and self._prompts.pop(slot, None) is None:
            self._released.add(slot)

    @torch.inference_mode()
    def clear(self) -> None:
        """Drop every sequence."""
        self._batch.clear()
        self._order, self._fresh, self._released, self._prompts = [], {}, set(), {}

    def close(self) -> None:
        """Drop the caches (the weights go with the runner)."""
        self.clear()

    def _pin_threads(self) -> None:
        # The count is process-wide; another engine in this process (a test, a benchmark) may have changed it.
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
