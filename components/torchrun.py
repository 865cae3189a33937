"""`python -m components.torchrun ARGS`: `torchrun ARGS` as the TorchX `dist.ddp` role runs it, with the
error a user acts on as its last line.

When a rank fails, torchrun prints its own traceback and a ChildFailedError report (~70 lines naming pids
and hosts) after the rank's one-line error. Here the ranks' lines (prefixed `[rank]:` by `--tee`) pass
as they are, torchrun's report is dropped, and the last rank error line (`metaheac STEP: error: ...`) or,
for a crash, the pointer to the rank's traceback above, is printed last.
"""

from __future__ import annotations

import re
import subprocess
import sys

_RANK = re.compile(r"^\[\d+\]:")  # a rank's line under --tee
_ERROR = re.compile(r"^\[(\d+)\]:(.*: error: .*)$")


def main(argv: list[str]) -> int:
    process = subprocess.Popen(["torchrun", *argv], stderr=subprocess.PIPE, text=True, bufsize=1)
    assert process.stderr is not None
    error, report = "", False
    for line in process.stderr:
        own = not _RANK.match(line)
        # torchrun's report of a failed rank is a traceback of its own, to the end of its output
        report = report or (own and line.startswith("Traceback (most recent call last):"))
        if report and own:
            continue
        if found := _ERROR.match(line.rstrip("\n")):
            error = f"rank {found[1]}: {found[2].strip()}"
        sys.stderr.write(line)
    code = process.wait()
    if code:
        print(f"torchrun: exit code {code}; {error or 'a rank failed: its traceback is above'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
