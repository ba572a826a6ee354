"""Caption encoders: the default word-level embedding, or a frozen Hugging Face encoder.

Default (`word`): a vocabulary of the words in the training captions (stored in the
checkpoint) and a learned token + position embedding trained with the model. It needs no
download, and Shapes World captions use about thirty words from a fixed grammar, so a learned
lookup table is all their meaning needs. Real corpora use a frozen Hugging Face encoder
(FLAN-T5 like the paper, or CLIP text) through `miro_data.encoders.FrozenTextEncoder`, or
embeddings the reshard stage precomputed into the shards (`txt_emb.npy`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class WordVocab:
    """Words → ids; id 0 pads, id 1 stands for any word not in the training captions."""

    words: tuple[str, ...]
    max_len: int = 16

    @classmethod
    def build(cls, captions: Iterable[str], max_len: int = 16, max_size: int = 50_000) -> WordVocab:
        counts = Counter(w for c in captions for w in split_words(c))
        # Most frequent first, ties alphabetically: the same captions give the same ids.
        ranked = sorted(counts, key=lambda w: (-counts[w], w))[: max_size - 2]
        return cls((PAD, UNK, *ranked), max_len)

    def __len__(self) -> int:
        return len(self.words)

    @cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, captions: Sequence[str]) -> np.ndarray:
        """(B, max_len) int64 ids, zero-padded, truncated to max_len words."""
        index = self.index
        out = np.zeros((len(captions), self.max_len), dtype=np.int64)
        for row, caption in enumerate(captions):
            ids = [index.get(w, 1) for w in split_words(caption)][: self.max_len]
            out[row, : len(ids)] = ids
        return out


class WordEmbedder(nn.Module):
    """Learned token and position embeddings: (B, L) ids → (B, L, D) and the mask ids != 0."""

    def __init__(self, vocab_size: int, dim: int, max_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        nn.init.normal_(self.tokens.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens(ids) + self.position[: ids.shape[1]], ids != 0


def pad_embeddings(embs: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed (L_i, D) embeddings → (B, max_len, D) float16 and (B, max_len) bool mask."""
    dim = embs[0].shape[1]
    out = np.zeros((len(embs), max_len, dim), dtype=np.float16)
    mask = np.zeros((len(embs), max_len), dtype=bool)
    for i, e in enumerate(embs):
        n = min(len(e), max_len)
        out[i, :n] = e[:n]
        mask[i, :n] = True
    return out, mask
