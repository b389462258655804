"""Preference data for training: load a run, a published folder or a Hub id; tokenise; collate.

Text format. When the tokenizer has a chat template, a pair side is
`apply_chat_template(prompt + [answer])`. Otherwise the documented plain format is used: the
prompt segment is its turns as `User: ...` / `Assistant: ...` / `System: ...` joined by blank
lines and ending in `\\n\\nAssistant:`, the answer segment is the answer text, and the two are
joined by the tokenizer's own pair template (`[CLS] prompt [SEP] answer [SEP]` for BERT-like
encoders, plain concatenation plus EOS for decoders without one).

Truncation (`max_length`) cuts the prompt side first, from its start, so the latest turn stays
next to the answer; the prompt keeps at least a quarter of the budget, and only then is the
answer cut from its end. Every cut is counted; no pair is dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from crome.outputs import read_export
from crome.schemas.hashing import stable_hash

KINDS = ("original", "causal", "neutral")
KIND_IDS = {k: i for i, k in enumerate(KINDS)}
PREFERENCES = (0.5, 1.0)
REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_]+?)-\d+-of-\d+\.parquet$")


class DataError(ValueError):
    """A row or file that does not follow the data contract, named precisely."""


# ---------------------------------------------------------------- normalising one row


def as_messages(prompt: Any, *, where: str = "prompt") -> list[dict[str, str]]:
    """A prompt as a list of {role, content}; a bare string is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, Sequence) or not prompt:
        raise DataError(f"{where}: expected a string or a non-empty list of {{role, content}}, got {type(prompt).__name__}")
    out = []
    for i, m in enumerate(prompt):
        role, content = _role_content(m)
        if role not in PLAIN_ROLES or not isinstance(content, str):
            raise DataError(f"{where}[{i}]: expected {{role: system|user|assistant, content: str}}, got {m!r:.120}")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        raise DataError(f"{where}: needs at least one user turn")
    return out


def as_answer(answer: Any, *, where: str) -> str:
    """An answer as text: a string, an assistant message, or a one-message list (the data contract)."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, Sequence) and answer and not isinstance(answer, (bytes, str)):
        answer = answer[-1]
    role, content = _role_content(answer)
    if isinstance(content, str) and role in (None, "assistant"):
        return content
    raise DataError(f"{where}: expected a string or [{{role: assistant, content: str}}], got {answer!r:.120}")


def _role_content(m: Any) -> tuple[Any, Any]:
    if isinstance(m, dict):
        return m.get("role"), m.get("content")
    return getattr(m, "role", None), getattr(m, "content", None)


# ---------------------------------------------------------------- encoding one side of a pair


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    token_type_ids: list[int] | None
    prompt_cut: int = 0  # prompt tokens removed by truncation
    answer_cut: int = 0  # answer tokens removed by truncation


def fit(prompt_len: int, answer_len: int, budget: int) -> tuple[int, int]:
    """Tokens kept of (prompt, answer) within budget: the prompt is cut first, down to a quarter of the budget."""
    if prompt_len + answer_len <= budget:
        return prompt_len, answer_len
    floor = min(prompt_len, budget // 4)
    keep_answer = min(answer_len, budget - floor)
    return min(prompt_len, budget - keep_answer), keep_answer


def effective_max_length(max_length: int | None, tokenizer: Any, model: Any | None = None) -> int | None:
    """The smallest of the requested length, the tokenizer's limit and the model's positions (None: no limit)."""
    limits = [max_length, getattr(tokenizer, "model_max_length", None)]
    if model is not None:
        limits.append(getattr(model.config, "max_position_embeddings", None))
    # Tokenizers without a real limit report ~1e30.
    real = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1_000_000]
    return min(real) if real else None


def plain_prompt(prompt: list[dict[str, str]]) -> str:
    return "\n\n".join(f"{PLAIN_ROLES[m['role']]}: {m['content']}" for m in prompt) + "\n\nAssistant:"


class PairEncoder:
    """(prompt, answer) -> model input ids, with the chat template or the plain format, truncated prompt-first."""

    def __init__(self, tokenizer: Any, max_length: int | None = None, *, model: Any | None = None):
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.max_length = effective_max_length(max_length, tokenizer, model)
        self.with_types = not self.chat and "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self.n_special = 0 if self.chat else tokenizer.num_special_tokens_to_add(pair=True)
        # Decoders without a pair template read the reward at the last token: give it a fixed end marker.
        self.eos = tokenizer.eos_token_id if (not self.chat and self.n_special == 0) else None
        self._specials = set(tokenizer.all_special_ids)
        self._backend = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not self.chat and backend is not None:
            import tokenizers

            # A private copy: tokenizer.json may switch on padding/truncation in the backend itself.
            self._backend = tokenizers.Tokenizer.from_str(backend.to_str())
            self._backend.no_padding()
            self._backend.no_truncation()
        if self.max_length is not None and self.max_length < self.n_special + 8:
            raise ValueError(f"max_length {self.max_length} leaves no room for text ({self.n_special} special tokens)")

    def segments(self, prompt: list[dict[str, str]], answer: str) -> tuple[str, str]:
        """(prompt text, answer text) whose concatenation is what the model reads."""
        if not self.chat:
            return plain_prompt(prompt), answer
        full = self.tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
        head = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        if full.startswith(head):
            return head, full[len(head) :]
        # Templates that rewrite earlier turns once an answer follows: split where the answer starts.
        at = full.rfind(answer.strip()) if answer.strip() else -1
        return (full[:at], full[at:]) if at > 0 else (full, "")

    def encode_batch(self, prompts: list[list[dict[str, str]]], answers: list[str]) -> list[Encoded]:
        return self.encode_texts([self.segments(p, a) for p, a in zip(prompts, answers)])

    def encode_texts(self, texts: list[tuple[str, str]]) -> list[Encoded]:
        """Encode (prompt text, answer text) segments from `segments`."""
        if self._backend is not None:
            return self._encode_fast(texts)
        flat = self.tokenizer([t for pair in texts for t in pair], add_special_tokens=False)["input_ids"]
        return [self._encode_ids(flat[2 * i], flat[2 * i + 1]) for i in range(len(texts))]

    def _budget(self, reserved: int) -> int | None:
        if self.max_length is None:
            return None
        return self.max_length - self.n_special - reserved - (1 if self.eos is not None else 0)

    def _encode_fast(self, texts: list[tuple[str, str]]) -> list[Encoded]:
        encs = self._backend.encode_batch([t for pair in texts for t in pair], add_special_tokens=False)
        out = []
        for i in range(len(texts)):
            p, a = encs[2 * i], encs[2 * i + 1]
            plen, alen = len(p.ids), len(a.ids)
            budget = self._budget(0)
            keep_p, keep_a = (plen, alen) if budget is None else fit(plen, alen, budget)
            if keep_p < plen:
                p.truncate(keep_p, direction="left")
            if keep_a < alen:
                a.truncate(keep_a, direction="right")
            joined = self._backend.post_process(p, a, add_special_tokens=True)
            ids, types = list(joined.ids), list(joined.type_ids)
            if self.eos is not None:
                ids.append(self.eos)
                types.append(types[-1] if types else 0)
            out.append(Encoded(ids, types if self.with_types else None, plen - keep_p, alen - keep_a))
        return out

    def _encode_ids(self, p: list[int], a: list[int]) -> Encoded:
        # Leading special tokens of a chat-rendered prompt (BOS) are never cut.
        head = 0
        while head < len(p) and p[head] in self._specials:
            head += 1
        pinned, p_body = p[:head], p[head:]
        budget = self._budget(len(pinned))
        keep_p, keep_a = (len(p_body), len(a)) if budget is None else fit(len(p_body), len(a), max(budget, 2))
        p_kept = pinned + p_body[len(p_body) - keep_p :]
        a_kept = a[:keep_a]
        types = None
        if self.chat or not hasattr(self.tokenizer, "build_inputs_with_special_tokens"):
            ids = p_kept + a_kept
        else:
            ids = self.tokenizer.build_inputs_with_special_tokens(p_kept, a_kept)
            if self.with_types:
                types = self.tokenizer.create_token_type_ids_from_sequences(p_kept, a_kept)
        if self.eos is not None:
            ids = ids + [self.eos]
            types = types + [types[-1]] if types else types
        if self.with_types and types is None:
            types = [0] * len(ids)
        return Encoded(ids, types, len(p_body) - keep_p, len(a) - keep_a)


def prepare_tokenizer(tokenizer: Any, model: Any | None = None) -> Any:
    """Give the tokenizer a pad token (EOS when it has none) and tell the model which id it is."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        # Sequence-classification heads on decoders find the last real token through config.pad_token_id.
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


# ---------------------------------------------------------------- collation


def pad_batch(
    ids: list[list[int]], types: list[list[int]] | None, pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad sequences into input_ids / attention_mask (/ token_type_ids)."""
    width = max(len(s) for s in ids)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, s in enumerate(ids):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if types is not None:
        token_types = torch.zeros((len(ids), width), dtype=torch.long)
        for i, s in enumerate(types):
            token_types[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        batch["token_type_ids"] = token_types
    return batch


@dataclass
class PairCollator:
    """Stack chosen then rejected into one batch of 2B sequences (one forward pass), carrying preference and kind."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [f["chosen_input_ids"] for f in features] + [f["rejected_input_ids"] for f in features]
        types = None
        if features[0].get("chosen_token_type_ids") is not None:
            types = [f["chosen_token_type_ids"] for f in features] + [f["rejected_token_type_ids"] for f in features]
        batch = pad_batch(ids, types, self.pad_token_id, self.pad_to_multiple_of)
        batch["preference"] = torch.tensor([f["preference"] for f in features], dtype=torch.float32)
        batch["kind"] = torch.tensor([f["kind_id"] for f in features], dtype=torch.long)
        return batch


# ---------------------------------------------------------------- loading rows


@dataclass
class PreferenceData:
    """Train rows, optional eval rows (both `datasets.Dataset` with the contract columns), and where they came from."""

    train: Any
    eval: Any | None
    info: dict[str, Any] = field(default_factory=dict)


def data_files(path: Path) -> dict[str, list[str]]:
    """Parquet shards of a run dir or published folder by split, from names like `train-00000-of-00001.parquet`.

    A folder crome marked gives the files of its last export (checked: an unfinished export is an
    error); any other folder gives every Parquet file under its data/.
    """
    record = read_export(path)
    if record is not None:
        files = sorted(record.paths(r"data/.+\.parquet"))
    else:
        files = sorted((path / "data").rglob("*.parquet"))
    splits: dict[str, list[str]] = {}
    for f in files:
        m = _SHARD.match(f.name)
        splits.setdefault(m.group("split") if m else "train", []).append(str(f))
    return splits


def load_rows(spec: str | Path) -> Any:
    """A `datasets.DatasetDict` from a run dir / published folder (DIR/data/*.parquet), a Parquet file or a Hub id."""
    import datasets

    path = Path(spec)
    if path.is_dir():
        splits = data_files(path)
        if not splits:
            raise DataError(f"{path}: no Parquet shards under {path / 'data'} (expected a crome run dir or published folder)")
        return datasets.load_dataset("parquet", data_files=splits)
    if path.is_file():
        if path.suffix != ".parquet":
            raise DataError(f"{path}: expected a directory with data/*.parquet or a .parquet file")
        return datasets.load_dataset("parquet", data_files={"train": [str(path)]})
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(spec)) is None or str(spec).startswith((".", "/")):
        raise DataError(f"{spec}: no such file or directory, and not a Hub dataset id")
    try:
        loaded = datasets.load_dataset(str(spec))
    except Exception as e:  # offline, unknown id, private repo: say what was tried
        raise DataError(f"{spec}: not a local path, and loading it as a Hub dataset failed: {e}") from e
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def _check_columns(ds: Any, where: str) -> Any:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(ds.column_names)}")
    # Plain preference data (no crome columns) trains as strict original pairs.
    if "kind" not in ds.column_names:
        ds = ds.add_column("kind", ["original"] * len(ds))
    if "preference" not in ds.column_names:
        ds = ds.add_column("preference", [1.0] * len(ds))
    return ds


def _in_eval(keys: Iterable[str], fraction: float, seed: int) -> list[bool]:
    # Split by source pair so an augmentation never lands on the other side of its original.
    cut = int(fraction * 2**32)
    return [int(stable_hash({"seed": seed, "source": k}).split(":")[1][:8], 16) < cut for k in keys]


def row_kind(kind: str, augmentation: str | None) -> str:
    """The kind `--kinds` selects by: a source pair as it is is `original` whatever its kind (a source tie is kind neutral)."""
    return "original" if augmentation == "original" else kind


def _select_kinds(ds: Any, keep: set[str]) -> Any:
    if "augmentation" not in ds.column_names:  # plain preference data: every row is an original
        return ds.filter(lambda k: k in keep, input_columns="kind")
    return ds.filter(lambda k, a: row_kind(k, a) in keep, input_columns=["kind", "augmentation"])


def load_preference_data(
    spec: str | Path,
    *,
    kinds: Sequence[str] | None = None,
    eval_split: str | None = "test",
    eval_fraction: float = 0.0,
    seed: int = 0,
    max_rows: int | None = None,
) -> PreferenceData:
    """Rows to train (and evaluate) on, filtered to `kinds`; eval is the `eval_split` split or a source-grouped holdout."""
    bad = sorted(set(kinds or ()) - set(KINDS))
    if bad:
        raise DataError(f"unknown kind(s) {', '.join(bad)}; choose from {', '.join(KINDS)}")
    splits = load_rows(spec)
    train_name = "train" if "train" in splits else next(iter(splits))
    train = _check_columns(splits[train_name], f"{spec} [{train_name}]")
    eval_ds, eval_from = None, None
    if eval_split and eval_split in splits and eval_split != train_name:
        eval_ds, eval_from = _check_columns(splits[eval_split], f"{spec} [{eval_split}]"), f"split:{eval_split}"
    elif eval_fraction > 0:
        key_col = "source_id" if "source_id" in train.column_names else ("id" if "id" in train.column_names else None)
        keys = train[key_col] if key_col else [str(i) for i in range(len(train))]
        flags = _in_eval(keys, eval_fraction, seed)
        eval_ds = train.select([i for i, f in enumerate(flags) if f])
        train = train.select([i for i, f in enumerate(flags) if not f])
        eval_from = f"holdout:{eval_fraction} by {key_col or 'row'}"
    rows_total = Counter(train["kind"])
    if kinds:
        keep = set(kinds)
        train = _select_kinds(train, keep)
        if eval_ds is not None:
            eval_ds = _select_kinds(eval_ds, keep)
    if max_rows is not None:
        train = train.select(range(min(max_rows, len(train))))
    if len(train) == 0:
        raise DataError(f"{spec}: no training rows left (kinds={list(kinds or KINDS)})")
    info = {
        "spec": str(spec),
        "splits": {k: len(v) for k, v in splits.items()},
        "kinds": list(kinds) if kinds else list(KINDS),
        "train_rows": len(train),
        "train_rows_by_kind": dict(Counter(train["kind"])),
        "train_rows_by_augmentation": dict(Counter(train["augmentation"])) if "augmentation" in train.column_names else {},
        "rows_by_kind_before_filter": dict(rows_total),
        "eval_rows": len(eval_ds) if eval_ds is not None else 0,
        "eval_from": eval_from,
    }
    return PreferenceData(train, eval_ds, info)


# ---------------------------------------------------------------- tokenising a dataset


def _tokenize_batch(batch: dict[str, list], indices: list[int], encoder: PairEncoder) -> dict[str, list]:
    chosen, rejected, prefs, kind_ids = [], [], [], []
    for j, idx in enumerate(indices):
        row_id = (batch.get("id") or [None] * len(indices))[j]
        where = f"row {idx}" + (f" (id {row_id})" if row_id else "")
        prompt = as_messages(batch["prompt"][j], where=f"{where}: prompt")
        answers = as_answer(batch["chosen"][j], where=f"{where}: chosen"), as_answer(batch["rejected"][j], where=f"{where}: rejected")
        pref, kind = batch["preference"][j], batch["kind"][j]
        if pref not in PREFERENCES:
            raise DataError(f"{where}: preference must be 1.0 or 0.5, got {pref!r}")
        if kind not in KIND_IDS:
            raise DataError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        try:
            chosen.append(encoder.segments(prompt, answers[0]))
            rejected.append(encoder.segments(prompt, answers[1]))
        except Exception as e:  # a chat template that rejects this conversation (roles, order)
            raise DataError(f"{where}: the tokenizer's chat template failed: {e}") from e
        prefs.append(float(pref))
        kind_ids.append(KIND_IDS[kind])
    enc_c = encoder.encode_texts(chosen)
    enc_r = encoder.encode_texts(rejected)
    out = {
        "chosen_input_ids": [e.input_ids for e in enc_c],
        "rejected_input_ids": [e.input_ids for e in enc_r],
        "preference": prefs,
        "kind_id": kind_ids,
        # The padded width of a pair is its longer side: that is what length grouping should sort on.
        "length": [max(len(c.input_ids), len(r.input_ids)) for c, r in zip(enc_c, enc_r)],
        "prompt_truncated": [c.prompt_cut > 0 or r.prompt_cut > 0 for c, r in zip(enc_c, enc_r)],
        "answer_truncated": [c.answer_cut > 0 or r.answer_cut > 0 for c, r in zip(enc_c, enc_r)],
    }
    if encoder.with_types:
        out["chosen_token_type_ids"] = [e.token_type_ids for e in enc_c]
        out["rejected_token_type_ids"] = [e.token_type_ids for e in enc_r]
    return out


def tokenize_pairs(dataset: Any, encoder: PairEncoder, *, num_proc: int | None = None, desc: str = "train") -> Any:
    """Tokenised pairs (one row per pair), original columns dropped."""
    return dataset.map(
        _tokenize_batch,
        with_indices=True,
        batched=True,
        fn_kwargs={"encoder": encoder},
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenising {desc} pairs",
    )


def truncation_report(tokenized: Any, max_length: int | None) -> dict[str, Any]:
    """How many pairs were cut, and on which side (prompt only, or the answer too)."""
    prompt_cut = tokenized["prompt_truncated"]
    answer_cut = tokenized["answer_truncated"]
    return {
        "max_length": max_length,
        "pairs": len(tokenized),
        "truncated_pairs": sum(p or a for p, a in zip(prompt_cut, answer_cut)),
        "prompt_truncated": sum(prompt_cut),
        "answer_truncated": sum(answer_cut),
    }
