"""A self-contained HTML report (plots as embedded PNG, no external URL) from a summary dict."""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from ..classes import CLASS_NAMES
from .outputs import CLASS_COLOURS_HEX

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
.facts td { text-align: left; } .swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; vertical-align: middle; }
.note { color: #666; font-size: 0.85em; } img { max-width: 100%; }
"""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(summary: dict) -> list[tuple[str, str]]:
    """(title, base64 PNG) for each plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = [CLASS_COLOURS_HEX[name] for name in CLASS_NAMES]
    figures = []
    timeline = [point for point in summary["timeline"] if point["mood"] is not None]
    if summary["kind"] == "timeline" and len(timeline) > 1:
        times = [point["time_s"] for point in timeline]
        shares = [[point["mood"][name] for point in timeline] for name in CLASS_NAMES]
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.stackplot(times, shares, labels=CLASS_NAMES, colors=colours, alpha=0.9)
        top.set_ylim(0, 1)
        top.set_ylabel("mean probability")
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        all_points = summary["timeline"]
        bottom.plot([p["time_s"] for p in all_points], [p["faces"] for p in all_points], color="#333", label="faces")
        bottom.set_ylabel("faces")
        bottom.set_ylim(bottom=0)
        bottom.set_xlabel("time (s)")
        engagement_axis = bottom.twinx()
        engagement_axis.plot(times, [p["engagement"] for p in timeline], color="#2ca02c", label="engagement")
        engagement_axis.set_ylim(0, 1)
        engagement_axis.set_ylabel("engagement", color="#2ca02c")
        figures.append(("Mood over time", _png(figure)))
        plt.close(figure)
    else:
        means = [sum(p["mood"][name] * p["faces"] for p in timeline) / max(summary["faces"], 1) for name in CLASS_NAMES]
        figure, axis = plt.subplots(figsize=(8, 3.2))
        axis.bar(CLASS_NAMES, means, color=colours)
        axis.set_ylim(0, 1)
        axis.set_ylabel("mean probability over faces")
        figures.append(("Mood", _png(figure)))
        plt.close(figure)
    distribution = summary["class_distribution"]
    figure, axis = plt.subplots(figsize=(8, 3.2))
    axis.barh(CLASS_NAMES[::-1], [distribution[name] for name in CLASS_NAMES[::-1]], color=colours[::-1])
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"share of {summary['faces']} face observations by most likely expression")
    figures.append(("Expression distribution", _png(figure)))
    plt.close(figure)
    return figures


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def render_report(summary: dict) -> str:
    escape = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>classroom-fer analysis</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Classroom expression analysis</h1>",
        "<table class='facts'>",
        f"<tr><td>Sources</td><td>{escape(', '.join(summary['sources']) or 'none')}</td></tr>",
        f"<tr><td>Frames analysed</td><td>{summary['frames']} ({summary['frames_without_faces']} without faces)</td></tr>",
        f"<tr><td>Face observations</td><td>{summary['faces']} (per frame: mean {summary['faces_per_frame']['mean']}, "
        f"max {summary['faces_per_frame']['max']})</td></tr>",
    ]
    if summary["kind"] == "timeline":
        parts.append(f"<tr><td>Duration</td><td>{summary['duration_s']:.1f} s</td></tr>")
    parts.append(f"<tr><td>Engagement indicator</td><td>{_percent(summary['engagement']['overall'])} "
                 "<span class='note'>(heuristic from expressions only, see docs/analysis.md)</span></td></tr></table>")
    if summary["faces"] == 0:
        parts.append("<p><strong>No faces were found.</strong></p>")
    else:
        for title, png in _figures(summary):
            parts.append(f"<h2>{escape(title)}</h2><img alt='{escape(title)}' src='data:image/png;base64,{png}'>")
    if summary["windows"]:
        parts.append(f"<h2>Per {summary['window_s']:g} s window</h2><table><tr><th>from (s)</th><th>faces</th>")
        parts += [f"<th>{escape(name)}</th>" for name in CLASS_NAMES]
        parts.append("<th>engagement</th></tr>")
        for window in summary["windows"]:
            cells = "".join(f"<td>{_percent(window['distribution'][name])}</td>" for name in CLASS_NAMES)
            parts.append(f"<tr><td>{window['start_s']:g}</td><td>{window['faces']}</td>{cells}<td>{_percent(window['engagement'])}</td></tr>")
        parts.append("</table>")
    if summary["students"]:
        parts.append("<h2>Per student (anonymous ids)</h2><table><tr><th>source</th><th>id</th><th>seen</th>"
                     "<th>dominant</th>")
        parts += [f"<th>{escape(name)}</th>" for name in CLASS_NAMES]
        parts.append("<th>engagement</th></tr>")
        for student in summary["students"]:
            dominant = student["dominant"]
            swatch = f"<span class='swatch' style='background:{CLASS_COLOURS_HEX[dominant]}'></span>"
            cells = "".join(f"<td>{_percent(student['share'][name])}</td>" for name in CLASS_NAMES)
            seen = (f"{student['observations']}× ({student['first_s']:g}–{student['last_s']:g} s)"
                    if summary["kind"] == "timeline" else str(student["observations"]))
            parts.append(f"<tr><td class='text'>{escape(Path(student['source']).name)}</td><td>{escape(student['track_id'])}</td>"
                         f"<td>{seen}</td><td class='text'>{swatch}{escape(dominant)}</td>{cells}<td>{_percent(student['engagement'])}</td></tr>")
        parts.append("</table>")
    parts.append("<p class='note'>Ids are anonymous and only follow a face within one source; no face images or "
                 "identities are stored. Expressions are what the model sees on the face, not what a student feels.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(summary: dict, path: str | os.PathLike) -> Path:
    """Write the report for ``summary`` (from :func:`summarize`) to ``path`` as one HTML file."""
    path = Path(path)
    path.write_text(render_report(summary), encoding="utf-8")
    return path
