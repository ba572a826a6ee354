"""`miro experiment …`: the paper's claims as experiments anyone can rerun on Shapes World.

Every experiment's options come from its config: the training arms' `TrainSettings`, the
evaluation's `EvalSettings` and the sampler in it. The experiments spell the sampler's Euler
steps `--sampler-steps` (their `--steps` is the training budget, see ExperimentSampler), set
its targets themselves, and use one `--seed` and `--device` for training and sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.options import Commands

if TYPE_CHECKING:
    from miro_train.experiments.best_of_n import BestOfNConfig
    from miro_train.experiments.combine import CombineConfig
    from miro_train.experiments.compare import CompareConfig
    from miro_train.experiments.single_vs_multi import SingleVsMultiConfig
    from miro_train.experiments.sweeps import GuidanceConfig, SweepConfig

commands = Commands()
experiment_app = typer.Typer(
    cls=commands.group(), help="Reproduce the paper's claims on Shapes World.", no_args_is_help=True
)

SAMPLER = {
    "flags": {"eval.sampler.steps": ("--sampler-steps",)},
    "hide": tuple(f"eval.sampler.{name}" for name in ("preset", "target", "negative", "batch_size",
                                                      "weights")),
}  # fmt: skip
ONE_SEED = {"eval.sampler.seed": "train.seed", "eval.sampler.device": "train.device"}


def register(app: typer.Typer, top: Commands) -> None:
    app.add_typer(experiment_app, name="experiment")


def _report(out: Path) -> None:
    typer.echo(f"report: {out / 'report.md'}")


@commands.config("compare", "miro_train.experiments.compare:CompareConfig",
                 args=("shards", "out"), same=ONE_SEED, **SAMPLER)  # fmt: skip
def compare_cmd(cfg: CompareConfig) -> None:
    """Baseline vs MIRO: GenEval and rewards over training steps, and the speed-up."""
    from miro_train.experiments.compare import compare

    compare(cfg)
    _report(cfg.out)


@commands.config("combine", "miro_train.experiments.combine:CombineConfig", args=("parts",))
def combine_cmd(cfg: CombineConfig) -> None:
    """Compares of one recipe on other training seeds (other machines, other days) as one report."""
    from miro_train.experiments.combine import combine

    combine(cfg)
    _report(cfg.out)


@commands.config("sweep", "miro_train.experiments.sweeps:SweepConfig",
                 args=("checkpoint", "out"), **SAMPLER)  # fmt: skip
def sweep_cmd(cfg: SweepConfig) -> None:
    """One reward's target from 0 to 1, the others at 1: GenEval and every reward vs the target."""
    from miro_train.experiments.sweeps import sweep

    sweep(cfg)
    _report(cfg.out)


@commands.config("guidance", "miro_train.experiments.sweeps:GuidanceConfig",
                 args=("checkpoint", "out"), fixed={"eval.sampler.guidance": 0.0}, **SAMPLER)  # fmt: skip
def guidance_cmd(cfg: GuidanceConfig) -> None:
    """GenEval and rewards vs the guidance scale ω (s⁺ = all high, s⁻ = all low)."""
    from miro_train.experiments.sweeps import guidance

    guidance(cfg)
    _report(cfg.out)


def _checkpoints(
    miro: Annotated[Path | None, typer.Option(help="MIRO checkpoint or run.")] = None,
    baseline: Annotated[Path | None, typer.Option(help="Baseline checkpoint or run.")] = None,
) -> dict[str, Any]:
    pairs = (("baseline", baseline), ("miro", miro))
    return {"checkpoints": {name: path for name, path in pairs if path is not None}}


@commands.config("best-of-n", "miro_train.experiments.best_of_n:BestOfNConfig",
                 args=("out",), inputs=_checkpoints, **SAMPLER)  # fmt: skip
def best_of_n_cmd(cfg: BestOfNConfig) -> None:
    """Test-time scaling curves, N = 1 … n_max, selecting by each reward."""
    from miro_train.experiments.best_of_n import best_of_n

    best_of_n(cfg)
    _report(cfg.out)


@commands.config("single-vs-multi", "miro_train.experiments.single_vs_multi:SingleVsMultiConfig",
                 args=("shards", "out"), same={**ONE_SEED, "train.eval_every": "train.steps"},
                 **SAMPLER)  # fmt: skip
def single_vs_multi_cmd(cfg: SingleVsMultiConfig) -> None:
    """One model per reward vs MIRO: the reward-hacking table and radar plot."""
    from miro_train.experiments.single_vs_multi import single_vs_multi

    single_vs_multi(cfg)
    _report(cfg.out)
