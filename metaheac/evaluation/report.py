"""The evaluation report: one self-contained HTML file, plus flat metrics for KFP's metrics artifacts.

The HTML has no external assets and no JavaScript: plots are PNGs inlined as base64, drawn with
matplotlib's Agg canvas through `Figure` (never pyplot, so no global backend state and no display).
Metric conventions are those of `metaheac.evaluation.metrics`.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from metaheac import __version__
from metaheac.evaluation import metrics
from metaheac.evaluation.intervals import table_intervals
from metaheac.evaluation.style import STYLE
from metaheac.runtime import storage

REPORT_NAME = "report.html"
GROUP_SPLITS = {"cold": "test_cold", "hot": "test_hot"}
GROUP_TITLES = {"cold": "Cold campaigns (S ≤ T)", "hot": "Hot campaigns (S > T)"}
GROUP_MARKERS = {"cold": ("o", "#1f77b4"), "hot": ("^", "#ff7f0e")}
ROC_POINTS = 400


# ---------------------------------------------------------------------------------------------------------
# Entry points


def write_report(
    path_or_dir: str,
    results: dict[str, pd.DataFrame],
    summary: dict[str, dict],
    title: str,
    context: Mapping[str, Any],
) -> None:
    """Write the report to `path_or_dir` (a `.html` path, else `report.html` inside that folder).

    `results` maps method -> scored rows (in table order), `summary` is `metrics.compare(results)`, and
    `context` (dataset, parameters, seeds, timings, ...) is shown as a table; nested dicts are flattened.
    The write is atomic through `metaheac.runtime.storage`, to a local path or a gs:// URI.
    """
    is_file = path_or_dir.lower().endswith((".html", ".htm"))
    uri = path_or_dir if is_file else storage.join(path_or_dir, REPORT_NAME)
    storage.write_text(uri, render_report(results, summary, title, context))


def render_report(
    results: dict[str, pd.DataFrame], summary: dict[str, dict], title: str, context: Mapping[str, Any]
) -> str:
    """The report as one HTML string (see `write_report`)."""
    if not results:
        raise ValueError("no scored methods to report on")
    fraction = _top_fraction(summary)
    sections = [
        f"<h1>{_esc(title)}</h1>",
        "<h2>Run</h2>",
        _context_table(context),
        "<h2>Metrics</h2>",
        _metrics_table(summary, table_intervals(results, metrics.FOCUS_METHOD)),
        _counts_note(summary),
        _metrics_note(summary, fraction),
        "<h2>ROC curves</h2>",
        _roc_section(results, summary),
        f"<h2>Precision and recall at top k% of each campaign ({_pct(fraction)} in the table)</h2>",
        _precision_recall_section(results, fraction),
        "<h2>Per-campaign AUC</h2>",
        _per_campaign_section(results, summary),
    ]
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + f"\n<footer>Generated {generated} by metaheac {__version__}.</footer>\n</body>\n</html>\n"
    )


def kfp_metrics(summary: dict[str, dict]) -> dict[str, float]:
    """Flat scalars for KFP `Metrics.log_metric`: `{group}/{method}/{metric}` -> value.

    Groups are cold, hot and all; metrics include the campaign and row counts. NaN values are left out,
    since KFP serializes metadata as JSON, which has no NaN.
    """
    flat = {}
    for method, groups in summary.items():
        for group, values in groups.items():
            for key, value in values.items():
                if not math.isnan(value):
                    flat[f"{group}/{method}/{key}"] = float(value)
    return flat


def kfp_classification(frame: pd.DataFrame, n_points: int = 200, top_fraction: float = 0.05) -> dict[str, list]:
    """Inputs of KFP `ClassificationMetrics` for one method's scored rows, pooled over its campaigns.

    Keys match KFP's argument names: `log_roc_curve(fpr, tpr, threshold)` with at most `n_points` points
    (empty lists when a class is missing), and `log_confusion_matrix(categories, matrix)` where a row
    is predicted positive when it is among the top `top_fraction` of its campaign (ties to the earlier
    row); matrix[actual][predicted] with categories [negative, positive].
    """
    labels, scores = frame["label"].to_numpy(), frame["score"].to_numpy()
    fpr, tpr, threshold = metrics.roc_points(labels, scores, max_points=n_points)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        fpr, tpr, threshold = np.zeros(0), np.zeros(0), np.zeros(0)
    chosen = metrics.top_fraction_mask(frame, top_fraction)
    positive = labels == 1
    matrix = [
        [int((~positive & ~chosen).sum()), int((~positive & chosen).sum())],
        [int((positive & ~chosen).sum()), int((positive & chosen).sum())],
    ]
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "threshold": threshold.tolist(),
        "categories": ["negative", "positive"],
        "matrix": matrix,
    }


# ---------------------------------------------------------------------------------------------------------
# Text sections


def _esc(value: object) -> str:
    return html.escape(str(value))


def _pct(fraction: float) -> str:
    return metrics.fraction_label(fraction)


def _top_fraction(summary: dict[str, dict]) -> float:
    """The fraction behind the summary's `p@X%` key."""
    key = next(k for _, k in metrics.table_columns(summary) if k.startswith("p@"))
    return float(key[2:-1]) / 100


def _flatten(context: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in context.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _format_context_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(_format_context_value(v) for v in value)
    if isinstance(value, str | int) or value is None:
        return str(value)
    return json.dumps(value, default=str, sort_keys=True)


def _context_cell(value: Any) -> str:
    """A value of the Run table; several paths as a list under their common folder, not one joined line."""
    if isinstance(value, list | tuple) and len(value) > 1 and all(isinstance(v, str) for v in value):
        common = os.path.commonprefix(list(value))
        common = common[: common.rfind("/") + 1]
        items = "".join(f"<li>{_esc(v[len(common):])}</li>" for v in value)
        return f"{len(value)} under {_esc(common or '-')}<ul class=\"paths\">{items}</ul>"
    return _esc(_format_context_value(value))


def _context_table(context: Mapping[str, Any]) -> str:
    if not context:
        return '<p class="note">No run context was given.</p>'
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_context_cell(v)}</td></tr>" for k, v in _flatten(context))
    return f'<table class="context"><tbody>{rows}</tbody></table>'


def _metric_cell(value: float, best: float) -> str:
    if math.isnan(value):
        return '<td class="num">–</td>'
    text = f"{value:.4f}"
    return f'<td class="num">{"<b>" + text + "</b>" if value == best else text}</td>'


def _interval_row(cells: list[str], label: str = "95% interval") -> str:
    return f'<tr class="interval"><td>{label}</td>' + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>"


def _span(interval: tuple[float, float, float] | None, signed: bool = False) -> str:
    if interval is None or math.isnan(interval[1]):
        return "–"
    sign = "+" if signed else ""
    return f"[{interval[1]:{sign}.3f}, {interval[2]:{sign}.3f}]"


def _metrics_table(summary: dict[str, dict], ci: dict | None = None) -> str:
    columns = metrics.table_columns(summary)
    best = metrics.best_per_column(summary) if len(summary) > 1 else {}  # a lone method is no one's best
    per_group = len(columns) // len(metrics.TABLE_GROUPS)
    head = (
        '<tr><th rowspan="2">Method</th>'
        + "".join(f'<th colspan="{per_group}">{_esc(GROUP_TITLES[g])}</th>' for g in metrics.TABLE_GROUPS)
        + "</tr><tr>"
        + "".join(f"<th>{_esc(key.upper())}</th>" for _, key in columns)
        + "</tr>"
    )
    body = [
        f"<tr><td>{_esc(m)}</td>"
        + "".join(_metric_cell(summary[m][g][k], best.get((g, k), math.nan)) for g, k in columns)
        + "</tr>"
        + (_interval_row([_span(ci[m].get(c)) for c in columns]) if ci and m in ci else "")
        for m in summary
    ]
    gains = metrics.improvement(summary)
    if gains is not None:
        cells = "".join(f'<td class="num">{"–" if math.isnan(x) else f"{x:+.1f}%"}</td>' for x in gains.values())
        body.append(f'<tr class="improve"><td>Improve ({_esc(metrics.FOCUS_METHOD)})</td>{cells}</tr>')
        if ci and "gap" in ci:
            # of the absolute difference, not of the % above it
            gaps = [_span(ci["gap"].get(c), signed=True) for c in columns]
            body.append(_interval_row(gaps, "difference, 95% interval"))
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _counts(groups: dict[str, dict]) -> str:
    return "; ".join(
        f"{g}: {groups[g]['campaigns']:,} campaigns, {groups[g]['rows']:,} rows" for g in metrics.TABLE_GROUPS
    )


def _counts_note(summary: dict[str, dict]) -> str:
    counts = {m: _counts(groups) for m, groups in summary.items()}
    if len(set(counts.values())) == 1:
        same = ", the same for every method" if len(counts) > 1 else ""
        return f'<p class="note">Scored rows{same}: {_esc(next(iter(counts.values())))}.</p>'
    items = "".join(f"<li>{_esc(m)}: {_esc(c)}</li>" for m, c in counts.items())
    return f'<p class="note">Methods scored different rows:</p><ul class="note">{items}</ul>'


def _metrics_note(summary: dict[str, dict], fraction: float) -> str:
    pct = _pct(fraction)
    improve = (
        f" “Improve” is {_esc(metrics.FOCUS_METHOD)}’s (the recommended method’s) relative gain over the best "
        "other method of each column; its interval is that of the difference (recommended − best other). "
        "Intervals are 95% percentile intervals of a bootstrap over campaigns, paired across methods."
        if metrics.improvement(summary) is not None
        else ""
    )
    return (
        f'<p class="note">Best value per column in bold; “–” means undefined (no such campaigns, or only one '
        f"class). AUC pools all rows of the group; GAUC averages per-campaign AUCs over campaigns whose rows "
        f"hold both classes. P@{pct} and R@{pct}: each campaign selects its top k = max(1, ⌈{pct}·n⌉) rows "
        f"by score; P = positives selected / k, R = positives selected / positives of the campaign, averaged "
        f"over campaigns with at least one positive.{improve}</p>"
    )


# ---------------------------------------------------------------------------------------------------------
# Plots


def _figure(draw: Callable[[Figure], None], width: float, height: float, alt: str, caption: str) -> str:
    """Draw into a fresh Agg figure and return it as an inline-PNG <figure> with its caption."""
    fig = Figure(figsize=(width, height), layout="constrained")
    draw(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _colors(methods: list[str]) -> dict[str, tuple]:
    """One color per method, the same in every plot."""
    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _group_rows(frame: pd.DataFrame, group: str) -> pd.DataFrame:
    return frame[frame["split"] == GROUP_SPLITS[group]]


def _empty_panel(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777", wrap=True)


def _line_width(method: str) -> float:
    return 2.4 if method == metrics.FOCUS_METHOD else 1.4


def _draw_roc(ax: Axes, results: dict[str, pd.DataFrame], summary: dict[str, dict], group: str) -> None:
    colors = _colors(list(results))
    drawn = 0
    for method, frame in results.items():
        rows = _group_rows(frame, group)
        if rows.empty or rows["label"].nunique() < 2:
            continue
        fpr, tpr = metrics.roc_curve(rows["label"].to_numpy(), rows["score"].to_numpy(), ROC_POINTS)
        auc = summary[method][group]["auc"]
        label = f"{method} (AUC {'n/a' if math.isnan(auc) else f'{auc:.4f}'})"
        ax.plot(fpr, tpr, color=colors[method], lw=_line_width(method), label=label)
        drawn += 1
    ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1)
    ax.set(title=GROUP_TITLES[group], xlabel="False positive rate", ylabel="True positive rate")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    if drawn:
        ax.legend(loc="lower right", fontsize="small")
    else:
        _empty_panel(ax, f"no {group} rows with both classes")


def _roc_section(results: dict[str, pd.DataFrame], summary: dict[str, dict]) -> str:
    def draw(fig: Figure) -> None:
        for ax, group in zip(fig.subplots(1, 2), metrics.TABLE_GROUPS, strict=True):
            _draw_roc(ax, results, summary, group)

    return _figure(
        draw,
        11,
        5.4,
        "ROC curves for cold and hot campaigns",
        "Each line is one method's ROC curve over all rows of the cold (left) or hot (right) campaigns pooled: "
        "moving the score threshold down, the share of positives found (y) against the share of negatives "
        "let through (x). A curve closer to the top-left corner ranks better; the area under it is the AUC "
        "in the legend, and the dashed diagonal is a random ranking (AUC 0.5).",
    )


def _pr_curves(results: dict[str, pd.DataFrame], group: str) -> dict[str, pd.DataFrame]:
    curves = {}
    for method, frame in results.items():
        rows = _group_rows(frame, group)
        if not rows.empty:
            curves[method] = metrics.precision_recall_curve(rows)
    return curves


def _draw_pr(ax: Axes, curves: dict[str, pd.DataFrame], column: str, colors: dict, fraction: float) -> None:
    for method, curve in curves.items():
        ax.plot(curve.index * 100, curve[column], color=colors[method], lw=_line_width(method), label=method)
    ax.axvline(fraction * 100, ls=":", color="#555", lw=1)
    ax.set(xlabel="Top k% of each campaign's rows", ylabel=column.capitalize(), xlim=(0, 50))
    ax.grid(alpha=0.3)


def _precision_recall_section(results: dict[str, pd.DataFrame], fraction: float) -> str:
    colors = _colors(list(results))
    curves = {group: _pr_curves(results, group) for group in metrics.TABLE_GROUPS}

    def draw(fig: Figure) -> None:
        axes = fig.subplots(2, 2, sharex=True)
        for col, group in enumerate(metrics.TABLE_GROUPS):
            for row, column in enumerate(("precision", "recall")):
                ax = axes[row, col]
                _draw_pr(ax, curves[group], column, colors, fraction)
                ax.set_title(f"{column.capitalize()} — {GROUP_TITLES[group]}")
                if row == 0:
                    ax.set_xlabel("")  # the shared axis is labelled once, under the recall row
                if not curves[group]:
                    _empty_panel(ax, f"no {group} campaigns")
        drawn = list(dict.fromkeys(m for group_curves in curves.values() for m in group_curves))
        handles = [Line2D([], [], color=colors[m], lw=_line_width(m)) for m in drawn]
        if drawn:
            fig.legend(handles, drawn, loc="outside lower center", ncols=min(5, len(drawn)), fontsize="small")

    return _figure(
        draw,
        11,
        7.4,
        "Precision and recall at top k% for cold and hot campaigns",
        "Each campaign's rows are ranked by score and its top k% selected. Precision (top) is the share of "
        "selected rows that are positive, recall (bottom) the share of the campaign's positives that were "
        "selected; both are averaged over campaigns with at least one positive. The dotted line marks the "
        f"{_pct(fraction)} of the table. Higher is better; a random ranking gives the base rate as precision "
        "and k% as recall.",
    )


def _best_by_gauc(summary: dict[str, dict], exclude: str | None = None) -> str:
    """The method with the highest GAUC over all campaigns (first in order when none has one)."""
    candidates = [m for m in summary if m != exclude]
    scored = [m for m in candidates if not math.isnan(summary[m]["all"]["gauc"])]
    return max(scored, key=lambda m: summary[m]["all"]["gauc"]) if scored else candidates[0]


def _paired_auc(results: dict[str, pd.DataFrame], focus: str, other: str) -> pd.DataFrame:
    """Per-campaign AUC of two methods side by side, with the campaign's group; campaigns both can rank."""
    frames = [results[focus], results[other]]
    aucs = pd.concat({m: metrics.per_campaign_auc(results[m]) for m in (focus, other)}, axis=1).dropna()
    splits = pd.concat(f[["campaign", "split"]].drop_duplicates("campaign") for f in frames)
    split = splits.drop_duplicates("campaign").set_index("campaign")["split"]
    group = split.map({s: g for g, s in GROUP_SPLITS.items()})
    return aucs.assign(group=group.reindex(aucs.index))


def _draw_scatter(ax: Axes, paired: pd.DataFrame, focus: str, other: str) -> None:
    for group, (marker, color) in GROUP_MARKERS.items():
        part = paired[paired["group"] == group]
        if not part.empty:
            ax.scatter(part[other], part[focus], marker=marker, color=color, s=22, alpha=0.75, label=group)
    low = min(paired[focus].min(), paired[other].min(), 0.5) - 0.02
    ax.plot([low, 1], [low, 1], ls="--", color="#999", lw=1)
    ax.set(xlim=(low, 1.005), ylim=(low, 1.005), aspect="equal", xlabel=f"AUC of {other}", ylabel=f"AUC of {focus}")
    ax.set_title(f"Per-campaign AUC (above the diagonal: {focus} better)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)


def _draw_bars(ax: Axes, paired: pd.DataFrame, focus: str, other: str) -> None:
    gain = (paired[focus] - paired[other]).rename("gain")
    ordered = paired.assign(gain=gain).sort_values("gain", ascending=False)
    colors = [GROUP_MARKERS.get(g, ("", "#777"))[1] for g in ordered["group"]]
    ax.bar(np.arange(len(ordered)), ordered["gain"], width=1.0, color=colors)
    ax.axhline(0, color="#555", lw=1)
    ax.set(xlabel="Campaigns, sorted by AUC difference", ylabel=f"AUC of {focus} − AUC of {other}")
    ax.set_title("Per-campaign AUC difference (blue: cold, orange: hot)")
    ax.set_xlim(-0.5, len(ordered) - 0.5)
    ax.grid(axis="y", alpha=0.3)


def _wins(paired: pd.DataFrame, focus: str, other: str) -> str:
    parts = []
    for group in metrics.TABLE_GROUPS:
        part = paired[paired["group"] == group]
        if not part.empty:
            parts.append(f"{int((part[focus] > part[other]).sum())} of {len(part)} {group} campaigns")
    return " and ".join(parts)


def _per_campaign_section(results: dict[str, pd.DataFrame], summary: dict[str, dict]) -> str:
    if len(results) < 2:
        return '<p class="note">A per-campaign comparison needs two methods; only one was scored.</p>'
    focus = metrics.FOCUS_METHOD if metrics.FOCUS_METHOD in results else _best_by_gauc(summary)
    other = _best_by_gauc(summary, exclude=focus)
    paired = _paired_auc(results, focus, other)
    if paired.empty:
        return (
            f'<p class="note">{_esc(focus)} and {_esc(other)} share no campaign with both classes, '
            "so there is no per-campaign AUC to compare.</p>"
        )

    def draw(fig: Figure) -> None:
        scatter_ax, bar_ax = fig.subplots(1, 2, width_ratios=[1, 1.3])
        _draw_scatter(scatter_ax, paired, focus, other)
        _draw_bars(bar_ax, paired, focus, other)

    return _figure(
        draw,
        11,
        5.0,
        f"Per-campaign AUC of {focus} against {other}",
        f"{focus} against {other} (the best other method by GAUC), one test campaign per point (left) or bar "
        f"(right). A point above the diagonal, or a bar above zero, is a campaign whose users {focus} ranks "
        f"better. {focus} wins on {_wins(paired, focus, other)}. Campaigns with a single class are left out.",
    )
