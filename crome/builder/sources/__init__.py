"""Load a preference source (local file or Hub dataset) and normalise every row into `SourcePair`s.

Shapes understood (detected from the first rows, reported by short name):

- ``plain``: ``prompt``/``chosen``/``rejected`` strings (UltraFeedback, TRL standard preference).
- ``conversational``: the same columns holding message lists (TRL conversational preference); the
  answers may also be whole conversations that start with the prompt.
- ``implicit_prompt``: only ``chosen``/``rejected`` message lists; the prompt is their shared prefix.
- ``hh_transcript``: only ``chosen``/``rejected`` strings in the HH-RLHF ``\\n\\nHuman:`` /
  ``\\n\\nAssistant:`` transcript form; the prompt is the shared turns, multi-turn kept as messages.
- ``sharegpt``: ``conversations`` of ``{from, value}`` plus ``chosen``/``rejected`` message objects.
- ``llmbar``: ``input``/``output_1``/``output_2``/``label`` (label 1 or 2 names the better output).
- ``rmgallery``: RM-Gallery's ``evaluation_sample.input`` plus ``outputs[].content_label``.
- ``rmbench``: RM-Bench's ``prompt`` with three ``chosen`` and three ``rejected`` style variants,
  expanded to all nine (chosen_i, rejected_j) pairs.
- ``mapped``: an explicit column mapping (``prompt=question,chosen=good,rejected=bad``, optionally
  ``label=COL`` when the two mapped answers are A/B and the label says which is better).

A row that cannot be used becomes a `Quarantined` record (short reason + one-line detail naming the
field); a source that cannot be read at all, or a wrong mapping, raises `SourceError`.

Modules, bottom up (each imports only those above it):

- `errors`: `SourceError` for a whole source, `_Reject` / `_Unreadable` for one row, `QUARANTINE_REASONS`.
- `fields`: value-level helpers shared by the normalisers (text, messages, prompt, answer, label, pair).
- `shapes`: one normaliser per shape (`generic` also serves mapped columns; `hh` splits transcripts).
- `detect`: `SHAPES`, the `NORMALISERS` registry and per-row shape detection.
- `readers`: local files (JSONL, gzipped JSONL, JSON, Parquet, CSV), dataset folders and Hub ids.
- `stream`: `SourceStream` / `iter_source` / `load_source`, and `parse_mapping`.

Tuning knobs (`readers.PARQUET_BATCH_ROWS`, `stream.DETECT_ROWS`) are read from their own module at
use, so patch them there; they are deliberately not re-exported here.
"""

from crome.builder.sources.detect import SHAPES
from crome.builder.sources.errors import QUARANTINE_REASONS, SourceError
from crome.builder.sources.fields import Item
from crome.builder.sources.readers import FILE_TYPES
from crome.builder.sources.stream import MAPPING_KEYS, LoadResult, SourceStream, iter_source, load_source, parse_mapping

__all__ = [
    "FILE_TYPES", "MAPPING_KEYS", "QUARANTINE_REASONS", "SHAPES", "Item", "LoadResult", "SourceError", "SourceStream",
    "iter_source", "load_source", "parse_mapping",
]
