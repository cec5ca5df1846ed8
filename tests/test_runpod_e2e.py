"""`rtrain launch --gpu h100` end to end against a provider-faithful fake RunPod (tests/fake_runpod.py)
whose pods are real sshd machines running the image's start.sh: every failure the seed projects hit,
through the CLI, and never a pod left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    RUNPOD_KEY,
    SAMPLE,
    events,
    last_json,
    launch,
    processes,
    rtrain_cmd,
    stop_launcher,
    wait_for_training,
)
from fake_runpod import FakeRunPod
from pods import can_run_pods

from launcher.downloads import verify_manifest

pytestmark = pytest.mark.skipif(can_run_pods() is not None, reason=str(can_run_pods()))

KEY = RUNPOD_KEY
JOB = ("--gpu", "h100", "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--yes")


def test_full_run_trains_over_ssh_and_terminates_the_pod(runpod: FakeRunPod, home_with_tiny: Path,
                                                         cli_proc) -> None:
    proc = launch(*JOB, "--max-steps", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert job["status"] == "succeeded" and job["backend"] == "runpod" and job["steps"] == 8
    assert job["pod_id"] in runpod.ledger and runpod.ledger[job["pod_id"]].status == "TERMINATED"
    assert job["cost_usd"] is not None and job["cost_usd"] > 0
    out = Path(job["output_dir"])
    verify_manifest(out)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "logs" / "train.log").is_file()
    # the adapter names its base as this machine has it, not as the pod had it
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(home_with_tiny / "models" / "rtrain-tiny")

    # what the create call asked for: variables, our image, 22/tcp, the job's keys
    deploy = next(c for c in runpod.calls if "podFindAndDeployOnDemand" in c["query"])
    pod_input = deploy["variables"]["input"]
    assert pod_input["gpuTypeId"] == "NVIDIA H100 80GB HBM3" and pod_input["ports"] == "22/tcp"
    assert pod_input["name"] == f"rtrain-{job['job_id']}" and pod_input["name"] not in deploy["query"]
    env = {e["key"]: e["value"] for e in pod_input["env"]}
    assert env["PUBLIC_KEY"].startswith("ssh-ed25519 ")
    assert env["RTRAIN_SSH_HOST_KEY"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert all(c["auth"] == f"Bearer {KEY}" for c in runpod.calls)

    # the wait said what it waited for; the wrong port entries were never used
    waits = [e["message"] for e in events(home_with_tiny, job["job_id"], "wait")]
    assert any("no runtime reported" in w for w in waits)
    ssh = events(home_with_tiny, job["job_id"], "ssh")[0]["message"]
    pod = runpod.ledger[job["pod_id"]]
    assert f"{pod.host}:{pod.port}" in ssh and "host key verified" in ssh

    # the progress was shown, the key never
    assert "step 8/8" in proc.stderr and "terminating" in proc.stderr
    db = b"".join(p.read_bytes() for p in home_with_tiny.glob("state.db*"))
    assert KEY not in proc.stdout + proc.stderr and KEY.encode() not in db
    # the job's SSH keys are gone with the pod
    assert not (home_with_tiny / "keys" / job["job_id"]).exists()
    # show puts the billed cost beside the estimate made before launch
    shown = cli_proc("show", job["job_id"])
    line = next(x for x in shown.out.splitlines() if x.strip().startswith("cost:"))
    assert "billed $" in line and "estimate on runpod h100:" in line


def fault_bin(tmp_path: Path, name: str, script: str) -> dict[str, str]:
    """A pod whose image has a faulty ``name`` first on PATH (a disk or a tool that misbehaves)."""
    import sys

    from pods import IMAGE_PATH

    folder = tmp_path / "faulty-bin"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(script)
    (folder / name).chmod(0o755)
    return {"PATH": f"{folder}:{os.path.dirname(sys.executable)}:{IMAGE_PATH}", "HF_HUB_OFFLINE": "1"}


def start_launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(rtrain_cmd("launch", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_keep_pod_then_a_second_job_on_it_uploads_nothing_again(runpod: FakeRunPod, home_with_tiny: Path,
                                                                 cli_proc) -> None:
    first = launch(*JOB, "--max-steps", "2", "--keep-pod", "--json")
    assert first.returncode == 0, first.stderr
    kept = last_json(first)
    assert runpod.running() == [kept["pod_id"]] and "left running (--keep-pod)" in first.stderr
    # --detach: the upload is what this test is about; the pod ends with `rtrain down` below
    second = launch("--pod", kept["pod_id"], "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--detach",
                    "--yes", "--json")
    assert second.returncode == 0, second.stderr
    job = last_json(second)
    sent = {e["message"].split(":")[0]: e["data"]["bytes"] for e in events(home_with_tiny, job["job_id"], "upload")}
    assert sent["chats.jsonl"] == 0 and sent["trainer code"] == 0
    assert "already on the machine (0 bytes sent)" in second.stderr
    assert runpod.running() == [kept["pod_id"]]  # a reused pod stays as it was
    down = cli_proc("down", kept["job_id"])
    assert down.code == 0 and runpod.running() == []


def test_a_corrupted_upload_is_detected_and_sent_again(runpod: FakeRunPod, home_with_tiny: Path, tmp_path,
                                                       cli_proc) -> None:
    # the first upload stream reaches the pod's receiver (remote/receive.py, run as `python3 -I -S`) with its
    # bytes after the first line flipped, as a broken link or a bad NIC would
    import sys

    runpod.pod_env = fault_bin(tmp_path, "python3",
                               '#!/bin/bash\nif [ "$1" = -I ] && mkdir /workspace/.once 2>/dev/null;'
                               ' then { IFS= read -r header; printf "%s\\n" "$header"; tr a-m n-z; } | '
                               f'exec {sys.executable} "$@"; else exec {sys.executable} "$@"; fi\n')
    proc = launch(*JOB, "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    first_upload = events(home_with_tiny, job["job_id"], "upload")[0]
    assert first_upload["data"]["retried"] is True and "after a retry" in proc.stderr
    assert job["status"] == "running"  # the trainer started on verified data
    assert cli_proc("down", job["job_id"]).code == 0


def test_a_429_burst_and_a_500_are_survived(runpod: FakeRunPod, home_with_tiny: Path, cli_proc) -> None:
    runpod.faults = [{"status": 429, "headers": {"Retry-After": "1"}, "times": 3, "on": "mutation"},
                     {"status": 500, "times": 1, "field": "pod(input"}]
    t0 = time.monotonic()
    proc = launch(*JOB, "--detach", "--json")  # the API's answers are what this is about, not the training
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 >= 3  # Retry-After was honoured three times
    assert all(f["times"] == 0 for f in runpod.faults)
    assert len([c for c in runpod.calls if "podFindAndDeployOnDemand" in c["query"]]) == 4
    assert cli_proc("down", last_json(proc)["job_id"]).code == 0


def test_a_rejected_key_fails_fast_with_exit_3_and_no_pod(runpod: FakeRunPod, monkeypatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "wrong-key")
    proc = launch(*JOB, "--json")
    assert proc.returncode == 3
    assert "RunPod rejected the API key (HTTP 401): check RUNPOD_API_KEY" in proc.stderr
    assert runpod.ledger == {} and len(runpod.calls) == 1  # no retry on 401
    assert "wrong-key" not in proc.stderr + proc.stdout


def test_no_capacity_fails_clearly_with_no_pod(runpod: FakeRunPod) -> None:
    runpod.full_gpus = {"NVIDIA H100 80GB HBM3"}
    proc = launch(*JOB)
    assert proc.returncode == 3
    assert "RunPod has no capacity for h100 (secure cloud), h100 (all cloud): no pod was created" in proc.stderr
    assert runpod.ledger == {}


def test_no_capacity_falls_back_to_the_next_gpu_of_the_list(runpod: FakeRunPod, cli_proc) -> None:
    runpod.full_gpus = {"NVIDIA H100 80GB HBM3"}
    proc = launch("--gpu", "h100,h100-pcie", *JOB[2:], "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert runpod.ledger[job["pod_id"]].input["gpuTypeId"] == "NVIDIA H100 PCIe"
    assert len(runpod.ledger) == 1 and cli_proc("down", job["job_id"]).code == 0


def test_sshd_refusing_for_a_while_after_the_ports_appear_is_survived(runpod: FakeRunPod, home_with_tiny,
                                                                       cli_proc) -> None:
    runpod.ssh_delay_s = 3.0
    proc = launch(*JOB, "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    waits = [e["message"] for e in events(home_with_tiny, job["job_id"], "wait")]
    assert any(w.startswith("sshd not answering on 127.0.3.") for w in waits)
    assert cli_proc("down", job["job_id"]).code == 0


def test_a_pod_that_never_gets_ready_is_terminated_at_the_deadline(runpod: FakeRunPod, monkeypatch) -> None:
    runpod.boot_s = 3600
    monkeypatch.setenv("RTRAIN_READY_TIMEOUT_S", "3")
    proc = launch(*JOB, "--json")
    assert proc.returncode == 3
    assert "was not ready after 3s; last seen: the container is not running yet" in proc.stderr
    assert runpod.running() == [] and len(runpod.ledger) == 1


def test_a_host_key_other_than_the_injected_one_is_refused(runpod: FakeRunPod) -> None:
    runpod.ignore_host_key = True  # the pod makes its own key: what a stale IP or a MITM looks like
    proc = launch(*JOB, "--json")
    assert proc.returncode == 3
    assert "presented a host key other than the one rtrain gave the pod" in proc.stderr
    assert runpod.running() == [] and last_json(proc)["status"] == "failed"


def test_a_training_failure_exits_1_with_its_log_and_terminates_the_pod(runpod: FakeRunPod, broken_model) -> None:
    proc = launch(*JOB, "--model", str(broken_model), "--max-steps", "2", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "training failed:" in proc.stderr and "last lines of train.log" in proc.stderr
    job = last_json(proc)
    assert job["adapter_dir"] is None and (Path(job["output_dir"]) / "logs" / "train.log").is_file()
    assert runpod.ledger[job["pod_id"]].status == "TERMINATED"


def test_a_tar_member_escaping_the_folder_is_refused(runpod: FakeRunPod, tmp_path: Path) -> None:
    evil = ("#!/bin/sh\ncase \"$*\" in *output*-cf*) exec python3 -c 'import io,sys,tarfile\n"
            "t=tarfile.open(fileobj=sys.stdout.buffer,mode=\"w|\")\ni=tarfile.TarInfo(\"../../evil\");i.size=4\n"
            "t.addfile(i,io.BytesIO(b\"evil\"));t.close()';; esac\nexec /bin/tar \"$@\"\n")
    runpod.pod_env = fault_bin(tmp_path, "tar", evil)
    proc = launch(*JOB, "--max-steps", "2", "--json")
    assert proc.returncode == 3, proc.stderr
    assert "archive member '../../evil' points outside the folder" in proc.stderr
    job = last_json(proc)
    assert job["adapter_dir"] is None and not (Path(job["output_dir"]) / "adapter").exists()
    assert not list(Path.cwd().rglob("evil")) and not list(tmp_path.rglob("evil"))
    assert runpod.running() == []


def test_ctrl_c_during_training_terminates_the_pod(runpod: FakeRunPod, home_with_tiny: Path) -> None:
    proc = start_launch(*JOB, "--max-steps", "100000")
    try:
        wait_for_training(home_with_tiny, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 130, err
    assert runpod.running() == [] and "terminating" in err


def pod_session_pids(pod) -> list[int]:
    """The per-connection sshd processes of a fake pod (what a network drop kills)."""
    up = pod.machine is not None and pod.machine.alive()
    return [pid for pid, _parent, cmdline in processes() if up and cmdline.startswith(b"sshd: root")]


def test_a_dropped_connection_during_training_is_survived(runpod: FakeRunPod, home_with_tiny: Path) -> None:
    proc = start_launch(*JOB, "--max-steps", "80", "--batch-size", "2", "--eval-fraction", "0")
    try:
        row = wait_for_training(home_with_tiny, proc)
        pod = runpod.ledger[row["pod_id"]]
        killed = pod_session_pids(pod)
        assert killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 0, err
    reconnects = events(home_with_tiny, row["id"], "reconnect")
    assert reconnects and "re-opened" in reconnects[0]["message"]


def test_a_pod_that_will_not_terminate_is_marked_leak_risk_and_down_ends_it(runpod: FakeRunPod, cli_proc,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("RTRAIN_API_RETRIES", "1")
    runpod.ignore_host_key = True  # any failure will do: this one comes fast
    runpod.faults = [{"status": 500, "times": 1000, "field": "podTerminate"}]
    proc = launch(*JOB, "--json")
    assert proc.returncode == 3
    job = last_json(proc)
    assert f"rtrain down {job['job_id']}" in proc.stderr and "may still be" in proc.stderr
    listed = cli_proc("ls")
    assert "LEAK RISK" in listed.out
    assert runpod.running() == [job["pod_id"]]
    runpod.faults.clear()
    down = cli_proc("down", job["job_id"])
    assert down.code == 0 and runpod.running() == []
    assert "LEAK RISK" not in cli_proc("ls").out


def test_ls_pods_shows_live_pods_and_down_ends_one_no_job_knows(runpod: FakeRunPod, cli_proc, tmp_path,
                                                                monkeypatch) -> None:
    proc = launch(*JOB, "--detach", "--watchdog", "30m", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    # the job folder arms the pod's watchdog (docker/watchdog.sh reads this file)
    pod = runpod.ledger[job["pod_id"]]
    assert (pod.machine.workspace / "rtrain" / "jobs" / job["job_id"] / "watchdog").read_text().strip() == "1800"
    listed = json.loads(cli_proc("ls", "--pods", "--json").out)
    assert [(p["pod_id"], p["job_id"]) for p in listed["pods"]] == [(job["pod_id"], job["job_id"])]
    # from another machine (an empty RTRAIN_HOME) the pod is an orphan: shown, and ended by its id
    monkeypatch.setenv("RTRAIN_HOME", str(tmp_path / "other-laptop"))
    table = cli_proc("ls", "--pods")
    assert job["pod_id"] in table.out and "no job here" in table.out
    assert cli_proc("down", job["pod_id"]).code == 0
    assert runpod.running() == []


def test_launch_shows_the_estimate_and_asks_before_renting(runpod: FakeRunPod, cli_proc) -> None:
    no_yes = launch(*[a for a in JOB if a != "--yes"])
    assert no_yes.returncode == 2 and "add --yes to launch" in no_yes.stderr
    assert "estimate on runpod h100:" in no_yes.stderr and runpod.ledger == {}
    calls = len(runpod.calls)  # only the price lookup so far
    too_big = launch("--gpu", "rtx4090", "--model", "unsloth/Qwen3-32B", "--dataset", str(SAMPLE), "--yes")
    assert too_big.returncode == 2
    assert "--gpu rtx4090: the job needs about" in too_big.stderr and "has 24 GB" in too_big.stderr
    assert len(runpod.calls) == calls  # refused before any API call, prices included


def test_an_s3_dataset_is_fetched_on_the_pod_not_through_the_laptop(runpod: FakeRunPod, home_with_tiny, s3,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-SECRET-value-42")
    s3.upload_file(str(SAMPLE), "rtrain", "data/chats.jsonl")
    proc = launch("--gpu", "h100", "--template", "tiny-cpu", "--dataset", "s3://rtrain/data/chats.jsonl", "--yes",
                  "--max-steps", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    uploads = [e["message"] for e in events(home_with_tiny, job["job_id"], "upload")]
    assert not any("chats.jsonl" in u for u in uploads)  # never sent from here
    assert "s3-SECRET-value-42" not in proc.stdout + proc.stderr
