"""CLI options are declared once, on the config fields: the option table of every command,
the configs the commands build, and the one set of rules for list options' text.

PINNED was generated from the command tree before the options moved onto the config fields
(walking `typer.main.get_command(app)`): every command keeps each option's flags, default,
type and arity. Arguments come first in their order; then options, sorted by flags.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import subprocess
import sys
import typing
from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import data, evaluate, experiment
from cli import train as train_cli
from cli.main import app
from cli.options import Commands, Overrides, config_callback, load, slots
from miro_data.common import MiroError
from miro_data.options import NAMES, NUMBERS, items, key_values, names, numbers, opt
from miro_data.synth import Degradations
from miro_train.sampler import parse_values

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

PINNED = {
    "data annotate": [
        ("SHARDS", None, "str", "required"),
        ("DB", None, "Path", "required"),
        ("--actors", None, "int", ""),
        ("--allow-download", False, "bool", ""),
        ("--batch-size", 256, "int", ""),
        ("--decode-workers", 1, "int", ""),
        ("--device", "auto", "str", ""),
        ("--engine", "local", ("local", "ray"), ""),
        ("--max-pixels", 16777216, "int", ""),
        ("--parts", None, "str", ""),
        ("--precision", "auto", ("auto", "fp32", "bf16", "fp16"), ""),
        ("--ray-address", None, "str", ""),
        ("--retry-failed/--no-retry-failed", False, "bool", ""),
        ("--reward-option", (), "str", "multiple"),
        ("--rewards-config", None, "Path", ""),
        ("--rewards/-r", None, "str", "required"),
        ("--workers", 1, "int", ""),
    ],
    "data bins": [
        ("DB", None, "Path", "required"),
        ("--export", None, "Path", ""),
        ("--n-bins", 64, "int", ""),
        ("--rewards/-r", None, "str", ""),
        ("--sample", 100000, "int", ""),
        ("--seed", 0, "int", ""),
    ],
    "data export": [
        ("DB", None, "Path", "required"),
        ("OUT", None, "Path", "required"),
        ("--overwrite", False, "bool", ""),
    ],
    "data download": [
        ("URL_LIST", None, "str", "required"),
        ("OUT", None, "str", "required"),
        ("--caption-col", "caption", "str", ""),
        ("--distributor", "multiprocessing", ("multiprocessing", "pyspark", "ray"), ""),
        ("--encode-format", "jpg", ("jpg", "png", "webp"), ""),
        ("--encode-quality", None, "int", ""),
        ("--image-size", 256, "int", ""),
        ("--incremental", "incremental", ("incremental", "overwrite", "extend"), ""),
        ("--min-image-size", 0, "int", ""),
        ("--processes", "cpu_count", "int", ""),
        ("--ray-address", None, "str", ""),
        (
            "--resize-mode",
            "border",
            ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"),
            "",
        ),
        ("--resize-only-if-bigger/--no-resize-only-if-bigger", False, "bool", ""),
        ("--retries", 0, "int", ""),
        ("--shard-size", 10000, "int", ""),
        ("--threads", 32, "int", ""),
        ("--timeout", 10, "int", ""),
        ("--url-col", "url", "str", ""),
    ],
    "data query": [
        ("DB", None, "Path", "required"),
        ("SQL", None, "str", "required"),
        ("--format", "table", ("table", "csv", "markdown", "json"), ""),
        ("--out", None, "Path", ""),
        ("--rows", 40, "int", ""),
        ("--write/--no-write", False, "bool", ""),
    ],
    "data reshard": [
        ("SHARDS", None, "str", "required"),
        ("DB", None, "Path", "required"),
        ("OUT", None, "str", "required"),
        ("--allow-download", False, "bool", ""),
        ("--device", "cpu", "str", ""),
        ("--edges-version", None, "int", ""),
        ("--engine", "local", ("local", "ray"), ""),
        ("--hook", (), "str", "multiple"),
        ("--in-flight", None, "int", ""),
        ("--overwrite/--no-overwrite", False, "bool", ""),
        ("--ray-address", None, "str", ""),
        ("--rewards/-r", None, "str", ""),
        ("--shard-size", 10000, "int", ""),
        ("--shuffle-seed", 0, "int", ""),
        ("--sort-memory-mb", 1024, "int", ""),
        ("--where", None, "str", ""),
    ],
    "data rewards": [
        ("--reward-option", (), "str", "multiple"),
        ("--rewards-config", None, "Path", ""),
    ],
    "data stats": [
        ("DB", None, "Path", "required"),
        ("--plot", None, "Path", ""),
        ("--rewards/-r", None, "str", ""),
        ("--version", None, "int", ""),
    ],
    "data synth": [
        ("OUT", None, "Path", "required"),
        ("--degrade", "", "str", ""),
        ("--n", 20000, "int", ""),
        ("--seed", 0, "int", ""),
        ("--size", 32, "int", ""),
    ],
    "eval geneval": [
        ("CHECKPOINT", None, "Path", ""),
        ("--allow-download", False, "bool", ""),
        ("--batch-size", 64, "int", ""),
        ("--caption-guidance", 0.0, "float", ""),
        ("--device", "auto", "str", ""),
        ("--guidance", 7.0, "float", ""),
        ("--guidance-interval", "0,1", "str", ""),
        ("--images-per-prompt", 4, "int", ""),
        ("--manifest", None, "Path", ""),
        ("--negative", "", "str", ""),
        ("--out/-o", "geneval", "Path", ""),
        ("--preset", "high", "str", ""),
        ("--prompts-per-category", 16, "int", ""),
        ("--seed", 0, "int", ""),
        ("--steps", 50, "int", ""),
        ("--target", "", "str", ""),
        ("--weights", "ema", ("ema", "model"), ""),
    ],
    "eval rewards": [
        ("MANIFEST", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--out", None, "Path", ""),
        ("--reward-option", (), "str", "multiple"),
        ("--rewards-config", None, "Path", ""),
        ("--rewards/-r", None, "str", "required"),
    ],
    "eval text-reliance": [
        ("CHECKPOINTS", (), "Path", "required multiple"),
        ("--allow-download", False, "bool", ""),
        ("--batch-size", 256, "int", ""),
        ("--device", "auto", "str", ""),
        ("--out/-o", None, "Path", ""),
        ("--samples", 1024, "int", ""),
        ("--seed", 0, "int", ""),
        ("--shards", None, "Path", "required"),
        ("--swap", "caption", "str", ""),
        ("--times", "0.3,0.5,0.7,0.9", "str", ""),
        ("--weights", "ema", ("ema", "model"), ""),
    ],
    "experiment best-of-n": [
        ("OUT", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--baseline", None, "Path", ""),
        ("--caption-guidance", 0.0, "float", ""),
        ("--device", "auto", "str", ""),
        ("--guidance", 3.0, "float", ""),
        ("--guidance-interval", "0,1", "str", ""),
        ("--images-per-prompt", 2, "int", ""),
        ("--miro", None, "Path", ""),
        ("--n-max", 32, "int", ""),
        ("--prompts-per-category", 4, "int", ""),
        ("--sampler-steps", 25, "int", ""),
        ("--seed", 0, "int", ""),
        ("--select-by", None, "str", ""),
    ],
    "experiment combine": [
        ("PARTS", (), "Path", "required multiple"),
        ("--out", None, "Path", "required"),
    ],
    "experiment compare": [
        ("SHARDS", None, "Path", "required"),
        ("OUT", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--baseline-from", None, "Path", ""),
        ("--batch-size", 64, "int", ""),
        ("--caption-dropout", 0.0, "float", ""),
        ("--caption-guidance", 0.0, "float", ""),
        ("--device", "auto", "str", ""),
        ("--eval-every", 500, "int", ""),
        ("--guidance", 3.0, "float", ""),
        ("--guidance-interval", "0,1", "str", ""),
        ("--images-per-prompt", 4, "int", ""),
        ("--lr", 0.001, "float", ""),
        ("--model", "unet-tiny", "str", ""),
        ("--prediction", None, "str", ""),
        ("--prompts-per-category", 8, "int", ""),
        ("--rewards", None, "str", ""),
        ("--sampler-steps", 25, "int", ""),
        ("--seed", 0, "int", ""),
        ("--steps", 3000, "int", ""),
        ("--time-shift", 1.0, "float", ""),
        ("--time-shift-end", None, "float", ""),
        ("--time-shift-share", 1.0, "float", ""),
        ("--train-seeds", None, "str", ""),
    ],
    "experiment guidance": [
        ("CHECKPOINT", None, "Path", "required"),
        ("OUT", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--caption-guidance", 0.0, "float", ""),
        ("--device", "auto", "str", ""),
        ("--guidance-interval", "0,1", "str", ""),
        ("--images-per-prompt", 4, "int", ""),
        ("--prompts-per-category", 8, "int", ""),
        ("--sampler-steps", 25, "int", ""),
        ("--scales", "0,1,2,3,5,7", "str", ""),
        ("--seed", 0, "int", ""),
    ],
    "experiment single-vs-multi": [
        ("SHARDS", None, "Path", "required"),
        ("OUT", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--baseline", None, "Path", ""),
        ("--batch-size", 64, "int", ""),
        ("--caption-dropout", 0.0, "float", ""),
        ("--caption-guidance", 0.0, "float", ""),
        ("--device", "auto", "str", ""),
        ("--guidance", 3.0, "float", ""),
        ("--guidance-interval", "0,1", "str", ""),
        ("--images-per-prompt", 4, "int", ""),
        ("--lr", 0.001, "float", ""),
        ("--model", "unet-tiny", "str", ""),
        ("--multi", None, "Path", ""),
        ("--prediction", None, "str", ""),
        ("--prompts-per-category", 8, "int", ""),
        ("--rewards", None, "str", ""),
        ("--sampler-steps", 25, "int", ""),
        ("--seed", 0, "int", ""),
        ("--steps", 3000, "int", ""),
        ("--time-shift", 1.0, "float", ""),
        ("--time-shift-end", None, "float", ""),
        ("--time-shift-share", 1.0, "float", ""),
        ("--train-seeds", None, "str", ""),
    ],
    "experiment sweep": [
        ("CHECKPOINT", None, "Path", "required"),
        ("OUT", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--caption-guidance", 0.0, "float", ""),
        ("--device", "auto", "str", ""),
        ("--guidance", 3.0, "float", ""),
        ("--guidance-interval", "0,1", "str", ""),
        ("--images-per-prompt", 4, "int", ""),
        ("--prompts-per-category", 8, "int", ""),
        ("--rewards", None, "str", ""),
        ("--sampler-steps", 25, "int", ""),
        ("--seed", 0, "int", ""),
        ("--values", "0,0.25,0.5,0.75,1", "str", ""),
    ],
    "serve": [
        ("DB", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--device", "cpu", "str", ""),
        ("--host", "127.0.0.1", "str", ""),
        ("--max-rows", 100000, "int", ""),
        ("--port", 8000, "int", ""),
        ("--query-seconds", 10.0, "float", ""),
        ("--run", None, "Path", ""),
        ("--shards", None, "str", ""),
    ],
    "report": [
        ("OUT", None, "Path", "required"),
        ("--data", None, "Path", ""),
        ("--geneval", None, "Path", ""),
        ("--note", (), "str", "multiple"),
        ("--run", None, "Path", ""),
        ("--samples", None, "Path", ""),
        ("--title", "miro run", "str", ""),
    ],
    "export": [
        ("RUN", None, "Path", "required"),
        ("OUT", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--overwrite", False, "bool", ""),
        ("--weights", "ema", ("ema", "model"), ""),
    ],
    "sample": [
        ("CHECKPOINT", None, "Path", "required"),
        ("--allow-download", False, "bool", ""),
        ("--batch-size", 32, "int", ""),
        ("--best-of", 1, "int", ""),
        ("--caption-guidance", 0.0, "float", ""),
        ("--device", "auto", "str", ""),
        ("--guidance-interval", "0,1", "str", ""),
        ("--guidance/-w", 7.0, "float", ""),
        ("--n", 1, "int", ""),
        ("--negative", "", "str", ""),
        ("--out/-o", None, "Path", "required"),
        ("--overwrite", False, "bool", ""),
        ("--preset", "high", "str", ""),
        ("--prompt/-p", (), "str", "multiple"),
        ("--prompts", None, "Path", ""),
        ("--seed", 0, "int", ""),
        ("--select-by", None, "str", ""),
        ("--steps", 50, "int", ""),
        ("--target", "", "str", ""),
        ("--weights", "ema", ("ema", "model"), ""),
    ],
    "train": [
        ("SHARDS", None, "str", "required"),
        ("--allow-download", False, "bool", ""),
        ("--baseline", False, "bool", ""),
        ("--batch-size", 64, "int", ""),
        ("--caption-dropout", 0.0, "float", ""),
        ("--ckpt-every", 500, "int", ""),
        ("--compile", False, "bool", ""),
        ("--device", "auto", "str", ""),
        ("--ema", 0.999, "float", ""),
        ("--grad-clip", 2.0, "float", ""),
        ("--keep", None, "int", ""),
        ("--log-every", 50, "int", ""),
        ("--lr", 0.001, "float", ""),
        ("--model", "unet-tiny", "str", ""),
        ("--optimizer", "adamw", ("adamw", "lamb"), ""),
        ("--out/-o", None, "Path", "required"),
        ("--precision", "auto", ("auto", "fp32", "bf16", "fp16"), ""),
        ("--prediction", None, "str", ""),
        ("--resolution", None, "int", ""),
        ("--resume", False, "bool", ""),
        ("--rewards", None, "str", ""),
        ("--seed", 0, "int", ""),
        ("--steps", 2000, "int", ""),
        ("--tensorboard", False, "bool", ""),
        ("--text-encoder", None, "str", ""),
        ("--time-shift", 1.0, "float", ""),
        ("--time-shift-end", None, "float", ""),
        ("--time-shift-share", 1.0, "float", ""),
        ("--vae", None, "str", ""),
        ("--vae-subfolder", None, "str", ""),
        ("--warmup", 100, "int", ""),
        ("--weight-decay", 0.01, "float", ""),
        ("--workers", None, "int", ""),
    ],
}


# ----------------------------------------------------------------------------
# Every command keeps its options
# ----------------------------------------------------------------------------


def _type_name(param) -> object:
    annotation = param.type_descriptor.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, tuple):
        annotation = typing.get_args(annotation)[0]
    return getattr(annotation, "__name__", str(annotation))


def _row(param) -> tuple:
    many = param.multiple or param.nargs == -1
    default = param.default
    if many:  # None, [] and () all mean "none given"
        default = tuple(default or ())
    elif isinstance(default, pathlib.PurePath):
        default = str(default)
    if param.name == "processes":  # the machine's CPU count
        assert default == (os.cpu_count() or 1)
        default = "cpu_count"
    is_arg = type(param).__name__ == "TyperArgument"
    flags = "/".join(param.opts + param.secondary_opts)
    arity = " ".join(w for w, on in (("required", param.required), ("multiple", many)) if on)
    return (flags.upper() if is_arg else flags, default, _type_name(param), arity)


def _commands(group, path=()):
    """(path, command) for every command, building each lazily registered one."""
    for name in sorted(group.list_commands(None)):
        sub = group.command(name) if hasattr(group, "registry") else group.commands[name]
        if hasattr(sub, "list_commands"):
            yield from _commands(sub, (*path, name))
        else:
            yield " ".join((*path, name)), sub


@pytest.fixture(scope="module")
def tree() -> dict:
    return dict(_commands(typer.main.get_command(app)))


def test_every_command_keeps_its_options_and_defaults(tree) -> None:
    assert sorted(tree) == sorted(PINNED)
    for name, command in tree.items():
        params = command.params
        args = [_row(p) for p in params if type(p).__name__ == "TyperArgument"]
        opts = sorted(_row(p) for p in params if type(p).__name__ != "TyperArgument")
        assert args + opts == PINNED[name], name


def test_options_that_default_to_none_are_typed_optional(tree) -> None:
    """`X | None` wherever None is the default (13 options were typed X with a None default)."""
    checked = 0
    for name, command in tree.items():
        signature = typing.get_type_hints(command.callback.__wrapped__)
        for param in command.params:
            if param.default is None and not param.required and not param.multiple:
                assert type(None) in typing.get_args(signature[param.name]), (name, param.name)
                checked += 1
    assert checked > 40


def test_each_option_default_is_the_config_default() -> None:
    """What the CLI shows as the default reads back to the field's default (parsed text too)."""
    registries = (data.commands, train_cli.commands, evaluate.commands, evaluate.top_commands,
                  experiment.commands)  # fmt: skip
    for registry in registries:
        for target, _ in registry.configs.values():
            for slot in slots(load(target)):
                parser = slot.option.parser
                if parser is not None and slot.default not in (None, MISSING):
                    assert parser.parse(parser.format(slot.default), "--x") == slot.default


# ----------------------------------------------------------------------------
# The configs the commands build
# ----------------------------------------------------------------------------


def build(registry: Commands, name: str, *argv: str | Path):
    """The config the command builds from `argv`, without running its stage."""
    target, overrides = registry.configs[name]
    built = []

    def keep(cfg) -> None:
        built.append(cfg)

    cli = typer.Typer()
    cli.command()(config_callback(load(target), keep, overrides))
    result = runner.invoke(cli, [str(a) for a in argv])
    assert result.exit_code == 0, result.output
    return built[0]


def test_sample_and_geneval_share_the_sampler_options(tmp_path: Path) -> None:
    from miro_train.evaluate import GENEVAL_SAMPLER, GenevalConfig
    from miro_train.sample import SampleConfig
    from miro_train.sampler import SamplerSettings

    cfg = build(train_cli.commands, "sample", "ckpt", "-o", tmp_path, "-w", "3", "-p", "a",
                "--prompt", "b", "--target", "x=1", "--steps", "7")  # fmt: skip
    sampler = SamplerSettings(steps=7, guidance=3.0, target="x=1")
    assert cfg == SampleConfig(Path("ckpt"), tmp_path, ("a", "b"), sampler=sampler)
    assert build(evaluate.commands, "geneval", "ckpt") == GenevalConfig(
        out=Path("geneval"), checkpoint=Path("ckpt"), sampler=GENEVAL_SAMPLER
    )


def test_experiments_one_seed_and_their_sampler(tmp_path: Path) -> None:
    from miro_train.experiments.common import EXPERIMENT_SAMPLER, EvalSettings, TrainSettings
    from miro_train.experiments.compare import CompareConfig

    cfg = build(experiment.commands, "compare", "s", "o", "--seed", "5", "--device", "cpu",
                "--sampler-steps", "9", "--steps", "40", "--rewards", "a, b")  # fmt: skip
    sampler = replace(EXPERIMENT_SAMPLER, seed=5, device="cpu", steps=9)
    assert cfg == CompareConfig(Path("s"), Path("o"), rewards=("a", "b"),
                                train=TrainSettings(steps=40, seed=5, device="cpu"),
                                eval=EvalSettings(sampler=sampler))  # fmt: skip
    assert type(cfg.eval.sampler) is type(EXPERIMENT_SAMPLER) and cfg.eval.sampler.batch_size == 96
    guidance = build(experiment.commands, "guidance", "c", "o", "--scales", "0,2")
    assert guidance.scales == (0.0, 2.0) and guidance.eval.sampler.guidance == 0.0
    single = build(experiment.commands, "single-vs-multi", "s", "o", "--steps", "40")
    assert single.train.eval_every == 40 and single.train_seeds is None
    seeds = build(experiment.commands, "compare", "s", "o", "--train-seeds", "0, 1,2")
    assert seeds.train_seeds == (0, 1, 2) and seeds.train.seed == 0
    single = build(experiment.commands, "single-vs-multi", "s", "o", "--train-seeds", "3,4")
    assert single.train_seeds == (3, 4)
    best = build(experiment.commands, "best-of-n", "o", "--miro", "m")
    assert best.checkpoints == {"miro": Path("m")}
    assert (best.eval.prompts_per_category, best.eval.images_per_prompt) == (4, 2)


def test_train_builds_the_library_default_config(tmp_path: Path) -> None:
    from miro_train.config import TrainConfig

    assert build(train_cli.commands, "train", "s", "-o", "r") == TrainConfig(Path("s"), Path("r"))
    cfg = build(train_cli.commands, "train", "s", "-o", "r", "--rewards", "a,b", "--baseline")
    assert cfg.rewards == ("a", "b") and cfg.baseline


@dataclass(frozen=True)
class _Inner:
    seed: int = field(default=0, metadata=opt())


@dataclass(frozen=True)
class _Outer:
    seed: int = field(default=0, metadata=opt())
    inner: _Inner = field(default_factory=_Inner)


def test_declaration_mistakes_fail_when_the_command_is_built() -> None:
    def keep(cfg) -> None:
        """Never run."""

    with pytest.raises(TypeError, match="the flag --seed is declared twice"):
        config_callback(_Outer, keep, Overrides())
    with pytest.raises(TypeError, match=r"no option declares inner\.sede"):
        config_callback(_Outer, keep, Overrides(same={"inner.sede": "seed"}))
    callback = config_callback(_Outer, keep, Overrides(same={"inner.seed": "seed"}))
    assert list(inspect.signature(callback).parameters) == ["seed"]


def test_a_respelled_option_is_named_in_its_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["experiment", "sweep", str(tmp_path / "c"), str(tmp_path / "o"),
                                 "--sampler-steps", "0"])  # fmt: skip
    assert result.exit_code == 2
    assert "error: --sampler-steps must be positive" in result.stderr


def test_a_command_imports_only_its_own_stage() -> None:
    """`miro data query --help` and `miro --help` never import torch (the trainer's commands do)."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom cli.main import app\n"
        "for argv in (['--help'], ['data', '--help'], ['data', 'query', '--help']):\n"
        "    assert CliRunner().invoke(app, argv).exit_code == 0\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "False"


# ----------------------------------------------------------------------------
# One set of rules for list options
# ----------------------------------------------------------------------------


def test_lists_split_on_commas_and_skip_empty_items() -> None:
    assert items(" a, b,,c ,") == ["a", "b", "c"]
    assert items("") == items(",") == items(" , ") == []
    assert names("clip, aesthetic", "--rewards") == ("clip", "aesthetic")
    assert numbers("0, .5,1e0,", "--values") == (0.0, 0.5, 1.0)
    assert NAMES.format(("a", "b")) == "a,b"
    assert NUMBERS.format((0.0, 0.25, 1.0)) == "0,0.25,1"
    with pytest.raises(MiroError, match=r"^--values: expected comma-separated numbers, got '0,x'$"):
        numbers("0,x", "--values")


def test_key_values_rules() -> None:
    assert key_values(" a = 0.5 ,, b=1 ", "--o") == {"a": 0.5, "b": 1.0}
    assert key_values("a=1,a=0", "--o") == {"a": 0.0}  # the last one counts
    assert key_values("a=none", "--o", missing=("none",)) == {"a": None}
    for text, message in [
        ("a", "--o: 'a' is not NAME=VALUE"),
        ("=1", "--o: '=1' is not NAME=VALUE"),
        ("a=x", "--o: a='x' is not a number"),
        ("a=none", "--o: a='none' is not a number"),
    ]:
        with pytest.raises(MiroError) as err:
            key_values(text, "--o")
        assert str(err.value) == message
    for value in ("nan", "-0.1", "inf"):
        with pytest.raises(MiroError, match=r"is outside \[0, 1\]"):
            key_values(f"a={value}", "--o", bounds=(0.0, 1.0))


def test_degradations_and_targets_are_one_parser() -> None:
    """synth's --degrade and the sampler's --target read the same syntax the same way."""
    assert Degradations.parse(" blur = 0.5 ,, jpeg=0") == Degradations(blur=0.5, jpeg=0.0)
    assert parse_values(" clip = 0.5 ,, aesthetic=1", None) == {"clip": 0.5, "aesthetic": 1.0}
    with pytest.raises(MiroError, match=r"^--degrade: 'blur' is not NAME=VALUE$"):
        Degradations.parse("blur")
    with pytest.raises(MiroError, match=r"^--target: 'clip' is not REWARD=VALUE$"):
        parse_values("clip", None)
    with pytest.raises(MiroError, match=r"^--degrade: blur='x' is not a number$"):
        Degradations.parse("blur=x")
    with pytest.raises(MiroError, match=r"^--negative: clip='x' is not a number$"):
        parse_values("clip=x", None, "--negative")
    with pytest.raises(MiroError, match="unknown degradation 'sharpen'"):
        Degradations.parse("sharpen=1")
    for rates in (Degradations(), Degradations.parse("none"), Degradations(blur=0.125)):
        assert Degradations.parse(rates.format()) == rates
