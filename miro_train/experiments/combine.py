"""Experiment `combine`: several `compare` experiments of one recipe, each trained on its own
training seeds (on other machines, or on other days), reported as one.

A compare folder keeps every evaluated image's scores (per_image.jsonl, which may be gzipped)
beside the recipe that made them (results.json), so its trained models are no longer needed
to report it: those two files are the experiment's record.
`combine` checks that the recipes agree — everything but the folder, the shards' path and the
devices, which differ between machines —, that the shards are the same data wherever they lay
(their manifest's digest), and that no training seed is counted twice; then it
stacks the seeds' scores (the same prompts and noise) and writes what one `compare
--train-seeds` over all of them would: figures, intervals, paired differences, speed-ups.

A compare's record also lends its baseline arm (`compare --baseline-from`): MIRO conditioned
on other rewards of the same shards shares the baseline, trained and evaluated once. (Other
levels are other shards, whose digest differs, and are refused though a baseline never reads
the bins: the digest does not tell the samples from their bins.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro_data.common import MiroError, first_line, json_safe
from miro_data.options import opt
from miro_data.processes import owns_output
from miro_train.experiments.compare import ARMS, SHARDS_DIGEST, CompareConfig, write_results
from miro_train.experiments.scores import Scores, read_scores, stack_by_step

log = logging.getLogger(__name__)

# where two compares of one recipe may differ: where they ran, not what they ran
LOCAL = ("out", "shards", "train_seeds", "train.device", "eval.sampler.device",
         "eval.sampler.allow_download", "combined_from", "baseline_from")  # fmt: skip
BASELINE_RECIPE = ("train.", "eval.")  # what a baseline's scores depend on, besides the data


PER_IMAGE = ("per_image.jsonl", "per_image.jsonl.gz")  # as compare wrote it, or gzipped


@dataclass(frozen=True)
class CombineConfig:
    """Which compare folders, and where their combined report goes."""

    parts: tuple[Path, ...] = field(metadata=opt(help="Folders of `miro experiment compare`."))
    out: Path = field(metadata=opt("--out", help="Folder for the combined results."))

    def __post_init__(self) -> None:
        if not self.parts:
            raise MiroError("combine needs at least one compare folder")
        if self.out.resolve() in {p.resolve() for p in self.parts}:
            raise MiroError(f"--out {self.out} is one of the folders to combine: choose another")


@dataclass(frozen=True)
class Part:
    """One compare folder as read back: its recipe, seeds, training times and scores."""

    folder: Path
    config: dict[str, Any]
    seeds: tuple[int, ...]
    seconds: dict[str, dict[int, float]]  # arm → seed → training seconds
    scores: dict[str, dict[int, dict[int, Scores]]]  # arm → seed → step → one seed's scores


@owns_output  # one process writes an output folder at a time
def combine(cfg: CombineConfig) -> dict[str, Any]:
    """Read every part, check they are one recipe on distinct seeds, and report them as one.
    Everything is read and checked before the output folder is made."""
    parts = [read_part(folder) for folder in cfg.parts]
    config = same_recipe(parts)
    seeds = [seed for part in parts for seed in part.seeds]
    if len(set(seeds)) < len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        raise MiroError(
            f"training seed(s) {', '.join(map(str, repeated))} are in more than one folder"
        )
    scores = {arm: _stack(parts, arm, seeds) for arm in ARMS}
    seconds = {arm: {s: t for part in parts for s, t in part.seconds[arm].items()} for arm in ARMS}
    # whose baseline a part borrowed, if any, its own results.json says
    config = {**config, "out": str(cfg.out), "train_seeds": seeds, "baseline_from": None,
              "combined_from": [str(p) for p in cfg.parts]}  # fmt: skip
    cfg.out.mkdir(parents=True, exist_ok=True)
    log.info("combining %d compare folders: training seeds %s", len(parts), seeds)
    return write_results(cfg.out, config, seeds, seconds, scores)


def read_part(folder: Path) -> Part:
    """A compare folder's results.json and per_image.jsonl, checked; MiroError if it is none."""
    path = folder / "results.json"
    per_image = next((name for name in PER_IMAGE if (folder / name).is_file()), None)
    if not path.is_file() or per_image is None:
        raise MiroError(
            f"{folder}: not a finished compare experiment (no results.json or per_image.jsonl)"
        )
    try:
        results = json.loads(path.read_text())
        config, seeds = results["config"], tuple(int(s) for s in results["train_seeds"])
        if "seconds_per_seed" not in results:
            raise MiroError(f"{path}: written by an older miro without per-seed training times; "
                            "run the same compare in it again (it reuses its runs and evaluations)")  # fmt: skip
        per_seed = results["seconds_per_seed"]
        seconds = {arm: {int(s): float(t) for s, t in per_seed[arm].items()} for arm in ARMS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MiroError(f"{path}: not a compare's results ({first_line(err)})") from None
    scores: dict[str, dict[int, dict[int, Scores]]] = {arm: {} for arm in ARMS}
    for labels, seed, s in read_scores(folder / per_image, ("arm", "step")):
        if labels["arm"] not in scores or seed not in seeds:
            raise MiroError(f"{folder}/{per_image}: arm {labels['arm']!r}, training seed "
                            f"{seed} is not among its results' arms and seeds")  # fmt: skip
        scores[labels["arm"]].setdefault(seed, {})[int(labels["step"])] = s
    return Part(folder, config, seeds, seconds, scores)


def same_recipe(parts: list[Part]) -> dict[str, Any]:
    """The parts' shared config; MiroError naming the first setting two of them differ in.
    A setting a part's results do not name (it came later) is read as its default; the
    shards' digest, which has none, is compared where both parts recorded it."""
    configs = [_filled(DEFAULT_CONFIG, part.config) for part in parts]
    for part in parts:
        if SHARDS_DIGEST not in part.config:
            log.warning("%s was written before compare recorded its shards' digest: that it "
                        "trained on the same shards as the others is not checked", part.folder)  # fmt: skip
    first = _flat(configs[0])
    for part, config in zip(parts[1:], configs[1:], strict=True):
        other = _flat(config)
        digests = first.get(SHARDS_DIGEST), other.get(SHARDS_DIGEST)
        if None not in digests and digests[0] != digests[1]:
            raise MiroError(f"{parts[0].folder} and {part.folder} trained on different shards "
                            "(other bin edges, levels, filter, shuffle or samples)")  # fmt: skip
        key = _first_difference(first, other, lambda key: key not in (*LOCAL, SHARDS_DIGEST))
        if key is not None:
            raise MiroError(
                f"{parts[0].folder} and {part.folder} are different recipes: {key} is "
                f"{first.get(key)!r} in one and {other.get(key)!r} in the other"
            )
    return configs[0]


DEFAULT_CONFIG = json_safe(CompareConfig(shards=Path("."), out=Path(".")))


def _first_difference(
    first: dict[str, Any], other: dict[str, Any], compared: Callable[[str], bool]
) -> str | None:
    """The first (flat) setting, among the `compared` ones, whose values differ; None if none."""
    differ = (k for k in sorted(set(first) | set(other)) if first.get(k) != other.get(k))
    return next((k for k in differ if compared(k)), None)


def _filled(default: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the settings it lacks taken from `default`, at every depth."""
    out = dict(default) | config
    for key, value in default.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            out[key] = _filled(value, config[key])
    return out


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _stack(parts: list[Part], arm: str, seeds: list[int]) -> dict[int, Scores]:
    """Per step that every seed's part evaluated, the seeds' scores stacked in `seeds` order."""
    owner = {seed: part for part in parts for seed in part.seeds}
    per_seed = [owner[seed].scores[arm].get(seed, {}) for seed in seeds]
    return stack_by_step(per_seed, lambda scores: scores, f"the folders' {arm} evaluations")


# ----------------------------------------------------------------------------
# One compare's baseline arm for another (compare --baseline-from)
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BorrowedBaseline:
    """A finished compare's baseline arm, standing in for another compare's (not trained)."""

    folder: Path
    seconds: dict[int, float]  # training seed → training seconds, as recorded
    per_seed: list[dict[int, Scores]]  # in the borrowing compare's seed order: step → scores

    @classmethod
    def read(cls, folder: Path, config: dict[str, Any], seeds: Sequence[int]) -> BorrowedBaseline:
        """`folder`'s baseline for the compare of `config` (its JSON, with the shards' digest)
        over `seeds`; MiroError unless it trained on the same shards with the same training
        and evaluation settings, and holds every seed and every metric the compare reports."""
        part = read_part(folder)
        where = f"--baseline-from {folder}"
        if part.config.get(SHARDS_DIGEST) != config[SHARDS_DIGEST]:
            raise MiroError(f"{where}: its baseline trained on other shards (or its results "
                            "predate the shards' digest, which is then unknown)")  # fmt: skip
        theirs, mine = (_flat(_filled(DEFAULT_CONFIG, c)) for c in (part.config, config))
        key = _first_difference(
            theirs, mine, lambda k: k.startswith(BASELINE_RECIPE) and k not in LOCAL
        )
        if key is not None:
            raise MiroError(f"{where}: another baseline recipe or evaluation ({key} is "
                            f"{theirs.get(key)!r} there, {mine.get(key)!r} here)")  # fmt: skip
        lacking = [str(s) for s in seeds if s not in part.scores["baseline"]]
        if lacking:
            raise MiroError(f"{where}: no baseline of training seed(s) {', '.join(lacking)}")
        per_seed = [part.scores["baseline"][s] for s in seeds]
        names = dict.fromkeys([*config["eval"]["rewards"], *(config["rewards"] or ())])
        have = set(next(iter(per_seed[0].values())).values)
        unscored = [n for n in names if f"reward/{n}" not in have]
        if unscored:
            raise MiroError(f"{where}: its baseline was not scored on {', '.join(unscored)}")
        return cls(folder, {s: part.seconds["baseline"][s] for s in seeds}, per_seed)

    def scores_of(self, like: Scores) -> dict[int, Scores]:
        """Per step all seeds share, their scores stacked, on the metrics of `like` (MIRO's
        evaluation) only; MiroError if `like` was evaluated on other prompts or metrics."""

        def alike(scores: Scores) -> Scores:
            if scores.prompts != like.prompts or not set(like.values) <= set(scores.values):
                raise MiroError("the baseline was evaluated on other prompts or metrics than MIRO")
            return Scores(scores.prompts, {k: scores.values[k] for k in like.values})

        return stack_by_step(self.per_seed, alike, f"--baseline-from {self.folder}'s seeds")
