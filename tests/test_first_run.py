"""The first ten minutes, through the CLI: a first run says what it waits on (the tiny model's build,
with its progress), launch and `cost` count a dataset's tokens as the trainer does, and shell
completion works as the README says."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from conftest import ROOT, SAMPLE, rtrain_cmd


def test_the_first_run_shows_the_tiny_models_build_and_counts_tokens_as_the_trainer(home: Path, cli_proc) -> None:
    assert not (home / "models" / "rtrain-tiny").exists()  # a fresh machine: nothing built yet
    launch = cli_proc("launch", "--local", "--max-steps", "1", "--yes", "--json")
    assert launch.code == 0, launch.err
    lines = launch.err.splitlines()
    building = next(i for i, line in enumerate(lines) if line.startswith("building rtrain's tiny model"))
    progress = [line for line in lines if line.startswith("  tiny model: ")]
    assert len(progress) >= 4 and any("pre-training" in line for line in progress)
    dataset_line = next(i for i, line in enumerate(lines) if line.startswith("chats.jsonl: "))
    assert building < dataset_line  # said before the wait, not after it
    launched = int(re.search(r"([\d,]+) tokens \(counted", lines[dataset_line])[1].replace(",", ""))

    cost = cli_proc("cost", "--model", str(home / "models" / "rtrain-tiny"), "--dataset", str(SAMPLE), "--json")
    assert cost.code == 0, cost.err
    tokens = cost.json_line()["tokens"]
    assert tokens["method"].startswith("counted with the model's tokenizer")
    assert tokens["per_epoch"] == launched and tokens["examples"] == 320


def test_shell_completion_is_clicks_own(home: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = subprocess.run(rtrain_cmd(), env={**env, "_RTRAIN_COMPLETE": "bash_source"}, capture_output=True,
                            text=True, timeout=60)
    assert "_rtrain_completion()" in script.stdout and "complete " in script.stdout
    for shell in ("zsh_source", "fish_source"):
        other = subprocess.run(rtrain_cmd(), env={**env, "_RTRAIN_COMPLETE": shell}, capture_output=True, text=True,
                               timeout=60)
        assert "rtrain" in other.stdout and other.returncode == 0
    words = subprocess.run(rtrain_cmd(), env={**env, "_RTRAIN_COMPLETE": "bash_complete", "COMP_WORDS": "rtrain do",
                                              "COMP_CWORD": "1"}, capture_output=True, text=True, timeout=60)
    assert "plain,doctor" in words.stdout.splitlines()
    flags = subprocess.run(rtrain_cmd(), env={**env, "_RTRAIN_COMPLETE": "bash_complete",
                                              "COMP_WORDS": "rtrain launch --max-s", "COMP_CWORD": "2"},
                           capture_output=True, text=True, timeout=60)
    assert "plain,--max-steps" in flags.stdout.splitlines()
