"""The HTML report and the KFP metric payloads, on synthetic scored rows."""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaheac.evaluation import metrics, report
from metaheac.runtime import storage

METHODS = {"LR": 0.3, "MMoE+pre-training": 0.7, metrics.FOCUS_METHOD: 1.0}
SECTIONS = (
    "<h2>Run</h2>",
    "<h2>Metrics</h2>",
    "<h2>ROC curves</h2>",
    "<h2>Precision and recall",
    "<h2>Per-campaign AUC</h2>",
)
CONTEXT = {"dataset": {"uri": "gs://bucket/data/v1", "campaigns": 12}, "seeds": [0, 1], "timings_s": {"train": 12.5},
           "scores": ["gs://bucket/run/adapt-lr-1of2/output", "gs://bucket/run/adapt-lr-2of2/output"]}


def scored_rows(signal: float, seed: int, campaigns: range = range(12), hot_from: int = 6) -> pd.DataFrame:
    """Campaigns of 60-150 rows, positives shifted up by `signal`; campaigns >= hot_from are hot."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in campaigns:
        n = int(rng.integers(60, 150))
        labels = (rng.random(n) < 0.2).astype(int)
        split = "test_hot" if c >= hot_from else "test_cold"
        parts.append(pd.DataFrame({"campaign": c, "split": split, "label": labels}))
        parts[-1]["score"] = rng.normal(size=n) + signal * labels
    return pd.concat(parts, ignore_index=True)


def three_methods() -> dict[str, pd.DataFrame]:
    return {m: scored_rows(signal, seed) for seed, (m, signal) in enumerate(METHODS.items())}


class Skeleton(HTMLParser):
    """Checks that every non-void tag is closed in order; collects <img> sources and heading text."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")


def parse(text: str) -> Skeleton:
    parser = Skeleton()
    parser.feed(text)
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    assert text.startswith("<!DOCTYPE html>") and "<title>" in text
    assert "<script" not in text and 'src="http' not in text  # self-contained, no JavaScript
    return parser


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    results = three_methods()
    summary = metrics.compare(results)
    folder = tmp_path_factory.mktemp("report")
    report.write_report(str(folder), results, summary, "Offline <evaluation>", CONTEXT)
    return (folder / report.REPORT_NAME).read_text(encoding="utf-8"), summary


def test_report_has_every_section_and_inline_plots(full_report: tuple[str, dict]) -> None:
    text, _ = full_report
    parsed = parse(text)
    assert "<h1>Offline &lt;evaluation&gt;</h1>" in text
    assert [s in text for s in SECTIONS] == [True] * len(SECTIONS)
    assert len(parsed.images) == text.count("<img") == 3
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("<figcaption>") == 3


def test_report_shows_context_and_summary_values(full_report: tuple[str, dict]) -> None:
    text, summary = full_report
    for key, value in (("dataset.uri", "gs://bucket/data/v1"), ("seeds", "0, 1"), ("timings_s.train", "12.5")):
        assert f"<td>{key}</td><td>{value}</td>" in text
    best = metrics.best_per_column(summary)
    for method, groups in summary.items():
        assert f"<td>{method}</td>" in text
        for group, key in metrics.table_columns(summary):
            value = f"{groups[group][key]:.4f}"
            assert value in text
            if groups[group][key] == best[(group, key)]:
                assert f"<b>{value}</b>" in text
    assert 'class="improve"' in text
    # several paths: a list under their common folder, not one joined line
    assert ('<td>scores</td><td>2 under gs://bucket/run/<ul class="paths"><li>adapt-lr-1of2/output</li>'
            "<li>adapt-lr-2of2/output</li></ul></td>") in text


def write_and_read(tmp_path: Path, results: dict[str, pd.DataFrame]) -> str:
    path = tmp_path / "out.html"
    report.write_report(str(path), results, metrics.compare(results), "edge", {})
    return path.read_text(encoding="utf-8")


def test_single_method_report(tmp_path: Path) -> None:
    text = write_and_read(tmp_path, {"MetaHeac": scored_rows(1.0, 0)})
    assert len(parse(text).images) == 2
    assert "needs two methods" in text and 'class="improve"' not in text and "<b>" not in text
    assert "Improve" not in text


def test_cold_only_method_and_nan_aucs(tmp_path: Path) -> None:
    hot_one_class = scored_rows(0.5, 1).assign(label=lambda f: np.where(f["split"] == "test_hot", 0, f["label"]))
    results = {
        "LR": scored_rows(0.3, 0, campaigns=range(6)),  # cold campaigns only
        "MMoE+pre-training": hot_one_class,  # hot AUCs all NaN
        "Shared-Bottom": scored_rows(0.6, 2),
    }
    text = write_and_read(tmp_path, results)
    assert len(parse(text).images) == 3
    assert ">–</td>" in text  # NaN cells
    assert "Shared-Bottom" in text and "against" in text  # no recommended method: best by GAUC is the focus


def test_methods_without_two_class_campaigns(tmp_path: Path) -> None:
    negatives = scored_rows(0.0, 0).assign(label=0)
    text = write_and_read(tmp_path, {"LR": negatives, metrics.FOCUS_METHOD: negatives.assign(score=1.0)})
    assert len(parse(text).images) == 2
    assert "share no campaign" in text


def test_report_to_gcs(gcs_bucket: str) -> None:
    results = {"MetaHeac": scored_rows(1.0, 0, campaigns=range(4), hot_from=2)}
    report.write_report(f"gs://{gcs_bucket}/runs/1", results, metrics.compare(results), "gcs", CONTEXT)
    assert "<h2>Metrics</h2>" in storage.read_text(f"gs://{gcs_bucket}/runs/1/{report.REPORT_NAME}")


def test_kfp_metrics_are_flat_finite_scalars() -> None:
    results = three_methods()
    results["LR"] = results["LR"][results["LR"]["split"] == "test_cold"]
    flat = report.kfp_metrics(metrics.compare(results))
    focus = metrics.FOCUS_METHOD
    assert flat[f"cold/{focus}/auc"] == pytest.approx(metrics.summarize(results[focus])["cold"]["auc"])
    assert flat["all/LR/rows"] == len(results["LR"])
    assert "hot/LR/auc" not in flat and flat["hot/LR/campaigns"] == 0  # NaN left out, counts kept
    assert all(re.fullmatch(r"(cold|hot|all)/[^/]+/[a-z@%0-9]+", key) for key in flat)
    assert len(flat) == 3 * 3 * 6 - 4
    json.dumps(flat, allow_nan=False)


def test_kfp_classification_payload() -> None:
    frame = scored_rows(1.0, 0)
    payload = report.kfp_classification(frame, n_points=50)
    assert set(payload) == {"fpr", "tpr", "threshold", "categories", "matrix"}
    assert len(payload["fpr"]) == len(payload["tpr"]) == len(payload["threshold"]) == 50
    assert payload["categories"] == ["negative", "positive"]
    (tn, fp), (fn, tp) = payload["matrix"]
    assert tn + fp + fn + tp == len(frame) and fn + tp == frame["label"].sum()
    sizes = frame.groupby("campaign").size()
    assert fp + tp == sum(max(1, math.ceil(0.05 * n)) for n in sizes)
    json.dumps(payload, allow_nan=False)


def test_kfp_classification_with_one_class_has_no_curve() -> None:
    payload = report.kfp_classification(scored_rows(0.0, 0).assign(label=1))
    assert payload["fpr"] == payload["tpr"] == payload["threshold"] == []
    assert payload["matrix"][0] == [0, 0]
