"""Are two prompts about the same thing? TF-IDF cosine over content words, offline and deterministic.

An IQN tie is only a tie if neither answer addresses the prompt it is re-attached to, so the
irrelevant prompt must ask something else than the pair's own prompt. Word overlap of the last user
turn got that wrong both ways: a paraphrase shares few *words* ("How far is the Moon?" / "What is
the distance between the Earth and the Moon?") and two unrelated short questions share many
*function* words ("What is the capital of France?" / "What is the boiling point of water?").

Here a prompt is its whole conversation (every turn: a follow-up question is read with what it
follows), reduced to content terms: lower-cased words, English stopwords out, numbers out, a light
suffix stemmer so that "planets" / "planet" and "baking" / "bake" meet. Terms are weighted by
sublinear tf and by an idf fitted on the build's whole source (every prompt, all shards alike), so
words every prompt of the source uses ("write", "following", "task") count little and the topic words
count much; the similarity is the cosine of the two weight vectors, in [0, 1].

How the default threshold (0.2) was chosen is in `crome/builder/stages/neutral.py`.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from typing import Iterable

CACHE = 2048  # prompt vectors kept: a build's memory must not grow with its source
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)

# English function words plus the contractions' stems; no topic word is here.
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all almost also although always am among an and another any anybody anyone
    anything anyway anywhere are aren around as at be became because become been before being below besides between
    both but by can cannot could couldn did didn do does doesn doing don done down during each either else enough
    etc even ever every everyone everything few for from further get gets getting give given go goes going got had
    hadn has hasn have haven having he her here hers herself him himself his how however i if in into is isn it its
    itself just least less let like ll made make makes many may me might mine more most much must my myself need
    neither never no nobody none nor not nothing now of off often on once one only onto or other others otherwise
    our ours ourselves out over own per please quite rather re really s same several shall she should shouldn since
    so some somebody someone something sometimes still such t than that the their theirs them themselves then there
    therefore these they thing things this those though through thus to too toward towards under until up upon us
    use used using ve very via was wasn way we well were weren what whatever when whenever where whether which while
    who whoever whom whose why will with within without won would wouldn yes yet you your yours yourself yourselves
    tell say said know want wants would like could might ok okay hi hello thanks thank
    """.split()
)


def stem(word: str) -> str:
    """A light English suffix stemmer: plurals, -ing, -ed, possessives and a final e meet their word.

    "planets" / "planet", "baking" / "bake" / "baked", "studies" / "study", "running" / "run" each give
    one term. Not a linguist's stemmer, only consistent: the same rules on both prompts.
    """
    w = word.removesuffix("'s").removesuffix("'")
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("sses", "ches", "shes", "xes", "zes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        rest = w[: -len(suffix)]
        if w.endswith(suffix) and len(rest) >= 3 and any(v in rest for v in "aeiouy"):
            w = rest[:-1] if rest[-1] == rest[-2] and rest[-1] not in "aeiouls" else rest  # running -> run
            break
    return w[:-1] if len(w) > 3 and w.endswith("e") else w


def content_terms(text: str) -> list[str]:
    """The stemmed content words of `text`, in order (stopwords, numbers and one-letter words out)."""
    out = []
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in STOPWORDS:
            term = stem(word)
            if term not in STOPWORDS:
                out.append(term)
    return out


class Relatedness:
    """TF-IDF cosine between prompts; the idf is fitted once on a corpus of prompts (the build's source)."""

    def __init__(self, corpus: Iterable[str]):
        df: Counter[str] = Counter()
        n = 0
        for text in corpus:
            n += 1
            df.update(set(content_terms(text)))
        self._n = n
        self._df = df
        self._cache: OrderedDict[str, dict[str, float]] = OrderedDict()  # the last CACHE prompts' vectors

    def idf(self, term: str) -> float:
        # Smoothed, as scikit-learn's default: a term in every document still weighs 1, an unseen one the most.
        return math.log((1 + self._n) / (1 + self._df.get(term, 0))) + 1.0

    def vector(self, text: str) -> dict[str, float]:
        """L2-normalised sublinear tf * idf weights of the text's content terms."""
        vec = self._cache.get(text)
        if vec is None:
            tf = Counter(content_terms(text))
            raw = {t: (1.0 + math.log(c)) * self.idf(t) for t, c in tf.items()}
            norm = math.sqrt(sum(v * v for v in raw.values())) or 1.0
            vec = {t: v / norm for t, v in raw.items()}
            self._cache[text] = vec
            if len(self._cache) > CACHE:  # a memo for the prompts drawn again soon (a pair's own, its batch's)
                self._cache.popitem(last=False)
        return vec

    def similarity(self, a: str, b: str) -> float:
        """Cosine of the two prompts' content vectors: 0 shares no content word, 1 the same content.

        A prompt with no content word at all ("Hi!", "Why?") is taken as related to everything: what
        it asks cannot be told, so it is never paired as an irrelevant one.
        """
        va, vb = self.vector(a), self.vector(b)
        if not va or not vb:
            return 1.0
        if len(va) > len(vb):
            va, vb = vb, va
        return min(1.0, sum(w * vb.get(t, 0.0) for t, w in va.items()))


__all__ = ["STOPWORDS", "Relatedness", "content_terms", "stem"]
