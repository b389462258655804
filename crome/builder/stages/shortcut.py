"""Shortcut neutralisation: tie pairs that differ only in a phrase the data uses as a shortcut.

For each phrase shortcut found in the strict source pairs (`shortcut_find`: an opening or closing
n-gram whose split between chosen and rejected answers survives Holm's correction and moves at
least `shortcut_min_strength` of the pairs), the stage adds ties: an answer with the phrase
against the same answer without it (removed where the answer had it, added where it did not),
under the pair's own prompt, preference 0.5, kind `neutral`, augmentation `shortcut_neutral`, the
phrase in `attribute` and the discovery's figures in `provenance.shortcut`. This is the paper's
neutral augmentation aimed at a cue the audit found: the two answers differ in the phrase alone,
so a tie teaches that the phrase is worth nothing.

Which phrases: found ones are neutralised only if they can go without taking content along.
- A phrase on the deny list is kept (refusals, apologies that decline, safety and medical
  warnings, disclaimers: in a harmless-set answer "I can't help with that" is the point). The list
  is `DENY` below; it always applies to found phrases.
- With a judging oracle (an LLM), the `shortcut_content` template asks whether the phrase carries
  content, with three answers that hold it; a `true` keeps it (`carries_content`, the oracle's reason
  recorded). A check with no valid answer keeps it too (`check_failed`: the call failed, was refused,
  answered outside the schema, or got no answer in this run: a batch job holds it, the run stopped);
  the next build asks again (a refusal is final: it replays). The rules oracle cannot judge, so the
  deny list is all it has.
- Per answer: the phrase must be a span of at most `MAX_NGRAM` words at the opening or closing,
  at most `MAX_SHARE` of the answer's characters, and leave at least `MIN_REST_WORDS` words.
- A found phrase that is the start (the end) of a longer found one is dropped for the longer one:
  removing "sure" from "Sure thing, happy to help! ..." would leave a broken answer.
- `--shortcut-phrases FILE` gives phrases (used even if not significant; the deny list and the
  oracle's judgement do not apply to a phrase the user chose, the per-answer guard does) and vetoes
  them (never neutralised).

How many: up to `shortcut_max_per_phrase` ties per phrase, from the strict source pairs ranked by
a seeded hash of (seed, phrase, source id): the same pairs whatever the shard or order. For each
selected pair a seeded coin picks its chosen or rejected answer. Every decision not to neutralise
is a recorded rejection (stage `shortcut`), and the phrases are in `summary.json` (`shortcuts`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import duckdb
import pyarrow as pa

from crome.builder.stages.base import Stage, failure_detail, pair_rng
from crome.builder.stages.records import Candidate, PairContext
from crome.builder.stages.shortcut_find import MAX_NGRAM, Shortcut, find_shortcuts
from crome.schemas import Rejection, ShortcutEvidence, SourcePair
from crome.schemas.hashing import stable_hash

log = logging.getLogger(__name__)

MAX_SHARE = 0.25  # the phrase is a small part of the answer: a quarter of its characters at most
MIN_REST_WORDS = 3  # what is left is still an answer
MIN_STRENGTH = 0.1  # found phrases that move fewer pairs than this are reported, not rewritten
MAX_PER_PHRASE = 1000
EXAMPLES_FOR_ORACLE = 3
# Phrases that carry content when they open or close an answer: refusals, declining apologies,
# safety / medical / legal warnings, disclaimers and caveats. Matched anywhere in the normalised phrase.
DENY = [
    r"\bi (can ?not|can't|cannot|won't|will not|am not able|'m not able|am unable|'m unable)\b",
    r"\b(i'm|i am) sorry\b", r"\bi apologi[sz]e\b", r"\bunfortunately\b", r"\bas an ai\b",
    r"\b(not|never) (able|allowed|appropriate|safe|legal|ethical)\b", r"\b(illegal|unsafe|harmful|dangerous|unethical)\b",
    r"\b(warning|caution|disclaimer|note that|please note|important)\b",
    r"\b(consult|seek) (a|an|your|professional|medical|legal)\b", r"\b(doctor|physician|lawyer|emergency|911)\b",
    r"\bi must (decline|refuse|emphasi[sz]e)\b", r"\b(decline|refuse)\b",
]
_DENY = re.compile("|".join(f"(?:{d})" for d in DENY))


def norm(text: str) -> str:
    """The discovery's normal form: lower case, whitespace collapsed."""
    return " ".join(text.lower().split())


def denied(phrase: str) -> str | None:
    """The deny-list pattern a phrase matches, if any."""
    m = _DENY.search(norm(phrase))
    return m.group(0) if m else None


@dataclass
class Phrase:
    """A phrase the stage considered, what it decided, and (when neutralised) how to edit answers."""

    feature: str  # opening | closing
    text: str  # normalised
    origin: str  # found | given
    status: str = "used"  # used | vetoed | denied | carries_content | check_failed | nested
    reason: str = ""
    found: Shortcut | None = None
    surface: str | None = None  # the phrase as an answer writes it, for adding it where absent
    joiner: str = " "  # what separates it from the rest of that answer
    selected: set[str] = field(default_factory=set)  # source ids that get a tie

    def pattern(self) -> re.Pattern[str]:
        body = r"\s+".join(re.escape(w) for w in self.text.split())
        return re.compile(rf"^\s*{body}(?=\s|$)" if self.feature == "opening" else rf"(?:(?<=\s)|^){body}\s*$", re.IGNORECASE)

    def evidence(self, edit: str) -> ShortcutEvidence:
        f = self.found
        figures = {} if f is None else {"pairs": f.pairs, "chosen_only": f.chosen_only, "rejected_only": f.rejected_only,
                                        "both": f.both, "strength": round(f.strength, 6), "p_value": f.p_value, "p_adjusted": f.p_adjusted}
        return ShortcutEvidence(feature=self.feature, text=self.text, origin=self.origin, edit=edit, **figures)

    def record(self) -> dict[str, Any]:
        """How the phrase appears in summary.json and in the build's printout."""
        out: dict[str, Any] = {"feature": self.feature, "text": self.text, "origin": self.origin, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.found is not None:
            f = self.found
            out.update(pairs=f.pairs, chosen_only=f.chosen_only, rejected_only=f.rejected_only, both=f.both,
                       strength=round(f.strength, 4), p_adjusted=f.p_adjusted)
        if self.status == "used":
            out["selected_pairs"] = len(self.selected)
        return out


def parse_phrase_file(text: str, name: str = "--shortcut-phrases") -> list[dict[str, str]]:
    """Lines `opening: PHRASE`, `closing: PHRASE` (give) and `veto: PHRASE`; `#` starts a comment."""
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        action, sep, phrase = line.partition(":")
        action, phrase = action.strip().lower(), phrase.strip()
        if not sep or action not in ("opening", "closing", "veto") or not phrase:
            raise ValueError(f"{name} line {no}: expected 'opening: PHRASE', 'closing: PHRASE' or 'veto: PHRASE', got {line[:80]!r}")
        if action != "veto" and len(phrase.split()) > MAX_NGRAM:
            raise ValueError(f"{name} line {no}: a phrase to neutralise has at most {MAX_NGRAM} words, got {len(phrase.split())}")
        out.append({"action": action, "text": norm(phrase)})
    return out


def pairs_table(pairs: Iterable[SourcePair]) -> pa.Table:
    """Strict source pairs as the `pairs` relation the finder reads (id = source id, kind original)."""
    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    rows = [{"id": p.source_id, "kind": "original", "attribute": None, "augmentation": "original", "preference": p.preference,
             "chosen": [{"role": "assistant", "content": p.chosen.content}],
             "rejected": [{"role": "assistant", "content": p.rejected.content}]} for p in pairs if p.preference == 1.0]
    schema = pa.schema([("id", pa.string()), ("kind", pa.string()), ("attribute", pa.string()), ("augmentation", pa.string()),
                        ("preference", pa.float64()), ("chosen", msg), ("rejected", msg)])
    return pa.Table.from_pylist(rows, schema=schema)


def candidates_from(found: list[Shortcut], *, min_strength: float) -> list[Phrase]:
    """The found phrase shortcuts worth neutralising, longest first where one starts (ends) another."""
    cands = [Phrase(s.feature, s.text, "found", found=s) for s in found
             if s.significant and s.feature in ("opening", "closing") and s.kind in ("original", "all") and s.attribute is None
             and abs(s.strength) >= min_strength]
    by_key: dict[tuple[str, str], Phrase] = {}
    for p in cands:  # "all" and "original" can both hold it: keep the first (the stronger by rank)
        by_key.setdefault((p.feature, p.text), p)
    cands = list(by_key.values())
    for p in cands:
        for q in cands:
            if p is not q and p.feature == q.feature and len(q.text) > len(p.text) and (
                    q.text.startswith(p.text + " ") if p.feature == "opening" else q.text.endswith(" " + p.text)):
                p.status, p.reason = "nested", f"part of the longer phrase {q.text!r}"
                break
    return cands


def plan_phrases(pairs: Sequence[SourcePair], *, found: list[Shortcut], user: list[dict[str, str]], min_strength: float,
                 max_per_phrase: int, seed: int) -> list[Phrase]:
    """Found and given phrases with their status (before any oracle check), and the pairs each would use."""
    phrases = candidates_from(found, min_strength=min_strength)
    vetoes = {u["text"] for u in user if u["action"] == "veto"}
    known = {(p.feature, p.text): p for p in phrases}
    for u in user:
        if u["action"] == "veto":
            continue
        p = known.get((u["action"], u["text"]))
        if p is None:
            p = Phrase(u["action"], u["text"], "given")
            p.found = next((s for s in found if s.feature == p.feature and s.text == p.text and s.attribute is None), None)
            phrases.append(p)
            known[(p.feature, p.text)] = p
        p.origin, p.status, p.reason = "given", "used", ""
    for p in phrases:
        if p.text in vetoes:
            p.status, p.reason = "vetoed", "vetoed in --shortcut-phrases"
        elif p.origin == "found" and p.status == "used" and (hit := denied(p.text)):
            p.status, p.reason = "denied", f"deny list: {hit!r} (refusal, warning or disclaimer)"
    strict = [pair for pair in pairs if pair.preference == 1.0]
    for p in phrases:
        rx = p.pattern()
        for pair in strict:
            for answer in (pair.chosen.content, pair.rejected.content):
                m = rx.search(answer)
                if m and p.surface is None:
                    p.surface = m.group(0).strip()
                    rest = answer[m.end():] if p.feature == "opening" else answer[: m.start()]
                    gap = re.match(r"\s*", rest if p.feature == "opening" else rest[::-1]).group(0)
                    p.joiner = (gap if p.feature == "opening" else gap[::-1]) or " "
            if p.surface is not None:
                break
        if p.surface is None:
            p.surface = p.text if p.origin == "given" else p.text
        ranked = sorted(strict, key=lambda pair: stable_hash([seed, "shortcut", p.feature, p.text, pair.source_id]))
        p.selected = {pair.source_id for pair in ranked[:max_per_phrase]}
    return phrases


def examples_with(p: Phrase, pairs: Sequence[SourcePair], n: int = EXAMPLES_FOR_ORACLE) -> list[str]:
    rx, out = p.pattern(), []
    for pair in pairs:
        for answer in (pair.chosen.content, pair.rejected.content):
            if len(out) < n and rx.search(answer):
                out.append(answer[:1500])
    return out


def edit(answer: str, p: Phrase) -> tuple[str, str, str] | str:
    """(with phrase, without phrase, "removed" | "added") for one answer, or why it cannot be neutralised."""
    m = p.pattern().search(answer)
    if m:
        without = (answer[: m.start()] + answer[m.end():]).strip() if p.feature == "opening" else answer[: m.start()].rstrip()
        with_, how = answer, "removed"
    else:
        without = answer
        body = answer.strip()
        with_ = f"{p.surface}{p.joiner}{body}" if p.feature == "opening" else f"{body}{p.joiner}{p.surface}"
        how = "added"
    if len(without.split()) < MIN_REST_WORDS:
        return f"without the phrase fewer than {MIN_REST_WORDS} words are left"
    if len(with_) and (len(with_) - len(without)) / len(with_) > MAX_SHARE:
        return f"the phrase is over {MAX_SHARE:.0%} of the answer"
    return with_, without, how


def tie(ctx_pair: SourcePair, p: Phrase, seed: int) -> Candidate | str:
    """The shortcut-neutral tie of one source pair for one phrase, or why there is none."""
    rng = pair_rng(seed, ctx_pair.source_id, f"shortcut:{p.feature}:{p.text}")
    side = "chosen" if rng.random() < 0.5 else "rejected"
    made = edit(getattr(ctx_pair, side).content, p)
    if isinstance(made, str):
        return made
    with_, without, how = made
    first, second = (with_, without) if rng.random() < 0.5 else (without, with_)
    return Candidate(
        source=ctx_pair, kind="neutral", augmentation="shortcut_neutral", attribute=p.text, prompt=list(ctx_pair.prompt),
        chosen=first, rejected=second, preference=0.5, evidence=p.evidence(how), original_answer=getattr(ctx_pair, side).content,
        quality={"length_ratio": round(len(with_) / max(1, len(without)), 4)}, checks=["phrase_only"],
    )


def phrase_rejection(p: Phrase, source_id: str) -> Rejection:
    """A phrase left alone, recorded once (on the first pair that would have had its tie)."""
    return Rejection(source_id=source_id, stage="shortcut", reason=f"phrase_{p.status}", detail=f"{p.feature} {p.text!r}: {p.reason}"[:500],
                     augmentation="shortcut_neutral", attribute=p.text)


def summary_record(rows: Iterable[Any], rejections: Iterable[Rejection]) -> dict[str, Any]:
    """summary.json `shortcuts`: each phrase neutralised (its evidence, its ties) and each left alone (why)."""
    used: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        ev = r.provenance.shortcut if r.augmentation == "shortcut_neutral" else None
        if ev is None:
            continue
        entry = used.setdefault((ev.feature, ev.text), {**ev.model_dump(exclude={"edit"}), "status": "used", "ties": 0, "removed": 0, "added": 0})
        entry["ties"] += 1
        entry[ev.edit or "removed"] += 1
    left: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: dict[str, int] = {}
    for j in rejections:
        if j.stage != "shortcut":
            continue
        if j.reason == "phrase_carries_answer":
            skipped[j.attribute or ""] = skipped.get(j.attribute or "", 0) + 1
        else:
            feature, _, _ = j.detail.partition(" ")
            left.setdefault((feature, j.attribute or ""), {"feature": feature, "text": j.attribute, "status": j.reason.removeprefix("phrase_"),
                                                           "reason": j.detail.partition(": ")[2]})
    for entry in used.values():
        entry["answers_skipped"] = skipped.get(entry["text"], 0)
    return {"phrases": list(used.values()) + [v for k, v in left.items() if k not in used], "ties": sum(e["ties"] for e in used.values())}


class ShortcutStage(Stage):
    """With `neutralize_shortcuts`: ties that differ only in a phrase shortcut of the source."""

    name = "shortcut"
    tasks = ("shortcut_content",)
    ordered = True  # after the pair's own stages; the discovery runs once, over every source pair

    def __init__(self, env) -> None:
        super().__init__(env)
        self.phrases: list[Phrase] | None = None
        self.recorded: set[tuple[str, str]] = set()

    async def discover(self) -> list[Phrase]:
        o = self.options
        pairs = [c.pair for c in self.env.pool]
        con = duckdb.connect()
        try:
            con.register("pairs", pairs_table(pairs))
            found = find_shortcuts(con)
        finally:
            con.close()
        phrases = plan_phrases(pairs, found=found, user=list(o.shortcut_phrases or []), min_strength=o.shortcut_min_strength,
                               max_per_phrase=o.shortcut_max_per_phrase, seed=o.seed)
        if self.env.capabilities.verify:  # a judge: ask whether each found phrase carries content
            for p in phrases:
                if p.origin == "found" and p.status == "used":
                    await self.check(p, pairs)
        return phrases

    async def check(self, p: Phrase, pairs: Sequence[SourcePair]) -> None:
        variables = {"phrase": p.surface or p.text, "feature": p.feature, "examples": examples_with(p, pairs)}
        try:
            resp = await self.ask("shortcut_content", variables, {"phrase": p.text, "feature": p.feature})
        except Exception as exc:  # noqa: BLE001 - no answer in this run is no decision, and must not end the run here
            # The call raised instead of answering: its request waits on a batch job, the run stopped (--max-cost,
            # Ctrl-C, --max-failures, a fatal oracle error: the run reports that itself) or a bug. This stage runs
            # in the ordered phase, where nothing would catch it before the export. Left alone, as a failed check;
            # the next build asks again.
            # crome's own stops (BuildStopped, BatchPending, an oracle's errors) are expected; anything else is
            # likely a bug, so its traceback goes to the log.
            log.warning("shortcut content check of %s %r not answered: %s", p.feature, p.text, type(exc).__name__,
                        exc_info=not type(exc).__module__.startswith("crome."))
            p.status, p.reason = "check_failed", f"content check not answered in this run: {type(exc).__name__}: {exc}"[:300]
            return
        if not resp.ok or resp.parsed is None:
            p.status, p.reason = "check_failed", f"content check: {failure_detail(resp)}"
        elif resp.parsed.carries_content:
            p.status, p.reason = "carries_content", f"oracle: {resp.parsed.reason}"[:300]

    async def __call__(self, ctx: PairContext) -> bool:
        o = self.options
        if not o.neutralize_shortcuts or ctx.pair.preference != 1.0:
            return True
        if self.phrases is None:
            self.phrases = await self.discover()
        for p in self.phrases:
            if ctx.pair.source_id not in p.selected:
                continue
            if p.status != "used":
                if (p.feature, p.text) not in self.recorded:
                    self.recorded.add((p.feature, p.text))
                    ctx.rejections.append(phrase_rejection(p, ctx.pair.source_id))
                continue
            made = tie(ctx.pair, p, o.seed)
            if isinstance(made, str):
                ctx.reject_pair("shortcut", "phrase_carries_answer", f"{p.feature} {p.text!r}: {made}", "shortcut_neutral", p.text)
            else:
                ctx.candidates.append(made)
        return True
