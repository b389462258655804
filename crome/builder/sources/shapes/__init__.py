"""One normaliser per source shape: `(row, index) -> SourcePair | Quarantined`, raising `_Reject` for a whole bad row.

- `generic`: prompt/chosen/rejected in any of the generic forms (plain, conversational, implicit
  prompt, HH transcripts) and an explicit column mapping; `resolve` picks the form from the values.
- `hh`: HH-RLHF transcripts split into a shared prompt and two answers.
- `sharegpt`, `llmbar`, `rmgallery`, `rmbench`: one dataset family each.

The registry from shape name to normaliser, and detection, live in `crome.builder.sources.detect`.
"""
