"""The fake server's answers for a good judge and editor, by output schema: shared by the build tests,
the viewer's test and benchmarks/bench_bookkeeping.py (through test_build_llm, which re-exports them)."""

from __future__ import annotations

import re

from fake_llm_server import RequestRecord

RUBRICS = ["factuality", "relevance", "completeness"]


def _between(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.DOTALL)
    return m.group(1) if m else ""


def other_rubrics(text: str) -> list[str]:
    """The names the verify prompt lists under "Other rubrics:", as a judge reads them."""
    section = text.split("Other rubrics:", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^- (\w+):", section, re.M)


def responder(record: RequestRecord):
    """Realistic answers by output schema: what a good judge and editor would return."""
    title = (record.schema or {}).get("title")
    text = "\n".join(t for role, t in record.messages if role == "user")
    if title == "Rubrics":
        return {"rubrics": [{"name": n, "definition": f"how well the answer handles {n}"} for n in RUBRICS]}
    if title == "Ratings":
        answer = _between(text, "answer")
        rating = "strong" if answer.count(".") >= 6 else "weak"
        return {"ratings": [{"rubric": n, "rating": rating, "reason": "see the answer"} for n in RUBRICS]}
    if title == "Counterfactual":
        words = _between(text, "answer").split(" ")
        target = re.search(r"target rubric:\n- (\w+):", text).group(1)
        tag = "wrongly" if "clearly WORSE" in text else "precisely"
        mid, k = len(words) // 2, max(2, len(words) // 4)
        words[mid : mid + k] = [f"{tag}-{target}"] + [f"{tag}{i}" for i in range(k - 1)]
        return {"rewrite": " ".join(words), "change": f"changed {target}"}
    if title == "Verdict":
        target = "worse" if "becomes worse" in text else "better"
        return {"target": target, "others": [{"rubric": n, "change": "same"} for n in other_rubrics(text)], "explanation": "as intended"}
    return None
