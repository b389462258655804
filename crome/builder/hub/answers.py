"""The `answers` view of an audit session: one row per answer with its length in characters and words and its formatting flags.

The audit's lengths, formatting and histogram read it (through one temp table), and so can `crome audit --sql`.
"""

from __future__ import annotations

import duckdb

from crome.builder.stages.shortcut_find import words_sql  # the finder's word count: 4x cheaper than a regex split

# What counts as formatting, on whole answers (RE2, multi-line).
PATTERNS = {
    "header": r"(?m)^[ \t]{0,3}#{1,6}[ \t]+\S|^[ \t]{0,3}\S[^\n]*\n[ \t]{0,3}(=+|-{2,})[ \t]*$",  # ATX or setext
    "bold": r"\*\*[^*\n]+\*\*|__[^_\n]+__",
    "code": r"(?m)^[ \t]*(```|~~~)",
    "list": r"(?m)^[ \t]*([-*+•]|\d{1,3}[.)])[ \t]+\S",
}

# A substring every match of a pattern holds: the regex runs only on the answers that have one (`list` has none).
_PATTERN_GATES = {"header": ("#", "=", "--"), "bold": ("**", "__"), "code": ("```", "~~~")}


def answer_view(con: duckdb.DuckDBPyConnection) -> None:
    """One row per answer (side chosen / rejected) with its length and formatting flags (a view: `--sql` can use it too)."""
    def flag(name: str, pat: str) -> str:
        gate = " OR ".join(f"contains(text, '{g}')" for g in _PATTERN_GATES.get(name, ()))
        match = f"regexp_matches(text, '{pat}')"
        return f"{f'CASE WHEN {gate} THEN {match} ELSE false END' if gate else match} AS has_{name}"

    flags = ", ".join(flag(name, pat) for name, pat in PATTERNS.items())
    con.execute(f"""
        CREATE TEMP VIEW answers AS
        WITH a AS (
            SELECT id, split, kind, augmentation, preference, 'chosen' AS side, coalesce(chosen[1].content, '') AS text FROM pairs
            UNION ALL
            SELECT id, split, kind, augmentation, preference, 'rejected', coalesce(rejected[1].content, '') FROM pairs
        )
        SELECT *, length(text) AS chars, {words_sql('text')} AS words, {flags}
        FROM a
    """)
