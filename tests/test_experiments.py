"""Every experiment end to end on a tiny budget: it runs, and writes its results, plots and report."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import micro_config

from miro_data.common import MiroError
from miro_train.evaluate import geneval_prompts
from miro_train.experiments.best_of_n import BestOfNConfig, best_of_n, n_values
from miro_train.experiments.combine import CombineConfig, combine
from miro_train.experiments.common import EXPERIMENT_SAMPLER, EvalSettings, TrainSettings
from miro_train.experiments.compare import CompareConfig, compare, speedups
from miro_train.experiments.scores import Scores, stack_by_step
from miro_train.experiments.single_vs_multi import (
    SingleVsMultiConfig,
    hacking_verdict,
    single_vs_multi,
)
from miro_train.experiments.sweeps import GuidanceConfig, SweepConfig, guidance, sweep

TINY_EVAL = EvalSettings(
    prompts_per_category=1,
    images_per_prompt=1,
    sampler=replace(EXPERIMENT_SAMPLER, steps=2, batch_size=16),
)


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory: pytest.TempPathFactory) -> TrainSettings:
    """Two steps of a micro UNet per arm: checkpoints of kilobytes (unet-tiny's are 50 MB, and
    these tests copy runs around)."""
    config = micro_config(tmp_path_factory.mktemp("model") / "unet-micro.json", resolution=32)
    return TrainSettings(model=str(config), steps=2, batch_size=8, eval_every=1, warmup=1)


def _written(folder: Path, *names: str) -> None:
    for name in names:
        assert (folder / name).stat().st_size > 0, name


@pytest.fixture(scope="module")
def compared(pipeline, tiny_train: TrainSettings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experiments") / "compare"
    compare(CompareConfig(shards=pipeline.train, out=out, train=tiny_train, eval=TINY_EVAL))
    return out


def test_compare_trains_both_arms_and_evaluates_every_checkpoint(compared: Path) -> None:
    _written(compared, "results.json", "report.md", "convergence.png", "per_image.jsonl")
    results = json.loads((compared / "results.json").read_text())
    assert [e["step"] for e in results["evaluations"]["baseline"]] == [1, 2]
    assert [e["step"] for e in results["evaluations"]["miro"]] == [1, 2]
    assert {"geneval", "geneval/counting", "reward/sharpness"} <= set(results["speedup"])
    # every figure carries its interval, and MIRO − baseline is a paired difference
    final = results["evaluations"]["miro"][-1]
    low, high = final["geneval"]["interval"]
    assert low <= final["geneval"]["overall"] <= high
    assert set(final["geneval"]["intervals"]) == set(final["geneval"]["categories"])
    low, high = final["reward_intervals"]["sharpness"]
    assert low <= final["rewards"]["sharpness"] <= high
    diff = results["difference"]["reward/sharpness"]
    assert diff["value"] == pytest.approx(
        final["rewards"]["sharpness"]
        - results["evaluations"]["baseline"][-1]["rewards"]["sharpness"]
    )
    assert diff["low"] <= diff["value"] <= diff["high"]
    rows = [json.loads(line) for line in (compared / "per_image.jsonl").open()]
    assert len(rows) == 2 * 2 * 6 and {"arm", "step", "prompt", "geneval", "reward/noise"} <= set(
        rows[0]
    )
    report = (compared / "report.md").read_text()
    assert "Speed-up" in report and "MIRO − baseline" in report


def _scores(passes: np.ndarray, prompts: list[str]) -> Scores:
    return Scores(prompts, {"geneval": passes.astype(float)[None]})


def test_speedup_only_where_the_paired_difference_is_established() -> None:
    prompts = [p for p in geneval_prompts(8) for _ in range(4)]
    i = np.arange(len(prompts))
    base = {500: _scores(i % 20 == 0, prompts), 1500: _scores(i % 10 == 0, prompts)}
    # 1.6 points more, passing other images than the baseline: noise at 192 images
    small_lead = (i % 10 == 3) | (i % 37 == 5)
    miro = {500: _scores(small_lead, prompts), 1000: _scores(i % 10 < 6, prompts),
            1500: _scores(i % 10 < 7, prompts)}  # fmt: skip
    found = speedups({"baseline": base, "miro": miro})["geneval"]
    assert found["established"] and found["step"] == 1000 and found["speedup"] == 1.5
    assert found["difference"]["low"] > 0 and found["baseline_steps"] == 1500
    # a small lead at the first evaluation, as in issue 20, is no speed-up
    miro = {500: _scores(small_lead, prompts), 1500: _scores(small_lead, prompts)}
    found = speedups({"baseline": base, "miro": miro})["geneval"]
    assert not found["established"] and found["speedup"] is None
    assert found["difference"]["low"] < 0 < found["difference"]["value"]


def test_compare_over_training_seeds_reuses_resumes_and_averages(
    compared: Path, pipeline, tiny_train: TrainSettings, tmp_path: Path
) -> None:
    out = tmp_path / "seeds"
    # the single-seed experiment's runs stand in (training them again would only cost time):
    # finished for seed 0 of both arms and seed 1 of the baseline (their first checkpoint
    # dropped), and killed after its first checkpoint for MIRO's seed 1
    for arm, seed in (("baseline", 0), ("baseline", 1), ("miro", 0), ("miro", 1)):
        shutil.copytree(compared / arm, out / arm / f"seed-{seed}")
    for arm, seed, step in (("baseline", 0, 1), ("baseline", 1, 1), ("miro", 0, 1), ("miro", 1, 2)):
        shutil.rmtree(out / arm / f"seed-{seed}" / "checkpoints" / f"step_000000{step}")
    (out / "miro" / "seed-1" / "arm.json").unlink()
    first = (out / "miro" / "seed-1" / "checkpoints" / "step_0000001").stat().st_mtime_ns
    done = (out / "miro" / "seed-0" / "arm.json").read_text()
    cfg = CompareConfig(shards=pipeline.train, out=out, train=tiny_train, eval=TINY_EVAL,
                        train_seeds=(0, 1))  # fmt: skip
    compare(cfg)
    assert (out / "miro" / "seed-0" / "arm.json").read_text() == done  # finished: reused
    assert (out / "miro" / "seed-1" / "checkpoints" / "step_0000001").stat().st_mtime_ns == first
    assert (out / "miro" / "seed-1" / "checkpoints" / "step_0000002").is_dir()  # resumed
    results = json.loads((out / "results.json").read_text())
    assert results["train_seeds"] == [0, 1]
    assert [e["step"] for e in results["evaluations"]["miro"]] == [2]  # the steps all seeds have
    final = results["evaluations"]["miro"][-1]
    assert final["geneval"]["n_images"] == 2 * 6  # both seeds, the same 6 prompts and noise
    # the figure is the mean over seeds, and seed 0's half is the single-seed experiment's
    single = json.loads((compared / "results.json").read_text())["evaluations"]["miro"][-1]
    rows = [json.loads(line) for line in (out / "per_image.jsonl").open()]
    mine = [r["reward/sharpness"] for r in rows if r["arm"] == "miro"]
    assert [r["train_seed"] for r in rows if r["arm"] == "miro"] == [0] * 6 + [1] * 6
    assert final["rewards"]["sharpness"] == pytest.approx(np.mean(mine))
    assert np.mean(mine[:6]) == pytest.approx(single["rewards"]["sharpness"])
    assert "training seed(s) 0, 1" in (out / "report.md").read_text()


def test_seeds_stack_per_shared_step_and_only_alike_evaluations_stack() -> None:
    prompts = geneval_prompts(2)
    i = np.arange(len(prompts))
    seed0 = {500: _scores(i % 2 == 0, prompts), 1000: _scores(i % 3 == 0, prompts)}
    seed1 = {1000: _scores(i % 5 == 0, prompts), 1500: _scores(i % 7 == 0, prompts)}
    stacked = stack_by_step([seed0, seed1], lambda s: s, "the runs")
    assert list(stacked) == [1000]  # only the step both seeds have
    np.testing.assert_array_equal(
        stacked[1000].values["geneval"], np.stack([i % 3 == 0, i % 5 == 0]).astype(float)
    )
    with pytest.raises(MiroError, match="the runs share no step"):
        stack_by_step([seed0, {1500: seed1[1500]}], lambda s: s, "the runs")
    with pytest.raises(MiroError, match=r"the runs at step 1000: .* used other prompts"):
        other = {1000: _scores(i % 5 == 0, prompts[::-1])}
        stack_by_step([seed0, other], lambda s: s, "the runs")
    with pytest.raises(MiroError, match=r"the runs at step 1000: .* measured other metrics"):
        other = {1000: Scores(prompts, {"reward/noise": np.zeros((1, len(prompts)))})}
        stack_by_step([seed0, other], lambda s: s, "the runs")


def test_combine_reports_compares_of_other_seeds_as_one_compare_would(
    compared: Path, pipeline, tiny_train: TrainSettings, tmp_path: Path
) -> None:
    # seed 1's compare ran elsewhere; the single-seed runs stand in for its models (copied
    # with their kept evaluations, so nothing is sampled again)
    other, both = tmp_path / "other", tmp_path / "both"
    for arm in ("baseline", "miro"):
        shutil.copytree(compared / arm, other / arm / "seed-1")
        for seed in (0, 1):
            shutil.copytree(compared / arm, both / arm / f"seed-{seed}")
    cfg = CompareConfig(shards=pipeline.train, out=other, train=tiny_train, eval=TINY_EVAL,
                        train_seeds=(1,))  # fmt: skip
    compare(cfg)
    expected = compare(replace(cfg, out=both, train_seeds=(0, 1)))
    record = other / "per_image.jsonl"  # kept as a record, gzipped
    record.with_suffix(".jsonl.gz").write_bytes(gzip.compress(record.read_bytes()))
    record.unlink()
    combined = combine(CombineConfig(parts=(compared, other), out=tmp_path / "combined"))
    _written(
        tmp_path / "combined", "results.json", "report.md", "convergence.png", "per_image.jsonl"
    )
    assert combined["train_seeds"] == [0, 1] and set(combined["seconds_per_seed"]["miro"]) == {
        "0",
        "1",
    }
    assert (tmp_path / "combined" / "per_image.jsonl").read_text() == (
        both / "per_image.jsonl"
    ).read_text()
    for arm in ("baseline", "miro"):
        for got, want in zip(
            combined["evaluations"][arm], expected["evaluations"][arm], strict=True
        ):
            assert got["step"] == want["step"]
            assert got["geneval"]["overall"] == pytest.approx(want["geneval"]["overall"])
            assert got["geneval"]["interval"] == pytest.approx(want["geneval"]["interval"])
            assert got["rewards"] == pytest.approx(want["rewards"])
    assert combined["difference"]["reward/noise"] == pytest.approx(
        expected["difference"]["reward/noise"]
    )
    assert "training seed(s) 0, 1" in (tmp_path / "combined" / "report.md").read_text()
    # results written before a setting existed are read with its default, in the report too
    results = json.loads((other / "results.json").read_text())
    assert results["config"]["shards_digest"] == combined["config"]["shards_digest"]
    del results["config"]["eval"]["sampler"]["guidance_interval"]
    del results["config"]["shards_digest"]  # older results: the data is not checked
    (other / "results.json").write_text(json.dumps(results))
    older = combine(CombineConfig(parts=(other, compared), out=tmp_path / "older"))
    assert older["config"]["eval"]["sampler"]["guidance_interval"] == [0.0, 1.0]
    # the same recipe on other shards (other edges, a path alike or not) is refused
    results["config"]["shards_digest"] = "0123456789abcdef"
    (other / "results.json").write_text(json.dumps(results))
    with pytest.raises(MiroError, match="trained on different shards"):
        combine(CombineConfig(parts=(compared, other), out=tmp_path / "refused"))
    results["config"]["shards_digest"] = combined["config"]["shards_digest"]
    (other / "results.json").write_text(json.dumps(results))
    # a combined folder combines further; a seed counted twice is refused
    with pytest.raises(MiroError, match="more than one folder"):
        combine(CombineConfig(parts=(tmp_path / "combined", other), out=tmp_path / "again"))
    # another recipe is refused, naming the setting; nothing is written for it
    results = json.loads((other / "results.json").read_text())
    results["config"]["train"]["steps"] = 3
    (other / "results.json").write_text(json.dumps(results))
    with pytest.raises(MiroError, match=r"train\.steps is 2 in one and 3 in the other"):
        combine(CombineConfig(parts=(compared, other), out=tmp_path / "refused"))
    # a damaged score file is one line naming it
    record.with_suffix(".jsonl.gz").write_bytes(gzip.compress(b'{"arm": "miro"}\n'))
    with pytest.raises(MiroError, match="line 1: not a per-image score row"):
        combine(CombineConfig(parts=(compared, other), out=tmp_path / "refused"))
    # results from before per-seed training times ask for the compare to be run again
    del results["seconds_per_seed"]
    (other / "results.json").write_text(json.dumps(results))
    with pytest.raises(MiroError, match="older miro without per-seed training times"):
        combine(CombineConfig(parts=(compared, other), out=tmp_path / "refused"))
    assert not (tmp_path / "again").exists() and not (tmp_path / "refused").exists()


def test_compare_borrows_a_recorded_baseline_and_trains_only_miro(
    compared: Path, pipeline, tiny_train: TrainSettings, tmp_path: Path
) -> None:
    # a MIRO variant (two of the rewards) against the single-seed compare's baseline, which
    # lends its record: results.json and a gzipped per_image.jsonl, its models gone
    lender = tmp_path / "lender"
    lender.mkdir()
    shutil.copy(compared / "results.json", lender)
    (lender / "per_image.jsonl.gz").write_bytes(
        gzip.compress((compared / "per_image.jsonl").read_bytes())
    )
    cfg = CompareConfig(shards=pipeline.train, out=tmp_path / "variant", train=tiny_train,
                        eval=TINY_EVAL, rewards=("noise", "sharpness"), baseline_from=lender)  # fmt: skip
    results = compare(cfg)
    original = json.loads((compared / "results.json").read_text())
    assert not (cfg.out / "baseline").exists() and (cfg.out / "miro" / "arm.json").is_file()
    assert results["evaluations"]["baseline"] == original["evaluations"]["baseline"]
    assert results["seconds_per_seed"]["baseline"] == original["seconds_per_seed"]["baseline"]
    assert results["config"]["baseline_from"] == str(lender)
    assert results["config"]["shards_digest"] == original["config"]["shards_digest"]
    rows = [json.loads(line) for line in (cfg.out / "per_image.jsonl").open()]
    lent = [json.loads(line) for line in (compared / "per_image.jsonl").open()]
    assert [r for r in rows if r["arm"] == "baseline"] == [
        r for r in lent if r["arm"] == "baseline"
    ]
    diff = results["difference"]["reward/noise"]
    assert diff["value"] == pytest.approx(
        results["evaluations"]["miro"][-1]["rewards"]["noise"]
        - original["evaluations"]["baseline"][-1]["rewards"]["noise"]
    )
    assert f"recorded in `{lender}`" in (cfg.out / "report.md").read_text()
    # a borrowed baseline combines like a trained one
    combined = combine(CombineConfig(parts=(cfg.out,), out=tmp_path / "combined"))
    assert combined["evaluations"] == results["evaluations"]
    assert combined["config"]["baseline_from"] is None
    # what cannot stand in is refused before anything is written: another seed, recipe,
    # evaluation, shards, or a metric the lender did not score
    refused = replace(cfg, out=tmp_path / "refused")
    for change, message in (
        ({"train_seeds": (0, 5)}, "no baseline of training seed"),
        ({"train": replace(tiny_train, steps=3)}, r"train\.steps is 2 there, 3 here"),
        ({"eval": replace(TINY_EVAL, prompts_per_category=2)}, "eval.prompts_per_category"),
    ):
        with pytest.raises(MiroError, match=message):
            compare(replace(refused, **change))
    results = json.loads((lender / "results.json").read_text())
    results["config"]["shards_digest"] = "0123456789abcdef"
    (lender / "results.json").write_text(json.dumps(results))
    with pytest.raises(MiroError, match="its baseline trained on other shards"):
        compare(refused)
    shutil.copy(compared / "results.json", lender)
    unscored = [{k: v for k, v in r.items() if k != "reward/contrast"} for r in lent]
    (lender / "per_image.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in unscored).encode())
    )
    with pytest.raises(MiroError, match="was not scored on contrast"):
        compare(refused)
    assert not refused.out.exists()


def test_evaluations_are_kept_and_reused_until_the_weights_change(
    compared: Path, pipeline, tiny_train: TrainSettings, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    shutil.copytree(compared, out)  # copy2: the weights keep their times
    records = sorted((out / "miro" / "evals").glob("step_*.json"))
    assert [r.name.split("-")[0] for r in records] == ["step_0000001", "step_0000002"]
    # a record stands for its evaluation: mark one, and the rerun's figures come from it
    final = records[-1]
    record = json.loads(final.read_text())
    record["values"]["geneval"] = [1.0] * len(record["values"]["geneval"])
    final.write_text(json.dumps(record))
    cfg = CompareConfig(shards=pipeline.train, out=out, train=tiny_train, eval=TINY_EVAL)
    results = compare(cfg)
    assert results["evaluations"]["miro"][-1]["geneval"]["overall"] == 1.0
    first = json.loads((compared / "results.json").read_text())["evaluations"]["miro"][0]
    assert results["evaluations"]["miro"][0]["rewards"] == first["rewards"]  # the same scores
    # retrained weights (a new file) are evaluated again; other settings are other records
    weights = out / "miro" / "checkpoints" / "step_0000002" / "ema.safetensors"
    weights.write_bytes(weights.read_bytes())
    results = compare(cfg)
    assert results["evaluations"]["miro"][-1]["geneval"]["overall"] < 1.0
    assert len(list((out / "miro" / "evals").glob("step_0000002-*.json"))) == 2
    compare(replace(cfg, eval=replace(TINY_EVAL, images_per_prompt=2)))
    assert len(list((out / "miro" / "evals").glob("step_0000002-*.json"))) == 3
    # a damaged record is evaluated again, and rewritten
    records[0].write_text("{")
    results = compare(cfg)
    assert results["evaluations"]["miro"][0]["rewards"] == pytest.approx(first["rewards"])
    assert json.loads(records[0].read_text())["step"] == 1


def test_sweep_and_guidance_write_their_reports(compared: Path, tmp_path: Path) -> None:
    sweep(SweepConfig(checkpoint=compared / "miro", out=tmp_path / "sweep", rewards=("shapes_alignment",),
                      values=(0.0, 1.0), eval=TINY_EVAL))  # fmt: skip
    _written(tmp_path / "sweep", "results.json", "report.md", "sweep.png")
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    runs = saved["runs"]["shapes_alignment"]
    assert [r["value"] for r in runs] == [0.0, 1.0]
    # each target is paired with the first: same prompts and noise, so its own is exactly 0
    assert runs[0]["difference_to_first"]["geneval"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    own = runs[1]["difference_to_first"]["reward/shapes_alignment"]
    assert own["value"] == pytest.approx(
        runs[1]["rewards"]["shapes_alignment"] - runs[0]["rewards"]["shapes_alignment"]
    )
    trend = saved["trends"]["shapes_alignment"]
    assert trend["rises"] == (own["low"] > 0 and trend["spearman"] > 0)
    assert "last − first (paired)" in (tmp_path / "sweep" / "report.md").read_text()
    guidance(
        GuidanceConfig(
            checkpoint=compared / "miro",
            out=tmp_path / "guidance",
            scales=(0.0, 2.0),
            eval=TINY_EVAL,
        )
    )
    _written(tmp_path / "guidance", "results.json", "report.md", "guidance.png", "per_image.jsonl")
    runs = json.loads((tmp_path / "guidance" / "results.json").read_text())["runs"]
    low, high = runs[1]["geneval"]["interval"]
    assert low <= runs[1]["geneval"]["overall"] <= high
    assert "ω=2 − ω=0" in (tmp_path / "guidance" / "report.md").read_text()


def test_best_of_n_curves_for_both_models(compared: Path, tmp_path: Path) -> None:
    assert n_values(32) == [1, 2, 4, 8, 16, 32] and n_values(5) == [1, 2, 4, 5]
    out = tmp_path / "bon"
    results = best_of_n(BestOfNConfig(out=out, checkpoints={"baseline": compared / "baseline", "miro": compared / "miro"},
                                      n_max=2, select_by=("contrast",), eval=TINY_EVAL))  # fmt: skip
    _written(out, "results.json", "report.md", "best_of_n_miro.png", "best_of_n_baseline.png",
             "per_image.jsonl")  # fmt: skip
    assert len(results["curves"]["miro"]["contrast"]["geneval"]) == 2
    # selecting by contrast among more candidates never lowers the mean contrast of the picks
    c = results["curves"]["miro"]["contrast"]["reward/contrast"]
    assert c[1] >= c[0]
    bands = results["intervals"]["miro"]["contrast"]["reward/contrast"]
    assert all(lo <= v <= hi for v, (lo, hi) in zip(c, bands, strict=True))
    gain = results["n2_minus_n1"]["miro"]["contrast"]["reward/contrast"]
    assert gain["value"] == pytest.approx(c[1] - c[0]) and gain["low"] >= 0  # paired: never lower


def test_single_vs_multi_writes_the_hacking_table(
    compared: Path, pipeline, tiny_train: TrainSettings, tmp_path: Path
) -> None:
    out = tmp_path / "svm"
    single_vs_multi(SingleVsMultiConfig(shards=pipeline.train, out=out, rewards=("sharpness", "noise"),
                                        train=tiny_train, eval=replace(TINY_EVAL, rewards=("contrast",)), baseline=compared / "baseline",
                                        multi=compared / "miro" / "checkpoints" / "step_0000001"))  # fmt: skip
    _written(out, "results.json", "report.md", "radar.png")
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"only sharpness", "only noise", "miro", "baseline"}
    assert results["results"]["miro"]["step"] == 1  # one checkpoint of a longer run, as it is
    # the conditioned rewards are measured even when the metric list leaves them out
    assert set(results["results"]["miro"]["rewards"]) == {"contrast", "sharpness", "noise"}
    diff = results["differences"]["only noise − baseline"]["reward/noise"]
    assert diff["value"] == pytest.approx(
        results["results"]["only noise"]["rewards"]["noise"]
        - results["results"]["baseline"]["rewards"]["noise"]
    )
    assert "Paired differences to the baseline" in (out / "report.md").read_text()


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
    args = ["eval", "geneval", str(run), "--out", str(scored), "--prompts-per-category", "3",
            "--images-per-prompt", "1", "--steps", "2"]  # fmt: skip
    result = runner.invoke(app, args)  # three shapes and two colours asked alone
    assert result.exit_code == 0 and "single-object prompts: shape following" in result.output
    assert "colour prompts: colour following" in result.output
    page = tmp_path / "report.html"
    args = ["report", str(page), "--run", str(run), "--samples", str(samples), "--geneval", str(scored),
            "--note", "tiny run"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and str(page.resolve()) in result.output.replace("\n", "")
    html = page.read_text()
    assert "tiny run" in html and "Shapes World GenEval" in html and "overall" in html
    assert "shape following" in html and "colour following" in html
    assert html.count("data:image/png;base64,") >= 3  # loss curve, sample grid, GenEval grids
    # a missing folder is one clear line, and the page already written stays as it was
    result = runner.invoke(app, ["report", str(page), "--run", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "run folder not found" in result.output
    assert page.read_text() == html
