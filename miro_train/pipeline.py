"""A miro model as a diffusers pipeline: `MiroPipeline.from_pretrained(folder)` and
`pipe(prompt, reward_targets={...})`, as diffusers users load and call every other model.

The folder (`miro export RUN OUT` writes it; `save_pretrained` round-trips it) holds
`model_index.json`, `transformer/` (the backbone as a diffusers `ModelMixin` + `ConfigMixin`:
`config.json` with the model spec — the word vocabulary, the reward names and the bin-edge
version included — and `diffusion_pytorch_model.safetensors`), `scheduler/` (a
`FlowMatchEulerDiscreteScheduler` at shift 1, the sampler miro's Euler steps equal on the
grid 1, 1 − 1/N, …, 0) and `miro.json` (rewards, bin-edge version and levels). A model with
a Hugging Face text encoder adds `text_encoder/` + `tokenizer/` (transformers'
save_pretrained), one in latent space `vae/` (a diffusers AutoencoderKL whose config carries
the model's per-channel latent normalisation as `latents_mean` / `latents_std` with
`scaling_factor` 1); the pipeline encodes prompts and decodes latents with them, offline.
Images are drawn by miro's own sampler (`sample.generate`), so a pipeline and `miro sample`
give the same images for the same seed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from PIL import Image

from miro_data.common import MiroError, honour_umask
from miro_data.encoders import FrozenTextEncoder, ImageAutoencoder
from miro_data.hub import OPT_IN, download_snapshot
from miro_train.codec import Codec
from miro_train.models import build_model
from miro_train.sample import ModelBundle, generate
from miro_train.sampler import SamplerSettings
from miro_train.spec import ModelSpec

MIRO_JSON = "miro.json"


class MiroTransformer(ModelMixin, ConfigMixin):
    """The miro backbone with its conditioning, built from the model spec in its config."""

    config_name = "config.json"  # type: ignore[assignment]  # (ConfigMixin declares None)

    @register_to_config
    def __init__(self, spec: dict[str, Any], caption_dropout: float = 0.0) -> None:
        super().__init__()  # caption_dropout: its training's (> 0: caption guidance works)
        self.net = build_model(ModelSpec.from_json(spec))

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_json(self.config["spec"])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)


def flow_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The diffusers scheduler miro's sampler equals (given the sigmas 1, 1 − 1/N, …, 1/N)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def _values(targets: Mapping[str, float] | None) -> str:
    return ",".join(f"{name}={float(value)!r}" for name, value in (targets or {}).items())


class MiroPipeline(DiffusionPipeline):
    """Text + reward targets → images, with multi-reward classifier-free guidance."""

    transformer: MiroTransformer
    scheduler: FlowMatchEulerDiscreteScheduler
    text_encoder: Any  # a transformers encoder, for a model with kind "hf" text
    tokenizer: Any
    vae: Any  # a diffusers AutoencoderKL, for a model in latent space
    _optional_components = ["text_encoder", "tokenizer", "vae"]  # noqa: RUF012 (diffusers')

    def __init__(
        self,
        transformer: MiroTransformer,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder: Any = None,
        tokenizer: Any = None,
        vae: Any = None,
    ) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler,
                              text_encoder=text_encoder, tokenizer=tokenizer, vae=vae)  # fmt: skip
        self.miro_info: dict[str, Any] = {}  # miro.json: levels and where the weights came from

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, folder: str | Path, torch_dtype: torch.dtype | None = None,
        allow_download: bool = False,
    ) -> MiroPipeline:  # fmt: skip
        """Load a folder `miro export` or `save_pretrained` wrote (no miro run needed); with
        `allow_download`, a Hub repo id that is not a local folder is fetched first."""
        if allow_download and not Path(folder).expanduser().exists():
            folder = download_snapshot(str(folder))
        folder = Path(folder)
        if not (folder / "model_index.json").is_file():
            hint = "" if folder.exists() else f" (a Hub repo id? {OPT_IN})"
            raise MiroError(f"{folder} is not a miro pipeline folder (no model_index.json){hint}")
        # low_cpu_mem_usage=False: plain loading, no `accelerate` needed (nor its warning)
        transformer = MiroTransformer.from_pretrained(
            folder / "transformer", low_cpu_mem_usage=False
        )
        sched = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
        pipe = cls(transformer.eval(), sched, **_load_components(folder))
        if torch_dtype is not None:
            pipe = pipe.to(torch_dtype)
        pipe.miro_info = json.loads((folder / MIRO_JSON).read_text())
        return pipe

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:  # type: ignore[override]
        """Write the folder `from_pretrained` reads (files get the umask's usual mode)."""
        folder = Path(folder)
        super().save_pretrained(folder, safe_serialization=True, **kwargs)
        spec = self.transformer.spec
        info = self.miro_info | {"rewards": list(spec.rewards), "edges_version": spec.edges_version}
        (folder / MIRO_JSON).write_text(json.dumps(info, indent=2))
        for path in folder.rglob("*"):
            if path.is_file():
                honour_umask(path)  # safetensors and diffusers' writers create files 0600

    def _codec(self) -> Codec:
        """The model's text and image sides, with this pipeline's encoder, tokenizer and VAE."""
        spec, device = self.transformer.spec, self.transformer.device
        text = vae = None
        if spec.text.kind == "hf":
            if self.text_encoder is None or self.tokenizer is None:
                raise MiroError("this pipeline's model reads a text encoder's embeddings, but "
                                "the pipeline has no text_encoder and tokenizer")  # fmt: skip
            text = FrozenTextEncoder.of(spec.text.name or "text_encoder", self.text_encoder,
                                        self.tokenizer, device, spec.text.max_len)  # fmt: skip
        if spec.image.space == "latent":
            if self.vae is None:
                raise MiroError("this pipeline's model works in latent space, but it has no vae")
            vae = ImageAutoencoder.of(spec.image.vae or "vae", self.vae, device, self.vae.dtype)
        return Codec(spec, device, text_encoder=text, vae=vae)

    @property
    def reward_names(self) -> list[str]:
        return list(self.transformer.spec.rewards)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        reward_targets: Mapping[str, float] | None = None,
        negative_reward_targets: Mapping[str, float] | None = None,
        guidance_scale: float = 7.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        caption_guidance_scale: float = 0.0,
        num_inference_steps: int = 50,
        generator: torch.Generator | int | None = None,
        num_images_per_prompt: int = 1,
        preset: str = "high",
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Any:
        """Images for the prompts; targets and negatives in [0, 1] per reward (unnamed
        rewards: the preset's, all 1 / all 0 by default). A generator's initial seed, or an
        int, is `miro sample --seed`: the same seed gives `miro sample`'s images."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        seed = generator.initial_seed() if isinstance(generator, torch.Generator) else generator
        settings = SamplerSettings(
            steps=num_inference_steps, guidance=guidance_scale, preset=preset,
            guidance_interval=tuple(guidance_interval), caption_guidance=caption_guidance_scale,
            target=_values(reward_targets), negative=_values(negative_reward_targets),
            seed=int(seed or 0), device=str(self.transformer.device),
        )  # fmt: skip
        dropout = float(self.transformer.config.get("caption_dropout") or 0.0)
        bundle = ModelBundle(self.transformer.net, self._codec(), Path("."), 0, "exported", dropout)
        images = generate(bundle, prompts, settings)
        if output_type == "np":
            out: Any = images
        else:
            out = [Image.fromarray(image) for image in images]
        return ImagePipelineOutput(images=out) if return_dict else (out,)


def _load_components(folder: Path) -> dict[str, Any]:
    """The text encoder, tokenizer and VAE the folder holds (the text encoder as the
    transformers class model_index.json names), each None when absent."""
    import transformers
    from diffusers import AutoencoderKL

    out: dict[str, Any] = {"text_encoder": None, "tokenizer": None, "vae": None}
    try:
        entry = json.loads((folder / "model_index.json").read_text()).get("text_encoder")
        if (folder / "text_encoder").is_dir():
            named = getattr(transformers, str(entry[1]), None) if isinstance(entry, list) else None
            model_cls = (named if isinstance(named, type)
                         and issubclass(named, transformers.PreTrainedModel)
                         else transformers.AutoModel)  # fmt: skip
            out["text_encoder"] = model_cls.from_pretrained(folder / "text_encoder")
            out["tokenizer"] = transformers.AutoTokenizer.from_pretrained(folder / "tokenizer")
        if (folder / "vae").is_dir():
            out["vae"] = AutoencoderKL.from_pretrained(folder / "vae", low_cpu_mem_usage=False)
    except (OSError, ValueError, KeyError, AttributeError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MiroError(f"{folder}: cannot load the pipeline's components: {first}") from None
    return out
