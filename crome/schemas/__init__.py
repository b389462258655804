"""Pydantic models: the single source of truth for every record and every oracle output."""

from crome.schemas.arrow import arrow_schema, hf_features, to_table
from crome.schemas.messages import AssistantMessage, Message
from crome.schemas.oracle import OUTPUT_MODELS, Counterfactual, Ratings, Rubric, RubricChange, RubricRating, Rubrics, Verdict
from crome.schemas.rows import DatasetRow, Provenance, Quality, Rejection, ShortcutEvidence
from crome.schemas.source import Quarantined, SourcePair, pair_id

ROW_COLUMNS = list(DatasetRow.model_fields)

__all__ = [
    "AssistantMessage", "Counterfactual", "DatasetRow", "Message", "OUTPUT_MODELS", "Provenance", "Quality",
    "Quarantined", "ROW_COLUMNS", "Ratings", "Rejection", "Rubric", "RubricChange", "RubricRating", "Rubrics",
    "ShortcutEvidence", "SourcePair", "Verdict", "arrow_schema", "hf_features", "pair_id", "to_table",
]
