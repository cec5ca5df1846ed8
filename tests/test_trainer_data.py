"""The trainer's data path on the real tiny tokenizer: what is trained on, and what is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, chat, write_jsonl

from remote.data import (
    IGNORE,
    PAD_TOKENS,
    REAL_TOKENS,
    FlatCollator,
    PackedCollator,
    PadCollator,
    Sourced,
    assistant_spans,
    ensure_chat_template,
    load_examples,
    pack,
    split_eval,
    tokenize_all,
)
from remote.formats import DatasetError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    return transformers.AutoTokenizer.from_pretrained(tiny_model)


def trained_text(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])


def test_only_assistant_turns_are_trained_on(tokenizer) -> None:
    example = chat(("system", "Be brief."), ("user", "What is 2 plus 2?"), ("assistant", "It is 4."),
                   ("user", "And 3 plus 3?"), ("assistant", "It is 6."))
    data = tokenize_all(tokenizer, [Sourced("t.jsonl", 1, example)], 512, {"messages": 1})
    item = data.items[0]
    text = trained_text(tokenizer, item["input_ids"], item["labels"])
    assert "It is 4." in text and "It is 6." in text
    assert "Be brief" not in text and "plus" not in text and "user" not in text and "assistant" not in text
    assert text.count("<|im_end|>") == 2  # each answer's end-of-turn token is learned too
    assert data.target_tokens < data.tokens


def test_spans_cover_content_not_the_role_header(tokenizer) -> None:
    messages = chat(("user", "hi"), ("assistant", "hello there"))["messages"]
    text, spans = assistant_spans(tokenizer, messages)
    assert len(spans) == 1
    start, end = spans[0]
    assert text[start:end] == "hello there<|im_end|>\n"


def test_text_examples_train_on_everything(tokenizer) -> None:
    data = tokenize_all(tokenizer, [Sourced("t.jsonl", 1, {"text": "plain words here"})], 512, {"text": 1})
    item = data.items[0]
    assert item["labels"] == item["input_ids"] and item["input_ids"][-1] == tokenizer.eos_token_id


def test_long_answers_are_truncated_and_counted(tokenizer) -> None:
    long_answer = chat(("user", "q"), ("assistant", "word " * 400))
    data = tokenize_all(tokenizer, [Sourced("t.jsonl", 1, long_answer)], 64, {"messages": 1})
    assert data.truncated == 1 and len(data.items[0]["input_ids"]) == 64


def test_a_prompt_longer_than_max_seq_length_is_an_error_naming_its_line(tokenizer) -> None:
    long_prompt = chat(("user", "word " * 400), ("assistant", "short"))
    with pytest.raises(DatasetError, match=r"^mine.jsonl:7: the prompt before the first answer is \d+ tokens, "
                                           r"over max_seq_length 64"):
        tokenize_all(tokenizer, [Sourced("mine.jsonl", 7, long_prompt)], 64, {"messages": 1})


def test_chatml_fallback_when_the_tokenizer_has_no_template(tokenizer) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = None
    assert ensure_chat_template(tokenizer) is True
    assert ensure_chat_template(tokenizer) is False
    text, spans = assistant_spans(tokenizer, chat(("user", "a"), ("assistant", "b"))["messages"])
    assert text.startswith("<|im_start|>user\na<|im_end|>") and len(spans) == 1


def test_max_samples_is_a_seeded_sample() -> None:
    a, formats = load_examples([str(SAMPLE)], 10, seed=1)
    b, _ = load_examples([str(SAMPLE)], 10, seed=1)
    c, _ = load_examples([str(SAMPLE)], 10, seed=2)
    assert len(a) == 10 and a == b and a != c and formats == {"messages": 320}


def test_errors_name_the_users_file_not_the_blob(tmp_path: Path) -> None:
    blob = write_jsonl(tmp_path / "0a1b2c", [chat(("user", "a"), ("assistant", "b")), "{oops"])
    with pytest.raises(DatasetError, match=r"^my-chats.jsonl:2: not valid JSON"):
        load_examples([str(blob)], None, 0, names={str(blob): "my-chats.jsonl"})


def test_eval_split_is_seeded_and_disjoint() -> None:
    examples, _ = load_examples([str(SAMPLE)], None, seed=0)
    train, held = split_eval(examples, 0.05, seed=3)
    assert len(held) == 16 and len(train) == 304
    assert {(e.path, e.line) for e in held}.isdisjoint({(e.path, e.line) for e in train})
    assert split_eval(examples, 0.05, seed=3)[1] == held
    assert split_eval(examples[:10], 0.5, seed=3) == (examples[:10], [])  # too few to hold any out


def test_collator_pads_and_counts_real_tokens() -> None:
    collate = PadCollator(pad_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert (batch[REAL_TOKENS], batch[PAD_TOKENS]) == (4, 2)


def run_trainer(job_dir: Path, job: dict) -> tuple[int, list[dict]]:
    (job_dir / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "remote.train", "--config", str(job_dir / "job.json")],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_trainer_rejects_a_bad_job_file_with_an_error_event(tmp_path: Path) -> None:
    code, events = run_trainer(tmp_path, {"job_id": "x", "model": "m", "datasets": ["d"], "lora_rank": 0})
    assert code == 2
    assert events[-1]["event"] == "error" and "lora_rank must be greater than 0 (got 0)" in events[-1]["message"]
    code, events = run_trainer(tmp_path, {"job_id": "x", "model": "m", "datasets": ["d"], "surprise": 1})
    assert code == 2 and "unknown keys ['surprise']" in events[-1]["message"]


def test_trainer_never_imports_unsloth_without_a_gpu(tmp_path: Path, tiny_model: Path) -> None:
    # an unsloth that is installed but cannot work here: its import raises, as the real one does
    fake = tmp_path / "site" / "unsloth"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise NotImplementedError('Unsloth cannot find any torch accelerator')\n")
    data = write_jsonl(tmp_path / "d.jsonl", [chat(("user", "a"), ("assistant", "b"))] * 4)
    job = {"job_id": "x", "model": str(tiny_model), "datasets": [str(data)], "max_steps": 2}
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "remote.train", "--config", str(tmp_path / "job.json")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path / 'site'}"))
    assert proc.returncode == 0, proc.stderr
    start = json.loads(proc.stdout.splitlines()[0])
    assert start["engine"] == "transformers+peft" and start["device"] == "cpu"
    assert "using transformers + peft: no CUDA GPU (cpu)" in proc.stderr


def test_trainer_reports_a_bad_dataset_line(tmp_path: Path, tiny_model: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [chat(("user", "a"), ("assistant", "b")), "{oops"])
    code, events = run_trainer(tmp_path, {"job_id": "x", "model": str(tiny_model), "datasets": [str(data)]})
    assert code == 2
    assert events[-1]["message"].startswith(f"{data}:2: not valid JSON")


# chat templates shaped like the real ones (written for these tests, not copied) --------------------

LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Qwen3's behaviour: answers after the last user turn get a <think> block (empty when there is no
# reasoning), earlier answers are rendered without one, so a prefix renders differently from the whole.
QWEN3_LIKE = (
    "{%- set ns = namespace(last_query=0) %}"
    "{%- for m in messages %}{%- if m['role'] == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'assistant' %}"
    "{%- if loop.index0 > ns.last_query %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + m['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>assistant\n' + m['content'] + '<|im_end|>\n' }}{%- endif %}"
    "{%- elif m['role'] == 'tool' %}{{ raise_exception('this template has no tool role') }}"
    "{%- else %}{{- '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


@pytest.fixture
def llama3_tokenizer(tiny_model: Path):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model)
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"]})
    tok.chat_template = LLAMA3_LIKE
    return tok


def test_llama3_shaped_template_trains_answers_and_eot_only(llama3_tokenizer) -> None:
    example = chat(("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello!"), ("user", "Bye"),
                   ("assistant", "Goodbye."))
    item = tokenize_all(llama3_tokenizer, [Sourced("t", 1, example)], 512, {}).items[0]
    trained = trained_text(llama3_tokenizer, item["input_ids"], item["labels"])
    assert trained == "Hello!<|eot_id|>Goodbye.<|eot_id|>"


def test_qwen3_shaped_template_is_not_prefix_stable_and_still_labels_right(tokenizer) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = QWEN3_LIKE
    example = chat(("user", "One?"), ("assistant", "First answer."), ("user", "Two?"), ("assistant", "Second."))
    text, spans = assistant_spans(tok, example["messages"])
    assert "<|im_start|>assistant\nFirst answer.<|im_end|>" in text  # the earlier answer has no think block
    assert [text[a:b] for a, b in spans] == ["First answer.<|im_end|>", "<think>\n\n</think>\n\nSecond.<|im_end|>\n"]
    item = tokenize_all(tok, [Sourced("t", 1, example)], 512, {}).items[0]
    trained = trained_text(tok, item["input_ids"], item["labels"])
    assert "First answer.<|im_end|>" in trained and "Second.<|im_end|>" in trained and "One?" not in trained


def test_a_role_the_template_cannot_render_names_the_line(tokenizer) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = QWEN3_LIKE
    example = chat(("user", "weather?"), ("tool", "sunny"), ("assistant", "Sunny."))
    with pytest.raises(DatasetError, match=r"^w.jsonl:4: the model's chat template cannot render this "
                                           r"conversation: this template has no tool role"):
        tokenize_all(tok, [Sourced("w.jsonl", 4, example)], 512, {})


# packing -----------------------------------------------------------------------------------------------


def test_packing_fills_rows_without_crossing_examples(tokenizer) -> None:
    examples, _ = load_examples([str(SAMPLE)], None, seed=0)
    data = tokenize_all(tokenizer, examples, 256, {})
    bins = pack(data.items, 256)
    assert sum(len(b) for b in bins) == len(data.items)
    assert all(sum(len(ex["input_ids"]) for ex in b) <= 256 for b in bins)
    assert len(bins) < len(data.items) / 3
    collate = PackedCollator(pad_id=0)
    batch = collate(bins[:4])
    assert "attention_mask" not in batch
    row, positions, labels = batch["input_ids"][0], batch["position_ids"][0].tolist(), batch["labels"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0]
    assert len(starts) >= len(bins[0])  # every example restarts at position 0 (padding after the last too)
    assert all(labels[i] == IGNORE for i in starts)  # no example learns the next one's first token
    assert row.shape[0] == batch["input_ids"].shape[1]
    def waste(collator, batches) -> float:
        collated = [collator(b) for b in batches]
        pad = sum(b[PAD_TOKENS] for b in collated)
        return pad / (pad + sum(b[REAL_TOKENS] for b in collated))

    padded = waste(PadCollator(pad_id=0), [data.items[i:i + 8] for i in range(0, len(data.items), 8)])
    assert waste(collate, [bins[i:i + 2] for i in range(0, len(bins), 2)]) < 0.1 < padded


def test_a_packed_row_computes_exactly_what_separate_rows_do(tiny_model: Path, tokenizer) -> None:
    import torch

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    model.config.use_cache = False
    examples = [Sourced("t", i, chat(("user", q), ("assistant", a)))
                for i, (q, a) in enumerate([("What is 2 plus 2?", "4."), ("Name a colour.", "Blue."),
                                            ("Say hi", "Hi!")])]
    items = tokenize_all(tokenizer, examples, 256, {}).items
    with torch.no_grad():
        packed = PackedCollator(tokenizer.pad_token_id)([items])
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits[0]
        at = 0
        for item in items:
            alone = model(input_ids=torch.tensor([item["input_ids"]])).logits[0]
            n = len(item["input_ids"])
            assert torch.allclose(logits[at:at + n], alone, atol=1e-4)
            at += n


def test_unsloth_batches_are_one_row_with_lengths_and_no_mask_or_padding(tokenizer) -> None:
    # the batch Unsloth's own SFT path makes (TRL's padding-free collator + packed_seq_lengths), whether a
    # step's items are packed bins or single examples
    examples, _ = load_examples([str(SAMPLE)], None, seed=0)
    items = tokenize_all(tokenizer, examples[:40], 256, {}).items
    bins = pack(items, 256)[:2]
    for batch_items in (bins, items[:3]):
        batch = FlatCollator(tokenizer.pad_token_id)(batch_items)
        flat = [ex for b in batch_items for ex in (b if isinstance(b, list) else [b])]
        lengths = [len(ex["input_ids"]) for ex in flat]
        assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
        assert batch["packed_seq_lengths"].tolist() == lengths
        assert str(batch["packed_seq_lengths"].dtype) == "torch.int32"
        assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
        assert batch["input_ids"][0].tolist() == [t for ex in flat for t in ex["input_ids"]]
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        labels = batch["labels"][0].tolist()
        assert all(labels[s] == IGNORE for s in starts)  # no example learns the next one's first token
        assert labels == [IGNORE if i in starts else t for i, t in enumerate(t for ex in flat for t in ex["labels"])]
        assert (batch[REAL_TOKENS], batch[PAD_TOKENS]) == (sum(lengths), 0)


def test_a_flat_row_computes_exactly_what_separate_rows_do(tiny_model: Path, tokenizer) -> None:
    import torch

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    model.config.use_cache = False
    examples = [Sourced("t", i, chat(("user", q), ("assistant", a)))
                for i, (q, a) in enumerate([("What is 2 plus 2?", "4."), ("Name a colour.", "Blue."),
                                            ("Say hi", "Hi!")])]
    items = tokenize_all(tokenizer, examples, 256, {}).items
    batch = FlatCollator(tokenizer.pad_token_id)([[items[0], items[1]], items[2]])
    inputs = {k: v for k, v in batch.items() if k not in (REAL_TOKENS, PAD_TOKENS)}
    with torch.no_grad():
        logits = model(**inputs).logits[0]
        at = 0
        for item in items:
            alone = model(input_ids=torch.tensor([item["input_ids"]])).logits[0]
            n = len(item["input_ids"])
            assert torch.allclose(logits[at:at + n], alone, atol=1e-4)
            at += n


def test_each_engine_gets_its_batches() -> None:
    from types import SimpleNamespace

    from remote.jobconfig import TrainConfig
    from remote.trainer import plan_batches

    data = SimpleNamespace(items=[{"input_ids": [1, 2], "labels": [1, 2]}] * 4)
    cfg = TrainConfig(job_id="x", model="m", datasets=["d"], max_seq_length=16)
    assert isinstance(plan_batches(cfg, "unsloth", 0, data, None).collator, FlatCollator)
    assert isinstance(plan_batches(cfg, "transformers+peft", 0, data, None).collator, PackedCollator)
    fallback = plan_batches(cfg, "unsloth", 0, data, None, padding_free_problem="no packed_seq_lengths")
    assert type(fallback.collator) is PadCollator and not fallback.packing
    assert "no packed_seq_lengths" in fallback.notes[0]
    cfg.packing = False
    assert type(plan_batches(cfg, "transformers+peft", 0, data, None).collator) is PadCollator


def test_metrics_count_the_tokens_trained_not_the_batches_fetched(tmp_path: Path, tiny_model: Path) -> None:
    # every example the same length: what was trained is exactly steps x batch x accumulation x length
    data = write_jsonl(tmp_path / "same.jsonl", [{"text": "one two three four five six seven"}] * 40)
    job = {"job_id": "t", "model": str(tiny_model), "datasets": [str(data)], "max_steps": 3, "batch_size": 2,
           "grad_accum": 2, "packing": False, "eval_fraction": 0}
    code, events = run_trainer(tmp_path, job)
    assert code == 0, events
    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    per_example = metrics["data"]["tokens"] // metrics["data"]["used"]
    assert metrics["tokens_trained"] == 3 * 2 * 2 * per_example
    assert metrics["steps"] == 3 and metrics["epochs_trained"] == pytest.approx(12 / 40)
    assert [e["event"] for e in events].count("eval") == 0
