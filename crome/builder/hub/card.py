"""The dataset card (README.md) of a published run: Hub YAML metadata and a body generated from the run.

Everything in the card comes from summary.json, the published rows and the rejections, after
`public_summary` has dropped secrets and reduced local paths to their last component: a card is
pushed to a public place and must say nothing about the machine that built it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import yaml

from crome import __version__
from crome.schemas import DatasetRow, arrow_schema
from crome.schemas.arrow import hf_features

TAGS = ["crome", "reward-modeling", "counterfactual", "preference", "rlhf"]
TASK_CATEGORIES = ["text-classification", "text-generation"]
KIND_ORDER = ("original", "causal", "neutral")
PAPER_URL = "https://arxiv.org/abs/2506.16507"
CITATION = """@inproceedings{srivastava2026crome,
  title         = {Robust Reward Modeling via Causal Rubrics},
  author        = {Srivastava, Pragya and Singh, Harman and Madhavan, Rahul and Patil, Gandharv and Addepalli, Sravanti and Suggala, Arun and Aravamudhan, Rengarajan and Sharma, Soumya and Laha, Anirban and Raghuveer, Aravindan and Shanmugam, Karthikeyan and Precup, Doina},
  booktitle     = {International Conference on Learning Representations (ICLR)},
  year          = {2026},
  eprint        = {2506.16507},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2506.16507}
}"""

# Option or summary keys whose values are never published, whatever they hold.
_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|key|token|secret|password|passwd|credentials?|authorization)$", re.I)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
_LOCAL_PATH = re.compile(r"(?<![\w:/.~-])(?:~|[A-Za-z]:)?(?:[/\\][\w.@+~%-]+)+[/\\]?")
_URL_USERINFO = re.compile(r"://[^/@\s]+@")
REDACTED = "[redacted]"

# Hub size_categories buckets, upper bounds exclusive.
_SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
]


def size_category(n_rows: int) -> str:
    for bound, label in _SIZE_CATEGORIES:
        if n_rows < bound:
            return label
    return "n>1B"


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables (API keys, tokens), longest first."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def _public_str(value: str, secrets: list[str]) -> str:
    value = _URL_USERINFO.sub(f"://{REDACTED}@", value)
    for s in secrets:
        if s in value:
            value = value.replace(s, REDACTED)
    value = value.replace("file://", "")
    # An absolute local path, alone or inside a sentence: only its last component says something to a reader.
    return _LOCAL_PATH.sub(lambda m: re.split(r"[/\\]", m.group(0).rstrip("/\\"))[-1], value)


def public_value(value: Any, secrets: list[str]) -> Any:
    """`value` with secret-named keys dropped, secret values redacted and local paths cut to their name."""
    if isinstance(value, dict):
        return {k: public_value(v, secrets) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [public_value(v, secrets) for v in value]
    if isinstance(value, str):
        return _public_str(value, secrets)
    return value


def public_summary(summary: dict[str, Any]) -> dict[str, Any]:
    return public_value(summary, secret_values())


@dataclass
class SplitFacts:
    """What the card says about one published split."""

    name: str
    rows: list[DatasetRow]
    num_bytes: int  # in-memory Arrow size, as `datasets` records it
    files: list[str]


@dataclass
class CardInputs:
    repo_id: str
    license: str
    summary: dict[str, Any]  # already passed through public_summary
    splits: list[SplitFacts]
    download_size: int  # bytes of the Parquet files
    rejections: Counter  # (stage, reason) -> count
    test_fraction: float
    split_seed: int
    split: Any = None  # crome.builder.hub.splits.SplitReport of a test split


# ---------------------------------------------------------------- YAML


def card_metadata(inp: CardInputs) -> dict[str, Any]:
    """The card's YAML header: licence, categories, tags, configs with data_files, dataset_info."""
    import datasets
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    total = sum(len(s.rows) for s in inp.splits)
    source = inp.summary.get("source") or {}
    meta: dict[str, Any] = {
        "license": inp.license,
        "pretty_name": inp.repo_id.split("/")[-1],
        "task_categories": TASK_CATEGORIES,
        "size_categories": [size_category(total)],
        "tags": TAGS,
    }
    if source.get("hub_id"):
        meta["source_datasets"] = [source["hub_id"]]
    meta["configs"] = [{
        "config_name": "default",
        "data_files": [{"split": s.name, "path": f"data/{s.name}-*"} for s in inp.splits],
    }]
    info = datasets.DatasetInfo(
        features=hf_features(DatasetRow),
        splits=datasets.SplitDict({s.name: datasets.SplitInfo(s.name, num_bytes=s.num_bytes, num_examples=len(s.rows))
                                   for s in inp.splits}),
        download_size=inp.download_size,
        dataset_size=sum(s.num_bytes for s in inp.splits),
    )
    card_data = DatasetCardData()
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    meta["dataset_info"] = card_data.to_dict()["dataset_info"]
    return meta


# ---------------------------------------------------------------- body


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _ordered_kinds(counter: Counter) -> list[str]:
    return [k for k in KIND_ORDER if counter.get(k)] + sorted(k for k in counter if k not in KIND_ORDER)


def _type_label(dtype: pa.DataType) -> str:
    if pa.types.is_list(dtype):
        inner = dtype.value_type
        if pa.types.is_struct(inner):
            return "list of {" + ", ".join(f.name for f in inner) + "}"
        return f"list of {_type_label(inner)}"
    if pa.types.is_struct(dtype):
        return "struct"
    return {"double": "float64", "int64": "int64", "string": "string", "bool": "bool"}.get(str(dtype), str(dtype))


def _description(field: pa.Field) -> str:
    meta = field.metadata or {}
    return meta.get(b"description", b"").decode("utf-8")


def column_rows() -> list[list[str]]:
    """Every published column (struct members as parent.child) with its type and meaning."""
    rows = []
    for field in arrow_schema(DatasetRow):
        rows.append([f"`{field.name}`", _type_label(field.type), _description(field)])
        if pa.types.is_struct(field.type):
            rows += [[f"`{field.name}.{sub.name}`", _type_label(sub.type), _description(sub)] for sub in field.type]
    return rows


def _fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _json_cell(v: Any) -> str:
    return "`" + json.dumps(v, ensure_ascii=False, sort_keys=True) + "`"


def card_body(inp: CardInputs) -> str:
    s = inp.summary
    repo = inp.repo_id
    source = s.get("source") or {}
    source_name = source.get("hub_id") or source.get("name") or "an unnamed source"
    all_rows = [r for split in inp.splits for r in split.rows]
    by_kind = Counter(r.kind for r in all_rows)
    kinds = _ordered_kinds(by_kind)
    counts = s.get("counts") or {}
    out: list[str] = []
    add = out.append

    add(f"# {repo.split('/')[-1]}\n")
    add(
        f"Counterfactual preference pairs for training reward models that judge answers by what makes them good "
        f"rather than by length or formatting. Built with crome "
        f"{s.get('crome_version', __version__)} from `{source_name}`, following Crome "
        f"(Causally Robust Reward Modeling; Srivastava et al., *Robust Reward Modeling via Causal Rubrics*, "
        f"[arXiv:2506.16507]({PAPER_URL})).\n"
    )
    add(_table(
        ["split", "rows", *kinds],
        [[sp.name, _fmt_int(len(sp.rows)), *(_fmt_int(Counter(r.kind for r in sp.rows).get(k, 0)) for k in kinds)]
         for sp in inp.splits]
        + ([["**all**", _fmt_int(len(all_rows)), *(_fmt_int(by_kind[k]) for k in kinds)]] if len(inp.splits) > 1 else []),
    ))
    add("")

    # ---- method
    add("## How it was made\n")
    add("Each row is one pair of answers to one prompt; `preference` 1.0 means `chosen` is better, 0.5 a tie.\n")
    add("- **original** (`augmentation: original`): the source pairs as they are.")
    add("- **causal** (`upgrade`, `degrade`): the oracle lists the *causal rubrics* of the prompt (the few attributes "
        "that decide quality for it) and rewrites one answer along exactly one rubric (`attribute`), keeping "
        "everything else: opening and closing lines, formatting and, as far as the rubric allows, length. A weak "
        "answer is *upgraded* (the upgrade is `chosen`), a strong one *degraded* (the original is `chosen`). These "
        "pairs teach sensitivity to what matters.")
    add("- **neutral** (`irrelevant_query`): two answers re-attached to an unrelated prompt (Irrelevant Query "
        "Neutrals). Neither answers it, so whatever still differs between them is spurious: the pair is a tie "
        "(preference 0.5, answer order random). These pairs teach invariance to spurious features nobody had to name.")
    if s.get("counts", {}).get("rows_by_augmentation", {}).get("shortcut_neutral"):
        used = [p for p in (s.get("shortcuts") or {}).get("phrases", []) if p.get("status") == "used"]
        listed = ", ".join(f"{p['feature']} `{p['text']}`" for p in used) or "see summary.json"
        add("- **neutral** (`shortcut_neutral`): ties that differ only in a phrase the source uses as a shortcut "
            "(found by crome's discovery: its split between chosen and rejected answers is significant after Holm's "
            f"correction), the phrase removed from or added to one answer; the phrase is in `attribute` and its evidence in "
            f"`provenance.shortcut`. Phrases: {listed}.")
    add("")
    add("Every source pair ends as rows or as a recorded rejection with its reason (see [Rejections](#rejections)).\n")

    settings = [
        ["oracle", f"`{s.get('oracle', 'unknown')}`"],
        ["seed", s.get("seed", "unknown")],
        ["crome version", s.get("crome_version", "unknown")],
        ["built", s.get("created_at", "unknown")],
        ["build status", s.get("status", "complete")],
        ["source", f"`{source.get('name', 'unknown')}`" + (f" (shape `{source['shape']}`)" if source.get("shape") else "")],
    ]
    if source.get("hub_id"):
        settings.append(["source on the Hub", f"[{source['hub_id']}](https://huggingface.co/datasets/{source['hub_id']})"])
    origin = ("inherited from the source" if source.get("license")
              else "the source's is unknown" if inp.license == "other" else "given at publish time; the source's is unknown")
    settings.append(["licence", f"`{inp.license}` ({origin})"])
    settings += [[f"option `{k}`", _json_cell(v)] for k, v in sorted((s.get("options") or {}).items())]
    if inp.split is not None:
        sp = inp.split
        settings.append(["test split", f"{sp.test_source_pairs:,} of {sp.source_pairs:,} source pairs ({sp.achieved:.1%}; "
                                       f"asked {sp.test_fraction:g}), seed {sp.seed}"])
    add(_table(["setting", "value"], settings))
    add("")
    templates = s.get("templates") or {}
    if templates:
        add("### Prompt templates\n")
        add("Templates are versioned and never edited once released; the sha256 identifies the exact text used.\n")
        add(_table(["template", "version", "sha256"],
                   [[f"`{name}`", t.get("version", ""), f"`{t.get('sha256', '')}`"] for name, t in sorted(templates.items())]))
        add("")

    if inp.split is not None:
        add(split_section(inp.split))

    # ---- counts
    add("## Counts\n")
    add("### By kind and augmentation\n")
    split_names = [sp.name for sp in inp.splits]
    aug_counts = {sp.name: Counter((r.kind, r.augmentation) for r in sp.rows) for sp in inp.splits}
    keys = sorted({k for c in aug_counts.values() for k in c},
                  key=lambda ka: (KIND_ORDER.index(ka[0]) if ka[0] in KIND_ORDER else 9, ka[1]))
    add(_table(["kind", "augmentation", *split_names, *(["total"] if len(split_names) > 1 else [])],
               [[k, a, *(_fmt_int(aug_counts[n][(k, a)]) for n in split_names),
                 *([_fmt_int(sum(aug_counts[n][(k, a)] for n in split_names))] if len(split_names) > 1 else [])]
                for k, a in keys]))
    add("")
    attr = Counter((r.attribute, r.augmentation) for r in all_rows if r.attribute is not None)
    if attr:
        add("### By attribute (causal rubric)\n")
        augs = sorted({a for _, a in attr})
        names = sorted({n for n, _ in attr}, key=lambda n: (-sum(attr[(n, a)] for a in augs), n))
        add(_table(["attribute", *augs, "total"],
                   [[f"`{n}`", *(_fmt_int(attr[(n, a)]) for a in augs), _fmt_int(sum(attr[(n, a)] for a in augs))]
                    for n in names]))
        add("")

    # ---- rejections
    add("## Rejections\n")
    if counts:
        add(f"{_fmt_int(counts.get('source_rows', '?'))} source rows were read: {_fmt_int(counts.get('source_pairs', '?'))} "
            f"usable pairs and {_fmt_int(counts.get('quarantined', 0))} quarantined. Candidates dropped at any stage are "
            "kept with their reason in the build's `rejections.parquet` (not published).\n")
    if inp.rejections:
        rej = sorted(inp.rejections.items(), key=lambda kv: (-kv[1], kv[0]))
        add(_table(["stage", "reason", "count"], [[st, f"`{reason}`", _fmt_int(n)] for (st, reason), n in rej]))
    else:
        add("No rejections were recorded.")
    add("")

    # ---- oracle usage
    calls = s.get("oracle_calls") or {}
    # The dataset's whole price (every stored call), not just the last, possibly fully cached, run.
    spent = s.get("spend") or {}
    tokens = {"input": spent["input_tokens"], "output": spent["output_tokens"]} if spent else (s.get("tokens") or {})
    cost = spent.get("cost_usd") if spent else s.get("cost_usd")
    kept = (spent.get("kept") or {}).get("cost_usd")

    def usd(x: Any) -> str:
        return f"{x:.4f}" if isinstance(x, (int, float)) else "unknown"

    add("## Oracle usage\n")
    add(_table(
        ["oracle calls", "replayed from cache", "new", "failed", "requests billed", "input tokens billed", "output tokens billed",
         "billed (USD)", "kept answers (USD)"],
        [[_fmt_int(calls.get("total", 0)), _fmt_int(calls.get("cached", 0)), _fmt_int(calls.get("new", 0)),
          _fmt_int(calls.get("failed", 0)), _fmt_int(spent.get("requests", calls.get("new", 0))),
          _fmt_int(tokens.get("input", 0)), _fmt_int(tokens.get("output", 0)), usd(cost), usd(kept)]],
    ))
    add("\nBilled: every request sent to the oracle to build the dataset, over all runs (retries, re-asks, "
        "refusals, cut-off answers and calls sent again after a failure included). Kept answers: what the answers "
        "the dataset was built from cost when they were made. The call counts are those of the last run.")
    if calls.get("by_task"):
        add("")
        add(_table(["task", "calls"], [[f"`{t}`", _fmt_int(n)] for t, n in sorted(calls["by_task"].items())]))
    add("")

    # ---- schema
    add("## Columns\n")
    add("`prompt`, `chosen` and `rejected` use the conversational format of TRL's RewardTrainer "
        "(lists of `{role, content}` messages).\n")
    add(_table(["column", "type", "meaning"], column_rows()))
    add("")

    # ---- usage
    first_split = inp.splits[0].name
    add("## Use\n")
    add("### Load with 🤗 datasets\n")
    add(f'```python\nfrom datasets import load_dataset\n\nds = load_dataset("{repo}")\nprint(ds)\n'
        f'ties = ds["{first_split}"].filter(lambda r: r["preference"] == 0.5)\n```\n')
    add("### Train a reward model with crome\n")
    add("`crome train` fine-tunes any `AutoModelForSequenceClassification` with the composite loss: Bradley-Terry "
        "on strict pairs and the tie loss on neutral pairs (`-1/2 (log σ(d) + log σ(-d))`, minimal at equal rewards).\n")
    add(f"```bash\ncrome train {repo} --model <base-model>   # see crome train --help\n```\n")
    add("### Train with TRL's RewardTrainer\n")
    add("TRL's loss has no ties, so keep the strict pairs (original and causal):\n")
    add(f'```python\nfrom datasets import load_dataset\nfrom trl import RewardConfig, RewardTrainer\n\n'
        f'train = load_dataset("{repo}", split="{first_split}")\n'
        f'strict = train.filter(lambda r: r["preference"] == 1.0).select_columns(["prompt", "chosen", "rejected"])\n'
        f'trainer = RewardTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", args=RewardConfig(output_dir="rm"), train_dataset=strict)\n'
        f'trainer.train()\n```\n')
    add("### Query with DuckDB\n")
    add(f"```sql\nSELECT kind, augmentation, attribute, count(*) AS rows\n"
        f"FROM 'hf://datasets/{repo}/data/*.parquet'\nGROUP BY ALL ORDER BY rows DESC;\n\n"
        f"-- the length shortcut: how often is the better answer also the longer one?\n"
        f"SELECT kind, avg((length(chosen[1].content) > length(rejected[1].content))::INT) AS chosen_longer\n"
        f"FROM 'hf://datasets/{repo}/data/*.parquet'\nWHERE preference = 1.0 GROUP BY kind;\n```\n")
    add(f"`crome audit hf://datasets/{repo}` prints these figures and more (length and formatting by side, "
        "near-duplicates, samples).\n")

    add("## Citation\n")
    add(f"```bibtex\n{CITATION}\n```")
    return "\n".join(out) + "\n"


def split_section(sp: Any) -> str:
    """The train/test rule and its figures: what a user needs to trust the test split."""
    return (
        "### Train/test split\n\n"
        f"The `test` split holds {sp.test_source_pairs:,} of the {sp.source_pairs:,} source pairs ({sp.achieved:.1%}; "
        f"{sp.test_fraction:g} asked for, seed {sp.seed}). Rule: {sp.rule}. The rows form {sp.groups:,} such groups "
        f"(the largest has {sp.largest_group:,} source pairs; IQN ties draw their prompt within a small random group of "
        "source pairs, which keeps groups small). Checked on the published rows: "
        f"{sp.shared_prompts} test prompts and {sp.shared_answers} test answers occur in train. "
        "`crome audit` on the published folder or repo reports the overlap between splits.\n"
    )


def render_card(inp: CardInputs) -> str:
    """README.md text: YAML front matter then the body; deterministic for the same inputs."""
    header = yaml.safe_dump(card_metadata(inp), sort_keys=False, allow_unicode=True, width=1000)
    text = f"---\n{header}---\n\n{card_body(inp)}"
    # Last line of defence: whatever slipped into a free-text field, no secret leaves the machine.
    for secret in secret_values():
        text = text.replace(secret, REDACTED)
    return sign_card(text)


# The card's last line: crome wrote the text above it, unchanged since. A README without it (written
# by hand, by another tool, by an older crome) or edited since is not crome's, and publish keeps it.
_SIGNATURE = re.compile(r"\n<!-- crome card sha256:([0-9a-f]{64}) -->\n?\Z")


def sign_card(text: str) -> str:
    body = text if text.endswith("\n") else text + "\n"
    return body + f"<!-- crome card sha256:{hashlib.sha256(body.encode()).hexdigest()} -->\n"


def is_crome_card(text: str) -> bool:
    """True when `text` is a card crome rendered, unedited."""
    match = _SIGNATURE.search(text)
    return match is not None and hashlib.sha256(text[: match.start() + 1].encode()).hexdigest() == match.group(1)


def is_older_crome_card(text: str) -> bool:
    """A card with crome's tag in its YAML header: a folder an older crome published (its card may be edited)."""
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return False
    return isinstance(meta, dict) and "crome" in (meta.get("tags") or [])
