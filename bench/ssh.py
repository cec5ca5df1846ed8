"""SSH benchmarks against a real sshd pod (tests/pods.py: the image's start.sh in private namespaces):

1. upload throughput of rtrain's verified, content-addressed upload against OpenSSH `scp` to the same
   pod, and of the bare channel (`cat > file`, no hashing or verification) to show what the
   verification costs;
2. time from the SSH banner to the first authenticated command, paramiko against OpenSSH `ssh`.

    sudo python bench/ssh.py [--mib 256] [--runs 3]

Ratios against OpenSSH measured in the same run; loopback, so these are CPU-bound upper bounds.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pods import FakePod, free_port, wait_for_banner  # noqa: E402

from launcher.backends.base import SSHEndpoint  # noqa: E402
from launcher.executor.ssh import SSHExecutor  # noqa: E402
from launcher.keys import create_job_keys  # noqa: E402
from launcher.transfer import upload_blob  # noqa: E402


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        keys = create_job_keys(base / "home", "bench")
        host = "127.0.4.9"
        pod = FakePod(base / "pod", host, free_port(host),
                      {"PUBLIC_KEY": keys.client_public, "RTRAIN_SSH_HOST_KEY": keys.host_private or ""}).start()
        try:
            known = base / "known_hosts"
            known.write_text(keys.known_hosts_line(host, pod.port) + "\n")
            ssh_opts = ["-i", str(keys.client_private_path), "-o", f"UserKnownHostsFile={known}",
                        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
            data = base / "payload.bin"
            data.write_bytes(os.urandom(args.mib << 20))
            size = data.stat().st_size
            ex = SSHExecutor(SSHEndpoint(host, pod.port, "root"), keys)

            def scp() -> None:
                subprocess.run(["scp", "-q", "-P", str(pod.port), *ssh_opts, str(data),
                                f"root@{host}:/workspace/scp.bin"], check=True)

            def bare() -> None:
                with data.open("rb") as fh:
                    assert ex.run_stdin("cat > /workspace/bare.bin", fh).ok

            def verified() -> None:
                ex.run("rm -rf /workspace/blobs")
                upload_blob(ex, data, "/workspace/blobs")  # hash while streaming, sha256sum on the pod, rename

            t_scp, t_bare, t_ours = (median_time(fn, args.runs) for fn in (scp, bare, verified))
            mb = size / 1e6
            print(f"upload of {args.mib} MiB to a loopback sshd pod (median of {args.runs})")
            print(f"{'method':<44} {'MB/s':>8} {'x scp':>7}")
            for name, t in (("OpenSSH scp (baseline)", t_scp), ("rtrain channel, cat > file (no checks)", t_bare),
                            ("rtrain upload_blob (hashed, verified, atomic)", t_ours)):
                print(f"{name:<44} {mb / t:>8.0f} {t_scp / t:>7.2f}")

            def ours_login() -> None:
                fresh = SSHExecutor(SSHEndpoint(host, pod.port, "root"), keys)
                assert fresh.run("true").ok
                fresh.close()

            def openssh_login() -> None:
                subprocess.run(["ssh", "-p", str(pod.port), *ssh_opts, f"root@{host}", "true"], check=True)

            wait_for_banner(host, pod.port)
            t_ssh, t_para = median_time(openssh_login, 5), median_time(ours_login, 5)
            print("\nbanner -> first authenticated command (median of 5)")
            print(f"{'OpenSSH ssh (baseline)':<44} {t_ssh * 1000:>6.0f} ms")
            print(f"{'rtrain (paramiko, pinned host key)':<44} {t_para * 1000:>6.0f} ms  x{t_para / t_ssh:.2f}")
            ex.close()
            _ = io
        finally:
            pod.stop()


if __name__ == "__main__":
    main()
