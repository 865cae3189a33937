"""Bad input: one-line errors that name the file and line (or campaign), and the skip policy."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

OnError = Literal["fail", "skip"]


class InputError(ValueError):
    """Input that cannot be used as it is; the message names the file and line or the campaign."""


@dataclass
class Problems:
    """Applies the `--on-error` policy and counts what was skipped, for the provenance."""

    on_error: OnError = "fail"
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def report(self, kind: str, message: str) -> None:
        """Raise under `fail`; under `skip`, count it (and keep the first few messages)."""
        if self.on_error == "fail":
            raise InputError(f"{message} (use --on-error skip to skip and count such input)")
        self.skipped[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(message)

    def summary(self) -> dict:
        return {"on_error": self.on_error, "skipped": dict(self.skipped), "examples": self.examples}
