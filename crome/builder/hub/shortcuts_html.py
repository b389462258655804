"""The report's Shortcuts section (bars with counts and examples) and its counterfactual viewer (word-level diffs)."""

from __future__ import annotations

import difflib
import json
import re
from html import escape
from typing import Any

CSS = """
.sc-row { display:grid; grid-template-columns: 290px 1fr 250px; gap:12px; align-items:center; padding:6px 0; border-bottom:1px solid var(--line); }
.sc-cue { font:12px/1.4 ui-monospace, Menlo, Consolas, monospace; word-break:break-word; }
.sc-cue small { display:block; color:var(--muted); font-family:-apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
.sc-bar { position:relative; height:18px; background:#f1f5f9; border-radius:3px; }
.sc-bar i { position:absolute; top:0; bottom:0; }
.sc-bar .mid { left:50%; width:1px; background:#111827; }
.sc-nums { font-size:12px; color:var(--muted); font-variant-numeric:tabular-nums; }
.sc-nums b { color:var(--ink); }
.sc-ex { grid-column: 1 / -1; font-size:11px; color:var(--muted); margin-top:-2px; }
.sig { display:inline-block; padding:0 5px; border-radius:4px; background:#fee2e2; color:#991b1b; font-size:11px; margin-left:4px; }
.cf { border:1px solid var(--line); border-radius:8px; padding:12px 14px; margin:14px 0; }
.cf .meta { font-size:12px; color:var(--muted); margin-bottom:6px; }
.cf .tag { display:inline-block; padding:1px 7px; border-radius:10px; font-size:11px; font-weight:600; margin-right:6px; }
.tag.degrade { background:#fee2e2; color:#991b1b; } .tag.upgrade { background:#dcfce7; color:#166534; }
.tag.tie { background:#e0e7ff; color:#3730a3; }
.cf .prompt { font-weight:600; white-space:pre-wrap; margin:4px 0 8px; max-height:220px; overflow:auto; }
.cf .cols { display:grid; grid-template-columns:1fr 1fr; gap:12px; }
.cf pre { white-space:pre-wrap; word-break:break-word; margin:0; font:12px/1.5 ui-monospace, Menlo, Consolas, monospace;
          background:var(--bg); border-radius:6px; padding:8px; max-height:360px; overflow:auto; }
.cf del { background:#fecaca; color:#7f1d1d; text-decoration:line-through; }
.cf ins { background:#bbf7d0; color:#14532d; text-decoration:none; }
.cf .figs { font-size:12px; color:var(--muted); margin-top:6px; }
.cf .def { font-size:13px; color:var(--ink); margin:2px 0 0; font-style:italic; }
.cf .def.none { color:var(--muted); font-style:normal; font-size:12px; }
.note.defs { border-left:3px solid #6366f1; padding-left:8px; }
.cf .expl { font-size:13px; color:var(--ink); margin-top:4px; padding:6px 8px; background:#f8fafc; border-left:3px solid #94a3b8;
            border-radius:0 4px 4px 0; white-space:pre-wrap; word-break:break-word; }
.cf .expl span { display:block; font-size:11px; font-weight:600; color:var(--muted); text-transform:uppercase; letter-spacing:.03em; }
"""
DIFF_CHARS = 4000  # each side of a viewer pair is cut here (the data keeps it whole)
_TOKEN = re.compile(r"\s+|[^\s]+")


def word_diff(original: str, rewrite: str) -> tuple[str, str]:
    """HTML of both texts, word by word: what the rewrite removed in <del> (left), what it added in <ins> (right)."""
    a, b = _TOKEN.findall(original), _TOKEN.findall(rewrite)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old, new = escape("".join(a[i1:i2])), escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
        else:
            if old:
                left.append(f"<del>{old}</del>")
            if new:
                right.append(f"<ins>{new}</ins>")
    return "".join(left), "".join(right)


def _bar(strength: float) -> str:
    """A diverging bar: right of the centre line toward the chosen side, left toward the rejected."""
    width = min(50.0, abs(strength) * 50)
    color, left = ("#2563eb", 50.0) if strength >= 0 else ("#f97316", 50.0 - width)
    return f'<div class="sc-bar"><i style="left:{left:.1f}%;width:{width:.1f}%;background:{color}"></i><i class="mid"></i></div>'


def shortcuts_section(data: dict[str, Any], limit: int = 15) -> str:
    cands = data.get("shortcuts") or []
    if not data:
        return ""
    rows = []
    for s in cands[:limit]:
        label = s["text"] if s["feature"] != "length" else f"{s['text']} (mean diff {s['mean_diff']:+,.1f})"
        sig = '<span class="sig">significant</span>' if s["significant"] else ""
        p = "—" if s["p_adjusted"] is None else f"{s['p_adjusted']:.2g}"
        examples = ", ".join(f"<code>{escape(e[:20])}…</code>" for e in s["examples"])
        rows.append(
            f'<div class="sc-row"><div class="sc-cue">{escape(label)}<small>{escape(s["feature"])} · {escape(s["kind"])}{sig}</small></div>'
            f'{_bar(s["strength"])}<div class="sc-nums"><b>{s["strength"]:+.3f}</b> · chosen only <b>{s["chosen_only"]:,}</b> · '
            f'rejected only <b>{s["rejected_only"]:,}</b> · both {s["both"]:,} · neither {s["neither"]:,} · p (Holm) {p}</div>'
            f'<div class="sc-ex">examples: {examples or "—"}</div></div>')
    method = data.get("shortcut_method", {})
    by_attr = data.get("shortcuts_by_attribute") or []
    attr_rows = "".join(
        f"<tr><td>{escape(r['attribute'])}</td><td>{escape(r['augmentation'] or '')}</td><td class=num>{r['pairs']:,}</td>"
        f"<td class=num>{'—' if r['chars_strength'] is None else format(r['chars_strength'], '+.3f')}</td>"
        f"<td class=num>{'—' if r['mean_chars_diff'] is None else format(r['mean_chars_diff'], '+,.0f')}</td>"
        f"<td>{escape(r['strongest_cue'] or '—')}</td><td class=num>{r['significant_cues']}</td></tr>" for r in by_attr)
    attr = (f"<h3>By attribute and direction (causal pairs)</h3><table><thead><tr><th>attribute</th><th>augmentation</th><th class=num>pairs</th>"
            f"<th class=num>length split (chars)</th><th class=num>mean chars chosen − rejected</th><th>strongest significant cue</th>"
            f"<th class=num>significant cues</th></tr></thead><tbody>{attr_rows}</tbody></table>") if by_attr else ""
    found = data.get("shortcuts_found", 0)
    return (
        f"<section><h2>Shortcuts</h2><p class=\"note\">Surface cues that split chosen from rejected answers in strict pairs: "
        f"{found:,} significant (two-sided sign test, Holm-corrected at {method.get('alpha', 0.05)}). The bar runs right (blue) when the cue sits "
        f"on the chosen answer only more often, left (orange) when on the rejected; its length is the strength "
        f"(chosen only − rejected only) / pairs. Opening and closing phrases are the first and last 1–6 words, lower-cased.</p>"
        f"{''.join(rows) or '<p class=empty>no candidate with enough pairs</p>'}{attr}</section>"
    )


def _figures(quality: Any) -> str:
    q = json.loads(quality) if isinstance(quality, str) else (quality or {})
    parts = []
    for key, label in (("edit_ratio", "edit ratio"), ("length_ratio", "length ratio"), ("surface_kept", "surface kept"),
                       ("prompt_similarity", "prompt similarity"), ("baseline_margin", "baseline margin")):
        if q.get(key) is not None:
            parts.append(f"{label} {q[key]:.3f}")
    if q.get("checks"):
        parts.append("checks: " + ", ".join(q["checks"]))
    return " · ".join(parts), q.get("verification")


def _cut(text: str) -> str:
    return text if len(text) <= DIFF_CHARS else text[:DIFF_CHARS] + f" … [{len(text) - DIFF_CHARS:,} more characters]"


def counterfactual_html(s: dict[str, Any], definitions: dict[str, str]) -> str:
    aug = s["augmentation"]
    figures, verification = _figures(s.get("quality"))
    if aug in ("degrade", "upgrade", "cross_prompt"):
        original, rewrite = (s["chosen"], s["rejected"]) if aug != "upgrade" else (s["rejected"], s["chosen"])
        heads = ("original (chosen)", "rewrite (rejected)") if aug != "upgrade" else ("original (rejected)", "rewrite (chosen)")
        tag = f'<span class="tag {aug}">{escape(aug)}</span>'
        definition = s.get("definition") or definitions.get(s["attribute"])
        rubric = f"rubric <b>{escape(s['attribute'])}</b>"
        defined = (f'<div class="def">{escape(s["attribute"])}: {escape(definition)}</div>' if definition
                   else '<div class="def none">rubric definition not in this data</div>')
        direction = "the rewrite should be worse on this rubric only" if aug == "degrade" else "the rewrite should be better on this rubric only"
    else:
        original, rewrite = s["chosen"], s["rejected"]
        heads = ("first answer", "second answer")
        tag = f'<span class="tag tie">tie · {escape(aug)}</span>'
        rubric = f"phrase <b>{escape(s['attribute'])}</b>" if aug == "shortcut_neutral" else "no rubric: the answers were written for another prompt"
        direction = "a tie (preference 0.5): the two answers should score the same"
        defined = ""
    left, right = word_diff(_cut(original), _cut(rewrite))
    prompt = f'<div class="prompt">{escape(_cut(s["prompt"]))}</div>'
    if s.get("original_prompt") is not None:
        prompt = (f'<div class="meta">prompt of this tie (unrelated to the answers)</div>{prompt}'
                  f'<div class="meta">prompt the answers were written for</div><div class="prompt">{escape(_cut(s["original_prompt"]))}</div>')
    verdict = f"<div class=figs>verifier: {escape(verification)}</div>" if verification else ""
    if s.get("explanation"):
        verdict += f'<div class="expl"><span>verifier\'s explanation</span>{escape(_cut(s["explanation"]))}</div>'
    return (
        f'<div class="cf"><div class="meta">{tag}{rubric} · {escape(direction)} · <code>{escape(s["id"][:23])}…</code></div>{defined}{prompt}'
        f'<div class="cols"><div><div class="side">{heads[0]}</div><pre>{left}</pre></div>'
        f'<div><div class="side">{heads[1]}</div><pre>{right}</pre></div></div>'
        f'<div class="figs">{escape(figures) or "no validation figures recorded"}</div>{verdict}</div>'
    )


def viewer_section(samples: list[dict[str, Any]], definitions: dict[str, str] | None = None, note: dict[str, Any] | None = None,
                   explanations: dict[str, Any] | None = None) -> str:
    """The viewer; `note` and `explanations` are the report's `definitions` and `explanations` records (where the rubric
    definitions and the verifier's explanations came from, or why there are none)."""
    if not samples:
        return "<section><h2>Counterfactual viewer</h2><p class=empty>no causal pairs or ties in this dataset</p></section>"
    body = "".join(counterfactual_html(s, definitions or {}) for s in samples)
    notes = [r["note"] for r in (note, explanations) if r and r.get("pairs") and r.get("note")]
    if notes:
        body = "".join(f'<p class="note defs">{escape(n)}</p>' for n in notes) + body
    return (
        "<section id=\"viewer\"><h2>Counterfactual viewer</h2><p class=\"note\">A seeded sample of causal pairs, stratified by attribute and direction, "
        "then ties. Each shows the original and its rewrite word by word: <del>struck red</del> is what the rewrite removed, "
        "<ins>green</ins> what it added. Validation figures and the verifier's verdict are those the row recorded; the verifier's "
        "explanation, where there is one, is its answer in the run store.</p>"
        f"{body}</section>"
    )
