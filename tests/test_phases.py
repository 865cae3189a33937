"""Phase timings: what a recording collects, and each phase's own peak memory."""

import numpy as np

from metaheac.runtime.phases import note_steps, phase, recording


def test_a_recording_collects_its_phases_in_order_and_prints_a_line_each():
    lines: list[str] = []
    with phase("unrecorded"):
        pass
    with recording(lines.append) as log:
        with phase("first"):
            with phase("inner"):  # inside another phase: not recorded
                pass
        with phase("second"):
            pass
    assert [p.name for p in log.phases] == ["first", "second"]
    assert [line.split(":")[0] for line in lines] == ["phase first", "phase second"]
    assert all(p["seconds"] >= 0 and p["cpu_seconds"] >= 0 for p in log.to_list())


def test_a_phase_peak_is_its_own():
    with recording() as log:
        with phase("big"):
            block = np.ones(400 * 2**20 // 8)  # 400 MB, touched
            del block
            sum(range(2_000_000))  # CPU time
        with phase("small"):
            pass
    big, small = log.phases
    assert big.reset and small.reset  # Linux resets the high-water mark
    assert big.peak_rss_gb - small.peak_rss_gb > 0.3
    assert big.cpu_seconds > small.cpu_seconds


def test_a_phase_keeps_the_steps_noted_inside_it_alone():
    note_steps(9, 9.0, 9.0)  # no recording: nothing to note
    with recording() as log:
        with phase("steps"):
            note_steps(4, 1.25, 2.5)
        with phase("none"):
            pass
    stepped, plain = log.phases
    assert (stepped.steps, stepped.step_seconds, stepped.step_cpu_seconds) == (4, 1.25, 2.5)
    assert stepped.line().endswith("; 4 steps in 1.2 s") and plain.steps is None
    assert "steps" not in plain.line()
