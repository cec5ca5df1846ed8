"""`rtrain launch --backend lambda` end to end against a fake Lambda Cloud (tests/fake_lambda.py) whose
instances are real sshd VMs with a `ubuntu` user, the host key from cloud-init, and a docker stand-in
that checks the exact command line: the same guarantees as RunPod, and never an instance or an SSH key
left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import LAMBDA_KEY, ROOT, SAMPLE, events, last_json, launch, rtrain_cmd, stop_launcher, wait_for_training
from fake_lambda import FakeLambda

from launcher.downloads import verify_manifest

JOB = ("--backend", "lambda", "--gpu", "h100", "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--yes")


def launch_calls(fake: FakeLambda) -> list[dict]:
    return [c for c in fake.calls if c["path"] == "/instance-operations/launch"]


def test_full_run_on_lambda_trains_in_the_image_and_ends_instance_and_key(lambda_cloud: FakeLambda,
                                                                        home_with_tiny: Path, cli_proc) -> None:
    proc = launch(*JOB, "--max-steps", "6", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert job["status"] == "succeeded" and job["backend"] == "lambda" and job["steps"] == 6
    inst = lambda_cloud.ledger[job["pod_id"]]
    assert inst.status == "terminated" and lambda_cloud.ssh_keys == {}
    out = Path(job["output_dir"])
    verify_manifest(out)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert job["cost_usd"] is not None and job["cost_usd"] > 0

    # the launch: one job-named SSH key, our host key in cloud-init, a name of at most 64 characters
    [call] = launch_calls(lambda_cloud)
    body = call["body"]
    assert body["ssh_key_names"] == [f"rtrain-{job['job_id']}"] and body["name"] == f"rtrain-{job['job_id']}"
    assert body["instance_type_name"] == "gpu_1x_h100_sxm5" and body["region_name"] == "us-west-1"
    assert body["user_data"].startswith("#cloud-config\n") and "ed25519_private: |" in body["user_data"]
    registered = [c for c in lambda_cloud.calls if c["method"] == "POST" and c["path"] == "/ssh-keys"]
    assert registered[0]["body"]["public_key"].startswith("ssh-ed25519 ")
    assert all(c["auth"] == f"Bearer {LAMBDA_KEY}" for c in lambda_cloud.calls)

    # the trainer ran in rtrain's image: pulled, then `docker run --gpus all` with the job's code
    calls = inst.machine.docker_calls()
    assert calls[0] == ["pull", lambda_cloud.image]
    run = calls[1]
    assert run[:6] == ["run", "--rm", "--init", "--gpus", "all", "--ipc=host"]
    assert run[run.index("--entrypoint") + 1:] == ["python3", lambda_cloud.image, "-m", "remote.train",
                                                   "--config", "job.json"]
    assert "-v" in run and run[run.index("-v") + 1] == "/home/ubuntu/rtrain:/home/ubuntu/rtrain"

    # what it waited for, as ubuntu on port 22, with rtrain's host key; the key never shown
    ssh = events(home_with_tiny, job["job_id"], "ssh")[0]["message"]
    assert f"ubuntu@{inst.host}:22" in ssh and "host key verified" in ssh
    assert any("no IP yet" in e["message"] for e in events(home_with_tiny, job["job_id"], "wait"))
    assert LAMBDA_KEY not in proc.stdout + proc.stderr
    db = b"".join(p.read_bytes() for p in home_with_tiny.glob("state.db*"))
    assert LAMBDA_KEY.encode() not in db
    assert "step 6/6" in proc.stderr and "terminating machine" in proc.stderr
    assert not (home_with_tiny / "keys" / job["job_id"]).exists()


def test_sold_out_launches_nothing(lambda_cloud: FakeLambda) -> None:
    lambda_cloud.full = {"gpu_1x_h100_sxm5", "gpu_1x_h100_pcie"}
    proc = launch("--backend", "lambda", "--gpu", "h100,h100-pcie", *JOB[4:])
    assert proc.returncode == 3
    assert "Lambda Cloud has no capacity for h100 (in any region)" in proc.stderr
    assert "h100-pcie (in any region)" in proc.stderr
    assert launch_calls(lambda_cloud) == [] and lambda_cloud.ledger == {}


def test_capacity_gone_between_the_look_and_the_launch_tries_the_next_gpu(lambda_cloud: FakeLambda,
                                                                         cli_proc) -> None:
    lambda_cloud.taken = {"gpu_1x_h100_sxm5"}  # listed with capacity, refused at launch
    proc = launch("--backend", "lambda", "--gpu", "h100,h100-pcie", *JOB[4:], "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert lambda_cloud.ledger[job["pod_id"]].type == "gpu_1x_h100_pcie"
    assert [c["body"]["instance_type_name"] for c in launch_calls(lambda_cloud)] == ["gpu_1x_h100_sxm5",
                                                                                     "gpu_1x_h100_pcie"]
    assert cli_proc("down", job["job_id"]).code == 0


def test_a_rejected_key_fails_fast_and_is_never_shown(lambda_cloud: FakeLambda, monkeypatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "lam-wrong-SECRET-key")
    proc = launch(*JOB)
    assert proc.returncode == 3
    assert "Lambda Cloud rejected the API key (HTTP 401): check LAMBDA_API_KEY" in proc.stderr
    assert len(lambda_cloud.calls) == 1 and lambda_cloud.ledger == {}  # no retry on 401, nothing launched
    assert "lam-wrong-SECRET-key" not in proc.stdout + proc.stderr


def test_429s_and_a_500_are_retried(lambda_cloud: FakeLambda, cli_proc) -> None:
    lambda_cloud.faults = [{"status": 429, "headers": {"Retry-After": "1"}, "times": 2, "method": "POST",
                            "path": "/instance-operations/launch"},
                           {"status": 500, "times": 1, "method": "GET", "path": "/instances/"}]
    t0 = time.monotonic()
    proc = launch(*JOB, "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 >= 2  # Retry-After was honoured twice
    assert all(f["times"] == 0 for f in lambda_cloud.faults) and len(launch_calls(lambda_cloud)) == 3
    assert len(lambda_cloud.ledger) == 1 and cli_proc("down", last_json(proc)["job_id"]).code == 0


def test_a_host_key_other_than_ours_is_refused_before_any_upload(lambda_cloud: FakeLambda) -> None:
    lambda_cloud.ignore_host_key = True  # what a stale IP or a MITM looks like
    proc = launch(*JOB, "--json")
    assert proc.returncode == 3
    assert "presented a host key other than the one rtrain gave the pod" in proc.stderr
    [inst] = lambda_cloud.ledger.values()
    assert not (inst.machine.home / "rtrain").exists()  # not a byte uploaded
    assert last_json(proc)["status"] == "failed"


def start_launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(rtrain_cmd("launch", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_during_training_ends_the_instance_and_its_key(lambda_cloud: FakeLambda, home_with_tiny) -> None:
    proc = start_launch(*JOB, "--max-steps", "100000")
    try:
        wait_for_training(home_with_tiny, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        stop_launcher(proc)
    assert proc.returncode == 130, err
    assert lambda_cloud.running() == [] and lambda_cloud.ssh_keys == {}


def test_a_killed_launcher_is_resumed(lambda_cloud: FakeLambda, home_with_tiny: Path, cli_proc) -> None:
    proc = start_launch(*JOB, "--max-steps", "40", "--batch-size", "2")
    try:
        row = wait_for_training(home_with_tiny, proc)
        proc.kill()  # SIGKILL: no teardown runs
        proc.wait(30)
    finally:
        stop_launcher(proc)
    assert lambda_cloud.running() == [row["pod_id"]]
    resumed = cli_proc("resume", row["id"], "--json")
    assert resumed.code == 0, resumed.err
    job = resumed.json_line()
    assert job["status"] == "succeeded" and job["steps"] == 40
    verify_manifest(Path(job["output_dir"]))


def test_a_failed_terminate_is_leak_risk_and_down_ends_instance_and_key(lambda_cloud: FakeLambda, cli_proc,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("RTRAIN_API_RETRIES", "1")
    lambda_cloud.ignore_host_key = True  # any failure will do: this one comes fast
    lambda_cloud.faults = [{"status": 500, "times": 1000, "method": "POST", "path": "/instance-operations/terminate"}]
    proc = launch(*JOB, "--json")
    assert proc.returncode == 3
    job = last_json(proc)
    assert f"rtrain down {job['job_id']}" in proc.stderr and job["status"] == "leak-risk"
    assert "LEAK RISK" in cli_proc("ls").out
    listed = json.loads(cli_proc("ls", "--pods", "--json").out)
    assert [p["pod_id"] for p in listed["pods"]] == [job["pod_id"]]
    lambda_cloud.faults.clear()
    down = cli_proc("down", job["job_id"])
    assert down.code == 0, down.err
    assert lambda_cloud.running() == [] and lambda_cloud.ssh_keys == {}
    assert "LEAK RISK" not in cli_proc("ls").out


def test_ls_pods_shows_a_key_left_registered_and_down_removes_it(lambda_cloud: FakeLambda, cli_proc) -> None:
    lambda_cloud.ssh_keys["k1"] = {"id": "k1", "name": "rtrain-261122-000000-dead", "public_key": "ssh-ed25519 AAAA x"}
    table = cli_proc("ls", "--pods")
    assert "ssh-key rtrain-261122-000000-dead left registered: `rtrain down rtrain-261122-000000-dead`" in table.out
    assert cli_proc("down", "rtrain-261122-000000-dead").code == 0 and lambda_cloud.ssh_keys == {}


@pytest.mark.parametrize("flag, reason", [
    (["--watchdog", "30m"], "--watchdog: not on Lambda Cloud: a Lambda Cloud instance can only be ended through"),
    (["--spot"], "--spot: not on Lambda Cloud: Lambda Cloud rents no interruptible instances"),
])
def test_what_lambda_cannot_do_is_refused_before_any_call(lambda_cloud: FakeLambda, flag: list[str],
                                                          reason: str) -> None:
    proc = launch(*JOB, *flag)
    assert proc.returncode == 2 and reason in proc.stderr and lambda_cloud.calls == []
    assert len(proc.stderr.strip().splitlines()) == 1


def test_auto_takes_the_cheapest_and_falls_back_to_the_other_provider(lambda_cloud: FakeLambda, runpod,
                                                                     home_with_tiny: Path, cli_proc) -> None:
    # RunPod's h100 is the cheaper (2.99 against 3.29, both live) but has no machine free
    runpod.full_gpus = {"NVIDIA H100 80GB HBM3"}
    proc = launch("--gpu", "h100", "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--yes", "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert job["backend"] == "lambda" and job["pod_id"] in lambda_cloud.ledger and runpod.ledger == {}
    assert "estimate on runpod h100" in proc.stderr and "then lambda h100 $3.29/hr" in proc.stderr
    assert "chose lambda h100: the cheapest with capacity (1 cheaper had none)" in proc.stderr
    choice = events(home_with_tiny, job["job_id"], "choice")[0]
    assert choice["data"]["offers"] == [["runpod", "h100"], ["lambda", "h100"]]
    assert cli_proc("down", job["job_id"]).code == 0


def test_a_kept_instance_is_reused_and_an_orphan_ends_with_its_key(lambda_cloud: FakeLambda, home_with_tiny: Path,
                                                                  cli_proc, tmp_path: Path, monkeypatch) -> None:
    first = launch(*JOB, "--max-steps", "2", "--keep-pod", "--json")
    assert first.returncode == 0, first.stderr
    kept = last_json(first)
    assert lambda_cloud.running() == [kept["pod_id"]] and "left running (--keep-pod)" in first.stderr
    second = launch("--pod", kept["pod_id"], "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--detach",
                    "--yes", "--json")
    assert second.returncode == 0, second.stderr
    job = last_json(second)
    assert job["backend"] == "lambda" and len(lambda_cloud.ledger) == 1
    sent = {e["message"].split(":")[0]: e["data"]["bytes"] for e in events(home_with_tiny, job["job_id"], "upload")}
    assert sent["chats.jsonl"] == 0 and sent["trainer code"] == 0
    # the image was pulled once for both jobs
    assert [c for c in lambda_cloud.ledger[kept["pod_id"]].machine.docker_calls() if c[0] == "pull"] == \
        [["pull", lambda_cloud.image]]
    # from another laptop (an empty RTRAIN_HOME) the instance is an orphan: ended by its id, its key with it
    monkeypatch.setenv("RTRAIN_HOME", str(tmp_path / "other-laptop"))
    assert kept["pod_id"] in cli_proc("ls", "--pods").out
    down = cli_proc("down", kept["pod_id"])
    assert down.code == 0 and "not a job of this machine" in down.out
    assert lambda_cloud.running() == [] and lambda_cloud.ssh_keys == {}


def test_a_preempted_instance_is_replaced_from_the_copied_checkpoint(lambda_cloud: FakeLambda,
                                                                     home_with_tiny: Path) -> None:
    from test_recovery_e2e import JOB as RECOVERY_JOB
    from test_recovery_e2e import check_exactly_once_after_the_checkpoint, finish, wait_for_event

    proc = start_launch("--backend", "lambda", *RECOVERY_JOB)
    try:
        copied = wait_for_event(home_with_tiny, "checkpoint.copied", proc)
        lambda_cloud.preempt(copied["pod_id"])
    finally:
        job, err = finish(proc)
    assert len(lambda_cloud.ledger) == 2 and "is preempted on Lambda Cloud" in err
    check_exactly_once_after_the_checkpoint(job, copied["data"]["step"])
