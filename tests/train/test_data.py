import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import datasets  # noqa: E402
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from train_helpers import minilm_dir, write_run

from crome.train.data import (
    DataError,
    PairCollator,
    PairEncoder,
    effective_max_length,
    fit,
    load_preference_data,
    plain_prompt,
    tokenize_pairs,
    truncation_report,
)

CHAT_TEMPLATE = (
    "{{ '[CLS]' }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def words(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("prompt", "answer", "budget", "expected"),
    [
        (10, 10, 40, (10, 10)),  # fits: untouched
        (100, 10, 40, (30, 10)),  # prompt cut first
        (5, 100, 40, (5, 35)),  # short prompt kept whole, answer cut
        (100, 100, 40, (10, 30)),  # prompt keeps a quarter, answer the rest
    ],
)
def test_fit_cuts_prompt_first(prompt, answer, budget, expected):
    assert fit(prompt, answer, budget) == expected


def test_plain_format_uses_the_pair_template(tokenizer):
    enc = PairEncoder(tokenizer, 64)
    prompt = [{"role": "user", "content": "name a river"}]
    (e,) = enc.encode_batch([prompt], ["the nile"])
    p, a = words(tokenizer, plain_prompt(prompt)), words(tokenizer, "the nile")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert e.input_ids == [cls, *p, sep, *a, sep]
    assert e.token_type_ids == [0] * (len(p) + 2) + [1] * (len(a) + 1)
    assert (e.prompt_cut, e.answer_cut) == (0, 0)
    assert plain_prompt([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "System: s\n\nUser: u\n\nAssistant:"


def test_plain_truncation_keeps_the_end_of_the_prompt_and_the_whole_answer(tokenizer):
    enc = PairEncoder(tokenizer, 32)
    long_prompt = [{"role": "user", "content": " ".join(f"word{i}" for i in range(60)) + " final question"}]
    (e,) = enc.encode_batch([long_prompt], ["short answer"])
    assert len(e.input_ids) == 32
    assert e.prompt_cut > 0 and e.answer_cut == 0
    text = tokenizer.decode(e.input_ids)
    assert "final question" in text and "short answer" in text and "word0 " not in text


def test_answer_is_cut_only_after_the_prompt_reaches_its_floor(tokenizer):
    enc = PairEncoder(tokenizer, 40)
    prompt = [{"role": "user", "content": " ".join(["alpha"] * 50)}]
    answer = " ".join(["beta"] * 100)
    (e,) = enc.encode_batch([prompt], [answer])
    budget = 40 - 3
    assert len(e.input_ids) == 40
    assert e.token_type_ids.count(0) - 2 == budget // 4  # [CLS] + prompt + [SEP]
    assert e.answer_cut > 0 and e.prompt_cut > 0


def test_chat_template_is_applied_and_bos_survives_truncation(tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    tok.chat_template = CHAT_TEMPLATE
    prompt = [{"role": "user", "content": "hi there"}]
    enc = PairEncoder(tok, 64)
    assert enc.chat and not enc.with_types
    head, tail = enc.segments(prompt, "hello")
    assert head + tail == tok.apply_chat_template(prompt + [{"role": "assistant", "content": "hello"}], tokenize=False)
    (e,) = enc.encode_batch([prompt], ["hello"])
    assert e.input_ids == words(tok, head) + words(tok, tail)
    long = [{"role": "user", "content": " ".join(["gamma"] * 200)}]
    (cut,) = PairEncoder(tok, 30).encode_batch([long], ["hello"])
    assert len(cut.input_ids) == 30
    assert cut.input_ids[0] == tok.cls_token_id and cut.prompt_cut > 0


def test_load_run_dir_filters_kinds_and_holds_out_by_source(tmp_path):
    write_run(tmp_path / "run", 12)
    data = load_preference_data(tmp_path / "run", kinds=["original"])
    assert set(data.train["kind"]) == {"original"} and len(data.train) == 12 and data.eval is None
    assert data.info["rows_by_kind_before_filter"] == {"original": 12, "causal": 12, "neutral": 12}

    held = load_preference_data(tmp_path / "run", eval_fraction=0.3, seed=1)
    train_sources, eval_sources = set(held.train["source_id"]), set(held.eval["source_id"])
    assert eval_sources and train_sources and not (train_sources & eval_sources)
    assert len(held.train) + len(held.eval) == 36


def test_published_folder_uses_its_test_split(tmp_path):
    write_run(tmp_path / "pub", 6, split_test=2)
    data = load_preference_data(tmp_path / "pub")
    assert (len(data.train), len(data.eval)) == (12, 6)
    assert data.info["eval_from"] == "split:test"


def test_hub_id_goes_through_load_dataset(tmp_path, monkeypatch):
    write_run(tmp_path / "run", 4)
    local = datasets.load_dataset("parquet", data_files={"train": str(tmp_path / "run/data/train-00000-of-00001.parquet")})
    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda spec, *a, **k: seen.append(spec) or local)
    data = load_preference_data("someone/crome-data")
    assert seen == ["someone/crome-data"] and len(data.train) == 12


def test_bad_inputs_are_named(tmp_path, tokenizer):
    with pytest.raises(DataError, match="no such file"):
        load_preference_data(tmp_path / "missing")
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(DataError, match="no Parquet shards"):
        load_preference_data(tmp_path / "empty")
    (tmp_path / "cols" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["a"]}), tmp_path / "cols/data/train-00000-of-00001.parquet")
    with pytest.raises(DataError, match="missing column.*rejected"):
        load_preference_data(tmp_path / "cols")
    with pytest.raises(DataError, match="unknown kind"):
        load_preference_data(tmp_path / "cols", kinds=["causal", "weird"])

    bad = datasets.Dataset.from_list(
        [
            {"id": "a", "prompt": "ok", "chosen": "x", "rejected": "y", "preference": 1.0, "kind": "original"},
            {"id": "b", "prompt": "ok", "chosen": "x", "rejected": "y", "preference": 0.7, "kind": "original"},
        ]
    )
    with pytest.raises(DataError, match=r"row 1 \(id b\): preference"):
        tokenize_pairs(bad, PairEncoder(tokenizer, 32))
    from transformers import AutoTokenizer

    strict = AutoTokenizer.from_pretrained(str(minilm_dir()))
    strict.chat_template = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ m['content'] }}{% endfor %}"
    system = datasets.Dataset.from_list(
        [{"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "chosen": "x", "rejected": "y", "preference": 1.0, "kind": "original"}]
    )
    with pytest.raises(DataError, match="row 0: the tokenizer's chat template failed: no system role"):
        tokenize_pairs(system, PairEncoder(strict, 32))
    no_user = datasets.Dataset.from_list([{"prompt": [{"role": "system", "content": "s"}], "chosen": "x", "rejected": "y", "preference": 1.0, "kind": "original"}])
    with pytest.raises(DataError, match="row 0: prompt: needs at least one user turn"):
        tokenize_pairs(no_user, PairEncoder(tokenizer, 32))


def test_tokenize_counts_truncation_and_drops_nothing(tmp_path, tokenizer):
    write_run(tmp_path / "run", 4)
    data = load_preference_data(tmp_path / "run")
    tight = tokenize_pairs(data.train, PairEncoder(tokenizer, 20))
    report = truncation_report(tight, 20)
    assert report["pairs"] == len(data.train) == 12
    assert report["truncated_pairs"] == 12 and max(tight["length"]) == 20
    roomy = truncation_report(tokenize_pairs(data.train, PairEncoder(tokenizer, 128)), 128)
    assert roomy["truncated_pairs"] == 0


def test_collator_stacks_chosen_then_rejected(tmp_path, tokenizer):
    write_run(tmp_path / "run", 2)
    ds = tokenize_pairs(load_preference_data(tmp_path / "run").train, PairEncoder(tokenizer, 64))
    feats = [ds[i] for i in range(len(ds))]
    batch = PairCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)(feats)
    n = len(feats)
    assert batch["input_ids"].shape[0] == 2 * n and batch["input_ids"].shape[1] % 8 == 0
    for i, f in enumerate(feats):
        assert batch["input_ids"][i, : len(f["chosen_input_ids"])].tolist() == f["chosen_input_ids"]
        assert batch["input_ids"][n + i, : len(f["rejected_input_ids"])].tolist() == f["rejected_input_ids"]
        assert batch["attention_mask"][n + i].sum().item() == len(f["rejected_input_ids"])
    assert batch["preference"].tolist() == [f["preference"] for f in feats]
    assert sorted(set(batch["kind"].tolist())) == [0, 1, 2]
    assert "token_type_ids" in batch


def test_max_length_is_capped_by_tokenizer_and_model(tokenizer, tmp_path):
    from train_helpers import tiny_bert
    from transformers import AutoModelForSequenceClassification

    assert effective_max_length(4096, tokenizer) == 512  # MiniLM's tokenizer limit
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert(tmp_path / "m"))
    assert effective_max_length(4096, tokenizer, model) == 256  # its position table
    assert effective_max_length(64, tokenizer, model) == 64
    (e,) = PairEncoder(tokenizer, 4096, model=model).encode_batch([[{"role": "user", "content": "x " * 600}]], ["y"])
    assert len(e.input_ids) == 256 and e.prompt_cut > 0
