"""A pipeline step: a dataclass of typed arguments plus `run`, and the facts its shells need, declared once
on the class (artifacts, published outputs, distributed, cached, resources). The CLI is built from these
classes and `components/generate.py` writes the TorchX and KFP components from them."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from metaheac.data.errors import InputError


def arg(default: Any = dataclasses.MISSING, help: str = "", minimum: float | None = None,
        maximum: float | None = None, strict: bool = False) -> Any:
    """A step argument; `help` becomes the CLI help and the component docs. A number may have bounds
    (`strict`: both exclusive), checked when the step is made: a value out of them is an InputError."""
    bounds = {"minimum": minimum, "maximum": maximum, "strict": strict}
    return dataclasses.field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class Artifact:
    """A step argument that is the URI of an artifact another step reads or writes; `kind` names its KFP
    type (steps import no orchestration code)."""

    kind: Literal["Dataset", "Model", "Artifact"]
    output: bool = False
    many: bool = False  # a comma-separated list of URIs, one per upstream task


@dataclass(frozen=True)
class Published:
    """An extra KFP output artifact, filled after the step from a file of its output folder."""

    kind: Literal["Metrics", "ClassificationMetrics", "HTML"]
    file: str


@dataclass(frozen=True)
class Resources:
    """What a cluster gives one task of the step."""

    cpu: int = 2
    memory_gb: int = 8
    gpu: int = 0


@dataclass
class Step:
    """Base of every step. A subclass sets `name` and, where they differ from these defaults, its shell facts."""

    name: ClassVar[str]
    artifacts: ClassVar[Mapping[str, Artifact]] = {}  # arguments that are artifact URIs; the rest are parameters
    published: ClassVar[Mapping[str, Published]] = {}
    distributed: ClassVar[bool] = False  # runs under torchrun: one process per GPU, gradients averaged
    cached: ClassVar[bool] = True  # a pipeline may reuse a result whose inputs and arguments are unchanged
    resources: ClassVar[Resources] = Resources()

    def __post_init__(self) -> None:
        for argument in self.arguments():
            problem = argument.out_of_bounds(getattr(self, argument.name))
            if problem:
                raise InputError(f"{argument.flag} {getattr(self, argument.name)}: {problem}")

    def run(self) -> dict:
        raise NotImplementedError

    @classmethod
    def resources_for(cls, arguments: Mapping[str, Any]) -> Resources:
        """The resources of a task with these (compile-time) arguments; a step whose needs depend on them
        (train: only meta-training wants a GPU) overrides this."""
        return cls.resources

    @classmethod
    def arguments(cls) -> list[Argument]:
        hints = typing.get_type_hints(cls)
        return [Argument.of(f, hints[f.name]) for f in dataclasses.fields(cls)]

    @classmethod
    def parameters(cls) -> list[Argument]:
        """The arguments that are plain values, not artifacts."""
        return [a for a in cls.arguments() if a.name not in cls.artifacts]

    def to_argv(self) -> list[str]:
        """The CLI arguments that reproduce this step: `metaheac <name> <argv>`."""
        argv = [self.name]
        for argument in self.arguments():
            value = getattr(self, argument.name)
            if argument.kind is bool:
                argv += [argument.flag] if value else []
            elif value is not None:
                argv += [argument.flag, str(value)]
        return argv


@dataclass(frozen=True)
class Argument:
    name: str
    kind: type  # str, int, float or bool
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    optional: bool = False  # `int | None`, `str | None`: None means "not given"
    minimum: float | None = None
    maximum: float | None = None
    strict: bool = False  # the bounds are exclusive

    def out_of_bounds(self, value: Any) -> str:
        """What is wrong with a value out of the bounds ("" when it is in them, or not given)."""
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return ""
        low = self.minimum is not None and (value <= self.minimum if self.strict else value < self.minimum)
        high = self.maximum is not None and (value >= self.maximum if self.strict else value > self.maximum)
        if not (low or high):
            return ""
        sign = (">", "<") if self.strict else (">=", "<=")
        wanted = [f"{s} {b:g}" for s, b in zip(sign, (self.minimum, self.maximum), strict=True) if b is not None]
        return f"must be {' and '.join(wanted)}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @classmethod
    def of(cls, f: dataclasses.Field, hint: Any) -> Argument:
        choices = None
        optional = False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            inner = [t for t in typing.get_args(hint) if t is not type(None)]
            optional = len(inner) == 1 and len(typing.get_args(hint)) == 2
            hint = inner[0] if optional else hint
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            hint = type(choices[0])
        if hint not in (str, int, float, bool) or (optional and (hint is bool or choices)):
            raise TypeError(f"step argument {f.name}: type {hint} is not str, int, float, bool, a Literal or "
                            "`int | None`, `float | None`, `str | None`")
        if optional and f.default is not None:
            raise TypeError(f"step argument {f.name}: an optional argument defaults to None")
        bounds = {k: f.metadata.get(k) for k in ("minimum", "maximum")}
        return cls(f.name, hint, f.default, f.metadata.get("help", ""), choices, optional, **bounds,
                   strict=bool(f.metadata.get("strict")))
