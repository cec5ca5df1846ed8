"""Losing the machine costs at most a checkpoint interval and never leaks one: through the CLI, with the
fake RunPod's pods (real sshd) preempted or killed mid-training, and signals that come twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, rtrain_cmd, stop_launcher

from launcher.downloads import verify_manifest

STEPS = 60
JOB = ("--gpu", "h100", "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--yes", "--json", "--max-steps",
       str(STEPS), "--save-steps", "10", "--batch-size", "2", "--max-seq-length", "128", "--eval-fraction", "0")


def start_launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(rtrain_cmd("launch", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def registry_rows(home: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    if not (home / "state.db").exists():
        return []
    db = sqlite3.connect(home / "state.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def wait_for_event(home: Path, kind: str, proc: subprocess.Popen, timeout: float = 300) -> dict:
    """The newest job's first registry event of ``kind`` (waiting on progress, not on a clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = registry_rows(home, "SELECT e.data, j.id, j.pod_id FROM events e JOIN jobs j ON e.job_id = j.id "
                                   "WHERE e.kind = ? ORDER BY e.id", kind)
        if rows:
            return {"data": json.loads(rows[0]["data"] or "{}"), "job_id": rows[0]["id"], "pod_id": rows[0]["pod_id"]}
        if proc.poll() is not None:
            raise AssertionError(f"the launcher ended before a {kind} event:\n{proc.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError(f"no {kind} event")


def attempts(out: Path) -> list[tuple[int | None, list[int]]]:
    """Per trainer run, from the job's events.jsonl: (resumed_from_step, the steps it trained)."""
    runs: list[tuple[int | None, list[int]]] = []
    for line in (out / "logs" / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "start":
            runs.append((event.get("resumed_from_step"), []))
        elif event["event"] == "step":
            runs[-1][1].append(event["step"])
    return runs


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[dict, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def check_exactly_once_after_the_checkpoint(job: dict, copied_step: int) -> list:
    """The second run resumed from a checkpoint at least as new as ``copied_step`` (a newer one may
    have been copied before the machine went), and trained every step after it exactly once."""
    out = Path(job["output_dir"])
    verify_manifest(out)
    runs = attempts(out)
    assert len(runs) == 2, runs
    (first_from, first_steps), (resumed_from, second_steps) = runs
    assert first_from is None and resumed_from is not None and resumed_from >= copied_step
    assert first_steps[:resumed_from] == list(range(1, resumed_from + 1))
    assert second_steps == list(range(resumed_from + 1, STEPS + 1))  # each step once, in order
    assert job["status"] == "succeeded" and job["steps"] == STEPS
    return runs


def test_a_preempted_spot_pod_is_resumed_and_training_continues_from_its_checkpoint(runpod, home_with_tiny: Path,
                                                                                    cli_proc) -> None:
    proc = start_launch(*JOB, "--spot")
    try:
        point = wait_for_event(home_with_tiny, "trainer.checkpoint", proc)
        runpod.preempt(point["pod_id"])
    finally:
        job, err = finish(proc)
    pod = runpod.ledger[point["pod_id"]]
    assert pod.spot and len(runpod.ledger) == 1 and pod.status == "TERMINATED"  # the same pod, ended at the end
    assert any("podBidResume" in c["query"] for c in runpod.calls)
    bid = next(c for c in runpod.calls if "podRentInterruptable" in c["query"])["variables"]["input"]["bidPerGpu"]
    assert bid == pytest.approx(1.93)  # 10% over the live spot price of 1.75
    assert "recovering (attempt 2" in err and "training continues from the checkpoint of step" in err
    assert "at spot $1.93/hr (on demand $2.99/hr per GPU)" in err  # the estimate shows both
    check_exactly_once_after_the_checkpoint(job, point["data"]["step"])
    shown = cli_proc("show", job["job_id"]).out
    attempts_shown = shown.split("attempts:\n")[1].split("events:")[0].splitlines()
    assert attempts_shown[0].startswith(f"  1: runpod {pod.id} (h100), to step ") and "is EXITED" in attempts_shown[0]
    assert attempts_shown[1].startswith(f"  2: runpod {pod.id} (h100), to step {STEPS}")
    assert attempts_shown[1].endswith("succeeded")
    # billed: the sum over both runs of the pod
    billed = sum((end or 0) - start for start, end in pod.runs) * pod.cost_per_hr / 3600
    assert job["cost_usd"] == pytest.approx(billed, rel=0.5, abs=0.002)


def test_a_pod_that_cannot_be_resumed_is_replaced_from_the_checkpoint_copied_off_it(runpod,
                                                                                     home_with_tiny: Path) -> None:
    runpod.resume_capacity = False
    proc = start_launch(*JOB, "--spot")
    try:
        copied = wait_for_event(home_with_tiny, "checkpoint.copied", proc)
        runpod.preempt(copied["pod_id"])
    finally:
        job, err = finish(proc)
    assert len(runpod.ledger) == 2 and job["pod_id"] != copied["pod_id"]
    assert all(p.status == "TERMINATED" for p in runpod.ledger.values())
    assert "cannot resume" in err
    check_exactly_once_after_the_checkpoint(job, copied["data"]["step"])
    # what the launcher kept for the recovery is gone once the outputs are home
    assert not (home_with_tiny / "jobs" / job["job_id"]).exists()


def test_an_on_demand_pod_whose_host_dies_is_replaced(runpod, home_with_tiny: Path) -> None:
    proc = start_launch(*JOB)
    try:
        copied = wait_for_event(home_with_tiny, "checkpoint.copied", proc)
        runpod.kill(copied["pod_id"])
    finally:
        job, _ = finish(proc)
    assert len(runpod.ledger) == 2 and not any("podResume" in c["query"] for c in runpod.calls)
    check_exactly_once_after_the_checkpoint(job, copied["data"]["step"])


def test_no_recoveries_left_exits_3_soon_naming_what_happened(runpod, home_with_tiny: Path) -> None:
    proc = start_launch(*JOB, "--max-recoveries", "0")
    try:
        copied = wait_for_event(home_with_tiny, "checkpoint.copied", proc)
        runpod.preempt(copied["pod_id"])
        lost_at = time.monotonic()
        _, err = proc.communicate(timeout=120)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 3, err
    assert time.monotonic() - lost_at < 60  # seconds, not minutes of reconnecting
    assert f"machine {copied['pod_id']} is EXITED on RunPod" in err and "--max-recoveries 0: not recovering" in err
    assert "the newest checkpoint (step" in err and runpod.running() == []


def test_two_ctrl_c_20ms_apart_still_tear_down(runpod, home_with_tiny: Path) -> None:
    proc = start_launch(*JOB)
    try:
        wait_for_event(home_with_tiny, "trainer.start", proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 130, err
    assert runpod.running() == [] and "aborted" not in err and "terminating machine" in err


def test_a_second_ctrl_c_while_saving_logs_from_a_dead_pod_still_tears_down(runpod, home_with_tiny: Path) -> None:
    proc = start_launch(*JOB)
    try:
        started = wait_for_event(home_with_tiny, "trainer.start", proc)
        runpod.ledger[started["pod_id"]].machine.stop()  # the machine is gone; the API still says RUNNING
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # the job stops; saving its logs cannot reach the machine
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # held back: the teardown must still run
        _, err = proc.communicate(timeout=120)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 130, err
    assert runpod.running() == [] and "aborted" not in err


def test_resume_of_a_job_whose_pod_died_with_its_launcher_recovers(runpod, home_with_tiny: Path, cli_proc) -> None:
    proc = start_launch(*JOB)
    try:
        copied = wait_for_event(home_with_tiny, "checkpoint.copied", proc)
        proc.kill()  # the launcher dies (no teardown) ...
        proc.wait(30)
        runpod.kill(copied["pod_id"])  # ... and so does its pod
    finally:
        stop_launcher(proc)
    resumed = cli_proc("resume", copied["job_id"], "--json", timeout=600)
    assert resumed.code == 0, resumed.err
    job = resumed.json_line()
    assert job["pod_id"] != copied["pod_id"] and len(runpod.ledger) == 2
    runs = attempts(Path(job["output_dir"]))
    assert runs[-1][0] >= copied["data"]["step"] and runs[-1][1][-1] == STEPS
