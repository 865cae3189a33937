"""Schedules in KFP's cron form, and the run-parameter macros KFP's scheduler substitutes.

KFP's cron has six fields, seconds first (robfig/cron): "0 0 3 * * *" is 03:00 every day. The local
scheduler reads the same form, so one expression means the same on a cluster and here.

KFP replaces [[Index]] (1 for a schedule's first run), [[ScheduledTime]] and [[CurrentTime]] (as
20060102150405, or [[ScheduledTime.<Go layout>]] e.g. [[ScheduledTime.2006-01-02]]) in run parameters;
`substitute` does the same locally, e.g. for an input URI per day: gs://b/raw/[[ScheduledTime.2006-01-02]].
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from croniter import croniter

_MACRO = re.compile(r"\[\[(Index|ScheduledTime|CurrentTime)(?:\.([^\]]+))?\]\]")
_GO_LAYOUT = re.compile(r"2006|01|02|15|04|05")  # the numeric tokens of Go's reference time
_STRFTIME = {"2006": "%Y", "01": "%m", "02": "%d", "15": "%H", "04": "%M", "05": "%S"}
DEFAULT_LAYOUT = "20060102150405"  # KFP's format of a time macro without a layout


def validate(expression: str) -> str:
    """The expression if it is a valid six-field cron; else a ValueError saying what KFP expects."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"cron {expression!r} has {len(fields)} fields; KFP wants 6, seconds first: "
            "'0 0 3 * * *' is 03:00 every day"
        )
    if not croniter.is_valid(expression, second_at_beginning=True):
        raise ValueError(f"cron {expression!r} is not a valid cron expression (seconds minutes hours dom month dow)")
    return expression


def fire_times(expression: str, after: dt.datetime) -> Iterator[dt.datetime]:
    """The schedule's times strictly after `after`, in its time zone."""
    times = croniter(validate(expression), after, second_at_beginning=True)
    while True:
        yield times.get_next(dt.datetime)


def substitute(value: str, index: int, scheduled: dt.datetime, now: dt.datetime) -> str:
    """`value` with KFP's recurring-run macros replaced, as KFP's scheduler does for the index-th run."""

    def replace(match: re.Match[str]) -> str:
        name, layout = match.group(1), match.group(2) or DEFAULT_LAYOUT
        if name == "Index":
            return str(index)
        moment = scheduled if name == "ScheduledTime" else now
        return moment.strftime(_GO_LAYOUT.sub(lambda token: _STRFTIME[token.group()], layout))

    return _MACRO.sub(replace, value)
