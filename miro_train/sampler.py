"""How images are sampled from a miro checkpoint: one settings record, one generation path.

`SamplerSettings` is the one declaration of the sampler's options (steps, guidance ω, the
target preset and overrides, seed, batch size, weights, device); `miro sample`,
`miro eval geneval` and every experiment embed it and draw through `sample.generate`.
This module needs no torch, so configs and the CLI import it freely.

Targets (METHOD.md): s⁺ defaults to all 1 (the top bin) and s⁻ to all 0. Presets: `high`;
`isolate:R` (s⁻ all 1 except R = 0: guide along R alone); `pair:A,B@t` (s⁻ all 1 except
A = t, B = 1 − t). `target` / `negative` then override single rewards; `none` asks for a
reward's learned "missing" embedding.

Seeds: the k-th image drawn for prompt P under seed S starts from noise seeded by a hash of
(S, k, P) (`noise_seed`), drawn on the CPU. So the same seed gives the same noise for the same
prompt in every command, whatever else is drawn with it and on whatever device.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from miro_data.checks import check_choice, check_device, check_finite, check_positive, check_seed
from miro_data.common import MiroError
from miro_data.hub import allow_download_field
from miro_data.options import NUMBERS, key_values, opt

if TYPE_CHECKING:  # the record stays importable without torch (configs, the CLI)
    from miro_train.sample import ModelBundle

Targets = dict[str, float | None]  # reward → value in [0, 1], None = missing
PRESETS = ("high", "isolate", "pair")
Weights = Literal["ema", "model"]
WEIGHTS: tuple[Weights, ...] = get_args(Weights)
MISSING = ("none", "missing", "null")  # a target value asking for the "missing" embedding


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: checked here, before any checkpoint is read.

    The defaults are `miro sample`'s; `miro eval geneval` and the experiments keep their own
    (see GENEVAL_SAMPLER and EXPERIMENT_SAMPLER). Best-of-N is not a sampler setting: it is a
    selection among draws, made by `miro sample --best-of` and the best-of-n experiment.
    """

    steps: int = field(default=50, metadata=opt(help="Euler steps."))
    guidance: float = field(default=7.0, metadata=opt(help="CFG scale ω."))
    guidance_interval: tuple[float, ...] = field(
        default=(0.0, 1.0),
        metadata=opt(parser=NUMBERS, help="LO,HI: the noise levels t (1 = noise) ω applies at."),
    )
    caption_guidance: float = field(default=0.0, metadata=opt(
        help="Caption CFG scale ω_c: the caption against none (a model trained with caption dropout)."
    ))  # fmt: skip
    preset: str = field(default="high", metadata=opt(help="high, isolate:REWARD or pair:A,B@t."))
    target: str = field(
        default="", metadata=opt(help="s⁺ overrides, e.g. aesthetic=0.625,pickscore=1 (others 1).")
    )
    negative: str = field(
        default="", metadata=opt(help="s⁻ overrides (others 0, or the preset's).")
    )
    seed: int = field(default=0, metadata=opt(help="Fixes the noise (and GenEval's prompt set)."))
    # only speed and memory: an image depends on its noise, not its batch
    batch_size: int = field(default=32, metadata=opt(help="Images per model call."))
    weights: Weights = field(default="ema", metadata=opt(help="The EMA or the trained weights."))
    device: str = field(default="auto", metadata=opt(help="auto, cpu, cuda or cuda:N."))
    allow_download: bool = allow_download_field(
        "the model's text encoder or VAE (or a scoring reward's weights)"
    )

    # The option each field is set by, for error messages; a command that spells one
    # differently (the experiments' --sampler-steps) subclasses with its own names.
    OPTIONS: ClassVar[Mapping[str, str]] = {}

    def option(self, field: str) -> str:
        return self.OPTIONS.get(field, "--" + field.replace("_", "-"))

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            check_positive(self.option(name), getattr(self, name))
        check_finite(self.option("guidance"), self.guidance, 0)
        check_finite(self.option("caption_guidance"), self.caption_guidance, 0)
        check_interval(self.option("guidance_interval"), self.guidance_interval)
        check_seed(self.option("seed"), self.seed)
        check_targets(self.preset, self.target, self.negative)
        check_choice(self.option("weights"), self.weights, WEIGHTS)
        check_device(self.option("device"), self.device)

    def targets(self, bundle: ModelBundle) -> tuple[Targets, Targets]:
        """(s⁺, s⁻) over the checkpoint's rewards; targets for a baseline, and caption guidance
        for a model trained without caption dropout, are refused."""
        self.check_caption_guidance(bundle)
        if not bundle.rewards and (self.target or self.negative or self.preset != "high"):
            raise MiroError(
                f"{bundle.checkpoint} is a baseline (no reward conditioning): drop the targets"
            )
        return resolve_targets(bundle.rewards, self.preset, self.target, self.negative)

    def check_caption_guidance(self, bundle: ModelBundle) -> None:
        """Caption guidance contrasts against "no caption": only a model that saw it can."""
        if self.caption_guidance and not bundle.caption_dropout:
            raise MiroError(
                f"{bundle.checkpoint} was trained without caption dropout, so it has no "
                f"uncaptioned velocity to contrast with: drop {self.option('caption_guidance')} "
                "or train with --caption-dropout (e.g. 0.1)"
            )


# ----------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------


def parse_values(text: str, rewards: Sequence[str] | None, what: str = "--target") -> Targets:
    """'aesthetic=0.625,pickscore=1' → {reward: value}; checks names and the [0, 1] range.

    With `rewards` None only the syntax and the values are checked (before a checkpoint is read).
    """

    def check_reward(name: str) -> None:
        if rewards is not None and name not in rewards:
            known = ", ".join(rewards) or "none (a baseline checkpoint)"
            raise MiroError(f"{what}: the checkpoint knows no reward {name!r}; it knows: {known}")

    return key_values(text, what, key="REWARD", check_key=check_reward, missing=MISSING,
                      bounds=(0.0, 1.0))  # fmt: skip


def resolve_targets(
    rewards: Sequence[str], preset: str = "high", target: str = "", negative: str = ""
) -> tuple[Targets, Targets]:
    """(s⁺, s⁻) over every reward of the checkpoint, from a preset and per-reward overrides."""
    pos: Targets = dict.fromkeys(rewards, 1.0)
    neg: Targets = dict.fromkeys(rewards, 0.0)
    kind, _, arg = preset.partition(":")
    if kind == "isolate":
        (name,) = parse_values(f"{arg}=0", rewards, "--preset isolate").keys()
        neg = {r: 0.0 if r == name else 1.0 for r in rewards}
    elif kind == "pair":
        names, _, t = arg.partition("@")
        pair = [n.strip() for n in names.split(",")]
        if len(pair) != 2 or not t:
            raise MiroError(f"--preset {preset!r}: write pair:A,B@t, e.g. pair:aesthetic,clip@0.3")
        a = parse_values(f"{pair[0]}={t}", rewards, "--preset pair")[pair[0]]
        assert a is not None
        parse_values(f"{pair[1]}={1 - a}", rewards, "--preset pair")
        neg = {r: 1.0 for r in rewards}
        neg[pair[0]], neg[pair[1]] = a, 1.0 - a
    elif kind != "high":
        raise MiroError(f"unknown preset {preset!r}; use high, isolate:REWARD or pair:A,B@t")
    return pos | parse_values(target, rewards), neg | parse_values(negative, rewards, "--negative")


def check_interval(option: str, interval: Sequence[float]) -> None:
    """A guidance interval is two noise levels LO < HI in [0, 1]."""
    if len(interval) != 2:
        raise MiroError(f"{option}: expected two noise levels LO,HI, got {len(interval)} numbers")
    low, high = interval
    check_finite(option, low, 0, 1)
    check_finite(option, high, 0, 1)
    if low >= high:
        raise MiroError(f"{option}: LO must be below HI, got {low:g},{high:g}")


def check_targets(preset: str, target: str, negative: str) -> None:
    """The preset's and the overrides' syntax and values, before a checkpoint is read."""
    for name, value in (("--preset", preset), ("--target", target), ("--negative", negative)):
        if not isinstance(value, str):
            raise MiroError(f"{name} must be text, not {value!r}")
    kind, _, arg = preset.partition(":")
    if kind not in PRESETS or (kind == "high") != (arg == ""):
        raise MiroError(f"unknown preset {preset!r}; use high, isolate:REWARD or pair:A,B@t")
    if kind == "pair":
        names, _, t = arg.partition("@")
        if len(names.split(",")) != 2 or not t:
            raise MiroError(f"--preset {preset!r}: write pair:A,B@t, e.g. pair:aesthetic,clip@0.3")
        parse_values(f"{names.split(',')[0]}={t}", None, "--preset pair")
    parse_values(target, None)
    parse_values(negative, None, "--negative")


# ----------------------------------------------------------------------------
# The seed convention
# ----------------------------------------------------------------------------


def draw_numbers(prompts: Sequence[str]) -> list[int]:
    """k for each prompt: how many times the same prompt came before it in the list."""
    seen: Counter[str] = Counter()
    out = []
    for prompt in prompts:
        out.append(seen[prompt])
        seen[prompt] += 1
    return out


def noise_seed(seed: int, prompt: str, draw: int) -> int:
    """The seed of the noise of draw k of a prompt: the one convention of every command."""
    digest = hashlib.blake2b(f"{seed}\0{draw}\0{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: any torch generator takes it
