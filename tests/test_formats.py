"""Every dataset shape users arrive with, normalised to one conversation form (remote/formats.py,
shared by the launcher's validation and the trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_jsonl

from remote.formats import DatasetError, read_examples


def examples(path: Path) -> list[tuple[str, dict]]:
    return [(fmt, ex) for _line, fmt, ex in read_examples(path)]


def roles(example: dict) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in example["messages"]]


def test_sharegpt_conversations(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [
        {"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}])
    [(fmt, ex)] = examples(path)
    assert fmt == "conversations"
    assert roles(ex) == [("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello")]


def test_sharegpt_unknown_speaker_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "bot", "value": "x"}]}])
    with pytest.raises(DatasetError, match=r"s.jsonl:1: turn 1 is from unknown speaker 'bot'"):
        examples(path)


def test_alpaca_with_input_system_and_history(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Translate", "input": "chat", "output": "cat", "system": "You translate French.",
         "history": [["Translate: chien", "dog"]]},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ])
    (f1, first), (f2, second) = examples(path)
    assert f1 == f2 == "alpaca"
    assert roles(first) == [("system", "You translate French."), ("user", "Translate: chien"), ("assistant", "dog"),
                            ("user", "Translate\n\nchat"), ("assistant", "cat")]
    assert roles(second) == [("user", "Say hi"), ("assistant", "hi")]


def test_instruction_response_and_prompt_completion(tmp_path: Path) -> None:
    ir = write_jsonl(tmp_path / "ir.jsonl", [{"instruction": "Q?", "response": "A.", "metadata": {"src": "x"}}])
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2=", "completion": "4"}])
    assert [(f, roles(e)) for f, e in examples(ir)] == [("instruction_response", [("user", "Q?"),
                                                                                  ("assistant", "A.")])]
    assert [(f, roles(e)) for f, e in examples(pc)] == [("prompt_completion", [("user", "2+2="), ("assistant", "4")])]


def test_empty_answer_fields_are_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": ""}])
    with pytest.raises(DatasetError, match=r'a.jsonl:1: "output" must be a non-empty string'):
        examples(path)


def test_mixed_formats_name_the_first_line_that_differs(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"},
                                              {"instruction": "e", "output": "f"}])
    with pytest.raises(DatasetError, match=r"m.jsonl:3: format 'alpaca' differs from 'prompt_completion' of line 1"):
        examples(path)


def test_plain_text_turns(tmp_path: Path) -> None:
    path = tmp_path / "qa.txt"
    path.write_text("Q: What is 2+2?\nA: 4.\n\n\nUser: Name a colour.\nAssistant: Blue,\nor green.\nUser: More?\n"
                    "Assistant: Red.\n")
    (f1, first), (f2, second) = examples(path)
    assert f1 == f2 == "qa_text"
    assert roles(first) == [("user", "What is 2+2?"), ("assistant", "4.")]
    assert roles(second) == [("user", "Name a colour."), ("assistant", "Blue,\nor green."), ("user", "More?"),
                             ("assistant", "Red.")]
    lines = [line for line, _f, _e in read_examples(path)]
    assert lines == [1, 5]


def test_plain_text_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("Q: fine\nA: yes\n\nJust some words\nA: x\n")
    with pytest.raises(DatasetError, match=r"bad.txt:4: expected a turn starting with 'Q:'"):
        examples(bad)
    no_answer = tmp_path / "noanswer.txt"
    no_answer.write_text("Q: lonely question\n")
    with pytest.raises(DatasetError, match=r"noanswer.txt:1: conversation has no assistant turn"):
        examples(no_answer)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no examples"):
        examples(empty)


def test_the_users_file_name_decides_between_jsonl_and_text(tmp_path: Path) -> None:
    # a content-addressed blob has no suffix: the user's name for it decides, else its first character
    blob = tmp_path / "3f2a9c"
    blob.write_text("Q: Hi?\nA: Hello.\n", encoding="utf-8")
    assert [fmt for _l, fmt, _e in read_examples(blob, "qa.txt")] == ["qa_text"]
    assert [fmt for _l, fmt, _e in read_examples(blob)] == ["qa_text"]
    with pytest.raises(DatasetError, match=r"not valid JSON"):
        list(read_examples(blob, "chats.jsonl"))
    write_jsonl(blob, [{"prompt": "a", "completion": "b"}])
    assert [fmt for _l, fmt, _e in read_examples(blob)] == ["prompt_completion"]
