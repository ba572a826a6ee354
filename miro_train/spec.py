"""The model spec: what a model is, as frozen, typed records, complete before it is built.

A spec is a registry config (configs/*.json, checked by `models.check_model_config`) completed
by the data in `codec.resolve_spec` and `prepare.prepare_run`: the reward names in conditioning
order (empty for the baseline), the text side (word vocabulary or a frozen Hugging Face
encoder), the image space (pixels, or VAE latents with their per-channel statistics) and the
bin-edge version, and what the backbone predicts. Nothing changes it afterwards. Checkpoints
store it as JSON (`to_json`, `from_json`), so a model rebuilds from its checkpoint alone;
`from_json` reads every spec a miro checkpoint has held (older ones leave out the
conditioning defaults, `precomputed` and `prediction`).
Torch-free: reading a spec loads no model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from miro_data import jsonfields as jf

TEXT_KINDS = ("word", "hf")  # a learned word embedding, or a frozen Hugging Face encoder
IMAGE_SPACES = ("pixel", "latent")
# What the backbone outputs: the velocity ε − x, or the clean image x (converted to the velocity)
PREDICTIONS = ("v", "x")


def _choice(name: str, v: Any, options: tuple[str, ...]) -> str:
    if v not in options:
        raise jf.FieldError(f"{name!r} is {jf.describe(v)}, not one of {', '.join(options)}")
    return v


def _flag(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise jf.FieldError(f"{name!r} is {jf.describe(v)}, not true or false")
    return v


def _strings(name: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
        raise jf.FieldError(f"{name!r} is {jf.describe(v)}, not an array of strings")
    return tuple(v)


def _numbers(name: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, list | tuple) or not all(jf.is_number(x) for x in v):
        raise jf.FieldError(f"{name!r} is {jf.describe(v)}, not an array of numbers")
    return tuple(float(x) for x in v)


def _frozen(v: Any) -> Any:
    """JSON arrays as tuples, so a frozen record holds no list."""
    return tuple(_frozen(x) for x in v) if isinstance(v, list | tuple) else v


def _thawed(v: Any) -> Any:
    return [_thawed(x) for x in v] if isinstance(v, tuple) else v


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone (a key of `backbones.BACKBONES`) and its own arguments."""

    kind: str
    args: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs; arrays as tuples

    def __post_init__(self) -> None:
        jf.string("backbone", self.kind)
        if not all(isinstance(a, tuple) and len(a) == 2 for a in self.args):
            raise jf.FieldError("'backbone_args' is not a list of (name, value) pairs")

    @classmethod
    def of(cls, kind: str, args: Any) -> BackboneSpec:
        """From the JSON layout: the backbone's name and an object of its arguments."""
        args = jf.mapping("backbone_args", args, lambda _, v: _frozen(v))
        return cls(kind, tuple(args.items()))

    def kwargs(self) -> dict[str, Any]:
        """The arguments as the backbone's constructor takes them (sequences as tuples)."""
        return dict(self.args)


@dataclass(frozen=True)
class ConditioningSpec:
    """The conditioner (conditioning.Conditioner); defaults are those of every older spec."""

    dim: int
    fourier_dim: int = 256
    hidden: int | None = None  # reward MLP width; None: dim
    registers: int = 16
    layers: int = 2
    heads: int = 8
    pool: bool = False  # pool reward and register tokens into the timestep embedding

    def __post_init__(self) -> None:
        for name in ("dim", "fourier_dim", "heads"):
            jf.integer(f"conditioning.{name}", getattr(self, name), 1)
        for name in ("registers", "layers"):
            jf.integer(f"conditioning.{name}", getattr(self, name), 0)
        if self.hidden is not None:
            jf.integer("conditioning.hidden", self.hidden, 1)
        _flag("conditioning.pool", self.pool)


@dataclass(frozen=True)
class TextSpec:
    """The caption side: a word vocabulary with a learned embedding, or a frozen encoder."""

    kind: str  # one of TEXT_KINDS
    dim: int  # width of the token embeddings the conditioner projects
    max_len: int  # tokens per caption
    vocab: tuple[str, ...] = ()  # kind "word": the vocabulary, built from the training captions
    name: str | None = None  # kind "hf": a Hugging Face id or folder
    precomputed: bool = False  # kind "hf": the shards carry its embeddings (hook `text`)

    def __post_init__(self) -> None:
        _choice("text.kind", self.kind, TEXT_KINDS)
        jf.integer("text.dim", self.dim, 1)
        jf.integer("text.max_len", self.max_len, 1)
        object.__setattr__(self, "vocab", _strings("text.vocab", self.vocab))
        if self.kind == "word" and not self.vocab:
            raise jf.FieldError("'text.vocab' is empty (a word text side needs its vocabulary)")
        if self.kind == "hf":
            jf.string("text.name", self.name)
        _flag("text.precomputed", self.precomputed)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "word":
            return {"kind": "word", "dim": self.dim, "max_len": self.max_len,
                    "vocab": list(self.vocab)}  # fmt: skip
        return {"kind": "hf", "name": self.name, "dim": self.dim, "max_len": self.max_len,
                "precomputed": self.precomputed}  # fmt: skip


@dataclass(frozen=True)
class LatentStats:
    """Per-channel mean and std of the unscaled VAE latents (the model sees (z − mean) / std)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _numbers("image.mean", self.mean))
        object.__setattr__(self, "std", _numbers("image.std", self.std))
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise jf.FieldError("'image.mean' and 'image.std' do not match (or a std is ≤ 0)")


@dataclass(frozen=True)
class ImageSpec:
    """The space the model works in: pixels in [-1, 1], or normalised VAE latents."""

    space: str  # one of IMAGE_SPACES
    resolution: int  # image side in pixels
    channels: int  # of the model's input: 3 for pixels, the VAE's latent channels
    size: int  # side of the model's input
    vae: str | None = None  # space "latent": an AutoencoderKL id or folder
    vae_subfolder: str | None = None
    precomputed: bool = False  # space "latent": the shards carry the latents (hook `vae`)
    stats: LatentStats | None = None  # space "latent": measured before the model is built

    def __post_init__(self) -> None:
        _choice("image.space", self.space, IMAGE_SPACES)
        for name in ("resolution", "channels", "size"):
            jf.integer(f"image.{name}", getattr(self, name), 1)
        jf.string("image.vae", self.vae, optional=self.space == "pixel")
        jf.string("image.vae_subfolder", self.vae_subfolder, optional=True)
        _flag("image.precomputed", self.precomputed)
        if self.stats is not None and len(self.stats.mean) != self.channels:
            raise jf.FieldError(f"'image.mean' has {len(self.stats.mean)} values for "
                                f"{self.channels} channels")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        base = {"space": self.space, "resolution": self.resolution}
        if self.space == "pixel":
            return base | {"channels": self.channels, "size": self.size}
        obj = base | {"vae": self.vae, "vae_subfolder": self.vae_subfolder,
                      "channels": self.channels, "size": self.size,
                      "precomputed": self.precomputed}  # fmt: skip
        if self.stats is not None:
            obj |= {"mean": list(self.stats.mean), "std": list(self.stats.std)}
        return obj


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides a model's parameters and how it reads its inputs."""

    name: str
    backbone: BackboneSpec
    conditioning: ConditioningSpec
    text: TextSpec
    image: ImageSpec
    rewards: tuple[str, ...] = ()  # conditioning order; empty: the baseline
    edges_version: int | None = None  # the bin edges the shards' bin values come from
    summary: str | None = None  # the registry config's one-line description
    prediction: str = "v"  # one of PREDICTIONS (older checkpoints: "v")

    def __post_init__(self) -> None:
        jf.string("name", self.name)
        _choice("prediction", self.prediction, PREDICTIONS)
        object.__setattr__(self, "rewards", _strings("rewards", self.rewards))
        jf.optional_int("edges_version", self.edges_version)
        jf.string("summary", self.summary, optional=True)

    @property
    def complete(self) -> bool:
        """Whether a model can train and sample with it (latents need their statistics)."""
        return self.image.space == "pixel" or self.image.stats is not None

    def to_json(self) -> dict[str, Any]:
        """The JSON object a checkpoint stores (the layout older checkpoints hold too)."""
        obj: dict[str, Any] = {"name": self.name}
        if self.summary is not None:
            obj["summary"] = self.summary
        return obj | {
            "backbone": self.backbone.kind,
            "backbone_args": {k: _thawed(v) for k, v in self.backbone.args},
            "conditioning": asdict(self.conditioning),
            "text": self.text.to_json(),
            "image": self.image.to_json(),
            "rewards": list(self.rewards),
            "edges_version": self.edges_version,
            "prediction": self.prediction,
        }

    @classmethod
    def from_json(cls, obj: Any) -> ModelSpec:
        """A spec from its JSON object; raises jsonfields.FieldError naming the bad field."""
        if not isinstance(obj, Mapping):
            raise jf.FieldError(f"the model spec is {jf.describe(obj)}, not an object")
        jf.required(obj, ("name", "backbone", "conditioning", "text", "image", "rewards"))
        return cls(
            name=obj["name"],
            backbone=BackboneSpec.of(obj["backbone"], obj.get("backbone_args", {})),
            conditioning=ConditioningSpec(**_section(obj, "conditioning", ConditioningSpec)),
            text=TextSpec(**_section(obj, "text", TextSpec)),
            image=_image(obj),
            rewards=obj["rewards"],
            edges_version=obj.get("edges_version"),
            summary=obj.get("summary"),
            prediction=obj.get("prediction", "v"),
        )


def _section(obj: Mapping[str, Any], name: str, record: type) -> dict[str, Any]:
    """A nested object's keys that `record` knows; its defaults fill those older specs lack."""
    section = obj[name]
    if not isinstance(section, Mapping):
        raise jf.FieldError(f"{name!r} is {jf.describe(section)}, not an object")
    known = [f for f in fields(record) if f.name != "stats"]
    missing = [f"{name}.{f.name}" for f in known if f.default is MISSING and f.name not in section]
    if missing:
        raise jf.FieldError(f"no {', '.join(repr(m) for m in missing)}")
    return {f.name: section[f.name] for f in known if f.name in section}


def _image(obj: Mapping[str, Any]) -> ImageSpec:
    image = obj["image"]
    stats = None
    if isinstance(image, Mapping) and image.get("mean") is not None:
        stats = LatentStats(image["mean"], image.get("std", ()))
    return ImageSpec(**_section(obj, "image", ImageSpec), stats=stats)
