"""summary.html of an expansion run: the campaigns (failed ones in red, with their reason; reused ones and
stale ones, whose seeds fell below the minimum, flagged; `metaheac.online.refresh`), each one's reach
tiers with the recall its held-out seeds give (`tiers.recall_estimate`), a reach curve (audience size
against expected recall, drawn as inline SVG: no plotting library), the overlap of the campaigns' audiences
at each tier (Jaccard), and the run's totals."""

from __future__ import annotations

import html
import math

from metaheac.evaluation.style import STYLE

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
_W, _H, _PAD = 640, 320, 48  # the reach curve's size and margin, in pixels


def _esc(value: object) -> str:
    return html.escape(str(value))


def _cell(row: dict, column: str) -> str:
    value = row[column]
    if column == "status" and row.get("stale"):
        value = f"{value}: last audience, stale"
    kind = "num" if isinstance(value, int) else {"status": row["status"], "campaign": "name"}.get(column, "")
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return f'<td class="{kind}">{_esc(text)}</td>'


def _campaigns(rows: list[dict]) -> str:
    columns = {"campaign": "Campaign", "status": "Status", "seeds_used": "Seeds used",
               "unknown_seed_uids": "Unknown seed uids", "excluded_users": "Excluded", "audience": "Audience",
               "error": "Reason"}
    head = "".join(f"<th>{title}</th>" for title in columns.values())
    body = "".join("<tr>" + "".join(_cell(r, c) for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def _tiers(rows: list[dict]) -> str:
    """One row per (campaign, tier): size, held-out seeds recovered, recall [interval], lift; then why each
    campaign's users were excluded."""
    lines = []
    for row in rows:
        for tier in row.get("tiers", []):
            interval = "-" if math.isnan(tier["recall_low"]) else (
                f"{_pct(tier['recall_low'])} – {_pct(tier['recall_high'])}")
            flag = "".join(f" ({what})" for what, on in (("low confidence", row.get("low_confidence")),
                                                          ("stale", row.get("stale"))) if on)
            lift = "-" if math.isnan(tier["lift"]) else f"{tier['lift']:.1f}x"
            lines.append(f'<tr><td class="name">{_esc(row["campaign"] + flag)}</td><td>{_esc(tier["tier"])}</td>'
                         f'<td class="num">{tier["size"]:,}</td>'
                         f'<td class="num">{tier["held_out_recovered"]} of {row["held_out_seeds"]}</td>'
                         f'<td class="num">{_pct(tier["recall"])}</td><td class="num">{interval}</td>'
                         f'<td class="num">{lift}</td></tr>')
    if not lines:
        return '<p class="note">No campaign was expanded.</p>'
    head = "".join(f"<th>{t}</th>" for t in ("Campaign", "Tier", "Users", "Held-out seeds recovered",
                                              "Expected recall", "95% interval", "Lift"))
    excluded = "".join(f'<tr><td class="name">{_esc(r["campaign"])}</td><td>{_esc(_reasons(r["excluded"]))}</td></tr>'
                       for r in rows if r.get("excluded"))
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>\n"
            '<p class="note">Expected recall: the share of the held-out seeds (kept out of the adaptation) that the '
            "tier holds when the campaign is expanded without them; Wilson 95% interval over those seeds. Lift: "
            "the recall over the share of the candidates the tier takes (1x is a random pick). Precision is not "
            "estimated: how many converters the user base holds is not known from the seeds.</p>\n"
            "<h3>Excluded users, by first reason</h3>\n"
            f"<table class=\"context\"><tbody>{excluded}</tbody></table>")


def _reasons(excluded: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {count:,}" for reason, count in excluded.items())


def _reach_curve(rows: list[dict]) -> str:
    """Audience size (x) against expected recall (y): each campaign's recall at every size up to its largest
    tier (a step at each held-out seed found), its tiers marked with their intervals."""
    curves = [r for r in rows if r.get("held_out_seeds") and r.get("tiers")]
    if not curves:
        return '<p class="note">No reach curve: no campaign had enough seeds to hold some out.</p>'
    most = max(r["tiers"][-1]["size"] for r in curves)

    def x(size: float) -> float:
        return _PAD + (_W - 2 * _PAD) * size / most

    def y(recall: float) -> float:
        return _H - _PAD - (_H - 2 * _PAD) * recall

    parts = [f'<line x1="{_PAD}" y1="{y(0)}" x2="{_W - _PAD}" y2="{y(0)}" stroke="#444"/>',
             f'<line x1="{_PAD}" y1="{y(0)}" x2="{_PAD}" y2="{y(1)}" stroke="#444"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{_PAD - 6}" y="{y(tick) + 4}" text-anchor="end" font-size="11">{tick:.0%}</text>'
                     f'<line x1="{_PAD}" y1="{y(tick)}" x2="{_W - _PAD}" y2="{y(tick)}" stroke="#eee"/>')
    for tick in range(5):
        size = most * tick / 4
        parts.append(f'<text x="{x(size)}" y="{y(0) + 16}" text-anchor="middle" font-size="11">{size:,.0f}</text>')
    parts.append(f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle" font-size="12">audience size (users)</text>'
                 f'<text x="14" y="{_H / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {_H / 2})">expected recall</text>')
    legend = []
    for k, row in enumerate(curves):
        color = _COLORS[k % len(_COLORS)]
        points, recall = [f"{x(0):.1f},{y(0):.1f}"], 0.0
        for size, value in row["reach"]:
            points += [f"{x(size):.1f},{y(recall):.1f}", f"{x(size):.1f},{y(value):.1f}"]
            recall = value
        points.append(f"{x(row['tiers'][-1]['size']):.1f},{y(recall):.1f}")
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(points)}"/>')
        for tier in row["tiers"]:
            if not math.isnan(tier["recall_low"]):
                parts.append(f'<line x1="{x(tier["size"])}" y1="{y(tier["recall_low"])}" x2="{x(tier["size"])}" '
                             f'y2="{y(tier["recall_high"])}" stroke="{color}" stroke-width="1.5"/>'
                             f'<circle cx="{x(tier["size"])}" cy="{y(tier["recall"])}" r="4" fill="{color}">'
                             f'<title>{_esc(row["campaign"])} {_esc(tier["tier"])}: {_pct(tier["recall"])}</title>'
                             "</circle>")
        legend.append(f'<span style="color:{color}">&#9632;</span> {_esc(row["campaign"])}')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
           f'aria-label="reach curve">{"".join(parts)}</svg>')
    return (f"<figure>{svg}<figcaption>{' &nbsp; '.join(legend)}<br>Each line: the share of a campaign's "
            "held-out seeds found within the first N users of the audience expanded without them; dots: its "
            "tiers, with their 95% intervals.</figcaption></figure>")


def _overlap(overlap: dict[str, dict[str, float]], names: list[str]) -> str:
    """One Jaccard table per tier label: campaign x campaign."""
    if len(names) < 2 or not overlap:
        return '<p class="note">Fewer than two audiences: no overlap to show.</p>'
    tables = []
    for tier, pairs in overlap.items():
        head = "".join(f"<th>{_esc(n)}</th>" for n in names)
        body = "".join(
            f'<tr><th>{_esc(a)}</th>' + "".join(
                '<td class="num">' + ("" if a == b else _jaccard_text(pairs.get(f"{a} | {b}", pairs.get(f"{b} | {a}"))))
                + "</td>" for b in names) + "</tr>" for a in names)
        tables.append(f"<h3>Tier {_esc(tier)}</h3><table><thead><tr><th></th>{head}</tr></thead>"
                      f"<tbody>{body}</tbody></table>")
    return ("\n".join(tables) + '\n<p class="note">Jaccard index of two campaigns\' audiences at a tier: the users '
            "in both over the users in either (blank: one of them has no such tier).</p>")


def _jaccard_text(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def render(summary: dict, metrics: dict) -> str:
    """The page (module doc)."""
    rows = summary["campaigns"]
    names = [r["campaign"] for r in rows if r["audience"]]
    totals = "".join(f'<tr><td>{_esc(k.replace("_", " "))}</td><td class="num">{v:,}</td></tr>'
                     for k, v in metrics.items())
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audience expansion</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>Audience expansion</h1>\n"
            f"<p class=\"note\">Model version {_esc(summary['model_version'])}. Audiences: "
            "audiences/&lt;campaign&gt;.parquet (uid, score, rank, tier) beside this page; a tier holds its "
            "smaller tiers.</p>\n"
            f"<h2>Campaigns</h2>\n{_campaigns(rows)}\n<h2>Reach tiers and expected recall</h2>\n{_tiers(rows)}\n"
            f"<h2>Reach curve</h2>\n{_reach_curve(rows)}\n"
            f"<h2>Overlap between audiences</h2>\n{_overlap(summary.get('overlap', {}), names)}\n"
            f"<h2>Totals</h2>\n<table class=\"context\"><tbody>{totals}</tbody></table>\n</body></html>\n")
