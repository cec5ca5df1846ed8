"""``rtrain launch --local`` end to end, as a user runs it: a real process, the real trainer on the
tiny model, the registry, the verified copy into runs/<job-id>/."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, rtrain_cmd, stop_launcher, wait_for_training

from launcher.downloads import verify_manifest

pytest.importorskip("peft")

SECRETS = {"HF_TOKEN": "hf_SECRETtoken1234567890", "RUNPOD_API_KEY": "rpa_SECRETkey0987654321"}


def job_row(home: Path, job_id: str) -> dict:
    db = sqlite3.connect(home / "state.db")
    db.row_factory = sqlite3.Row
    return dict(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def step_losses(events_file: Path) -> list[float]:
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    return [e["loss"] for e in events if e["event"] == "step"]


def test_launch_local_trains_a_usable_adapter(home_with_tiny: Path, cli_proc, tiny_model: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    home = home_with_tiny
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    result = cli_proc("launch", "--local", "--max-steps", "30", "--name", "e2e", "--json")
    assert result.code == 0, result.err
    job = result.json_line()
    assert set(job) == {"job_id", "status", "backend", "output_dir", "adapter_dir", "steps", "final_loss",
                        "cost_usd", "pod_id", "summary"}
    assert job["status"] == "succeeded" and job["backend"] == "local" and job["steps"] == 30
    # what it was about to do, said before it did it, and returned in --json
    assert job["summary"] == [line[len("  "):] if line.startswith("  ") else line
                              for line in result.err.splitlines() if line.startswith("plan: ")]
    assert "on this machine" in job["summary"][0] and "30 steps" in job["summary"][1]
    # one dataset, one token count: the launch counted as the trainer did (the tokenizer is at hand)
    counted = re.search(r"chats.jsonl: 320 examples .*, ([\d,]+) tokens \(counted with the model's tokenizer",
                        result.err)
    assert counted, result.err
    start = next(json.loads(line) for line in (Path(job["output_dir"]) / "logs" / "events.jsonl").open()
                 if '"start"' in line)
    trainer_tokens = start["tokens"] + start["eval_tokens"]
    assert abs(int(counted[1].replace(",", "")) - trainer_tokens) <= 0.02 * trainer_tokens
    assert f"{int(counted[1].replace(',', '')):,} tokens" in job["summary"][1]
    out = Path(job["output_dir"])
    assert out == Path.cwd() / "runs" / job["job_id"]
    adapter = Path(job["adapter_dir"])
    assert adapter == out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    assert (adapter / "tokenizer.json").is_file()

    # every file matches the trainer's manifest, nothing half-written is left beside it
    assert len(verify_manifest(out)) >= 4
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)

    # the loss fell, and metrics.json agrees with the events
    losses = step_losses(out / "logs" / "events.jsonl")
    assert len(losses) == 30 and losses[-1] < losses[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_loss"] == pytest.approx(job["final_loss"]) == pytest.approx(losses[-1])
    assert metrics["engine"] == "transformers+peft" and metrics["device"] == "cpu"

    # the adapter loads on the tiny base with PEFT, and its LoRA weights moved away from zero
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) > 0 for p in lora_b)

    # the "pod" is gone: no job folder left on the local machine
    assert not (home / "local" / "jobs" / job["job_id"]).exists()

    # the registry agrees, through the CLI
    listed = json.loads(cli_proc("ls", "--json").out)
    assert [(j["job_id"], j["status"], j["name"]) for j in listed] == [(job["job_id"], "succeeded", "e2e")]
    assert listed[0]["created_at"] and listed[0]["updated_at"]
    shown = cli_proc("show", job["job_id"][:13])
    assert shown.code == 0 and "succeeded" in shown.out and "trainer.done" in shown.out
    logs = cli_proc("logs", "e2e")  # the trainer's own readable lines, not raw dicts
    assert logs.code == 0 and "[trainer] step 1/30  loss " in logs.out and "[trainer] step 30/30" in logs.out
    assert "{'loss'" not in logs.out and "{'train_runtime'" not in logs.out

    # secrets never reach output, logs or the registry
    db_bytes = b"".join(p.read_bytes() for p in home.glob("state.db*"))
    texts = [result.out, result.err, shown.out, logs.out, (out / "logs" / "train.log").read_text()]
    for secret in SECRETS.values():
        assert secret.encode() not in db_bytes
        assert all(secret not in t for t in texts)


def test_training_failure_exits_1_with_the_reason_and_no_adapter(home_with_tiny: Path, cli_proc,
                                                                 broken_model: Path) -> None:
    result = cli_proc("launch", "--local", "--model", str(broken_model), "--dataset", str(SAMPLE),
                      "--max-steps", "2", "--json")
    assert result.code == 1, result.err
    assert "training failed:" in result.err and "safetensors" in result.err.lower()
    assert "last lines of train.log:\n  |" in result.err and "  | safetensors" in result.err  # the pod's log
    job = result.json_line()
    assert job["status"] == "failed" and job["adapter_dir"] is None
    out = Path(job["output_dir"])
    assert not (out / "adapter").exists() and (out / "logs" / "train.log").is_file()
    assert not (home_with_tiny / "local" / "jobs" / job["job_id"]).exists()
    row = job_row(home_with_tiny, job["job_id"])
    assert row["status"] == "failed" and row["phase"] == "follow" and "training failed" in row["error"]


def test_a_prompt_longer_than_max_seq_length_is_refused_with_its_line(home_with_tiny: Path, cli_proc) -> None:
    result = cli_proc("launch", "--local", "--max-seq-length", "9", "--json")
    assert result.code == 2, result.err
    assert f"the trainer refused the job: {SAMPLE}:1: the prompt before the first answer is" in result.err
    assert "over max_seq_length 9" in result.err
    assert result.json_line()["adapter_dir"] is None


def start_launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        rtrain_cmd("launch", "--local", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


def test_ctrl_c_during_training_stops_the_trainer_and_exits_130(home_with_tiny: Path) -> None:
    proc = start_launch("--max-steps", "100000")
    try:
        row = wait_for_training(home_with_tiny, proc)
        pid = int((home_with_tiny / "local" / "jobs" / row["id"] / "trainer.pid").read_text())
        assert alive(pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not alive(pid)
    assert not (home_with_tiny / "local" / "jobs" / row["id"]).exists()
    assert job_row(home_with_tiny, row["id"])["status"] == "interrupted"


def test_resume_after_the_launcher_died(home_with_tiny: Path, cli_proc) -> None:
    proc = start_launch("--max-steps", "150", "--batch-size", "2")
    try:
        row = wait_for_training(home_with_tiny, proc)
    except BaseException:
        stop_launcher(proc)
        raise
    proc.kill()  # SIGKILL: no finally, no teardown, exactly a crashed laptop
    proc.wait(30)
    assert job_row(home_with_tiny, row["id"])["status"] == "running"
    result = cli_proc("resume", row["id"], "--json")
    assert result.code == 0, result.err
    job = result.json_line()
    assert job["status"] == "succeeded" and job["steps"] == 150
    assert (Path(job["adapter_dir"]) / "adapter_model.safetensors").is_file()
    assert not (home_with_tiny / "local" / "jobs" / row["id"]).exists()
    again = cli_proc("resume", row["id"])
    assert again.code == 2 and "already succeeded" in again.err


def test_detach_then_resume(home_with_tiny: Path, cli_proc) -> None:
    result = cli_proc("launch", "--local", "--max-steps", "10", "--detach", "--json")
    assert result.code == 0, result.err
    job = result.json_line()
    assert job["status"] == "running" and job["adapter_dir"] is None
    assert "rtrain resume" in result.err
    followed = cli_proc("logs", job["job_id"], "--follow")  # returns once the trainer has ended
    assert followed.code == 0 and "[trainer] done: " in followed.out
    events = cli_proc("logs", job["job_id"], "--events")
    assert '"event": "done"' in events.out
    resumed = cli_proc("resume", job["job_id"], "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json_line()["status"] == "succeeded"
