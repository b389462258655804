"""Line-level markdown structure and sentence splitting, shared by the rules oracle and validation.

Both need the same idea of an answer's surface (DESIGN: "an intervention changes one rubric and
nothing else"): its opening sentence, its closing sentence and its formatting (headers, lists,
code fences, tables, bold). Pure functions over strings, no markdown library: answers are
chat-style markdown and a line classifier is all the rules need, at a few microseconds a line.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

FENCE_RE = re.compile(r"^\s*(?:```|~~~)")
HEADER_RE = re.compile(r"^(\s{0,3}#{1,6}\s+)(?=\S)")
# One star then a space: "**bold**" at the start of a line is not a bullet.
BULLET_RE = re.compile(r"^(\s*[-*+\u2022]\s+)(?=\S)")
# "1." "12)" "a." "b)" "A)"; capital "A." is left out because it also starts sentences ("A. Smith").
NUMBERED_RE = re.compile(r"^(\s*(?:\d{1,3}[.)]|[a-z][.)]|[A-Z]\))\s+)(?=\S)")
TABLE_RE = re.compile(r"^\s*\|.*\|\s*$")
TABLE_SEP_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
BOLD_RE = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")

# A sentence ends at . ! ? (plus closing quotes/brackets) followed by space and something that can
# start a sentence, or at CJK full-width punctuation, which needs no space.
_SENT_END_RE = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[*_A-Z0-9\u00c0-\u00de])|[\u3002\uff01\uff1f]+[\"'\u201d\u300d)]*\s*")
_ABBREV_RE = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|Dr|Mr|Mrs|Ms|Prof|St|Jr|Sr|Fig|approx|Inc|Ltd|Co|Mt|U\.S|a\.m|p\.m)|\b[A-Z])\.$")

LineKind = str  # blank | fence | code | header | bullet | numbered | table | prose


@dataclass
class Line:
    """One line of an answer with its markdown role; `prefix` is the marker, `body` the text after it."""

    text: str
    kind: LineKind
    prefix: str = ""
    body: str = ""

    @property
    def has_sentences(self) -> bool:
        return self.kind in ("prose", "bullet", "numbered")


def parse_lines(text: str) -> list[Line]:
    """Classify every line; lines between code fences are `code` whatever they look like."""
    out: list[Line] = []
    in_code = False
    for raw in text.split("\n"):
        if FENCE_RE.match(raw):
            in_code = not in_code
            out.append(Line(raw, "fence", body=raw))
        elif in_code:
            out.append(Line(raw, "code", body=raw))
        elif not raw.strip():
            out.append(Line(raw, "blank"))
        elif m := HEADER_RE.match(raw):
            out.append(Line(raw, "header", m.group(1), raw[m.end():]))
        elif TABLE_RE.match(raw):
            out.append(Line(raw, "table", body=raw))
        elif m := BULLET_RE.match(raw):
            out.append(Line(raw, "bullet", m.group(1), raw[m.end():]))
        elif m := NUMBERED_RE.match(raw):
            out.append(Line(raw, "numbered", m.group(1), raw[m.end():]))
        else:
            out.append(Line(raw, "prose", body=raw))
    return out


def sentence_spans(body: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of one line; the whitespace between sentences is in no span."""
    spans: list[tuple[int, int]] = []
    start = len(body) - len(body.lstrip())
    for m in _SENT_END_RE.finditer(body):
        end = m.end()
        seg = body[start:end].rstrip()
        if not seg:
            continue
        if _ABBREV_RE.search(seg.rstrip("\"')]\u201d\u2019")) and "\u3002" not in seg[-2:]:
            continue  # "e.g. Paris" or "J. Smith": not a sentence end
        spans.append((start, start + len(seg)))
        start = end
    rest = body[start:].rstrip()
    if rest.strip():
        spans.append((start, start + len(rest)))
    return spans


def split_sentences(body: str) -> list[str]:
    return [body[a:b] for a, b in sentence_spans(body)]


def _edge(lines: list[Line], first: bool) -> str:
    seq = lines if first else reversed(lines)
    for line in seq:
        if line.kind == "blank":
            continue
        if line.has_sentences:
            sents = split_sentences(line.body)
            if sents:
                return (line.prefix + sents[0]).strip() if first else sents[-1].strip()
        return line.text.strip()
    return ""


def opening(text: str, lines: list[Line] | None = None) -> str:
    """The first sentence of the first non-blank line (the whole line for code, tables, headers)."""
    return _edge(lines if lines is not None else parse_lines(text), True)


def closing(text: str, lines: list[Line] | None = None) -> str:
    """The last sentence of the last non-blank line: the sign-off when there is one."""
    return _edge(lines if lines is not None else parse_lines(text), False)


def fence_count(text: str) -> int:
    return sum(1 for raw in text.split("\n") if FENCE_RE.match(raw))


# ---------------------------------------------------------------------------------------------
# language: Unicode script shares, and for Latin script a stopword vote


def _script(ch: str) -> str:
    o = ord(ch)
    if o < 0x250 or 0x1E00 <= o <= 0x1EFF:
        return "latin"
    if 0x370 <= o <= 0x3FF:
        return "greek"
    if 0x400 <= o <= 0x52F:
        return "cyrillic"
    if 0x590 <= o <= 0x5FF:
        return "hebrew"
    if 0x600 <= o <= 0x6FF or 0x750 <= o <= 0x77F:
        return "arabic"
    if 0x900 <= o <= 0x97F:
        return "devanagari"
    if 0xE00 <= o <= 0xE7F:
        return "thai"
    if 0x3040 <= o <= 0x30FF:
        return "kana"
    if 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF:
        return "han"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "hangul"
    return "other"


_STOPWORDS: dict[str, set[str]] = {
    "en": set("the and is are of to in that it for with as was this be you not on have by what which can or from they will an your".split()),
    "es": set("el la los las de que y en un una es por con para no se del al lo como más pero sus su está son".split()),
    "fr": set("le la les de des et est un une du en que qui pour dans pas sur ce il elle au avec sont nous vous je".split()),
    "de": set("der die das und ist nicht ein eine zu den von mit sich des auf für im dem auch es sie ich wir sind oder wie".split()),
    "it": set("il lo la di che e un una per non sono della del con gli le si è anche come ma questo alla nel".split()),
    "pt": set("o a os as de que e do da em um uma para com não por se na no mais dos das é ao seu sua".split()),
    "nl": set("de het een en van is dat niet op te zijn met voor die er ook maar aan om bij als wordt naar ik".split()),
}
# A word shared by k languages gives each 1/k of a vote.
_STOPWORD_VOTES: dict[str, list[tuple[str, float]]] = {}
for _lang, _words in _STOPWORDS.items():
    for _w in _words:
        _STOPWORD_VOTES.setdefault(_w, []).append((_lang, 0.0))
_STOPWORD_VOTES = {w: [(lang, 1.0 / len(v)) for lang, _ in v] for w, v in _STOPWORD_VOTES.items()}

_ASCII_LETTER_RE = re.compile(r"[A-Za-z]")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_LATIN_WORD_RE = re.compile(r"[a-z\u00e0-\u00ff']+")
_SAMPLE_CHARS = 3000  # about 500 words: a language guess needs a sample, not a 12,000-character answer
MIN_LETTERS = 10  # below this there is no language to tell


def language_profile(text: str) -> tuple[dict[str, float], dict[str, float], int]:
    """(script shares, Latin stopword language shares, letters counted)."""
    sample = text[:_SAMPLE_CHARS]
    counts: Counter[str] = Counter()
    counts["latin"] = len(_ASCII_LETTER_RE.findall(sample))
    if not sample.isascii():
        for ch in _NON_ASCII_RE.findall(sample):
            if ch.isalpha():
                counts[_script(ch)] += 1
    if counts["kana"]:  # Japanese writes Han and kana together; Han alone is Chinese
        counts["kana"] += counts.pop("han", 0)
    letters = sum(counts.values())
    scripts = {k: v / letters for k, v in counts.items() if v} if letters else {}
    votes: Counter[str] = Counter()
    if counts["latin"]:
        for word in _LATIN_WORD_RE.findall(sample.lower())[:1500]:
            for lang, w in _STOPWORD_VOTES.get(word, ()):
                votes[lang] += w
    total = sum(votes.values())
    langs = {k: v / total for k, v in votes.items()} if total >= 3 else {}
    return scripts, langs, letters


def language_similarity(original: str, rewrite: str) -> float | None:
    """Overlap (sum of minima) of the two script profiles, the Latin share weighted by stopword overlap.

    None when either text has too few letters to tell.
    """
    s1, l1, n1 = language_profile(original)
    s2, l2, n2 = language_profile(rewrite)
    if n1 < MIN_LETTERS or n2 < MIN_LETTERS:
        return None
    # Summed in sorted order: a set's order follows the process's string hashing, and floats summed in
    # another order differ in their last bits, which flipped a `< 0.5` check between two runs.
    sim = 0.0
    for script in sorted(s1.keys() & s2.keys()):
        shared = min(s1[script], s2[script])
        if script == "latin" and l1 and l2:
            shared *= sum(min(l1[k], l2[k]) for k in sorted(l1.keys() & l2.keys()))
        sim += shared
    return sim
