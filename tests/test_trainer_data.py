"""The trainer's data path on the real tiny tokenizer: what is trained on, and what is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, chat, write_jsonl

from remote.data import IGNORE, PadCollator, assistant_spans, ensure_chat_template, load_examples, tokenize_all

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    return transformers.AutoTokenizer.from_pretrained(tiny_model)


def trained_text(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])


def test_only_assistant_turns_are_trained_on(tokenizer) -> None:
    example = chat(("system", "Be brief."), ("user", "What is 2 plus 2?"), ("assistant", "It is 4."),
                   ("user", "And 3 plus 3?"), ("assistant", "It is 6."))
    data = tokenize_all(tokenizer, [example], 512, {"messages": 1})
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
    data = tokenize_all(tokenizer, [{"text": "plain words here"}], 512, {"text": 1})
    item = data.items[0]
    assert item["labels"] == item["input_ids"] and item["input_ids"][-1] == tokenizer.eos_token_id


def test_truncation_is_counted_and_targetless_examples_dropped(tokenizer) -> None:
    long_answer = chat(("user", "q"), ("assistant", "word " * 400))
    long_prompt = chat(("user", "word " * 400), ("assistant", "short"))
    data = tokenize_all(tokenizer, [long_answer, long_prompt], 64, {"messages": 2})
    assert data.truncated == 2
    assert data.dropped_no_target == 1  # the prompt filled all 64 tokens: nothing left to learn
    assert len(data.items) == 1 and len(data.items[0]["input_ids"]) == 64


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


def test_collator_pads_and_counts_real_tokens() -> None:
    collate = PadCollator(pad_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert collate.tokens_seen == 4


def run_trainer(job_dir: Path, job: dict) -> tuple[int, list[dict]]:
    (job_dir / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "remote.train", "--config", str(job_dir / "job.json")],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_trainer_rejects_a_bad_job_file_with_an_error_event(tmp_path: Path) -> None:
    code, events = run_trainer(tmp_path, {"job_id": "x", "model": "m", "datasets": ["d"], "lora_rank": 0})
    assert code == 2
    assert events[-1]["event"] == "error" and "lora_rank must be > 0" in events[-1]["message"]
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
