"""`miro eval …`: GenEval on Shapes World, reward metrics of generated images, and how much a
model reads its captions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.table import Table

from cli.parse import floats

eval_app = typer.Typer(help="Evaluate generated images and checkpoints.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
    app.command("report")(report_cmd)


@eval_app.command("geneval")
def geneval_cmd(
    checkpoint: Path | None = typer.Argument(
        None, help="Checkpoint or run folder (omit with --manifest)."
    ),
    out: Path = typer.Option(
        Path("geneval"), "--out", "-o", help="Folder for images, results and grids."
    ),
    manifest: Path | None = typer.Option(
        None, help="Score the images of this JSONL manifest instead."
    ),
    prompts_per_category: int = typer.Option(16, help="Distinct prompts per category."),
    images_per_prompt: int = typer.Option(4),
    seed: int = typer.Option(0, help="Fixes the prompt set and the noise."),
    guidance: float = typer.Option(7.0, help="CFG scale ω."),
    steps: int = typer.Option(50, help="Euler steps."),
    preset: str = typer.Option("high", help="high | isolate:REWARD | pair:A,B@t"),
    target: str = typer.Option("", help="REWARD=VALUE,… overriding s⁺."),
    negative: str = typer.Option("", help="REWARD=VALUE,… overriding s⁻."),
    weights: Literal["ema", "model"] = typer.Option("ema"),
    device: str = typer.Option("auto"),
    batch_size: int = typer.Option(64),
) -> None:
    """The Shapes World GenEval: per-category pass rates and their mean."""
    from miro_train.evaluate import GenevalConfig, geneval
    from miro_train.sampler import SamplerSettings

    sampler = SamplerSettings(
        steps=steps, guidance=guidance, preset=preset, target=target, negative=negative, seed=seed,
        batch_size=batch_size, weights=weights, device=device,
    )  # fmt: skip
    cfg = GenevalConfig(out=out, checkpoint=checkpoint, manifest=manifest, sampler=sampler,
                        prompts_per_category=prompts_per_category,
                        images_per_prompt=images_per_prompt)  # fmt: skip
    result = geneval(cfg)
    table = Table(title=f"Shapes World GenEval ({result.n_images} images)")
    table.add_column("category")
    table.add_column("score", justify="right")
    for category, score in result.categories.items():
        table.add_row(category, f"{100 * score:.1f}")
    table.add_row("overall", f"{100 * result.overall:.1f}", style="bold")
    Console().print(table)
    typer.echo(f"results: {out / 'results.json'}")


@eval_app.command("rewards")
def rewards_cmd(
    manifest: Path = typer.Argument(..., help="JSONL manifest with prompt and file fields."),
    rewards: str = typer.Option(..., "--rewards", "-r", help="Comma-separated reward names."),
    out: Path | None = typer.Option(
        None, help="Folder for rewards.json and rewards.png (default: beside the manifest)."
    ),
    rewards_config: Path | None = typer.Option(None, help="TOML/JSON file of per-reward options."),
    reward_option: list[str] = typer.Option(
        [], "--reward-option", help="REWARD.KEY=VALUE, repeatable."
    ),
) -> None:
    """Mean and spread of each reward over generated images."""
    from miro_data.rewards import load_reward_options, parse_reward_names
    from miro_train.evaluate import RewardEvalConfig, eval_rewards

    cfg = RewardEvalConfig(
        manifest=manifest, rewards=tuple(parse_reward_names(rewards)), out=out,
        reward_options=load_reward_options(rewards_config, reward_option),
    )  # fmt: skip
    summary = eval_rewards(cfg)
    table = Table(title=f"rewards of {manifest}")
    for col in ("reward", "mean", "std", "n", "undefined"):
        table.add_column(col, justify="left" if col == "reward" else "right")
    for name, s in summary.items():
        table.add_row(name, f"{s['mean']:.4g}", f"{s['std']:.4g}", str(s["n"]), str(s["undefined"]))
    Console().print(table)


@eval_app.command("text-reliance")
def text_reliance_cmd(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoint or run folders."),
    shards: Path = typer.Option(..., "--shards", help="Training-shard folder to measure on."),
    samples: int = typer.Option(1024, help="Samples to average over."),
    times: str = typer.Option("0.3,0.5,0.7,0.9", help="Noise levels t, comma-separated."),
    batch_size: int = typer.Option(256),
    seed: int = typer.Option(0, help="Fixes the samples' order and the noise."),
    weights: Literal["ema", "model"] = typer.Option("ema"),
    device: str = typer.Option("auto"),
    out: Path | None = typer.Option(None, "--out", "-o", help="A JSON file for the results."),
) -> None:
    """How much each checkpoint's loss rises when it is given other samples' captions."""
    from miro_train.text_reliance import TextRelianceConfig, text_reliance

    cfg = TextRelianceConfig(
        checkpoints=tuple(checkpoints), shards=shards, samples=samples,
        times=floats(times, "--times"), batch_size=batch_size, seed=seed, weights=weights,
        device=device, out=out,
    )  # fmt: skip
    results = text_reliance(cfg)
    table = Table(title=f"loss rise with shifted captions ({results[0]['samples']} samples)")
    table.add_column("checkpoint", overflow="fold")  # folded, not cut: runs differ at the end
    table.add_column("step", justify="right")
    for t in cfg.times:
        table.add_column(f"t = {t:g}", justify="right")
    table.add_column("mean", justify="right", style="bold")
    for r in results:
        rises = [f"{100 * row['rise']:+.1f} %" for row in r["times"]]
        table.add_row(r["checkpoint"], str(r["step"]), *rises, f"{100 * r['mean_rise']:+.1f} %")
    Console().print(table)


def report_cmd(
    out: Path = typer.Argument(..., help="The HTML page to write."),
    title: str = typer.Option("miro run"),
    data: Path | None = typer.Option(None, help="Folder with stats.png / edges.json."),
    run: Path | None = typer.Option(None, help="Training run folder."),
    samples: Path | None = typer.Option(None, help="`miro sample` output folder."),
    geneval: Path | None = typer.Option(None, help="`miro eval geneval` output folder."),
    note: list[str] = typer.Option([], "--note", help="A paragraph at the top, repeatable."),
) -> None:
    """One self-contained HTML page: data, training, samples and GenEval of a run."""
    from miro_train.report import ReportConfig, report

    path = report(ReportConfig(out=out, title=title, data=data, run=run, samples=samples,
                               geneval=geneval, notes=tuple(note)))  # fmt: skip
    typer.echo(f"report: {path.resolve()}")
