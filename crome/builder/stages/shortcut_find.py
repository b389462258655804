"""Shortcut discovery: which surface cues split chosen from rejected answers, with a corrected significance.

Runs as SQL on a DuckDB connection that has a `pairs` relation in the data contract's shape (the
audit's view over Parquet files, or the build's source pairs): no Python loop over rows, and the
statistics are numpy over arrays of candidates. Only strict pairs (preference 1.0) are read: a tie
has no side that wins. The millions of (pair, cue) rows carry a cue as an integer key (a hash of
its raw text, checked for collisions); cues are normalised once per distinct text, and texts join
only the candidates with enough discordant pairs to be tested (benchmarks/RESULTS.md has the
profile). The output is deterministic: candidates of equal rank come by group.

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
strength (chosen_only - rejected_only) / pairs; an exact two-sided sign test on the discordant
pairs (2 x the binomial tail, scipy.special.bdtr over the array of candidates); and Holm's
correction over every candidate tested. Holm, not Benjamini-Hochberg: it holds under any dependence
between the tests (nested n-grams and their sentences are strongly dependent, which BH's guarantee
does not cover), and a flag is acted on (a phrase gets neutralised), so it bounds the chance of even
one false flag. Before the correction, candidates that could not reach significance however their
pairs split (too few discordant pairs) are left out of the count, Tarone's (1990) rule; this is
exact, because under the null the sign of a discordant pair does not depend on how many there are.

Folding nested cues (after the correction, so the correction counts every cue tested): a planted
"Great question, I'm glad you asked!" makes every shorter opening ("great", "great question,", ...)
a cue with nearly the same pairs, and the shortest one, holding a few more pairs (answers that
start with "Great" anyway), would rank first. So a shorter opening (closing) n-gram is folded into
a longer one that starts (ends) with it when the longer has the same sign and at least `FOLD` (90%)
as many pairs on its favoured side only (chosen only for a positive cue, rejected only for a
negative one): the longer cue says what the shorter does, and is the phrase to neutralise. A
sentence (`phrase`) with the text of an opening or closing is folded into it by the same rule. The
folded cue is not listed; the one it folds into names it in `folded`. A shorter cue the longer
covers less (a common "sure" that opens many different sentences) stays, and its longer, narrower
extensions that are significant with the same sign are then left out as slices of it.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field
from scipy.special import bdtr

MAX_NGRAM = 6
ALPHA = 0.05
MIN_DISCORDANT = 6  # fewer discordant pairs can never reach p < 0.05 two-sided (2 * 0.5^5 = 0.0625)
EXAMPLES = 3
OTHERS = 50  # non-significant candidates returned per group, the strongest (the correction still counts them all)
FOLD = 0.9  # a shorter cue folds into a longer one holding at least this share of its favoured-side pairs
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
    folded: list[str] = Field(default_factory=list, description="shorter cues folded into this one ('feature: text')")

    @property
    def n_words(self) -> int:
        return len(self.text.split())


def _where(strict_filter: str | None) -> str:
    return f"preference = 1.0{f' AND ({strict_filter})' if strict_filter else ''}"


EDGE_CHARS = 200  # opening and closing n-grams are read from this many characters at each end of an answer
# Cheap substring tests DuckDB evaluates first, so a format's regex scans only the answers that could hold it.
_FORMAT_GATE = {"header": "contains(text, '#')", "bold": "(contains(text, '**') OR contains(text, '__'))",
                "code": "(contains(text, '```') OR contains(text, '~~~'))", "table": "contains(text, '|')",
                "link": "(contains(text, '](') OR contains(text, 'http'))", "exclamation": "contains(text, '!')",
                "emoji": "strlen(text) <> length(text)"}  # emoji are not ASCII: an all-ASCII answer has as many bytes as characters
_SPACES = "replace(replace(replace({0}, chr(10), ' '), chr(9), ' '), chr(13), ' ')"  # whitespace as spaces, no regex


def words_sql(column: str) -> str:
    """SQL for the number of words of `column`: whitespace-separated tokens (space, tab, line ends, form feed, vertical
    tab), as Python's `str.split()` on ASCII whitespace, by splitting on spaces and not counting the empty pieces (no regex)."""
    spaced = f"replace(replace({_SPACES.format(column)}, chr(12), ' '), chr(11), ' ')"
    return f"len(list_filter(string_split({spaced}, ' '), lambda x: x <> ''))"

_FEATURES = ("opening", "closing", "phrase", "format")  # a cue's feature as a small integer `f` in the (pair, cue) tables
# A cue's key in the (pair, cue) tables: a 64-bit hash of its text, so that the grouping of millions of (pair, cue) rows
# moves integers, not strings. Exact all the same: `_key_cues` checks every key against the distinct texts and,
# should two texts ever share one, numbers the texts instead (tests force that path with a colliding key).
CUE_KEY = "hash({})"


def _edge(side: str) -> str:
    r"""The first (last) up to MAX_NGRAM normalised words, from EDGE_CHARS characters at that end: no split of whole answers.

    Six words longer than EDGE_CHARS together (a URL, a code line) give fewer n-grams at that end; the
    cut word itself is dropped, never read as a word. Words are split at RE2's `\s` (space, tab, line
    feed, form feed, carriage return) by mapping those to spaces, which is what collapsing `\s+` to
    one space and trimming did, without a regex.
    """
    cut = f"{'left' if side == 'head' else 'right'}(text, {EDGE_CHARS})"
    words = f"list_filter(string_split(replace({_SPACES.format(cut)}, chr(12), ' '), ' '), lambda x: x <> '')"
    whole = f"CASE WHEN length(text) > {EDGE_CHARS} THEN {words}[{'1:-2' if side == 'head' else '2:'}] ELSE {words} END"
    return f"({whole})[{f'1:{MAX_NGRAM}' if side == 'head' else f'-{MAX_NGRAM}:'}]"


def _prepare(con: duckdb.DuckDBPyConnection, strict_filter: str | None) -> int:
    """Temp tables: strict pairs, their answers' cues (keyed by integers), and per pair which side holds each cue.

    Every whole-answer pass is one cheap scan (a sentence split, a gated format regex, a word count
    by string splitting): regex replacement over whole answers costs more than the rest together.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_pairs AS
        SELECT row_number() OVER () AS pid, id, md5(id) AS ek, kind, attribute, augmentation,
               coalesce(chosen[1].content, '') AS c, coalesce(rejected[1].content, '') AS r
        FROM pairs WHERE {_where(strict_filter)}""")
    con.execute("""
        CREATE OR REPLACE TEMP VIEW sc_text AS
        SELECT pid, true AS is_c, c AS text FROM sc_pairs UNION ALL SELECT pid, false, r FROM sc_pairs""")
    fmt = " UNION ALL ".join(
        f"SELECT pid, is_c, 3 AS f, '{name}' AS text FROM sc_text "
        f"WHERE {_FORMAT_GATE[name] + ' AND ' if name in _FORMAT_GATE else ''}regexp_matches(text, '{pat}')"
        for name, pat in FORMATS.items())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_feats AS
        WITH edges AS (SELECT pid, is_c, {_edge('head')} AS head, {_edge('tail')} AS tail FROM sc_text),
        cues AS (
            SELECT pid, is_c, 0 AS f, array_to_string(head[1:n], ' ') AS text
                FROM edges, range(1, {MAX_NGRAM + 1}) t(n) WHERE len(head) >= n
            UNION ALL
            SELECT pid, is_c, 1, array_to_string(tail[-n:], ' ')
                FROM edges, range(1, {MAX_NGRAM + 1}) t(n) WHERE len(tail) >= n
            UNION ALL
            SELECT pid, is_c, 2, s FROM (SELECT pid, is_c, unnest({_pieces()}) AS s FROM sc_text) WHERE contains(s, ' ')
            UNION ALL {fmt})
        SELECT pid, is_c, f::UTINYINT AS f, {CUE_KEY.format('text')}::UBIGINT AS h, text FROM cues""")
    _key_cues(con)
    # Support first: a cue seen on too few discordant pairs overall is dropped before the per-group counts.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_hits AS
        WITH h AS (SELECT pid, k, bool_or(is_c) AS hc, bool_or(NOT is_c) AS hr FROM sc_feats JOIN sc_dict USING (f, h) GROUP BY ALL),
        keep AS (SELECT k FROM h GROUP BY ALL HAVING count(*) FILTER (hc <> hr) >= {MIN_DISCORDANT})
        SELECT h.* FROM h SEMI JOIN keep USING (k)""")
    lines = "strlen({0}) - strlen(replace({0}, chr(10), '')) + 1"  # line ends are one byte: strlen, not a character count
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_len AS
        SELECT pid, m.name AS text, m.c_val AS cv, m.r_val AS rv FROM (
            SELECT pid, unnest([
                {{'name': 'chars', 'c_val': length(c), 'r_val': length(r)}},
                {{'name': 'words', 'c_val': {words_sql('c')}, 'r_val': {words_sql('r')}}},
                {{'name': 'lines', 'c_val': {lines.format('c')}, 'r_val': {lines.format('r')}}}
            ]) AS m FROM sc_pairs)""")
    return con.execute("SELECT count(*) FROM sc_pairs").fetchone()[0]


_MARK = "chr(1)"  # cuts the answer into sentence pieces; an answer holding this character is cut by the regex instead


def _pieces() -> str:
    """An answer cut into the sentences of the regex `[^.!?\\n]+[.!?]*`, by string replacement (no regex).

    A mark goes after every `.`, `!` and `?` that no other of them follows (so after each run of
    them) and in place of each line end; the answer is split at the marks. The pieces are the
    regex's sentences plus pieces the regex skips (empty ones, runs of `.!?` after a line end),
    which hold no space and are dropped with the sentences of no space.
    """
    marked = "text"
    for t in ".!?":
        marked = f"replace({marked}, '{t}', '{t}' || {_MARK})"
    for t in ".!?":
        marked = f"replace({marked}, {_MARK} || '{t}', '{t}')"
    return (f"CASE WHEN contains(text, {_MARK}) THEN regexp_extract_all(text, '[^.!?\\n]+[.!?]*') "
            f"ELSE string_split(replace({marked}, chr(10), {_MARK}), {_MARK}) END")


def _key_cues(con: duckdb.DuckDBPyConnection) -> None:
    """sc_dict: per raw key (f, h) the cue it counts for (an integer `k`, one per feature and text) and its text.

    Openings, closings and sentences are lower-cased here, and sentence pieces trimmed, filtered (240
    characters at most, 2 to 30 words) and their whitespace collapsed: once per distinct raw text, not
    once per answer (lower-casing maps no character to whitespace or to `.`, `!`, `?`, so cutting
    first and lower-casing after gives the same words and sentences). Raw keys are hashes;
    if two raw texts ever share one, sc_feats is re-keyed by numbering the texts, so counts never merge.
    """
    con.execute("CREATE OR REPLACE TEMP TABLE sc_raw AS SELECT DISTINCT f, h, text FROM sc_feats")
    shared = con.execute("SELECT count(*) FROM (SELECT f, h FROM sc_raw GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
    if shared:
        con.execute("""CREATE OR REPLACE TEMP TABLE sc_raw AS
                       SELECT f, (row_number() OVER ())::UBIGINT AS h, text FROM (SELECT DISTINCT f, text FROM sc_raw)""")
        con.execute("""CREATE OR REPLACE TEMP TABLE sc_feats AS
                       SELECT pid, is_c, f, r.h, text FROM sc_feats JOIN sc_raw r USING (f, text)""")
    # Sentences: whitespace inside one collapsed where it has any to collapse.
    collapse = "CASE WHEN contains(s, '  ') OR contains(s, chr(9)) OR contains(s, chr(13)) THEN regexp_replace(s, '\\s+', ' ', 'g') ELSE s END"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_dict AS
        WITH cue AS (
            SELECT f, h, CASE WHEN f = 3 THEN text ELSE lower(text) END AS text FROM sc_raw WHERE f <> 2
            UNION ALL
            SELECT f, h, {collapse} FROM (SELECT f, h, lower(trim(text)) AS s FROM sc_raw WHERE f = 2)
            WHERE length(s) <= 240 AND length(s) - length(replace(s, ' ', '')) BETWEEN 1 AND 29)
        SELECT f, h, dense_rank() OVER (ORDER BY f, text) AS k, text FROM cue""")


def _counts(con: duckdb.DuckDBPyConnection) -> None:
    """sc_cands: one row per candidate and group, with its counts and example ids, numbered in a fixed order (`cid`).

    Groups: each kind; all kinds together (only with two kinds or more); each attribute and
    direction of a kind (only where rows have an attribute). Counted by integer cue keys; the texts
    join the candidates that have enough discordant pairs to be tested.
    """
    kinds, attributes = con.execute("SELECT count(DISTINCT kind), count(attribute) FROM sc_pairs").fetchone()
    sets = ["(kind)"] + (["()"] if kinds >= 2 else []) + (["(kind, attribute, augmentation)"] if attributes else [])
    _GROUPS = f"GROUPING SETS ({', '.join(sets)})"
    _GROUP_COLS = ", ".join([
        "CASE WHEN grouping(kind) = 1 THEN 'all' ELSE kind END AS g_kind" if kinds >= 2 else "kind AS g_kind",
        "attribute, augmentation, grouping(attribute) AS g_attr" if attributes
        else "NULL::VARCHAR AS attribute, NULL::VARCHAR AS augmentation, 1 AS g_attr"])
    tested = f"(g_attr = 1 OR attribute IS NOT NULL) AND co + ro >= {MIN_DISCORDANT}"
    names = "[" + ", ".join(f"'{n}'" for n in _FEATURES) + "]"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE sc_cands AS
        WITH sizes AS (SELECT {_GROUP_COLS}, count(*) AS pairs FROM sc_pairs GROUP BY {_GROUPS}),
        keyed AS (
            SELECT {_GROUP_COLS}, k,
                   count(*) FILTER (hc AND NOT hr) AS co, count(*) FILTER (hr AND NOT hc) AS ro,
                   count(*) FILTER (hc AND hr) AS bo, NULL::DOUBLE AS mean_diff,
                   min_by(id, ek, {EXAMPLES}) FILTER (hc AND NOT hr) AS ex_c,
                   min_by(id, ek, {EXAMPLES}) FILTER (hr AND NOT hc) AS ex_r
            FROM sc_hits JOIN sc_pairs USING (pid)
            GROUP BY {_GROUPS}, k),
        cues AS (
            SELECT g_kind, attribute, augmentation, g_attr, {names}[d.f + 1] AS feature, d.text,
                   co, ro, bo, mean_diff, ex_c, ex_r
            FROM (SELECT * FROM keyed WHERE {tested}) JOIN (SELECT DISTINCT k, f, text FROM sc_dict) d USING (k)
            UNION ALL
            SELECT * FROM (
                SELECT {_GROUP_COLS}, 'length' AS feature, text,
                       count(*) FILTER (cv > rv) AS co, count(*) FILTER (cv < rv) AS ro, 0 AS bo, avg(cv - rv) AS mean_diff,
                       min_by(id, ek, {EXAMPLES}) FILTER (cv > rv) AS ex_c, min_by(id, ek, {EXAMPLES}) FILTER (cv < rv) AS ex_r
                FROM sc_len JOIN sc_pairs USING (pid)
                GROUP BY {_GROUPS}, text) WHERE {tested})
        SELECT row_number() OVER (ORDER BY cues.g_kind, cues.g_attr, cues.attribute, cues.augmentation, feature, text) - 1 AS cid,
               cues.*, sizes.pairs FROM cues JOIN sizes
          ON cues.g_kind = sizes.g_kind AND cues.g_attr = sizes.g_attr
         AND cues.attribute IS NOT DISTINCT FROM sizes.attribute AND cues.augmentation IS NOT DISTINCT FROM sizes.augmentation""")


def _folds(con: duckdb.DuckDBPyConnection) -> dict[int, tuple[int, str]]:
    """Folded candidate id -> (the longer cue it folds into, the longest such; its own 'feature: text'). The module docstring has the rule."""
    rows = con.execute(f"""
        WITH c AS (
            SELECT cid, g_kind, g_attr, attribute, augmentation, feature, text, co >= ro AS pos,
                   CASE WHEN co >= ro THEN co ELSE ro END AS fav, string_split(text, ' ') AS w
            FROM sc_cands WHERE feature IN ('opening', 'closing', 'phrase')),
        shorter AS (  -- each opening (closing) with the texts of its shorter openings (closings), and the sentence of its own text
            SELECT cid, g_kind, g_attr, attribute, augmentation, pos, fav, len(w) AS nw, feature AS l_feature, feature AS s_feature,
                   array_to_string(CASE WHEN feature = 'opening' THEN w[1:k] ELSE w[-k:] END, ' ') AS s_text
            FROM c, range(1, {MAX_NGRAM}) t(k) WHERE feature IN ('opening', 'closing') AND k < len(w)
            UNION ALL
            SELECT cid, g_kind, g_attr, attribute, augmentation, pos, fav, len(w), feature, 'phrase', text
            FROM c WHERE feature IN ('opening', 'closing'))
        -- the longest, then the most pairs; a tie (one text as an opening and as a closing) goes to the opening, then the lower cid
        SELECT c.cid, arg_max(l.cid, [l.nw, l.fav, (l.l_feature = 'opening')::INT, -l.cid]), any_value(c.feature || ': ' || c.text)
        FROM c JOIN shorter l
          ON c.feature = l.s_feature AND c.text = l.s_text AND c.g_kind = l.g_kind AND c.g_attr = l.g_attr
         AND c.attribute IS NOT DISTINCT FROM l.attribute AND c.augmentation IS NOT DISTINCT FROM l.augmentation
         AND c.pos = l.pos AND l.fav >= {FOLD} * c.fav
        GROUP BY c.cid""").fetchall()
    return {int(a): (int(b), label) for a, b, label in rows}


def sign_tests(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Exact two-sided sign tests, element-wise: P(a split at least as uneven as k of n) with p = 1/2."""
    k, n = np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64)
    low = np.minimum(k, n - k)
    p = 2.0 * bdtr(low, np.maximum(n, 1), 0.5)
    return np.where(n == 0, 1.0, np.minimum(1.0, p))


def sign_test(k: int, n: int) -> float:
    """Two-sided sign test of one split (k of n on one side)."""
    return float(sign_tests(np.array([k]), np.array([n]))[0])


def _holm_tarone(p: np.ndarray, min_p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm-adjusted p-values over the candidates Tarone's rule keeps (NaN for the others), as arrays."""
    p, min_p = np.asarray(p, dtype=np.float64), np.asarray(min_p, dtype=np.float64)
    out = np.full(len(p), np.nan)
    if len(p) == 0:
        return out
    # Tarone: the smallest K such that at most K candidates could reach alpha / K at all.
    ks = np.arange(1, len(p) + 1)
    testable = np.searchsorted(np.sort(min_p), alpha / ks, side="right")
    k = int(ks[np.argmax(testable <= ks)])
    idx = np.nonzero(min_p <= alpha / k)[0]
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    out[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return out


def holm_tarone(p_values: Sequence[float], min_p: Sequence[float], alpha: float = ALPHA) -> list[float | None]:
    """Holm-adjusted p-values over the candidates Tarone's rule keeps (None for the others)."""
    return [None if np.isnan(a) else float(a) for a in _holm_tarone(np.array(p_values), np.array(min_p), alpha)]


def find_shortcuts(con: duckdb.DuckDBPyConnection, *, alpha: float = ALPHA, strict_filter: str | None = None,
                   others: int = OTHERS) -> list[Shortcut]:
    """The candidates, strongest significant ones first (`significant` marks them).

    Returned: every significant candidate, every length row, and per group (kind, attribute,
    direction) the `others` strongest of the rest, so that a clean dataset still shows what comes
    closest. The correction counts every candidate tested, returned or not.
    """
    n_pairs = _prepare(con, strict_filter)
    if n_pairs == 0:
        return []
    _counts(con)
    cols = con.execute("""
        SELECT co, ro, pairs, feature = 'length' AS is_len,
               dense_rank() OVER (ORDER BY g_kind, g_attr, attribute, augmentation) AS grp
        FROM sc_cands ORDER BY cid""").fetchnumpy()
    co, ro, pairs = (np.asarray(cols[k], dtype=np.int64) for k in ("co", "ro", "pairs"))
    discordant = co + ro
    p = sign_tests(np.minimum(co, ro), discordant)
    min_p = np.minimum(1.0, 2.0 * np.power(0.5, discordant.astype(np.float64)))  # the most uneven split: all on one side
    adjusted = _holm_tarone(p, min_p, alpha)
    significant = ~np.isnan(adjusted) & (np.nan_to_num(adjusted, nan=2.0) <= alpha)
    strength = (co - ro) / pairs
    folds = _folds(con)
    folded_mask = np.zeros(len(co), dtype=bool)
    folded_mask[list(folds)] = True
    keep = (significant | np.asarray(cols["is_len"], dtype=bool)) & ~folded_mask
    rest = np.nonzero(~keep & ~folded_mask)[0]
    grp = np.asarray(cols["grp"], dtype=np.int64)[rest]
    order = rest[np.lexsort((p[rest], -np.abs(strength[rest]), grp))]  # per group, strongest first
    sorted_grp = grp[np.lexsort((p[rest], -np.abs(strength[rest]), grp))]
    rank_in_group = np.arange(len(order)) - np.searchsorted(sorted_grp, sorted_grp, side="left")
    keep[order[rank_in_group < others]] = True
    labels: dict[int, list[str]] = {}
    for child, (parent, label) in folds.items():
        while parent in folds:  # a chain of folds ends at the longest cue
            parent = folds[parent][0]
        labels.setdefault(parent, []).append(label)
    con.register("sc_keep", pa.table({"cid": np.nonzero(keep)[0]}))
    try:
        cur = con.execute("SELECT * FROM sc_cands SEMI JOIN sc_keep USING (cid) ORDER BY cid")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.unregister("sc_keep")
    cands: list[Shortcut] = []
    for r in rows:
        i = int(r["cid"])
        c, o, n, both = int(co[i]), int(ro[i]), int(pairs[i]), int(r["bo"])
        cands.append(Shortcut.model_construct(
            feature=r["feature"], text=r["text"], kind=r["g_kind"],
            attribute=r["attribute"] if r["g_attr"] == 0 else None, augmentation=r["augmentation"] if r["g_attr"] == 0 else None,
            pairs=n, chosen_only=c, rejected_only=o, both=both, neither=n - c - o - both, strength=float(strength[i]),
            p_value=float(p[i]), p_adjusted=None if np.isnan(adjusted[i]) else float(adjusted[i]), significant=bool(significant[i]),
            mean_diff=float(r["mean_diff"]) if r["mean_diff"] is not None else None,
            examples=sorted((r["ex_c"] if c >= o else r["ex_r"]) or []), folded=sorted(labels.get(i, [])),
        ))
    found = {(c.feature, c.text, c.kind, c.attribute, c.augmentation): c for c in cands if c.significant}
    cands = [c for c in cands if not _inside_found(c, found)]
    cands.sort(key=rank_key)
    return cands


def _inside_found(s: Shortcut, found: dict[tuple, Shortcut]) -> bool:
    """An opening (closing) that extends a significant shorter one of the same sign it did not fold: a slice of that cue, not a new one."""
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
    """Significant first, then the strongest split, the smaller p-value, the more specific cue; then by group, so no two tie."""
    return (not s.significant, -abs(s.strength), s.p_value, FEATURE_ORDER.get(s.feature, 9), -s.n_words, s.kind, s.text,
            s.attribute or "", s.augmentation or "")


def top(cands: Iterable[Shortcut], *, limit: int, fill: int) -> list[Shortcut]:
    """All significant candidates (up to `limit`), then the strongest others until there are `fill`."""
    cands = list(cands)
    sig = [c for c in cands if c.significant][:limit]
    rest = [c for c in cands if not c.significant][: max(0, fill - len(sig))]
    return sig + rest
