"""Shortcut discovery: which surface cues split chosen from rejected answers, with a corrected significance.

Runs as SQL on a DuckDB connection that has a `pairs` relation in the data contract's shape (the
audit's view over Parquet files, or the build's source pairs): no Python loop over rows. Only
strict pairs (preference 1.0) are read: a tie has no side that wins.

Candidates, found from the data with no list given in advance:
- `opening` / `closing`: the first and last n words of an answer, n = 1..6, after lower-casing and
  collapsing whitespace (punctuation stays on its word, so "sure!" and "sure" are two candidates:
  the cue a model sees is the token sequence);
- `phrase`: a sentence (or line) anywhere in an answer, normalised the same way, 2 to 30 words.
  Sentences and lines, not every n-gram: templates, disclaimers and sign-offs come as sentences or
  lines, and all n-grams of 100k answer pairs are tens of millions of rows per n;
- `length`: characters, words, lines (chosen longer = the chosen-side count, rejected longer = the
  rejected-side count, equal = neither), with the mean signed difference chosen - rejected;
- `format`: header, bold, list, code fence, table, link, emoji, exclamation mark.

Per candidate and per group (each kind, all kinds together, each causal attribute x augmentation):
counts of strict pairs with the cue on the chosen answer only, the rejected only, both, neither;
strength (chosen_only - rejected_only) / pairs; a two-sided sign test on the discordant pairs
(exact binomial up to 200 of them, the normal approximation with continuity correction above: an exact sum per candidate over thousands of pairs cost minutes at 10k pairs);
and Holm's correction over every candidate tested. Holm, not Benjamini-Hochberg: it holds under
any dependence between the tests (nested n-grams and their sentences are strongly dependent, which
BH's guarantee does not cover), and a flag is acted on (a phrase gets neutralised), so it bounds the
chance of even one false flag. Before the correction, candidates that could not reach significance
however their pairs split (too few discordant pairs) are left out of the count, Tarone's (1990)
rule; this is exact, because under the null the sign of a discordant pair does not depend on how
many there are.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import duckdb
from pydantic import BaseModel, Field

MAX_NGRAM = 6
ALPHA = 0.05
MIN_DISCORDANT = 6  # fewer discordant pairs can never reach p < 0.05 two-sided (2 * 0.5^5 = 0.0625)
EXAMPLES = 3
FEATURE_ORDER = {"opening": 0, "closing": 1, "phrase": 2, "format": 3, "length": 4}
# Formatting flags on whole answers (RE2). Emoji: the pictographic blocks and the dingbats.
FORMATS = {
    "header": r"(?m)^[ \t]{0,3}#{1,6}[ \t]+\S",
    "bold": r"\*\*[^*\n]+\*\*|__[^_\n]+__",
    "list": r"(?m)^[ \t]*([-*+•]|\d{1,3}[.)])[ \t]+\S",
    "code": r"(?m)^[ \t]*(```|~~~)",
    "table": r"(?m)^[ \t]*\|.*\|[ \t]*$",
    "link": r"\[[^\]\n]+\]\([^)\s]+\)|https?://\S+",
    "emoji": r"[\x{1F300}-\x{1FAFF}\x{2600}-\x{27BF}\x{1F000}-\x{1F2FF}]",
    "exclamation": r"!",
}


class Shortcut(BaseModel):
    """One candidate cue in one group of strict pairs, with its split and significance."""

    feature: str = Field(description="opening, closing, phrase, format or length")
    text: str = Field(description="the normalised phrase; the format name; chars, words or lines")
    kind: str = Field(description="original, causal, neutral or all")
    attribute: str | None = None
    augmentation: str | None = None
    pairs: int
    chosen_only: int
    rejected_only: int
    both: int
    neither: int
    strength: float = Field(description="(chosen_only - rejected_only) / pairs: +1 always on the chosen side only")
    p_value: float = Field(description="two-sided sign test on the discordant pairs")
    p_adjusted: float | None = Field(default=None, description="Holm-adjusted; None when the candidate cannot reach significance")
    significant: bool = False
    mean_diff: float | None = Field(default=None, description="length: mean of chosen - rejected")
    examples: list[str] = Field(default_factory=list, description="pair ids with the cue on the side it favours")

    @property
    def n_words(self) -> int:
        return len(self.text.split())


def _norm_sql(expr: str) -> str:
    return f"lower(trim(regexp_replace({expr}, '\\s+', ' ', 'g')))"


_SENTENCE = _norm_sql("unnest(regexp_extract_all(text, '[^.!?\\n]+[.!?]*'))")


def _where(strict_filter: str | None) -> str:
    return f"preference = 1.0{f' AND ({strict_filter})' if strict_filter else ''}"


def _prepare(con: duckdb.DuckDBPyConnection, strict_filter: str | None) -> int:
    """Temp tables: strict pairs, their answers as word arrays, and per pair which side holds each cue."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_pairs AS
        SELECT row_number() OVER () AS pid, id, kind, attribute, augmentation,
               coalesce(chosen[1].content, '') AS c, coalesce(rejected[1].content, '') AS r
        FROM pairs WHERE {_where(strict_filter)}""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_sides AS
        SELECT pid, side, text,
               CASE WHEN trim(text) = '' THEN []::VARCHAR[] ELSE string_split({_norm_sql('text')}, ' ') END AS w
        FROM (SELECT pid, 'c' AS side, c AS text FROM sc_pairs UNION ALL SELECT pid, 'r', r FROM sc_pairs)""")
    fmt = " UNION ALL ".join(
        f"SELECT pid, side, 'format' AS feature, '{name}' AS text FROM sc_sides WHERE regexp_matches(text, '{pat}')"
        for name, pat in FORMATS.items())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_feats AS
        SELECT pid, side, 'opening' AS feature, array_to_string(w[1:n], ' ') AS text
            FROM sc_sides, range(1, {MAX_NGRAM + 1}) t(n) WHERE len(w) >= n
        UNION ALL
        SELECT pid, side, 'closing', array_to_string(w[len(w) - n + 1:], ' ')
            FROM sc_sides, range(1, {MAX_NGRAM + 1}) t(n) WHERE len(w) >= n
        UNION ALL
        SELECT DISTINCT pid, side, 'phrase', s FROM (
            SELECT pid, side, {_SENTENCE} AS s FROM sc_sides)
            WHERE len(string_split(s, ' ')) BETWEEN 2 AND 30 AND length(s) <= 240
        UNION ALL {fmt}""")
    # Support first: a cue seen on too few discordant pairs overall is dropped before the per-group counts.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_hits AS
        WITH h AS (SELECT pid, feature, text, bool_or(side = 'c') AS hc, bool_or(side = 'r') AS hr FROM sc_feats GROUP BY ALL),
        keep AS (SELECT feature, text FROM h GROUP BY ALL HAVING count(*) FILTER (hc <> hr) >= {MIN_DISCORDANT})
        SELECT h.* FROM h SEMI JOIN keep USING (feature, text)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_len AS
        SELECT pid, m.name AS text, m.c_val AS cv, m.r_val AS rv FROM (
            SELECT pid, unnest([
                {{'name': 'chars', 'c_val': length(c), 'r_val': length(r)}},
                {{'name': 'words', 'c_val': len(regexp_split_to_array(nullif(trim(c), ''), '\\s+')),
                  'r_val': len(regexp_split_to_array(nullif(trim(r), ''), '\\s+'))}},
                {{'name': 'lines', 'c_val': len(string_split(c, chr(10))), 'r_val': len(string_split(r, chr(10)))}}
            ]) AS m FROM sc_pairs)""")
    return con.execute("SELECT count(*) FROM sc_pairs").fetchone()[0]


# Grouping sets: each kind; all kinds together; each causal attribute and direction.
_GROUPS = "GROUPING SETS ((kind), (), (kind, attribute, augmentation))"
_GROUP_COLS = "CASE WHEN grouping(kind) = 1 THEN 'all' ELSE kind END AS g_kind, attribute, augmentation, grouping(attribute) AS g_attr"


def _counts(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    sql = f"""
        WITH sizes AS (SELECT {_GROUP_COLS}, count(*) AS pairs FROM sc_pairs GROUP BY {_GROUPS}),
        cues AS (
            SELECT {_GROUP_COLS}, feature, text,
                   count(*) FILTER (hc AND NOT hr) AS co, count(*) FILTER (hr AND NOT hc) AS ro,
                   count(*) FILTER (hc AND hr) AS bo, NULL::DOUBLE AS mean_diff,
                   min_by(id, md5(id), {EXAMPLES}) FILTER (hc AND NOT hr) AS ex_c,
                   min_by(id, md5(id), {EXAMPLES}) FILTER (hr AND NOT hc) AS ex_r
            FROM sc_hits JOIN sc_pairs USING (pid)
            GROUP BY {_GROUPS}, feature, text
            UNION ALL
            SELECT {_GROUP_COLS}, 'length', text,
                   count(*) FILTER (cv > rv), count(*) FILTER (cv < rv), 0, avg(cv - rv),
                   min_by(id, md5(id), {EXAMPLES}) FILTER (cv > rv), min_by(id, md5(id), {EXAMPLES}) FILTER (cv < rv)
            FROM sc_len JOIN sc_pairs USING (pid)
            GROUP BY {_GROUPS}, text
        )
        SELECT cues.*, sizes.pairs FROM cues JOIN sizes
          ON cues.g_kind = sizes.g_kind AND cues.g_attr = sizes.g_attr
         AND cues.attribute IS NOT DISTINCT FROM sizes.attribute AND cues.augmentation IS NOT DISTINCT FROM sizes.augmentation
        WHERE (cues.g_attr = 1 OR cues.attribute IS NOT NULL) AND cues.co + cues.ro >= {MIN_DISCORDANT}"""
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def sign_test(k: int, n: int) -> float:
    """Two-sided sign test: P(a split at least as uneven as k of n) with p = 1/2."""
    if n == 0:
        return 1.0
    lo = min(k, n - k)
    if n <= 200:
        log_half = n * math.log(0.5)
        tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half) for i in range(lo + 1))
        return min(1.0, 2 * tail)
    z = (abs(k - n / 2) - 0.5) / math.sqrt(n / 4)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def holm_tarone(p_values: list[float], min_p: list[float], alpha: float = ALPHA) -> list[float | None]:
    """Holm-adjusted p-values over the candidates Tarone's rule keeps (None for the others).

    Tarone: the smallest K such that at most K candidates could reach alpha / K at all; only those
    are counted in the correction.
    """
    order = sorted(min_p)
    k = 1
    while True:
        testable = sum(1 for m in order if m <= alpha / k)
        if testable <= k:
            break
        k += 1
    idx = [i for i, m in enumerate(min_p) if m <= alpha / k]
    out: list[float | None] = [None] * len(p_values)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def _subsumed(cands: list[Shortcut]) -> set[int]:
    """Shorter n-grams (and sentences) that hold exactly the pairs of a longer cue in the same group: one row says it."""
    def key(s: Shortcut) -> tuple:
        return (s.kind, s.attribute, s.augmentation, s.chosen_only, s.rejected_only, s.both)

    by = {(s.feature, s.text, *key(s)): i for i, s in enumerate(cands)}
    drop: set[int] = set()
    for s in cands:
        words = s.text.split()
        if s.feature in ("opening", "closing") and len(words) > 1:
            shorter = " ".join(words[:-1] if s.feature == "opening" else words[1:])
            j = by.get((s.feature, shorter, *key(s)))
            if j is not None:
                drop.add(j)
            j = by.get(("phrase", s.text, *key(s)))
            if j is not None:
                drop.add(j)
        if s.feature in ("opening", "closing") and len(words) == 1:
            j = by.get(("phrase", s.text, *key(s)))
            if j is not None:
                drop.add(j)
    return drop


def find_shortcuts(con: duckdb.DuckDBPyConnection, *, alpha: float = ALPHA, strict_filter: str | None = None) -> list[Shortcut]:
    """Every candidate with enough discordant pairs, strongest significant ones first (`significant` marks them)."""
    n_pairs = _prepare(con, strict_filter)
    if n_pairs == 0:
        return []
    rows = _counts(con)
    kinds = {r["g_kind"] for r in rows if r["g_kind"] != "all" and r["g_attr"] == 1}
    cands: list[Shortcut] = []
    for r in rows:
        if r["g_kind"] == "all" and len(kinds) < 2:
            continue  # one kind of strict pair: "all" says the same again
        co, ro, bo, pairs = int(r["co"]), int(r["ro"]), int(r["bo"]), int(r["pairs"])
        favoured = r["ex_c"] if co >= ro else r["ex_r"]
        cands.append(Shortcut(
            feature=r["feature"], text=r["text"], kind=r["g_kind"],
            attribute=r["attribute"] if r["g_attr"] == 0 else None, augmentation=r["augmentation"] if r["g_attr"] == 0 else None,
            pairs=pairs, chosen_only=co, rejected_only=ro, both=bo, neither=pairs - co - ro - bo,
            strength=(co - ro) / pairs, p_value=sign_test(co, co + ro),
            mean_diff=float(r["mean_diff"]) if r["mean_diff"] is not None else None, examples=sorted(favoured or []),
        ))
    drop = _subsumed(cands)
    cands = [c for i, c in enumerate(cands) if i not in drop]
    adjusted = holm_tarone([c.p_value for c in cands], [sign_test(0, c.chosen_only + c.rejected_only) for c in cands], alpha)
    for c, adj in zip(cands, adjusted):
        c.p_adjusted = adj
        c.significant = adj is not None and adj <= alpha
    found = {(c.feature, c.text, c.kind, c.attribute, c.augmentation): c for c in cands if c.significant}
    cands = [c for c in cands if not _inside_found(c, found)]
    cands.sort(key=rank_key)
    return cands


def _inside_found(s: Shortcut, found: dict[tuple, Shortcut]) -> bool:
    """An opening (closing) that extends a significant shorter one of the same sign: a slice of that cue, not a new one."""
    if s.feature not in ("opening", "closing") or s.n_words < 2:
        return False
    words = s.text.split()
    for n in range(1, len(words)):
        shorter = " ".join(words[:n] if s.feature == "opening" else words[-n:])
        parent = found.get((s.feature, shorter, s.kind, s.attribute, s.augmentation))
        if parent is not None and (parent.strength > 0) == (s.strength > 0):
            return True
    return False


def rank_key(s: Shortcut) -> tuple:
    """Significant first, then the strongest split, the smaller p-value, the more specific cue."""
    return (not s.significant, -abs(s.strength), s.p_value, FEATURE_ORDER.get(s.feature, 9), -s.n_words, s.kind, s.text)


def top(cands: Iterable[Shortcut], *, limit: int, fill: int) -> list[Shortcut]:
    """All significant candidates (up to `limit`), then the strongest others until there are `fill`."""
    cands = list(cands)
    sig = [c for c in cands if c.significant][:limit]
    rest = [c for c in cands if not c.significant][: max(0, fill - len(sig))]
    return sig + rest
