"""Every dataset format the README promises, through ``rtrain launch`` (local and the fake RunPod),
not only through remote/formats.py: datasets reach the trainer as content-addressed blobs without
their names, so a format chosen by the blob's name would pass every unit test and fail here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import last_json, launch, write_jsonl

pytest.importorskip("peft")

TOPICS = [("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"), ("a lemon", "yellow")]

#: format name (as the trainer counts it) -> file name, lines
FILES: dict[str, tuple[str, list]] = {
    "messages": ("messages.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Colour of {t}?"},
                      {"role": "assistant", "content": f"{c.capitalize()}."}]} for t, c in TOPICS]),
    "conversations": ("sharegpt.jsonl", [
        {"conversations": [{"from": "human", "value": f"What colour is {t}?"}, {"from": "gpt", "value": c}]}
        for t, c in TOPICS]),
    "alpaca": ("alpaca.jsonl", [
        {"instruction": "Name the colour", "input": t, "output": c, "history": [["Hi", "Hello!"]]} for t, c in TOPICS]),
    "instruction_response": ("ir.jsonl", [
        {"instruction": f"Colour of {t}?", "response": c, "metadata": {"ignored": True}} for t, c in TOPICS]),
    "prompt_completion": ("pc.jsonl", [{"prompt": f"{t} is", "completion": f" {c}"} for t, c in TOPICS]),
    "text": ("text.jsonl", [{"text": f"The colour of {t} is {c}, as everyone knows."} for t, c in TOPICS]),
}
QA_TXT = "".join(f"Q: What colour is {t}?\nA: It is {c}.\n\n" for t, c in TOPICS)
USER_MD = "".join(f"User: Tell me the colour of {t}.\nAssistant: {c.capitalize()},\nas always.\n\n"
                  for t, c in TOPICS)


@pytest.fixture
def every_format(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    paths = [write_jsonl(folder / name, rows) for name, rows in FILES.values()]
    (folder / "qa.txt").write_text(QA_TXT, encoding="utf-8")
    (folder / "chat.md").write_text(USER_MD, encoding="utf-8")
    return [*paths, folder / "qa.txt", folder / "chat.md"]


def trained_formats(job: dict) -> dict[str, int]:
    metrics = json.loads((Path(job["output_dir"]) / "metrics.json").read_text())
    return dict(metrics["data"]["formats"])


EXPECTED = {**{name: len(TOPICS) for name in FILES}, "qa_text": 2 * len(TOPICS)}


def _args(paths: list[Path]) -> list[str]:
    return [arg for p in paths for arg in ("--dataset", str(p))]


def test_every_format_trains_through_launch_local(home_with_tiny: Path, every_format: list[Path]) -> None:
    proc = launch("--local", *_args(every_format), "--max-steps", "3", "--eval-fraction", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert job["status"] == "succeeded" and trained_formats(job) == EXPECTED
    # the launcher named each file and its format before anything ran
    assert "qa.txt: 5 examples (qa_text" in proc.stderr and "chat.md: 5 examples (qa_text" in proc.stderr


def test_every_format_trains_on_a_fake_runpod_pod(runpod, every_format: list[Path]) -> None:
    proc = launch("--gpu", "h100", "--template", "tiny-cpu", *_args(every_format), "--max-steps", "2",
                  "--eval-fraction", "0", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert job["status"] == "succeeded" and trained_formats(job) == EXPECTED
    assert runpod.ledger[job["pod_id"]].status == "TERMINATED"
