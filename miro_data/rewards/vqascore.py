"""`vqascore`: VQAScore (Lin et al., 2024), P("Yes") from CLIP-FlanT5, as t2v_metrics scores it.

For a caption C the model is asked, in its chat format,
`<system> USER: <image>\\nDoes this figure show "C"? Please answer yes or no. ASSISTANT: ` and
the score is the probability of the answer "Yes" (its tokens' mean log-probability,
exponentiated, as t2v_metrics' `CLIPT5Model.forward`), in [0, 1].

Files (the HF cache or explicit folders): the CLIP-FlanT5 checkpoint (`zhiqiulin/clip-flant5-xxl`
by default, or `-xl`; `config.json` + weights, sharded or not), the FlanT5 tokenizer
(`google/flan-t5-xxl` / `-xl`: `tokenizer.json`), and the CLIP vision tower's processor and
config (`openai/clip-vit-large-patch14-336`; its weights too when the checkpoint lacks the
vision tower's). Loaded strictly; the network is miro_data.rewards.clip_t5.

Options: model, repo, model_dir, tokenizer, tokenizer_dir, vision_tower, vision_dir,
batch_size, hf_home.

Images: padded to a square with the processor's mean colour (t2v_metrics' `expand2square`),
then the vision tower's own processor on tensors. Departures: an image whose long side exceeds
4096 px is first shrunk to 4096 (the padded square would otherwise take gigabytes); a caption
containing the literal text `<image>` is read as text (the reference would splice a second
image there, another row's). On CUDA the model runs in bf16 weights as the reference does
(fp32 where bf16 is unsupported: T5 overflows in fp16).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPVisionConfig

from miro_data.common import MiroError
from miro_data.rewards import catalog, imageops
from miro_data.rewards.base import RewardContext
from miro_data.rewards.clip_t5 import ClipT5, model_state, tower_state
from miro_data.rewards.torch_reward import TorchReward, shared
from miro_data.rewards.weights import (
    inputs_digest,
    load_state_dict,
    load_strict,
    present,
    resolve,
    shard_names,
)

QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
ANSWER = "Yes"
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
CONTEXT_LEN = 2048  # t2v_metrics truncates the token ids (the image counting as one) here
MAX_SIDE = 4096
# a buffer older transformers saved; scoring never reads it (names as after `checkpoint_key`)
UNUSED_KEYS = ("vision_tower.vision_tower.embeddings.position_ids",)


@dataclass
class VQAParts:
    net: ClipT5
    tokenizer: Any
    image_processor: Any
    vocab: int  # len(tokenizer): the reference shrinks the embeddings and lm_head to it
    version: str


def checkpoint_files(weights: Path) -> list[Path]:
    """The weight files: the shards an index names, or the one file."""
    if not weights.name.endswith(".index.json"):
        return [weights]
    shards = [weights.parent / name for name in shard_names(weights)]
    missing = [str(p) for p in shards if not p.is_file()]
    if missing or not shards:
        raise MiroError(f"{weights}: shard(s) missing: {', '.join(missing) or 'none listed'}")
    return shards


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MiroError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise MiroError(f"{path} does not hold a JSON object")
    return data


def load_parts(options: dict, device: torch.device, dtype: torch.dtype, hf_home: str | None):
    files = catalog.vqascore_files(options)
    config_path, weights, tok_file, proc_path, vision_config = resolve("vqascore", files, hf_home)
    config = read_json(config_path)
    shards = checkpoint_files(weights)
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_state_dict(shard))
    inputs = [config_path, *present(tok_file.parent), *present(proc_path.parent), vision_config]
    if not any(k.startswith("vision_tower.") for k in state):  # from the vision tower's repo
        vision_weights = resolve("vqascore", [catalog.vqascore_vision_weights(options)], hf_home)
        state.update(tower_state(load_state_dict(vision_weights[0])))
        shards = [*shards, *vision_weights]
    try:
        vision = CLIPVisionConfig.from_pretrained(vision_config.parent)
        net = ClipT5(config, vision)
    except (OSError, ValueError, TypeError) as err:
        raise MiroError(f"cannot build CLIP-FlanT5 from {config_path}: {err}") from None
    load_strict(net, model_state(state, weights), weights, ignorable=UNUSED_KEYS)
    net.eval().requires_grad_(False).to(device=device, dtype=dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_file.parent)
        processor = AutoImageProcessor.from_pretrained(proc_path.parent)
    except (OSError, ValueError, TypeError) as err:
        raise MiroError(f"cannot load the VQAScore tokenizer or processor: {err}") from None
    vocab = len(tokenizer)
    if vocab > net.language_model.config.vocab_size:
        raise MiroError(f"tokenizer in {tok_file.parent} has more tokens than {config_path}")
    name = options.get("model", catalog.VQA_DEFAULT)
    version = f"{name}@{inputs_digest(shards, n=12)}+cfg@{inputs_digest(inputs)}"
    return VQAParts(net, tokenizer, processor, vocab, version)


def pad_square(image: torch.Tensor, color: tuple[int, ...]) -> torch.Tensor:
    """t2v_metrics' expand2square on a (3, H, W) uint8 tensor: centred, `color` around."""
    _, h, w = image.shape
    if h == w:
        return image
    side = max(h, w)
    out = torch.tensor(color, dtype=image.dtype, device=image.device)[:, None, None]
    out = out.expand(3, side, side).clone()
    top, left = (side - h) // 2, (side - w) // 2
    out[:, top : top + h, left : left + w] = image
    return out


def shrink(image: torch.Tensor, limit: int = MAX_SIDE) -> torch.Tensor:
    """Long side beyond `limit` → `limit` (antialiased bicubic), aspect kept."""
    _, h, w = image.shape
    if max(h, w) <= limit:
        return image
    size = [max(1, round(h * limit / max(h, w))), max(1, round(w * limit / max(h, w)))]
    resized = torch.nn.functional.interpolate(
        image[None].float(), size=size, mode="bicubic", antialias=True, align_corners=False
    )
    return resized[0].round().clamp(0, 255).to(torch.uint8)


class VQAScore(TorchReward):
    """P("Yes" | image, "Does this figure show "<caption>"? …") from CLIP-FlanT5."""

    name = "vqascore"
    OPTIONS = catalog.VQASCORE_OPTIONS
    CUDA_BATCH = 64

    def __init__(self, ctx: RewardContext | None = None, parts: VQAParts | None = None) -> None:
        super().__init__(ctx)
        # bf16 weights on CUDA, as the reference; fp16 would overflow T5's activations
        bf16 = self.device.type == "cuda" and self.amp_dtype is not None
        bf16 = bf16 and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.amp_dtype = self.dtype if bf16 else None
        if parts is None:
            files = catalog.vqascore_files(self.options)
            key = ("vqascore", tuple(w.where(self.hf_home) for w in files), str(self.device))
            parts = shared(
                self.ctx,
                (*key, str(self.dtype)),
                lambda: load_parts(self.options, self.device, self.dtype, self.hf_home),
            )
        self.parts = parts
        self.version = parts.version
        tok = parts.tokenizer
        self.prefix = torch.tensor(tok(SYSTEM + " USER: ")["input_ids"])
        self.answer = torch.tensor(tok(ANSWER)["input_ids"])
        mean = parts.image_processor.image_mean
        self.color = tuple(int(x * 255) for x in mean)

    def pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        tiles = [pad_square(shrink(imageops.to_chw(im, self.device)), self.color) for im in images]
        out = self.parts.image_processor(
            images=tiles,
            return_tensors="pt",
            input_data_format="channels_first",
            device=self.device,
        )["pixel_values"]
        return self.to_device(out).to(self.dtype)

    def questions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Q) token ids after the image, truncated as the reference truncates, and the mask."""
        room = CONTEXT_LEN - len(self.prefix) - 1
        texts = ["\n" + QUESTION.format(c) + " ASSISTANT: " for c in captions]
        rows = [ids[:room] for ids in self.parts.tokenizer(texts)["input_ids"]]
        width = max(1, max(len(r) for r in rows))
        pad = self.parts.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask

    def prepare(self, images: list[np.ndarray], captions: list[str]) -> dict:
        ids, mask = self.questions(captions)
        return {
            "pixels": self.pixels(images),
            "ids": self.to_device(ids),
            "mask": self.to_device(mask),
        }

    def forward(self, batch: dict) -> torch.Tensor:
        answer = self.answer.to(self.device)
        logits = self.parts.net(
            self.prefix.to(self.device), batch["pixels"], batch["ids"], batch["mask"], answer
        )
        logp = torch.log_softmax(logits[..., : self.parts.vocab].float(), dim=-1)
        picked = logp.gather(-1, answer[None, :, None].expand(len(logp), -1, 1))[..., 0]
        return picked.mean(-1).exp()
