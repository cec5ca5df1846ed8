"""Recovery time: from a spot pod's preemption to training continuing (the first step the new trainer
takes after its checkpoint), on the fake RunPod with instant boot and real sshd pods, against what a
recovery cannot avoid, measured in the same run: a new pod's boot to its first authenticated command,
the checkpoint's upload to it, and the trainer's own start up to its first step.

    sudo python bench/recovery.py [--runs 3]

Two paths: the pod resumed in place (its volume keeps the checkpoint) and a new pod (podResume refused:
the checkpoint copied off the old pod is uploaded). Goal: within 10 s of the unavoidable part.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
SAMPLE = ROOT / "examples" / "chats.jsonl"


def events(db: Path, kind: str) -> list[tuple[float, dict]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT ts, data FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        con.close()
    return [(ts, json.loads(data or "{}")) for ts, data in rows]


def wait(db: Path, kind: str, count: int, proc: subprocess.Popen, timeout: float = 300) -> tuple[float, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(db, kind)
        if len(found) >= count:
            return found[count - 1]
        if proc.poll() is not None:
            raise SystemExit(f"the launcher ended early:\n{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise SystemExit(f"no {kind} event")


def one_recovery(base: Path, env: dict[str, str], fake: object, resume: bool) -> dict[str, float]:
    home = Path(env["RTRAIN_HOME"])
    db = home / "state.db"
    fake.resume_capacity = resume  # type: ignore[attr-defined]
    cmd = [sys.executable, "-m", "launcher.cli", "launch", "--gpu", "h100", "--spot", "--template", "tiny-cpu",
           "--dataset", str(SAMPLE), "--yes", "--max-steps", "100000", "--save-steps", "10", "--batch-size", "2"]
    proc = subprocess.Popen(cmd, env=env, cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        before = len(events(db, "checkpoint.copied"))
        _, copied = wait(db, "checkpoint.copied", before + 1, proc)
        pod_id = sqlite3.connect(db).execute("SELECT pod_id FROM jobs ORDER BY created_at DESC").fetchone()[0]
        lost = time.time()
        fake.preempt(pod_id)  # type: ignore[attr-defined]
        starts = len(events(db, "trainer.start"))
        recovered_at, _ = wait(db, "trainer.start", starts + 1, proc)
        # training continues at the new trainer's first step
        steps_ts = recovered_at
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            con = sqlite3.connect(db)
            row = con.execute("SELECT updated_at, steps FROM jobs ORDER BY created_at DESC").fetchone()
            con.close()
            if row[1] and row[1] > copied["step"] and row[0] > recovered_at:
                steps_ts = row[0]
                break
            time.sleep(0.05)
        return {"recovery_s": steps_ts - lost, "checkpoint_bytes": float(copied["bytes"])}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)


def unavoidable(base: Path, env: dict[str, str], checkpoint_bytes: float) -> dict[str, float]:
    """A new pod's boot to its first command, a checkpoint-sized upload to it, the trainer's start."""
    from launcher.backends import get_backend
    from launcher.backends.base import PodRequest
    from launcher.config import Settings
    from launcher.keys import create_job_keys
    from launcher.transfer import upload_blob

    os.environ.update(env)
    settings = Settings()
    backend = get_backend("runpod", settings)
    keys = create_job_keys(settings.rtrain_home(), "bench-boot")
    t0 = time.monotonic()
    pod = backend.create(PodRequest(job_id="bench-boot", name="rtrain-bench-boot", gpus=["h100"], gpu_count=1,
                                    public_key=keys.client_public, host_private_key=keys.host_private))
    pod = backend.wait_ready(pod, keys, deadline_s=120)
    boot = time.monotonic() - t0
    ex = backend.executor(pod, keys)
    blob = base / "checkpoint-sized.bin"
    blob.write_bytes(os.urandom(int(checkpoint_bytes)))
    t0 = time.monotonic()
    upload_blob(ex, blob, f"{pod.root}/blobs")
    upload = time.monotonic() - t0
    ex.close()
    backend.terminate(pod.id)
    job_dir = base / "direct"
    job_dir.mkdir(exist_ok=True)
    (job_dir / "job.json").write_text(json.dumps({
        "job_id": "direct", "model": str(Path(env["RTRAIN_HOME"]) / "models" / "rtrain-tiny"),
        "datasets": [str(SAMPLE)], "max_steps": 1, "batch_size": 2, "eval_fraction": 0}))
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "remote.train", "--config", str(job_dir / "job.json")], env=env,
                   cwd=job_dir, check=True, capture_output=True)
    trainer = time.monotonic() - t0
    return {"boot_s": boot, "upload_s": upload, "trainer_s": trainer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from common import fake_runpod, tiny_home

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        home, env = tiny_home(base)
        fake = fake_runpod(base, env)
        try:
            rows: dict[str, list[float]] = {"resumed in place": [], "a new pod": []}
            sizes, floors = [], []
            for _ in range(args.runs):
                for name, resume in (("resumed in place", True), ("a new pod", False)):
                    result = one_recovery(base, env, fake, resume)
                    rows[name].append(result["recovery_s"])
                    sizes.append(result["checkpoint_bytes"])
                floors.append(unavoidable(base, env, statistics.median(sizes)))
        finally:
            fake.stop()
    floor = {k: statistics.median(f[k] for f in floors) for k in floors[0]}
    baseline = floor["boot_s"] + floor["upload_s"] + floor["trainer_s"]
    print(f"fake RunPod, instant boot, real sshd pods; checkpoint {statistics.median(sizes) / 1e6:.2f} MB; "
          f"median of {args.runs}")
    print(f"unavoidable: boot to first command {floor['boot_s']:.2f} s + checkpoint upload {floor['upload_s']:.2f} s "
          f"+ trainer start to first step {floor['trainer_s']:.2f} s = {baseline:.2f} s")
    print(f"{'preemption -> training continues':<40} {'seconds':>8} {'over unavoidable':>17} {'goal <= 10 s':>13}")
    for name, samples in rows.items():
        s = statistics.median(samples)
        print(f"{name:<40} {s:>8.2f} {s - baseline:>16.2f}s {'yes' if s - baseline <= 10 else 'NO':>13}")


if __name__ == "__main__":
    main()
