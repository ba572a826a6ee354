"""Every experiment end to end on a tiny budget: it runs, and writes its results, plots and report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from miro_train.experiments.best_of_n import BestOfNConfig, best_of_n, n_values
from miro_train.experiments.common import EXPERIMENT_SAMPLER, EvalSettings, TrainSettings
from miro_train.experiments.compare import CompareConfig, compare, speedups, steps_to_reach
from miro_train.experiments.single_vs_multi import (
    SingleVsMultiConfig,
    hacking_verdict,
    single_vs_multi,
)
from miro_train.experiments.sweeps import GuidanceConfig, SweepConfig, guidance, sweep

TINY_TRAIN = TrainSettings(steps=2, batch_size=8, eval_every=1, warmup=1)
TINY_EVAL = EvalSettings(
    prompts_per_category=1,
    images_per_prompt=1,
    sampler=replace(EXPERIMENT_SAMPLER, steps=2, batch_size=16),
)


def _written(folder: Path, *names: str) -> None:
    for name in names:
        assert (folder / name).stat().st_size > 0, name


@pytest.fixture(scope="module")
def compared(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experiments") / "compare"
    compare(CompareConfig(shards=pipeline.train, out=out, train=TINY_TRAIN, eval=TINY_EVAL))
    return out


def test_compare_trains_both_arms_and_evaluates_every_checkpoint(compared: Path) -> None:
    _written(compared, "results.json", "report.md", "convergence.png")
    results = json.loads((compared / "results.json").read_text())
    assert [e["step"] for e in results["evaluations"]["baseline"]] == [1, 2]
    assert [e["step"] for e in results["evaluations"]["miro"]] == [1, 2]
    assert {"geneval", "geneval/counting", "reward/sharpness"} <= set(results["speedup"])
    assert "Speed-up" in (compared / "report.md").read_text()


def test_compare_reuses_finished_arms(compared: Path, pipeline) -> None:
    before = (compared / "miro" / "arm.json").read_text()
    compare(CompareConfig(shards=pipeline.train, out=compared, train=TINY_TRAIN, eval=TINY_EVAL))
    assert (compared / "miro" / "arm.json").read_text() == before


def test_speedup_is_steps_to_reach_the_baseline_final_score() -> None:
    assert steps_to_reach([(100, 0.1), (200, 0.3), (300, 0.5)], 0.4) == pytest.approx(250)
    assert steps_to_reach([(100, 0.1), (200, 0.2)], 0.4) is None
    curves = {"baseline": {"g": [(100, 0.1), (400, 0.3)]}, "miro": {"g": [(100, 0.2), (200, 0.4)]}}
    assert speedups(curves)["g"]["speedup"] == pytest.approx(400 / 150)
    assert not speedups(curves)["g"]["lower_bound"]
    curves["miro"]["g"] = [(100, 0.35), (200, 0.4)]  # there at the first evaluation: ≥ 4×
    assert speedups(curves)["g"] == pytest.approx(
        {"baseline_final": 0.3, "baseline_steps": 400, "miro_steps_to_reach": 100.0,
         "speedup": 4.0, "lower_bound": True})  # fmt: skip


def test_sweep_and_guidance_write_their_reports(compared: Path, tmp_path: Path) -> None:
    sweep(SweepConfig(checkpoint=compared / "miro", out=tmp_path / "sweep", rewards=("shapes_alignment",),
                      values=(0.0, 1.0), eval=TINY_EVAL))  # fmt: skip
    _written(tmp_path / "sweep", "results.json", "report.md", "sweep.png")
    runs = json.loads((tmp_path / "sweep" / "results.json").read_text())["runs"]["shapes_alignment"]
    assert [r["value"] for r in runs] == [0.0, 1.0]
    guidance(
        GuidanceConfig(
            checkpoint=compared / "miro",
            out=tmp_path / "guidance",
            scales=(0.0, 2.0),
            eval=TINY_EVAL,
        )
    )
    _written(tmp_path / "guidance", "results.json", "report.md", "guidance.png")


def test_best_of_n_curves_for_both_models(compared: Path, tmp_path: Path) -> None:
    assert n_values(32) == [1, 2, 4, 8, 16, 32] and n_values(5) == [1, 2, 4, 5]
    out = tmp_path / "bon"
    results = best_of_n(BestOfNConfig(out=out, checkpoints={"baseline": compared / "baseline", "miro": compared / "miro"},
                                      n_max=2, select_by=("contrast",), eval=TINY_EVAL))  # fmt: skip
    _written(out, "results.json", "report.md", "best_of_n_miro.png", "best_of_n_baseline.png")
    assert len(results["curves"]["miro"]["contrast"]["geneval"]) == 2
    # selecting by contrast among more candidates never lowers the mean contrast of the picks
    c = results["curves"]["miro"]["contrast"]["reward/contrast"]
    assert c[1] >= c[0]


def test_single_vs_multi_writes_the_hacking_table(compared: Path, pipeline, tmp_path: Path) -> None:
    out = tmp_path / "svm"
    single_vs_multi(SingleVsMultiConfig(shards=pipeline.train, out=out, rewards=("sharpness", "noise"),
                                        train=TINY_TRAIN, eval=replace(TINY_EVAL, rewards=("contrast",)), baseline=compared / "baseline",
                                        multi=compared / "miro" / "checkpoints" / "step_0000001"))  # fmt: skip
    _written(out, "results.json", "report.md", "radar.png")
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"only sharpness", "only noise", "miro", "baseline"}
    assert results["results"]["miro"]["step"] == 1  # one checkpoint of a longer run, as it is
    # the conditioned rewards are measured even when the metric list leaves them out
    assert set(results["results"]["miro"]["rewards"]) == {"contrast", "sharpness", "noise"}


def test_hacking_verdict_finds_a_model_that_trades_rewards() -> None:
    table = {
        "baseline": {"reward/sharpness": 1.0, "reward/noise": -5.0},
        "only sharpness": {
            "reward/sharpness": 3.0,
            "reward/noise": -9.0,
        },  # sharper by being noisier
        "only noise": {"reward/sharpness": 0.8, "reward/noise": -1.0},
        "miro": {"reward/sharpness": 2.9, "reward/noise": -1.2},
    }
    verdict = hacking_verdict(table, ("sharpness", "noise"))
    assert "sharpness" in verdict["hackers"]
    assert verdict["miro_gap"]["reward/sharpness"] == pytest.approx(0.1 / 2.2)


def test_demo_tail_sample_geneval_and_report_through_the_cli(
    compared: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    run, samples, scored = compared / "miro", tmp_path / "samples", tmp_path / "geneval"
    args = [
        "sample",
        str(run),
        "--out",
        str(samples),
        "--n",
        "2",
        "--steps",
        "2",
        "-p",
        "a photo of a red circle",
    ]
    assert runner.invoke(app, args).exit_code == 0
    args = ["eval", "geneval", str(run), "--out", str(scored), "--prompts-per-category", "1",
            "--images-per-prompt", "1", "--steps", "2"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    page = tmp_path / "report.html"
    args = ["report", str(page), "--run", str(run), "--samples", str(samples), "--geneval", str(scored),
            "--note", "tiny run"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and str(page.resolve()) in result.output.replace("\n", "")
    html = page.read_text()
    assert "tiny run" in html and "Shapes World GenEval" in html and "overall" in html
    assert html.count("data:image/png;base64,") >= 3  # loss curve, sample grid, GenEval grids
    # a missing folder is one clear line, and the page already written stays as it was
    result = runner.invoke(app, ["report", str(page), "--run", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "run folder not found" in result.output
    assert page.read_text() == html
