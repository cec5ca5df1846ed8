"""Dataset validation: every bad input named by file and line, counts for the good ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE, chat, write_jsonl

from launcher.dataset import validate_dataset
from launcher.errors import UsageError
from remote.formats import detect_format, read_examples


def bad(path: Path) -> str:
    with pytest.raises(UsageError) as info:
        validate_dataset(path)
    assert info.value.exit_code == 2
    return str(info.value)


def test_sample_dataset_counts() -> None:
    summary = validate_dataset(SAMPLE)
    assert summary.format == "messages"
    assert summary.examples == 320
    assert 0 < summary.conversations_with_system < summary.examples
    assert summary.multi_turn > 0
    assert 5_000 < summary.approx_tokens < 50_000
    assert "320 examples" in summary.describe()


def test_missing_file(tmp_path: Path) -> None:
    assert bad(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert bad(path) == f"{path}: no examples (the file is empty)"


def test_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat(("user", "hi"), ("assistant", "hello")), "{not json"])
    assert bad(path).startswith(f"{path}:2: not valid JSON")


def test_record_with_no_known_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    msg = bad(path)
    assert msg.startswith(f"{path}:1: no recognised format")
    assert "answer, question" in msg


def test_unknown_role(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat(("user", "hi"), ("bot", "hello"))])
    assert bad(path) == f"{path}:1: message 2 has unknown role 'bot' (expected one of system, user, assistant, tool)"


def test_no_assistant_turn(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat(("user", "a"), ("assistant", "b")),
                                              chat(("system", "s"), ("user", "hi"))])
    assert bad(path) == f"{path}:2: conversation has no assistant turn with content (nothing to learn from)"


def test_empty_assistant_content_is_no_assistant_turn(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat(("user", "hi"), ("assistant", "   "))])
    assert "no assistant turn" in bad(path)


def test_empty_text_record(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, {"text": ""}])
    assert bad(path) == f'{path}:2: "text" is empty'


def test_mixed_formats_in_one_file_name_the_first_differing_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat(("user", "a"), ("assistant", "b")), {"text": "t"}])
    assert bad(path) == f"{path}:2: format 'text' differs from 'messages' of line 1 (one format per file)"


def test_non_object_and_non_utf8(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ["[1, 2]"])
    assert bad(path) == f"{path}:1: expected a JSON object, got list"
    raw = tmp_path / "latin1.jsonl"
    raw.write_bytes(b'{"text": "caf\xe9"}\n')
    assert "not UTF-8" in bad(raw)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    assert bad(tmp_path).endswith("is a folder, expected a dataset file")


def test_text_format_and_tool_calls_are_accepted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "one"}, {"text": "two"}])
    assert validate_dataset(path).examples == 2
    tool = {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "w"}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "1"},
        {"role": "assistant", "content": "It is sunny."},
    ]}
    examples = list(read_examples(write_jsonl(tmp_path / "tools.jsonl", [tool])))
    assert examples[0][2]["messages"][1]["tool_calls"][0]["function"]["name"] == "w"


def test_detect_format_prefers_messages() -> None:
    assert detect_format({"messages": [], "text": "x"}) == "messages"
    assert detect_format({"text": "x"}) == "text"
