"""Bad input through the real CLI: exit 2, one clear line naming the flag/file/line, no traceback,
and no job in the registry (nothing was started, nothing was spent)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import chat, write_jsonl


def good_dataset(tmp_path: Path) -> str:
    return str(write_jsonl(tmp_path / "ok.jsonl", [chat(("user", "hi"), ("assistant", "hello"))]))


def jobs_in_registry(home: Path) -> int:
    db = home / "state.db"
    if not db.exists():
        return 0
    return sqlite3.connect(db).execute("SELECT count(*) FROM jobs").fetchone()[0]


def assert_usage_error(result, home: Path, *needles: str) -> None:
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert jobs_in_registry(home) == 0


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--epochs", "0"], ["--epochs", "greater than 0"]),
        (["--epochs", "-1"], ["--epochs"]),
        (["--max-steps", "0"], ["--max-steps", "greater than 0"]),
        (["--lora-rank", "0"], ["--lora-rank"]),
        (["--lora-rank", "-4"], ["--lora-rank"]),
        (["--lr", "0"], ["--lr"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--max-seq-length", "0"], ["--max-seq-length"]),
        (["--lora-alpha", "32"], ["--lora-alpha needs --lora-rank"]),
        (["--epochs", "many"], ["--epochs", "not a valid float"]),
        (["--gpu", "h100:zero"], ["--gpu h100:zero", "COUNT"]),
        (["--name", "bad/name"], ["--name"]),
        (["--bogus-flag"], ["--bogus-flag"]),
        (["--watchdog", "soon"], ["--watchdog soon", "duration"]),
        (["--watchdog", "10s"], ["--watchdog", "greater than or equal to 60"]),
    ],
)
def test_bad_flags(cli, home: Path, tmp_path: Path, args: list[str], needles: list[str]) -> None:
    result = cli("launch", "--local", "--model", "rtrain-tiny", "--dataset", good_dataset(tmp_path), *args)
    assert_usage_error(result, home, *needles)


def test_alpha_with_rank_is_fine_and_alpha_defaults_to_twice_rank() -> None:
    from launcher.config import JobSpec

    assert JobSpec(model="m", datasets=["d"], lora_rank=16).lora_alpha == 32
    assert JobSpec(model="m", datasets=["d"], lora_rank=16, lora_alpha=8).lora_alpha == 8


def test_missing_dataset(cli, home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    assert_usage_error(cli("launch", "--local", "--dataset", str(missing)), home, f"{missing}: no such file")


def test_empty_dataset(cli, home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_usage_error(cli("launch", "--local", "--dataset", str(empty)), home, f"{empty}: no examples")


def test_bad_line_in_second_dataset_is_named(cli, home: Path, tmp_path: Path) -> None:
    second = write_jsonl(tmp_path / "second.jsonl", [chat(("user", "a"), ("assistant", "b")), "oops"])
    result = cli("launch", "--local", "--dataset", good_dataset(tmp_path), "--dataset", str(second))
    assert_usage_error(result, home, f"{second}:2: not valid JSON")


def test_unknown_role_and_no_assistant(cli, home: Path, tmp_path: Path) -> None:
    d = write_jsonl(tmp_path / "roles.jsonl", [chat(("human", "a"), ("assistant", "b"))])
    assert_usage_error(cli("launch", "--local", "--dataset", str(d)), home, f"{d}:1:", "unknown role 'human'")
    d2 = write_jsonl(tmp_path / "noasst.jsonl", [chat(("user", "a"))])
    assert_usage_error(cli("launch", "--local", "--dataset", str(d2)), home, f"{d2}:1:", "no assistant turn")


def test_record_with_no_format(cli, home: Path, tmp_path: Path) -> None:
    d = write_jsonl(tmp_path / "x.jsonl", [{"prompt_text": "a"}])
    assert_usage_error(cli("launch", "--local", "--dataset", str(d)), home, f"{d}:1: no recognised format")


def test_model_path_that_does_not_exist(cli, home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "models" / "mine"
    result = cli("launch", "--local", "--model", str(missing), "--dataset", good_dataset(tmp_path))
    assert_usage_error(result, home, f"--model {missing}: no such folder")
    result = cli("launch", "--local", "--model", "./relative/model", "--dataset", good_dataset(tmp_path))
    assert_usage_error(result, home, "--model ./relative/model")


def test_model_folder_without_config(cli, home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "notamodel"
    folder.mkdir()
    result = cli("launch", "--local", "--model", str(folder), "--dataset", good_dataset(tmp_path))
    assert_usage_error(result, home, "no config.json")


def test_unknown_template_lists_the_known_ones(cli, home: Path) -> None:
    result = cli("launch", "--local", "--template", "nope")
    assert_usage_error(result, home, "--template nope: unknown template", "tiny-cpu")


def test_output_folder_that_is_not_empty(cli, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("precious")
    result = cli("launch", "--local", "--dataset", good_dataset(tmp_path), "--output", str(out))
    assert_usage_error(result, home, "--output", "not empty")
    assert (out / "adapter_model.safetensors").read_text() == "precious"


def test_remote_backend_needs_a_dataset(cli, home: Path) -> None:
    assert_usage_error(cli("launch", "--backend", "runpod", "--model", "org/model"), home, "--dataset is required")


def test_exports_that_cannot_work_are_refused_before_training(cli, home: Path, tmp_path: Path) -> None:
    result = cli("launch", "--local", "--model", "unsloth/Qwen3-8B-bnb-4bit", "--dataset", good_dataset(tmp_path),
                 "--merged")
    assert_usage_error(result, home, "--merged: unsloth/Qwen3-8B-bnb-4bit is a 4-bit checkpoint")


def test_local_and_backend_disagree(cli, home: Path, tmp_path: Path) -> None:
    result = cli("launch", "--local", "--backend", "lambda", "--dataset", good_dataset(tmp_path))
    assert_usage_error(result, home, "--local and --backend lambda")


def test_unknown_job_for_show_logs_down_resume(cli, home: Path) -> None:
    for command in ("show", "logs", "down", "resume"):
        assert_usage_error(cli(command, "no-such-job"), home, "no job 'no-such-job'")


def test_help_and_version_exit_zero(cli, home: Path) -> None:
    result = cli("--help")
    assert result.code == 0 and "launch" in result.out and "ls" in result.out
    result = cli("version")
    assert result.code == 0 and result.out.startswith("rtrain ")
