"""The audit as one self-contained HTML file: inline CSS, inline SVG plots drawn here, no scripts, no URLs."""

from __future__ import annotations

from html import escape
from typing import Any

from crome.builder.hub.audit import AuditReport, Section, format_value
from crome.builder.hub.shortcuts_html import CSS as SHORTCUT_CSS, shortcuts_section, viewer_section

CHOSEN, REJECTED = "#2563eb", "#f97316"
SERIES_COLORS = {"upgrade": "#16a34a", "degrade": "#dc2626", "rows": "#6366f1"}
SOURCE_TYPES = {"run": "run dir", "folder": "Parquet folder", "file": "Parquet file", "hub": "Hub dataset"}
SAMPLE_CHARS = 1200  # longer answers are cut in the report (the data keeps them whole)

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#ffffff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 64px; }
header h1 { margin:0; font-size:26px; letter-spacing:-0.01em; }
header p { margin:4px 0 0; color:var(--muted); word-break:break-all; }
h2 { font-size:18px; margin:0 0 4px; }
.note { color:var(--muted); margin:0 0 12px; font-size:13px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 20px; margin-top:18px; }
.stats { display:grid; grid-template-columns:repeat(4, 1fr); gap:12px; margin-top:18px; }
.stat { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.stat b { display:block; font-size:24px; }
.stat span { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:18px; align-items:start; }
.grid3 { display:grid; grid-template-columns:repeat(3, 1fr); gap:12px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; font-size:13px; }
th, td { text-align:left; padding:5px 10px; border-bottom:1px solid var(--line); }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.num, th.num { text-align:right; }
h3 { font-size:14px; margin:14px 0 6px; }
svg { display:block; max-width:100%; height:auto; }
svg text { font:11px -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill:#374151; }
.legend { display:flex; gap:14px; font-size:12px; color:var(--muted); margin:4px 0 8px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
.sample { border:1px solid var(--line); border-radius:8px; padding:10px 12px; margin:10px 0; }
.sample .meta { color:var(--muted); font-size:12px; margin-bottom:6px; }
.sample .prompt { font-weight:600; margin-bottom:8px; white-space:pre-wrap; }
.sample pre { white-space:pre-wrap; word-break:break-word; margin:0; font:12px/1.45 ui-monospace, Menlo, Consolas, monospace;
              background:var(--bg); border-radius:6px; padding:8px; }
.sample .c { border-left:3px solid #2563eb; } .sample .r { border-left:3px solid #f97316; }
.side { font-size:11px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:6px 0 2px; }
.empty { color:var(--muted); font-style:italic; }
"""


def _table(section: Section) -> str:
    if not section.rows:
        return '<p class="empty">none</p>'
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in section.rows) and
               not isinstance(section.rows[0][i], bool) for i in range(len(section.columns))]
    head = "".join(f'<th class="{"num" if n else ""}">{escape(c.replace("_", " "))}</th>'
                   for c, n in zip(section.columns, numeric))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if n else ""}">{escape(format_value(c, v))}</td>'
                         for c, v, n in zip(section.columns, row, numeric)) + "</tr>"
        for row in section.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _legend(items: list[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{escape(n)}</span>' for n, c in items) + "</div>"


def _nice_max(v: float) -> float:
    """A round axis maximum at or above v."""
    if v <= 0:
        return 1
    magnitude = 10 ** (len(str(int(v))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= v:
            return step * magnitude
    return 10 * magnitude


def hbar_svg(title: str, items: list[tuple[str, list[float]]], series: list[tuple[str, str]], *, width: int = 560,
             percent: bool = False, reference: float | None = None) -> str:
    """Horizontal (stacked) bars: one row per item, one segment per series."""
    if not items:
        return '<p class="empty">nothing to plot</p>'
    label_w, value_w, bar_h, gap, top = 200, 64, 18, 8, 6
    plot_w = width - label_w - value_w
    height = top + len(items) * (bar_h + gap) + 18
    vmax = 1.0 if percent else _nice_max(max(sum(v) for _, v in items))
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    for i, (label, values) in enumerate(items):
        y = top + i * (bar_h + gap)
        shown = label if len(label) <= 32 else label[:31] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h - 5}" text-anchor="end">{escape(shown)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{plot_w}" height="{bar_h}" fill="#f1f5f9" rx="3"/>')
        x = float(label_w)
        for (name, color), v in zip(series, values):
            w = plot_w * (v / vmax if vmax else 0)
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}" rx="3">'
                             f"<title>{escape(label)} {escape(name)}: {v:g}</title></rect>")
            x += w
        total = sum(values)
        text = f"{100 * total:.1f}%" if percent else f"{total:,.0f}"
        parts.append(f'<text x="{width - 4}" y="{y + bar_h - 5}" text-anchor="end">{text}</text>')
    axis_y = top + len(items) * (bar_h + gap) + 10
    if reference is not None:
        rx = label_w + plot_w * reference / vmax
        parts.append(f'<line x1="{rx:.1f}" x2="{rx:.1f}" y1="{top - 4}" y2="{axis_y - 6}" stroke="#111827" '
                     f'stroke-dasharray="4 3" stroke-width="1"/>')
    for frac in (0, 0.5, 1):
        tx = label_w + plot_w * frac
        tick = f"{100 * frac * vmax:.0f}%" if percent else f"{frac * vmax:,g}"
        parts.append(f'<text x="{tx:.1f}" y="{axis_y}" text-anchor="middle" fill="#6b7280">{tick}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(kind: str, chosen: list[int], rejected: list[int], bin_width: int, means: dict[str, float],
                  *, width: int = 360, height: int = 210) -> str:
    """Overlaid length histograms of both sides for one kind, with each side's mean as a dashed line."""
    left, right, top, bottom = 34, 10, 22, 30
    pw, ph = width - left - right, height - top - bottom
    n = len(chosen)
    ymax = _nice_max(max(chosen + rejected + [1]))
    bw = pw / n
    title = f"{kind}: answer length in characters"
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<text x="{left}" y="14" font-weight="600">{escape(kind)}</text>']
    for frac in (0, 0.5, 1):
        y = top + ph * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef2f7"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">{frac * ymax:g}</text>')
    for counts, color in ((chosen, CHOSEN), (rejected, REJECTED)):
        for i, c in enumerate(counts):
            if c:
                h = ph * c / ymax
                parts.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{top + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                             f'height="{h:.1f}" fill="{color}" fill-opacity="0.55"/>')
    for side, color in (("chosen", CHOSEN), ("rejected", REJECTED)):
        if side in means and means[side] is not None:
            x = left + min(means[side] / bin_width, n) * bw
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="{color}" '
                         f'stroke-width="1.5" stroke-dasharray="4 3"><title>mean {side}: {means[side]:.0f} chars</title></line>')
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#9ca3af"/>')
    for i in (0, n // 2, n - 1):
        label = f"≥{i * bin_width:,}" if i == n - 1 else f"{i * bin_width:,}"
        parts.append(f'<text x="{left + i * bw + bw / 2:.1f}" y="{top + ph + 14}" text-anchor="middle" fill="#6b7280">{label}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 2}" text-anchor="middle" fill="#6b7280">characters</text>')
    parts.append("</svg>")
    return "".join(parts)


def _section_html(section: Section, plot: str = "") -> str:
    note = f'<p class="note">{escape(section.note)}</p>' if section.note else ""
    body = f'<div class="grid2"><div>{plot}</div><div>{_table(section)}</div></div>' if plot else _table(section)
    return f"<section><h2>{escape(section.title)}</h2>{note}{body}</section>"


def _sample_html(kind: str, s: dict[str, Any]) -> str:
    def cut(text: str) -> str:
        return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + f" … [{len(text) - SAMPLE_CHARS:,} more characters]"

    meta = [s["augmentation"], f"preference {s['preference']:.1f}", s["split"]]
    if s.get("attribute"):
        meta.insert(1, f"attribute {s['attribute']}")
    if s.get("prompt_turns", 1) > 1:
        meta.append(f"{s['prompt_turns']} prompt messages, last user turn shown")
    first, second = ("first", "second") if kind == "neutral" else ("chosen", "rejected")
    return (
        f'<div class="sample"><div class="meta">{escape(" · ".join(str(m) for m in meta))} · <code>{escape(s["id"][:23])}…</code></div>'
        f'<div class="prompt">{escape(cut(s["prompt"]))}</div>'
        f'<div class="side">{first}</div><pre class="c">{escape(cut(s["chosen"]))}</pre>'
        f'<div class="side">{second}</div><pre class="r">{escape(cut(s["rejected"]))}</pre></div>'
    )


def render_html(report: AuditReport) -> str:
    """The whole report as one HTML document with no external resource."""
    sec = {s.key: s for s in report.sections}
    shortcut = {r["kind"]: r for r in sec["length_shortcut"].records()}
    ties = sum(r["rows"] for r in sec["preference"].records() if r["preference"] == 0.5)
    rejected = sum(r["rows"] for r in sec["rejections"].records()) if "rejections" in sec else None
    all_short = shortcut.get("all", {}).get("share_chosen_longer")
    stats = [
        (f"{report.rows:,}", "pairs"),
        (f"{100 * all_short:.1f}%" if all_short is not None else "—", "strict pairs: chosen longer"),
        (f"{100 * ties / report.rows:.1f}%" if report.rows else "—", "ties (neutral)"),
        (f"{rejected:,}" if rejected is not None else "n/a", "rejections"),
    ]
    out = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>crome audit: {escape(report.source)}</title><style>{CSS}{SHORTCUT_CSS}</style></head><body><main>",
        f"<header><h1>crome audit</h1><p>{escape(report.source)} · {escape(SOURCE_TYPES.get(report.source_type, report.source_type))} · "
        f"{report.files} Parquet file{'s' if report.files != 1 else ''}</p></header>",
        '<div class="stats">' + "".join(f'<div class="stat"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in stats) + "</div>",
    ]

    # The length shortcut first: it is what this dataset exists to break.
    short_items = [(r["kind"], [r["share_chosen_longer"] or 0.0]) for r in sec["length_shortcut"].records()]
    out.append(_section_html(sec["length_shortcut"], hbar_svg(
        "share of strict pairs whose chosen answer is longer", short_items, [("chosen longer", "#6366f1")],
        percent=True, reference=0.5)))
    out.append(shortcuts_section(report.shortcuts))

    means = {(r["kind"], r["side"]): r["mean_chars"] for r in sec["lengths"].records()}
    hists = "".join(
        histogram_svg(kind, sides["chosen"], sides["rejected"], report.histogram.bin_width,
                      {side: means.get((kind, side)) for side in ("chosen", "rejected")})
        for kind, sides in report.histogram.counts.items()
    )
    out.append(
        f"<section><h2>{escape(sec['lengths'].title)}</h2>"
        f'<p class="note">Histograms of answer length by side; dashed lines are the means. Bins of '
        f"{report.histogram.bin_width:,} characters; the last bin holds everything longer.</p>"
        f"{_legend([('chosen (first)', CHOSEN), ('rejected (second)', REJECTED)])}"
        f'<div class="grid3">{hists}</div><h3>Statistics</h3>{_table(sec["lengths"])}</section>'
    )

    attr = sec["by_attribute"].records()
    attr_plot = _legend([("upgrade", SERIES_COLORS["upgrade"]), ("degrade", SERIES_COLORS["degrade"])]) + hbar_svg(
        "causal rows by attribute", [(r["attribute"], [r["upgrade"], r["degrade"], r["rows"] - r["upgrade"] - r["degrade"]]) for r in attr],
        [("upgrade", SERIES_COLORS["upgrade"]), ("degrade", SERIES_COLORS["degrade"]), ("other", "#9ca3af")])
    out.append(_section_html(sec["by_attribute"], attr_plot))

    if "rejections" in sec:
        rej = sec["rejections"].records()
        out.append(_section_html(sec["rejections"], hbar_svg(
            "rejections by reason", [(f"{r['stage']} / {r['reason']}", [r["rows"]]) for r in rej], [("rows", "#64748b")])))

    fmt = sec["formatting"].records()
    fmt_items = [(f"{r['kind']} {r['side']}", [r["markdown_rate"] or 0.0]) for r in fmt]
    list_items = [(f"{r['kind']} {r['side']}", [r["list_rate"] or 0.0]) for r in fmt]
    out.append(
        f"<section><h2>{escape(sec['formatting'].title)}</h2><p class=\"note\">{escape(sec['formatting'].note)}</p>"
        f'<div class="grid2"><div><h3>markdown rate</h3>{hbar_svg("markdown rate by kind and side", fmt_items, [("markdown", "#0ea5e9")], percent=True)}</div>'
        f'<div><h3>list rate</h3>{hbar_svg("list rate by kind and side", list_items, [("lists", "#a855f7")], percent=True)}</div></div>'
        f"{_table(sec['formatting'])}</section>"
    )

    kinds = sec["by_kind"].records()
    out.append(_section_html(sec["by_kind"], hbar_svg("rows by kind", [(r["kind"], [r["rows"]]) for r in kinds], [("rows", "#6366f1")])))
    for key in ("by_split", "split_overlap", "by_augmentation", "preference", "duplicates"):
        if key in sec:  # split_overlap: only with more than one split
            out.append(_section_html(sec[key]))

    out.append(viewer_section(report.shortcuts.get("counterfactuals", []), note=report.shortcuts.get("definitions"),
                              explanations=report.shortcuts.get("explanations")))
    samples = "".join(
        f"<h3>{escape(kind)}</h3>" + "".join(_sample_html(kind, s) for s in rows) for kind, rows in report.samples.items()
    )
    out.append(f"<section><h2>Samples</h2><p class=\"note\">Random rows per kind (seeded).</p>{samples or '<p class=empty>none</p>'}</section>")
    out.append("</main></body></html>")
    return "\n".join(out)
