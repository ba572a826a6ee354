"""`miro experiment …`: the paper's claims as experiments anyone can rerun on Shapes World."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.parse import floats

experiment_app = typer.Typer(
    help="Reproduce the paper's claims on Shapes World.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None


def _eval_settings(ppc: int, ipp: int, guidance: float, sampler_steps: int, seed: int, device: str):
    from dataclasses import replace

    from miro_train.experiments.common import EXPERIMENT_SAMPLER, EvalSettings

    sampler = replace(EXPERIMENT_SAMPLER, guidance=guidance, steps=sampler_steps, seed=seed,
                      device=device)  # fmt: skip
    return EvalSettings(prompts_per_category=ppc, images_per_prompt=ipp, sampler=sampler)


# Options shared by every experiment, declared once.
PPC = typer.Option(8, "--prompts-per-category", help="GenEval prompts per category.")
IPP = typer.Option(4, "--images-per-prompt")
GUIDANCE = typer.Option(3.0, "--guidance", help="CFG scale ω for reward-conditioned models.")
SAMPLER = typer.Option(25, "--sampler-steps", help="Euler steps.")
SEED = typer.Option(0, "--seed")
DEVICE = typer.Option("auto", "--device")
MODEL = typer.Option("unet-tiny", "--model")
STEPS = typer.Option(3000, "--steps", help="Training steps per model.")
BATCH = typer.Option(64, "--batch-size")
LR = typer.Option(1e-3, "--lr")
SHIFT = typer.Option(1.0, "--time-shift", help="Train more at high noise (see miro train).")
SHIFT_END = typer.Option(None, "--time-shift-end", help="Shift at the last step (linear).")
EVERY = typer.Option(500, "--eval-every", help="Checkpoint (and evaluate) every N steps.")


@experiment_app.command("compare")
def compare_cmd(
    shards: Path = typer.Argument(..., help="Training shards from `miro data reshard`."),
    out: Path = typer.Argument(..., help="Experiment folder (finished arms in it are reused)."),
    rewards: str | None = typer.Option(None, "--rewards", help="MIRO's rewards (default: all)."),
    model: str = MODEL, steps: int = STEPS, batch_size: int = BATCH, lr: float = LR,
    time_shift: float = SHIFT, time_shift_end: float = SHIFT_END, eval_every: int = EVERY,
    ppc: int = PPC, ipp: int = IPP, guidance: float = GUIDANCE, sampler_steps: int = SAMPLER,
    seed: int = SEED, device: str = DEVICE,
) -> None:  # fmt: skip
    """Baseline vs MIRO: GenEval and rewards over training steps, and the speed-up."""
    from miro_train.experiments.common import TrainSettings
    from miro_train.experiments.compare import CompareConfig, compare

    cfg = CompareConfig(shards=shards, out=out, rewards=_names(rewards),
                        train=TrainSettings(model=model, steps=steps, batch_size=batch_size, lr=lr,
                                          time_shift=time_shift, time_shift_end=time_shift_end,
                                          eval_every=eval_every, seed=seed, device=device),
                        eval=_eval_settings(ppc, ipp, guidance, sampler_steps, seed, device))  # fmt: skip
    compare(cfg)
    typer.echo(f"report: {out / 'report.md'}")


@experiment_app.command("sweep")
def sweep_cmd(
    checkpoint: Path = typer.Argument(..., help="A MIRO checkpoint or run folder."),
    out: Path = typer.Argument(...),
    rewards: str | None = typer.Option(None, "--rewards", help="Rewards to sweep, one at a time (default: all)."),
    values: str = typer.Option("0,0.25,0.5,0.75,1", help="Targets of the swept reward."),
    ppc: int = PPC, ipp: int = IPP, guidance: float = GUIDANCE, sampler_steps: int = SAMPLER,
    seed: int = SEED, device: str = DEVICE,
) -> None:  # fmt: skip
    """One reward's target from 0 to 1, the others at 1: GenEval and every reward vs the target."""
    from miro_train.experiments.sweeps import SweepConfig, sweep

    sweep(SweepConfig(checkpoint=checkpoint, out=out, rewards=_names(rewards),
                      values=floats(values, "--values"),
                      eval=_eval_settings(ppc, ipp, guidance, sampler_steps, seed, device)))  # fmt: skip
    typer.echo(f"report: {out / 'report.md'}")


@experiment_app.command("guidance")
def guidance_cmd(
    checkpoint: Path = typer.Argument(..., help="A MIRO checkpoint or run folder."),
    out: Path = typer.Argument(...),
    scales: str = typer.Option("0,1,2,3,5,7", help="Guidance scales ω."),
    ppc: int = PPC, ipp: int = IPP, sampler_steps: int = SAMPLER, seed: int = SEED, device: str = DEVICE,
) -> None:  # fmt: skip
    """GenEval and rewards vs the guidance scale ω (s⁺ = all high, s⁻ = all low)."""
    from miro_train.experiments.sweeps import GuidanceConfig, guidance

    guidance(GuidanceConfig(checkpoint=checkpoint, out=out, scales=floats(scales, "--scales"),
                            eval=_eval_settings(ppc, ipp, 0.0, sampler_steps, seed, device)))  # fmt: skip
    typer.echo(f"report: {out / 'report.md'}")


@experiment_app.command("best-of-n")
def best_of_n_cmd(
    out: Path = typer.Argument(...),
    miro: Path | None = typer.Option(None, help="MIRO checkpoint or run."),
    baseline: Path | None = typer.Option(None, help="Baseline checkpoint or run."),
    n_max: int = typer.Option(32, help="Largest N."),
    select_by: str | None = typer.Option(None, help="Rewards to select by (default: all metric rewards)."),
    ppc: int = typer.Option(4, "--prompts-per-category"), ipp: int = typer.Option(2, "--images-per-prompt"),
    guidance: float = GUIDANCE, sampler_steps: int = SAMPLER, seed: int = SEED, device: str = DEVICE,
) -> None:  # fmt: skip
    """Test-time scaling curves, N = 1 … n_max, selecting by each reward."""
    from miro_train.experiments.best_of_n import BestOfNConfig, best_of_n

    checkpoints = {k: v for k, v in (("baseline", baseline), ("miro", miro)) if v is not None}
    best_of_n(BestOfNConfig(out=out, checkpoints=checkpoints, n_max=n_max, select_by=_names(select_by),
                            eval=_eval_settings(ppc, ipp, guidance, sampler_steps, seed, device)))  # fmt: skip
    typer.echo(f"report: {out / 'report.md'}")


@experiment_app.command("single-vs-multi")
def single_vs_multi_cmd(
    shards: Path = typer.Argument(...),
    out: Path = typer.Argument(...),
    rewards: str | None = typer.Option(None, "--rewards", help="Rewards (default: all in the manifest)."),
    multi: Path | None = typer.Option(None, help="Reuse this multi-reward (MIRO) run."),
    baseline: Path | None = typer.Option(None, help="Reuse this baseline run."),
    model: str = MODEL, steps: int = STEPS, batch_size: int = BATCH, lr: float = LR,
    time_shift: float = SHIFT, time_shift_end: float = SHIFT_END,
    ppc: int = PPC, ipp: int = IPP, guidance: float = GUIDANCE, sampler_steps: int = SAMPLER,
    seed: int = SEED, device: str = DEVICE,
) -> None:  # fmt: skip
    """One model per reward vs MIRO: the reward-hacking table and radar plot."""
    from miro_train.experiments.common import TrainSettings
    from miro_train.experiments.single_vs_multi import SingleVsMultiConfig, single_vs_multi

    single_vs_multi(SingleVsMultiConfig(
        shards=shards, out=out, rewards=_names(rewards), multi=multi, baseline=baseline,
        train=TrainSettings(model=model, steps=steps, batch_size=batch_size, lr=lr,
                            time_shift=time_shift, time_shift_end=time_shift_end,
                            eval_every=steps, seed=seed, device=device),
        eval=_eval_settings(ppc, ipp, guidance, sampler_steps, seed, device),
    ))  # fmt: skip
    typer.echo(f"report: {out / 'report.md'}")
