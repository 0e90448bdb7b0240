"""The key/value cache of the running rows, left-padded so that every row ends together.

Rows of different lengths share one :class:`transformers.DynamicCache`: each row is
padded on the left, a 2-D attention mask hides the padding, and each row keeps its own
position counter. A decode step appends one token to every row in one forward pass.

Attention over padded rows gives slightly different numbers than over the same row
alone (the kernels reduce over a different length), enough to change a greedy choice
now and then. :func:`use_rowwise_attention` therefore makes decode steps attend row by
row over each row's real columns only, so a row's output is bit-for-bit the same
whatever it is batched with. The linear layers, which do most of the work, still run
on the whole batch at once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

__all__ = ["ROWWISE_ATTENTION", "DecodeBatch", "KVBatch", "use_rowwise_attention"]

ROWWISE_ATTENTION = "chatcap_rowwise"


class KVBatch:
    """Left-padded KV cache, attention mask and positions for a batch of sequences.

    Attributes:
        mask: int64 ``[B, T]``, 1 where the cache holds a real token, 0 for padding.
        positions: int64 ``[B]``, the position of each row's next token (its real length).
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Drop every row."""
        self._cache: Any = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.positions.shape[0]

    def add(self, cache: Any) -> None:
        """Append one prefilled row.

        Args:
            cache: the ``DynamicCache`` of a batch-1 prefill; its tensors are
                ``[1, heads, length, head_dim]``. The batch takes ownership of it.
        """
        length = cache.get_seq_length()
        device = cache.layers[0].keys.device
        row_mask = torch.ones(1, length, dtype=torch.long, device=device)
        if self._cache is None:
            self._cache = cache
            self.mask = row_mask
            self.positions = torch.tensor([length], device=device)
            return
        width = self.mask.shape[1]
        total = max(width, length)
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, total - width), _left_pad(theirs.keys, total - length)])
            mine.values = torch.cat([_left_pad(mine.values, total - width), _left_pad(theirs.values, total - length)])
        self.mask = torch.cat([F.pad(self.mask, (total - width, 0)), F.pad(row_mask, (total - length, 0))])
        self.positions = torch.cat([self.positions, torch.tensor([length], device=device)])

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order), then drop padding columns no row needs."""
        if not rows:
            self.clear()
            return
        index = torch.tensor(rows, device=self.mask.device)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        start = int(self.mask.any(dim=0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def forward(self, model: Any, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row and return the logits for the following token.

        Args:
            model: the causal LM.
            tokens: int64 ``[B]``, the last sampled token of each row (on any device).

        Returns:
            float32 ``[B, V]`` logits, on the CPU (where sampling and grammars run).
        """
        self.mask = F.pad(self.mask, (0, 1), value=1)
        out = model(
            input_ids=tokens[:, None].to(self.mask.device),
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            cache=self._cache,
            use_cache=True,
        )
        self.positions = self.positions + 1
        return out.logits[:, -1].float().cpu()


class DecodeBatch:
    """The caches of the running rows: one shared :class:`KVBatch`, or one per row.

    Shared, a decode step runs every row's linear layers in one matrix product. The
    product's reduction order may change with the number of rows on some CPUs (bf16 on
    AVX512-BF16 and AMX), so a row's logits, and now and then its greedy choice, can
    depend on what it is batched with. ``deterministic`` gives each row its own cache and
    forward pass: a row's output is then bit-for-bit its output alone, whatever else
    runs, at the cost of batching (SGLang calls this ``--enable-deterministic-inference``).

    Args:
        deterministic: decode each row on its own.
    """

    def __init__(self, deterministic: bool = False) -> None:
        self.deterministic = deterministic
        self._batches: list[KVBatch] = []

    def __len__(self) -> int:
        return sum(len(batch) for batch in self._batches)

    def clear(self) -> None:
        """Drop every row."""
        self._batches = []

    def add(self, cache: Any) -> None:
        """Append one prefilled row (see :meth:`KVBatch.add`)."""
        if self.deterministic or not self._batches:
            self._batches.append(KVBatch())
        self._batches[-1].add(cache)

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order)."""
        if not rows:
            self.clear()
        elif self.deterministic:
            self._batches = [self._batches[i] for i in rows]
        else:
            self._batches[0].keep(rows)

    def forward(self, model: Any, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; return float32 ``[B, V]`` CPU logits (see :meth:`KVBatch.forward`)."""
        pieces = tokens.split([len(batch) for batch in self._batches])
        return torch.cat([batch.forward(model, piece) for batch, piece in zip(self._batches, pieces, strict=True)])


def _left_pad(states: torch.Tensor, columns: int) -> torch.Tensor:
    """Pad ``[B, heads, T, head_dim]`` with ``columns`` zero positions on the left."""
    return F.pad(states, (0, 0, columns, 0)) if columns else states


def use_rowwise_attention(model: Any) -> None:
    """Switch ``model`` to row-by-row attention for decode steps (prefill keeps SDPA).

    Args:
        model: a transformers model whose attention layers use the attention interface.
    """
    AttentionInterface.register(ROWWISE_ATTENTION, _rowwise_attention)
    AttentionMaskInterface.register(ROWWISE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(ROWWISE_ATTENTION)


def _rowwise_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA, but a one-token step over a padded batch attends each row to its real columns.

    ``query`` is ``[B, heads, q_len, head_dim]``, ``key``/``value`` ``[B, kv_heads, T, head_dim]``,
    ``attention_mask`` a boolean ``[B, 1, q_len, T]`` or None when nothing is masked.
    Real columns sit at the right end of each row (the padding is on the left).
    """
    if query.shape[2] > 1 or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    lengths = attention_mask[:, 0, -1, :].sum(dim=-1).tolist()
    rows = [
        sdpa_attention_forward(module, query[i : i + 1], key[i : i + 1, :, -n:], value[i : i + 1, :, -n:], None, **kwargs)[0]
        for i, n in enumerate(lengths)
    ]
    return torch.cat(rows), None
