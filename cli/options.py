"""Commands built from their stage's config: every option is declared once, on a config field.

`Commands` is one group's table. `@commands.config("synth", "miro_data.synth:SynthConfig",
args=("out",))` registers a function that takes the built config; the command's parameters
come from the config's fields (see miro_data/options.py): the field's type (`X | None` when it
may be None, a Literal as Click's choices, a tuple as a repeatable option), its default, its
flags and help, and the fields of the config dataclasses nested in it (SampleConfig.sampler).
Per command, `args` are the positional fields; `flags` respells a field's option, `hide`
leaves a field at its default, `same` gives a field another field's value, `fixed` a value of
its own. Parameters of the command's own — the function's parameters after the config, and
those of `inputs`, whose result sets fields no single option can (prompts read from a file) —
are ordinary Typer `Annotated` parameters.

A command is built only when it runs or its help is asked for: building it imports its
stage's module, and stages import torch and DuckDB, so `miro data query` does not pay for the
trainer. Listing a group shows each command's first docstring line without building it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import operator
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass
from typing import Annotated, Any, ClassVar

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

from miro_data.options import Option, option_of

Build = Callable[[], Callable[..., Any]]  # makes a command's callback (with its signature)


@dataclass(frozen=True)
class Slot:
    """A config field set on the command line: its dotted path, type, option and default."""

    path: str  # "sampler.steps": the field `steps` of the field `sampler`
    type: Any
    option: Option
    default: Any  # MISSING: the option is required

    @property
    def name(self) -> str:  # the Python parameter name: unique, an identifier
        return self.path.replace(".", "__")


@dataclass(frozen=True)
class Overrides:
    """How one command departs from its config's declarations (see the module docstring)."""

    args: tuple[str, ...] = ()
    flags: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    hide: tuple[str, ...] = ()
    same: Mapping[str, str] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inputs: Callable[..., dict[str, Any]] | None = None


# ----------------------------------------------------------------------------
# Config fields → parameters
# ----------------------------------------------------------------------------


def field_default(owner: Any, field: dataclasses.Field) -> Any:
    """The field's value in a config instance, or its declared default in a config class."""
    if not isinstance(owner, type):
        return getattr(owner, field.name)
    if field.default_factory is not MISSING:
        return field.default_factory()
    return field.default


def slots(owner: Any, prefix: str = "") -> Iterator[Slot]:
    """Every field of a config class (or instance) that declares an option, nested ones included.

    A field without an option whose default is a config dataclass contributes that config's
    options, with the defaults of that instance (GenevalConfig's sampler has its own batch size).
    """
    hints = typing.get_type_hints(owner if isinstance(owner, type) else type(owner))
    for field in dataclasses.fields(owner):
        option, default = option_of(field), field_default(owner, field)
        if option is not None:
            yield Slot(prefix + field.name, hints[field.name], option, default)
        elif dataclasses.is_dataclass(default) and not isinstance(default, type):
            yield from slots(default, f"{prefix}{field.name}.")


def _optional(tp: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, (tp, False) otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return functools.reduce(operator.or_, args), True
    return tp, False


def cli_type(slot: Slot) -> Any:
    """The type Typer reads: text for a parsed option, a list for a tuple, `| None` kept."""
    tp, optional = _optional(slot.type)
    if slot.option.parser is not None:
        tp = str
    elif typing.get_origin(tp) is tuple:
        tp = list[typing.get_args(tp)[0]]  # type: ignore[misc]
    return tp | None if optional else tp


def cli_default(slot: Slot) -> Any:
    if slot.default is MISSING:
        return inspect.Parameter.empty
    if slot.default is not None and slot.option.parser is not None:
        return slot.option.parser.format(slot.default)
    return tuple(slot.default) if isinstance(slot.default, tuple) else slot.default


def flags_of(slot: Slot, overrides: Overrides) -> tuple[str, ...]:
    """The declared flags, the command's own spelling, or --field-name (a bool: --x/--no-x)."""
    flags = overrides.flags.get(slot.path) or slot.option.flags
    if flags:
        return tuple(flags)
    dashed = slot.path.rsplit(".", 1)[-1].replace("_", "-")
    return (f"--{dashed}/--no-{dashed}",) if _optional(slot.type)[0] is bool else (f"--{dashed}",)


def parameter(slot: Slot, overrides: Overrides) -> inspect.Parameter:
    help_text = slot.option.help or None
    info: Any
    if slot.path in overrides.args:
        info = typer.Argument(help=help_text)
    else:
        info = typer.Option(*flags_of(slot, overrides), help=help_text)
    return inspect.Parameter(
        slot.name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[cli_type(slot), info],
        default=cli_default(slot),
    )


def field_value(slot: Slot, raw: Any, overrides: Overrides) -> Any:
    """What the field gets from the option's value: parsed text, a tuple for a list."""
    if raw is None:
        return None
    if slot.option.parser is not None:
        flag = next(f for f in flags_of(slot, overrides) if f.startswith("--"))
        return slot.option.parser.parse(raw, flag.split("/")[0])
    return tuple(raw) if isinstance(raw, list) else raw


def assemble(owner: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """A config class built (or a config instance replaced into) from values by dotted path.

    Nested configs start from their default instance, so a field no option sets keeps its
    default (the experiments' sampler keeps its batch size); each level's checks run.
    """
    kwargs = {}
    for field in dataclasses.fields(owner):
        path = prefix + field.name
        if path in values:
            kwargs[field.name] = values[path]
        elif any(p.startswith(path + ".") for p in values):
            kwargs[field.name] = assemble(field_default(owner, field), values, path + ".")
    if isinstance(owner, type):
        return owner(**kwargs)
    return dataclasses.replace(owner, **kwargs)


# ----------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------


def _own_parameters(function: Callable[..., Any], skip: int = 0) -> list[inspect.Parameter]:
    """The function's parameters after the first `skip`, their annotations evaluated (the
    skipped config's type may be imported for type checking only)."""
    params = list(inspect.signature(function).parameters.values())[skip:]
    return [
        p.replace(
            kind=inspect.Parameter.KEYWORD_ONLY, annotation=_evaluated(p.annotation, function)
        )
        for p in params
    ]


def _evaluated(annotation: Any, function: Callable[..., Any]) -> Any:
    if not isinstance(annotation, str):  # modules without `from __future__ import annotations`
        return annotation
    return eval(annotation, function.__globals__)  # the module's own names, as typing does


def config_callback(config: type, run: Callable[..., Any], overrides: Overrides) -> Callable:
    """A Typer callback whose parameters are the config's options and the command's own."""
    every = list(slots(config))
    _check(config.__name__, every, overrides)
    skipped = {*overrides.hide, *overrides.same, *overrides.fixed}
    offered = [s for s in every if s.path not in skipped]
    positional = sorted(
        (s for s in offered if s.path in overrides.args), key=lambda s: overrides.args.index(s.path)
    )
    params = [parameter(s, overrides) for s in positional]
    params += [parameter(s, overrides) for s in offered if s.path not in overrides.args]
    inputs = _own_parameters(overrides.inputs) if overrides.inputs else []
    own = _own_parameters(run, skip=1)
    params += inputs + own

    def callback(**given: Any) -> Any:
        values = {s.path: field_value(s, given[s.name], overrides) for s in offered}
        values |= {path: values[source] for path, source in overrides.same.items()}
        values |= dict(overrides.fixed)
        if overrides.inputs is not None:
            values |= overrides.inputs(**{p.name: given[p.name] for p in inputs})
        return run(assemble(config, values), **{p.name: given[p.name] for p in own})

    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__doc__ = run.__doc__
    return callback


def _check(command: str, every: Sequence[Slot], overrides: Overrides) -> None:
    """Overrides name fields that have options, and no two options share a flag: mistakes in a
    declaration, found when the command is built (tests/test_cli_options.py builds them all)."""
    paths = {s.path for s in every}
    named = [*overrides.args, *overrides.flags, *overrides.hide, *overrides.fixed,
             *overrides.same, *overrides.same.values()]  # fmt: skip
    unknown = [p for p in named if p not in paths]
    if unknown:
        raise TypeError(f"{command}: no option declares {', '.join(unknown)}")
    skipped = {*overrides.hide, *overrides.same, *overrides.fixed, *overrides.args}
    seen: set[str] = set()
    for slot in every:
        flags = flags_of(slot, overrides) if slot.path not in skipped else ()
        for flag in (f for decl in flags for f in decl.split("/")):
            if flag in seen:
                raise TypeError(f"{command}: the flag {flag} is declared twice")
            seen.add(flag)


def load(target: str) -> type:
    """'package.module:Name' → the object, imported now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class Commands:
    """One group's commands, each built on first use (see the module docstring)."""

    def __init__(self) -> None:
        self.builders: dict[str, Build] = {}
        self.docs: dict[str, str] = {}
        self.configs: dict[str, tuple[str, Overrides]] = {}  # what each config command builds

    def config(self, name: str, config: str, **overrides: Any) -> Callable:
        """Register `run(cfg, …own parameters)` as the command `name` of the config `config`
        ('module:Class'); keyword arguments are the command's `Overrides`."""
        spec = Overrides(**overrides)

        def register(run: Callable[..., Any]) -> Callable[..., Any]:
            self._add(name, run, lambda: config_callback(load(config), run, spec))
            self.configs[name] = (config, spec)
            return run

        return register

    def plain(self, name: str) -> Callable:
        """Register a command whose parameters are its own (one that builds no config)."""

        def register(run: Callable[..., Any]) -> Callable[..., Any]:
            self._add(name, run, lambda: run)
            return run

        return register

    def include(self, other: Commands) -> None:
        self.builders |= other.builders
        self.docs |= other.docs
        self.configs |= other.configs

    def _add(self, name: str, run: Callable[..., Any], build: Build) -> None:
        self.builders[name] = build
        self.docs[name] = inspect.getdoc(run) or ""

    def group(self, base: type[TyperGroup] = TyperGroup) -> type[TyperGroup]:
        """The Click group class that finds these commands (pass as `typer.Typer(cls=…)`)."""
        bases = (base,) if issubclass(base, LazyGroup) else (LazyGroup, base)
        return type(f"Lazy{base.__name__}", bases, {"registry": self})


class LazyGroup(TyperGroup):
    """A group whose registered commands are built when first run or shown."""

    registry: ClassVar[Commands]

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return names + [n for n in self.registry.builders if n not in names]

    def command(self, name: str) -> Any:
        """The real command (built now if it was not yet); None for an unknown name."""
        if name not in self.commands and name in self.registry.builders:
            info = CommandInfo(name=name, callback=self.registry.builders[name]())
            self.commands[name] = self._from_info(info)
        return self.commands.get(name)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """For listings: a built command, or a stand-in carrying the docstring."""
        if cmd_name in self.commands or cmd_name not in self.registry.builders:
            return super().get_command(ctx, cmd_name)
        info = CommandInfo(name=cmd_name, callback=_nothing, help=self.registry.docs[cmd_name])
        return self._from_info(info)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args:
            self.command(args[0])  # the command about to run (or show its help) is real
        return super().resolve_command(ctx, args)

    def _from_info(self, info: CommandInfo) -> Any:
        return get_command_from_info(
            info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode
        )


def _nothing() -> None:
    """A listed command's stand-in callback: never run."""
