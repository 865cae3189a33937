"""The style sheet of the project's HTML pages: the evaluation report and the expansion summary (a light
import: no plotting)."""

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.improve td { font-style: italic; background: #fafafa; }
table.context td:first-child { font-weight: 600; white-space: nowrap; }
table.context td { vertical-align: top; word-break: break-word; }
ul.paths { margin: 0.2em 0 0; padding-left: 1.2em; font-family: ui-monospace, Menlo, Consolas, monospace;
           font-size: 0.9em; }
td.failed { color: #b00020; font-weight: 600; }
td.reused { color: #555; }
td.ineligible { color: #a05a00; font-weight: 600; }
td.name { white-space: nowrap; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 0.92em; max-width: 60em; }
footer { margin-top: 3em; color: #888; font-size: 0.85em; }
"""
