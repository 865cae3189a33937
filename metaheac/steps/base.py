"""A pipeline step: a dataclass of typed arguments plus `run`. The CLI, the TorchX components and
the KFP components are all generated from these classes, so a step's interface is written once."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal


def arg(default: Any = dataclasses.MISSING, help: str = "") -> Any:
    """A step argument; `help` becomes the CLI help and the component docs."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class Step:
    """Base of every step. Subclasses set `name` and the resources a cluster should give them."""

    name: ClassVar[str]
    cpu: ClassVar[int] = 2
    memory_gb: ClassVar[int] = 8
    gpu: ClassVar[int] = 0

    def run(self) -> dict:
        raise NotImplementedError

    @classmethod
    def arguments(cls) -> list[Argument]:
        hints = typing.get_type_hints(cls)
        return [Argument.of(f, hints[f.name]) for f in dataclasses.fields(cls)]

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

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @classmethod
    def of(cls, f: dataclasses.Field, hint: Any) -> Argument:
        choices = None
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            hint = type(choices[0])
        if hint not in (str, int, float, bool):
            raise TypeError(f"step argument {f.name}: type {hint} is not str, int, float, bool or a Literal")
        return cls(f.name, hint, f.default, f.metadata.get("help", ""), choices)
