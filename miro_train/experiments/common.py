"""What every experiment shares: evaluating a model on Shapes World, training arms, reports.

An evaluation draws the GenEval prompt set (fixed seed) with the given targets and guidance,
then scores the same images twice: the detector's GenEval checks, and the mean of each
reward of the registry. Experiments write a folder with `results.json`, PNG plots and a
short `report.md`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from miro_data.checks import (
    check_choice,
    check_device,
    check_finite,
    check_int,
    check_nonempty_text,
    check_positive,
    check_seed,
)
from miro_data.common import MiroError, atomic_path, dumps_json, first_line, save_json
from miro_data.options import Parser, items, opt
from miro_data.rewards import Reward, RewardContext, build_reward
from miro_train.evaluate import geneval_images
from miro_train.experiments.scores import Scores, result_of, score_images
from miro_train.sampler import SamplerSettings
from miro_train.spec import PREDICTIONS

log = logging.getLogger(__name__)

# every weight-free reward: what an experiment measures on its images besides GenEval
METRIC_REWARDS = (
    "sharpness",
    "edge_sharpness",
    "noise",
    "colorfulness",
    "contrast",
    "shapes_alignment",
)


class ExperimentSampler(SamplerSettings):
    """The experiments' sampler: `--steps` is their training budget, so Euler steps are
    `--sampler-steps`, and error messages say so."""

    OPTIONS: ClassVar = {"steps": "--sampler-steps", "batch_size": "sampler batch size"}


# Experiments evaluate every checkpoint of a run, often under several settings, on a CPU
# budget: fewer Euler steps than `miro sample`, and the ω the README's results use.
EXPERIMENT_SAMPLER = ExperimentSampler(steps=25, guidance=3.0, batch_size=96)


@dataclass(frozen=True)
class EvalSettings:
    """How a model is evaluated: the prompt set, the sampler, the reward metrics.

    `sampler.seed` fixes the GenEval prompt set as well as the noise.
    """

    prompts_per_category: int = field(default=8, metadata=opt(help="GenEval prompts per category."))
    images_per_prompt: int = field(default=4, metadata=opt())
    sampler: SamplerSettings = EXPERIMENT_SAMPLER
    rewards: tuple[str, ...] = METRIC_REWARDS

    def __post_init__(self) -> None:
        check_positive("--prompts-per-category", self.prompts_per_category)
        check_positive("--images-per-prompt", self.images_per_prompt)
        if not self.rewards:
            raise MiroError("an evaluation needs at least one metric reward")


@dataclass(frozen=True)
class TrainSettings:
    """How each arm of an experiment is trained (same for every arm: only conditioning differs)."""

    model: str = field(default="unet-tiny", metadata=opt())
    steps: int = field(default=3000, metadata=opt(help="Training steps per model."))
    batch_size: int = field(default=64, metadata=opt())
    lr: float = field(default=1e-3, metadata=opt())
    warmup: int = 100
    ema: float = 0.999
    time_shift: float = field(
        default=1.0, metadata=opt(help="Train more at high noise (see miro train).")
    )
    time_shift_end: float | None = field(
        default=None, metadata=opt(help="Shift at the last step (linear).")
    )
    time_shift_share: float = field(
        default=1.0, metadata=opt(help="Share of each batch whose times are shifted.")
    )
    caption_dropout: float = field(
        default=0.0, metadata=opt(help="Share of samples trained without their caption.")
    )
    prediction: str | None = field(  # None: the model config's
        default=None, metadata=opt(help="What the backbone predicts: 'v' or 'x' (see miro train).")
    )
    seed: int = field(default=0, metadata=opt())
    eval_every: int = field(
        default=500, metadata=opt(help="Checkpoint (and evaluate) every N steps.")
    )
    device: str = field(default="auto", metadata=opt())

    def __post_init__(self) -> None:
        check_nonempty_text("--model", self.model)
        for name in ("steps", "batch_size", "eval_every"):
            check_positive(f"--{name.replace('_', '-')}", getattr(self, name))
        check_int("--warmup", self.warmup, 0)
        check_finite("--lr", self.lr, 0, open_low=True)
        check_finite("--ema", self.ema, 0, 1, open_high=True)
        check_finite("--time-shift", self.time_shift, 0, open_low=True)
        if self.time_shift_end is not None:
            check_finite("--time-shift-end", self.time_shift_end, 0, open_low=True)
        check_finite("--time-shift-share", self.time_shift_share, 0, 1)
        check_finite("--caption-dropout", self.caption_dropout, 0, 1, open_high=True)
        if self.prediction is not None:
            check_choice("--prediction", self.prediction, PREDICTIONS)
        check_seed("--seed", self.seed)
        check_device("--device", self.device)


def parse_seeds(text: str, option: str) -> tuple[int, ...]:
    """'0,1,2' → (0, 1, 2): training seeds, each a valid seed."""
    seeds = []
    for item in items(text):
        try:
            seeds.append(int(item))
        except ValueError:
            raise MiroError(f"{option}: expected comma-separated integers, got {text!r}") from None
    return tuple(seeds)


SEEDS = Parser(parse_seeds, lambda seeds: ",".join(str(s) for s in seeds))


def check_train_seeds(seeds: tuple[int, ...] | None) -> None:
    if seeds is None:
        return
    if not seeds:
        raise MiroError("--train-seeds names no seed")
    for seed in seeds:
        check_seed("--train-seeds", seed)
    if len(set(seeds)) < len(seeds):
        raise MiroError(f"--train-seeds names a seed twice: {','.join(map(str, seeds))}")


def seed_runs(
    out: Path, train: TrainSettings, seeds: tuple[int, ...] | None
) -> list[tuple[TrainSettings, Path]]:
    """Each training seed's settings and run folder: `out` itself for the one seed of
    `train.seed` (the layout of single-seed experiments), `out/seed-N` for --train-seeds."""
    if seeds is None:
        return [(train, out)]
    return [(replace(train, seed=seed), out / f"seed-{seed}") for seed in seeds]


def metric_rewards(
    names: Sequence[str], also: Sequence[str] = (), *, allow_download: bool = False
) -> list[Reward]:
    """The metric rewards, plus `also` (a model's own conditioning, which must be measured too)."""
    ctx = RewardContext(allow_download=allow_download)
    return [build_reward(n, ctx) for n in dict.fromkeys([*names, *also])]


def evaluate(
    bundle: Any,
    settings: EvalSettings,
    *,
    sampler: SamplerSettings | None = None,
    rewards: Sequence[Reward] | None = None,
) -> tuple[dict[str, Any], Scores]:
    """GenEval and reward means of one model with their intervals, sampled as `sampler` says
    (default: the settings' own; sweeps vary targets or ω); also the per-image scores."""
    t0 = time.perf_counter()
    prompts, images = geneval_images(bundle, sampler or settings.sampler,
                                     settings.prompts_per_category, settings.images_per_prompt)  # fmt: skip
    scores = score_images(
        prompts,
        images,
        rewards or metric_rewards(settings.rewards, allow_download=settings.sampler.allow_download),
    )
    seconds = round(time.perf_counter() - t0, 1)
    return result_of(scores, step=bundle.step, seconds=seconds), scores


def load_for(checkpoint: Path, settings: EvalSettings) -> Any:
    """The model of a checkpoint or run, loaded as the settings' sampler says."""
    from miro_train.sample import load_bundle

    sampler = settings.sampler
    return load_bundle(checkpoint, sampler.device, sampler.weights, sampler.allow_download)


def evaluate_checkpoint(
    checkpoint: Path, settings: EvalSettings, rewards: Sequence[Reward]
) -> tuple[int, Scores]:
    """`evaluate` of one checkpoint (or a run's latest), its per-image scores kept in the run's
    `evals/`: an experiment stopped during its evaluations, or rerun with more training seeds,
    does not sample what it already scored. Returns the checkpoint's step and the scores."""
    from miro_train.checkpoint import find_checkpoint

    ckpt = find_checkpoint(checkpoint)
    weights = ckpt / f"{settings.sampler.weights}.safetensors"
    stat = weights.stat()  # retrained weights are new files: the old scores no longer apply
    key = {
        "settings": asdict(settings),
        "rewards": [(r.name, r.version) for r in rewards],
        "weights": [ckpt.name, stat.st_size, stat.st_mtime_ns],  # moving the folder keeps them
    }
    digest = hashlib.sha256(dumps_json(key, sort_keys=True).encode()).hexdigest()[:16]
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    cached = run / "evals" / f"{ckpt.name}-{digest}.json"
    if cached.exists():
        try:
            saved = json.loads(cached.read_text())
            step, scores = int(saved["step"]), Scores.from_record(saved)
            log.info("%s: scores of an earlier evaluation (%s)", ckpt, cached.name)
            return step, scores
        except (OSError, ValueError, KeyError, TypeError) as err:  # edited or damaged: redo it
            log.warning("%s: %s; evaluating again", cached, first_line(err))
    result, scores = evaluate(load_for(ckpt, settings), settings, rewards=rewards)
    record = {"step": result["step"], "key": key, **scores.to_record()}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            tmp.write_text(dumps_json(record))
    except OSError as err:  # a checkpoint in a read-only place is still evaluated, not kept
        log.warning("cannot keep the scores of %s in %s: %s", ckpt, cached.parent, first_line(err))
    return int(result["step"]), scores


def train_arm(shards: Path, out: Path, train: TrainSettings, *, baseline: bool = False,
              rewards: tuple[str, ...] | None = None) -> float:  # fmt: skip
    """Train one arm to `train.steps` (resuming a run that stopped early); returns its training
    seconds, summed over the segments of a resumed run.

    `out` may also be one checkpoint folder of an earlier run: it is then evaluated as it is.
    """
    from miro_train.checkpoint import is_checkpoint, list_checkpoints, read_meta, read_step
    from miro_train.config import TrainConfig
    from miro_train.train import train as run_training

    if is_checkpoint(out):  # one checkpoint of a longer run, used as it is
        log.info("using checkpoint %s as it is (step %d)", out, read_step(out))
        return 0.0
    done = list_checkpoints(out)
    if done and read_step(done[-1]) >= train.steps:
        log.info("%s is already trained to step %d", out, train.steps)
        return (
            float(json.loads((out / "arm.json").read_text())["seconds"])
            if (out / "arm.json").exists()
            else 0.0
        )
    cfg = TrainConfig(
        shards=str(shards), out=out, model=train.model, rewards=rewards, baseline=baseline,
        steps=train.steps, batch_size=train.batch_size, lr=train.lr, warmup=train.warmup,
        ema=train.ema, time_shift=train.time_shift, time_shift_end=train.time_shift_end,
        time_shift_share=train.time_shift_share,
        caption_dropout=train.caption_dropout, prediction=train.prediction, seed=train.seed,
        ckpt_every=train.eval_every,
        device=train.device, resume=bool(done),
    )  # fmt: skip
    t0 = time.perf_counter()
    last = run_training(cfg)
    # the time the checkpoint took, over every resumed segment (not only this call's)
    seconds = float(read_meta(last).get("train_seconds") or time.perf_counter() - t0)
    save_json(
        out / "arm.json",
        {
            "seconds": round(seconds, 1),
            "baseline": baseline,
            "rewards": None if baseline else rewards,
        },
    )
    return seconds


def checkpoints_by_step(run: Path) -> list[tuple[int, Path]]:
    from miro_train.checkpoint import list_checkpoints, read_step

    return [(read_step(c), c) for c in list_checkpoints(run)]


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------


def write_report(out: Path, title: str, sections: Sequence[str]) -> Path:
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")
    return path


def require_rewards(bundle: Any, what: str) -> None:
    if not bundle.rewards:
        raise MiroError(
            f"{what} needs a reward-conditioned checkpoint; {bundle.checkpoint} is a baseline"
        )
