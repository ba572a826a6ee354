"""`miro eval …`: GenEval on Shapes World, reward metrics of generated images, and how much a
model reads its captions; and `miro report`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from cli.options import Commands
from cli.parse import reward_options

if TYPE_CHECKING:
    from miro_train.evaluate import GenevalConfig, RewardEvalConfig
    from miro_train.report import ReportConfig
    from miro_train.text_reliance import TextRelianceConfig

commands = Commands()
top_commands = Commands()
eval_app = typer.Typer(
    cls=commands.group(), help="Evaluate generated images and checkpoints.", no_args_is_help=True
)


def register(app: typer.Typer, top: Commands) -> None:
    app.add_typer(eval_app, name="eval")
    top.include(top_commands)


@commands.config("geneval", "miro_train.evaluate:GenevalConfig", args=("checkpoint",))
def geneval_cmd(cfg: GenevalConfig) -> None:
    """The Shapes World GenEval: per-category pass rates and their mean."""
    from miro_train.evaluate import geneval
    from miro_train.following import following_line

    result = geneval(cfg)
    table = Table(title=f"Shapes World GenEval ({result.n_images} images)")
    table.add_column("category")
    table.add_column("score", justify="right")
    table.add_column("95 % interval", justify="right")

    def interval(key: str) -> str:
        e = result.intervals.get(key)
        return "" if e is None else f"{100 * e.low:.1f} – {100 * e.high:.1f}"

    for category, score in result.categories.items():
        table.add_row(category, f"{100 * score:.1f}", interval(f"geneval/{category}"))
    table.add_row("overall", f"{100 * result.overall:.1f}", interval("geneval"), style="bold")
    Console().print(table)
    # a model that ignores the shape or colour word passes those checks by drawing many objects
    for attribute, figures in result.following.items():
        typer.echo(following_line(attribute, figures))
    typer.echo(f"results: {cfg.out / 'results.json'}")


@commands.config(
    "rewards", "miro_train.evaluate:RewardEvalConfig", args=("manifest",), inputs=reward_options
)
def rewards_cmd(cfg: RewardEvalConfig) -> None:
    """Mean and spread of each reward over generated images."""
    from miro_train.evaluate import eval_rewards

    summary = eval_rewards(cfg)
    table = Table(title=f"rewards of {cfg.manifest}")
    for col in ("reward", "mean", "95 % interval", "std", "n", "undefined"):
        table.add_column(col, justify="left" if col == "reward" else "right")
    for name, s in summary.items():
        table.add_row(name, f"{s['mean']:.4g}", f"{s['low']:.4g} – {s['high']:.4g}",
                      f"{s['std']:.4g}", str(s["n"]), str(s["undefined"]))  # fmt: skip
    Console().print(table)


@commands.config(
    "text-reliance", "miro_train.text_reliance:TextRelianceConfig", args=("checkpoints",)
)
def text_reliance_cmd(cfg: TextRelianceConfig) -> None:
    """How much each checkpoint's loss rises when it is given other samples' captions (or
    its captions with their colour or shape words changed)."""
    from miro_train.text_reliance import CHANGED, text_reliance

    results = text_reliance(cfg)
    title = f"loss rise with {CHANGED[cfg.swap]} ({results[0]['samples']} samples)"
    table = Table(title=title)
    table.add_column("checkpoint", overflow="fold")  # folded, not cut: runs differ at the end
    table.add_column("step", justify="right")
    for t in cfg.times:
        table.add_column(f"t = {t:g}", justify="right")
    table.add_column("mean [95 % interval]", justify="right", style="bold")
    for r in results:
        rises = [f"{100 * row['rise']:+.2f} %" for row in r["times"]]
        mean = f"{100 * r['mean_rise']:+.2f} % [{100 * r['low']:+.2f}, {100 * r['high']:+.2f}]"
        table.add_row(r["checkpoint"], str(r["step"]), *rises, mean)
    Console().print(table)


@top_commands.config("report", "miro_train.report:ReportConfig", args=("out",))
def report_cmd(cfg: ReportConfig) -> None:
    """One self-contained HTML page: data, training, samples and GenEval of a run."""
    from miro_train.report import report

    typer.echo(f"report: {report(cfg).resolve()}")
