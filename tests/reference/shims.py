"""Make the published reference packages importable in the test environment — tests only.

`hpsv2x` 1.2.0 and `image-reward` 1.5 pin old dependencies (timm 0.6, fairscale, protobuf<4,
transformers 4.x), so they are installed with `--no-deps` into `.venv/reference` (see the
Makefile) and never into the project's site-packages. What they import but never use for
scoring is stubbed here; what moved in transformers 5 is put back where they look for it.
Nothing in their scoring code is changed.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parents[2] / ".venv" / "reference"


def available() -> bool:
    return all((REFERENCE_DIR / name).is_dir() for name in ("hpsv2", "ImageReward", "t2v_metrics"))


def _stub(name: str, **attrs: object) -> types.ModuleType:
    module = sys.modules.get(name) or types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return module


def activate() -> None:
    """Put the reference packages on sys.path and install the compatibility shims (idempotent)."""
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.append(str(REFERENCE_DIR))  # appended: never shadows the project's packages
    os.environ.setdefault("HPS_ROOT", str(REFERENCE_DIR / "hps_root"))

    # hpsv2: `clint` draws download progress bars; scoring from a local file never downloads.
    _stub("clint")
    _stub("clint.textui", progress=types.SimpleNamespace(bar=lambda it, **_: it))

    # ImageReward: fairscale wraps blocks only for gradient checkpointing (off at inference);
    # `clip` and ReFL (diffusers/accelerate/datasets training code) are imported but unused.
    _stub("fairscale")
    _stub("fairscale.nn")
    _stub("fairscale.nn.checkpoint")
    _stub("fairscale.nn.checkpoint.checkpoint_activations", checkpoint_wrapper=lambda m, **_: m)
    _stub("clip")
    _stub("ImageReward.ReFL")

    # transformers 5 moved these helpers out of modeling_utils, where BLIP's med.py imports them,
    # and renamed tokenizers' `additional_special_tokens` to `extra_special_tokens`.
    import transformers.modeling_utils as mu
    import transformers.pytorch_utils as pu
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    if not getattr(mu.PreTrainedModel.init_weights, "miro_shim", False):
        mu.PreTrainedModel.init_weights = _legacy_init_weights(mu.PreTrainedModel.init_weights)
    for name, helper in (
        ("invert_attention_mask", _invert_attention_mask),
        ("get_head_mask", _get_head_mask),
    ):
        if not hasattr(mu.PreTrainedModel, name):  # transformers 4's ModuleUtilsMixin, removed in 5
            setattr(mu.PreTrainedModel, name, helper)
    if not hasattr(PreTrainedTokenizerBase, "additional_special_tokens_ids"):
        PreTrainedTokenizerBase.additional_special_tokens_ids = property(
            lambda self: self.convert_tokens_to_ids(self.extra_special_tokens)
        )

    # t2v_metrics: its package __init__ files import every model it wraps (and refuse to import
    # without ffmpeg); CLIP-FlanT5 needs none of them, so its packages are entered directly.
    root = REFERENCE_DIR / "t2v_metrics"
    for name, folder in (
        ("t2v_metrics", root),
        ("t2v_metrics.models", root / "models"),
        ("t2v_metrics.models.vqascore_models", root / "models" / "vqascore_models"),
    ):
        _stub(name, __path__=[str(folder)])

    mu.apply_chunking_to_forward = getattr(pu, "apply_chunking_to_forward", _apply_chunking)
    mu.prune_linear_layer = pu.prune_linear_layer
    mu.find_pruneable_heads_and_indices = getattr(
        pu, "find_pruneable_heads_and_indices", _find_pruneable_heads_and_indices
    )


def _legacy_init_weights(init_weights):
    """transformers 4.15 models (med.py's BertModel) call `init_weights()` where transformers 5
    expects `post_init()`, which registers what `init_weights` now needs and then calls it."""

    def wrapper(self):
        if not hasattr(self, "all_tied_weights_keys"):
            return self.post_init()
        return init_weights(self)

    wrapper.miro_shim = True
    return wrapper


def _invert_attention_mask(self, mask):
    """transformers 4.15: 1 → 0, 0 → the dtype's minimum, broadcastable over heads and queries."""
    import torch

    mask = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    mask = mask.to(dtype=self.dtype)
    return (1.0 - mask) * torch.finfo(self.dtype).min


def _get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
    """transformers 4.15 for the case the scorers use: no head mask."""
    if head_mask is not None:
        raise NotImplementedError("head masks are not used by the reference scorers")
    return [None] * num_hidden_layers


def _apply_chunking(forward_fn, chunk_size, chunk_dim, *inputs):
    """transformers 4's helper; with chunk_size 0 (BLIP's) it is a plain call."""
    if chunk_size > 0:
        import torch

        chunks = zip(
            *(t.chunk(t.shape[chunk_dim] // chunk_size, dim=chunk_dim) for t in inputs), strict=True
        )
        return torch.cat([forward_fn(*c) for c in chunks], dim=chunk_dim)
    return forward_fn(*inputs)


def _find_pruneable_heads_and_indices(heads, n_heads, head_size, already_pruned):
    raise NotImplementedError("head pruning is not used by the reference scorers")
