"""Bad input: one-line errors that name the file and line (or campaign), and the skip policy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

OnError = Literal["fail", "skip"]


QUOTE_CHARS = 200  # at most this much of an offending input is quoted in a message
MESSAGE_CHARS = 400  # a message kept as an example in the provenance is cut to this
EXAMPLES = 20  # examples kept per run


class InputError(ValueError):
    """Input that cannot be used as it is; the message names the file and line or the campaign.

    The CLI reports it in one line with exit 2; any other exception is a bug and keeps its traceback."""


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """repr() of at most `limit` characters of `text`, saying how long it really was."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


@contextmanager
def as_input_error(what: str = "") -> Iterator[None]:
    """ValueErrors raised in the block (configs built from the user's arguments) are the user's."""
    try:
        yield
    except InputError:
        raise
    except ValueError as error:
        raise InputError(f"{what}{error}"[:MESSAGE_CHARS]) from None


@dataclass
class Problems:
    """Applies the `--on-error` policy and counts what was skipped, for the provenance."""

    on_error: OnError = "fail"
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def report(self, kind: str, message: str) -> None:
        """Raise under `fail`; under `skip`, count it (and keep the first few messages)."""
        if self.on_error == "fail":
            raise InputError(f"{message[:MESSAGE_CHARS]} (use --on-error skip to skip and count such input)")
        self.skipped[kind] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(message[:MESSAGE_CHARS])

    def summary(self) -> dict:
        return {"on_error": self.on_error, "skipped": dict(self.skipped), "examples": self.examples}
