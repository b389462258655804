"""RM-Gallery rows: ``evaluation_sample.input`` plus ``outputs[]`` labelled chosen/rejected by ``content_label``."""

from __future__ import annotations

from collections.abc import Iterator

from crome.builder.sources.errors import _Reject
from crome.builder.sources.fields import _MISSING, Item, _answer, _extras, _kind, _messages, _pair, _subset, _text


def _rmgallery(row: dict, index: int) -> Iterator[Item]:
    sample = row.get("evaluation_sample", _MISSING)
    if sample is _MISSING or sample is None:
        _text(sample, "evaluation_sample")  # raises missing_field
    if not isinstance(sample, dict):
        raise _Reject("bad_row", f"evaluation_sample is {_kind(sample)}, expected an object")
    prompt = _messages(sample.get("input", _MISSING), "evaluation_sample.input")
    outputs = sample.get("outputs", _MISSING)
    if not isinstance(outputs, list):
        _messages(outputs, "evaluation_sample.outputs")  # raises with the right reason
    found: dict[str, list[int]] = {"chosen": [], "rejected": []}
    for i, out in enumerate(outputs):
        label = out.get("content_label") if isinstance(out, dict) else None
        if label in found:
            found[label].append(i)
    if len(found["chosen"]) != 1 or len(found["rejected"]) != 1:
        raise _Reject(
            "bad_answer",
            f"evaluation_sample.outputs holds {len(found['chosen'])} 'chosen' and {len(found['rejected'])} "
            "'rejected' answers, expected one of each",
        )
    texts = {
        label: _answer(outputs[idx[0]], f"evaluation_sample.outputs[{idx[0]}]", prompt) for label, idx in found.items()
    }
    info = sample.get("data_info") if isinstance(sample.get("data_info"), dict) else {}
    meta = _extras(row, ("evaluation_sample",))
    yield _pair(prompt, texts["chosen"], texts["rejected"], row=index, subset=_subset(info.get("domain")), metadata=meta)
