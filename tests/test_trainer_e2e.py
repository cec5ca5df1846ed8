"""The trainer's deeper features through `rtrain launch --local`: held-out evaluation and samples,
checkpoints, a killed trainer restarted from its checkpoint, continuing an adapter."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, processes, rtrain_cmd, stop_launcher

pytest.importorskip("peft")


def events_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "events.jsonl").read_text().splitlines()]


def test_eval_checkpoints_and_samples(home_with_tiny: Path, cli_proc) -> None:
    result = cli_proc("launch", "--local", "--max-steps", "20", "--save-steps", "10", "--eval-steps", "10",
                      "--eval-fraction", "0.1", "--json")
    assert result.code == 0, result.err
    out = Path(result.json_line()["output_dir"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_examples"] > 0 and metrics["eval_loss"] > 0
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-3)
    assert metrics["packing"] is True and metrics["padding_waste"] < 0.1
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    assert all(s["expected"] and isinstance(s["generated"], str) and s["prompt"][-1]["role"] == "user"
               for s in samples)
    kinds = [e["event"] for e in events_of(out)]
    assert kinds.count("checkpoint") == 2
    assert [e["step"] for e in events_of(out) if e["event"] == "eval"] == [10, 20]  # the last one not twice
    assert "eval at step 10" in result.err and "checkpoint at step 10" in result.err


def test_an_eval_dataset_replaces_the_held_out_share(home_with_tiny: Path, cli_proc, tmp_path: Path) -> None:
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:5]))
    result = cli_proc("launch", "--local", "--max-steps", "3", "--eval-dataset", str(eval_file), "--json")
    assert result.code == 0, result.err
    metrics = json.loads((Path(result.json_line()["output_dir"]) / "metrics.json").read_text())
    assert metrics["eval_examples"] == 5 and metrics["data"]["used"] == 320  # nothing held out of the training set


def trainer_python_pid(session_pid: int) -> int | None:
    """The python child of the trainer's session leader (bash)."""
    return next((pid for pid, parent, cmdline in processes() if parent == session_pid and b"remote.train" in cmdline),
                None)


def test_a_killed_trainer_restarts_from_its_checkpoint(home_with_tiny: Path) -> None:
    proc = subprocess.Popen(rtrain_cmd("launch", "--local", "--max-steps", "120", "--batch-size", "2",
                                       "--save-steps", "5", "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.monotonic() + 120
        jobs = home_with_tiny / "local" / "jobs"
        killed = None
        while time.monotonic() < deadline and killed is None:
            for job in jobs.glob("*") if jobs.exists() else []:
                complete = list((job / "checkpoints").glob("checkpoint-*/trainer_state.json"))
                if complete and (job / "trainer.pid").exists():
                    pid = trainer_python_pid(int((job / "trainer.pid").read_text()))
                    if pid:
                        os.kill(pid, signal.SIGKILL)  # what the OOM killer does
                        killed = job.name
            time.sleep(0.2)
        assert killed, "no checkpoint appeared"
        out, err = proc.communicate(timeout=240)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 0, err
    assert "the trainer was killed: restarting it from checkpoint-" in err
    job = json.loads(out.strip().splitlines()[-1])
    metrics = json.loads((Path(job["output_dir"]) / "metrics.json").read_text())
    assert metrics["steps"] == 120 and metrics["resumed_from"].startswith("checkpoints/checkpoint-")
    db = sqlite3.connect(home_with_tiny / "state.db")
    kinds = [k for (k,) in db.execute("SELECT kind FROM events WHERE job_id = ?", (job["job_id"],))]
    assert "restart" in kinds


def test_from_adapter_continues_an_adapter(home_with_tiny: Path, cli_proc) -> None:
    first = cli_proc("launch", "--local", "--max-steps", "25", "--eval-fraction", "0", "--json")
    assert first.code == 0, first.err
    adapter = first.json_line()["adapter_dir"]
    first_metrics = json.loads((Path(first.json_line()["output_dir"]) / "metrics.json").read_text())
    second = cli_proc("launch", "--local", "--max-steps", "5", "--eval-fraction", "0", "--from-adapter", adapter,
                      "--json")
    assert second.code == 0, second.err
    metrics = json.loads((Path(second.json_line()["output_dir"]) / "metrics.json").read_text())
    # it starts where the first adapter ended, not from a fresh (zero) adapter
    assert metrics["first_loss"] < first_metrics["first_loss"] - 0.2
    bad = cli_proc("launch", "--local", "--from-adapter", str(SAMPLE.parent))
    assert bad.code == 2 and "not a PEFT adapter folder" in bad.err


def test_exports_at_the_end_of_training_are_verified_outputs(home_with_tiny: Path, cli_proc) -> None:
    from launcher.downloads import verify_manifest

    result = cli_proc("launch", "--local", "--max-steps", "3", "--gguf", "--modelfile", "--json")
    assert result.code == 0, result.err
    out = Path(result.json_line()["output_dir"])
    files = verify_manifest(out)
    assert {"export/adapter.gguf", "export/Modelfile", "export/model_info.json"} <= set(files)
    info = json.loads((out / "export" / "model_info.json").read_text())
    # the base is named where this machine has it (rtrain-tiny is built into RTRAIN_HOME)
    tiny = str(home_with_tiny / "models" / "rtrain-tiny")
    assert info["base_model"] == tiny and info["training"]["steps"] == 3
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny


def test_a_tokenizer_without_a_chat_template_gets_chatml_and_the_user_is_told(home_with_tiny: Path, cli_proc,
                                                                              tiny_model: Path,
                                                                              tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "no-template"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    result = cli_proc("launch", "--local", "--model", str(bare), "--dataset", str(SAMPLE), "--max-steps", "1")
    assert result.code == 0, result.err
    assert "no chat template: conversations are rendered as ChatML" in result.err
