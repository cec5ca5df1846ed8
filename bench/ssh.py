"""Transfers against a real sshd pod (tests/pods.py: the image's start.sh in private namespaces), each
printed as a ratio against OpenSSH measured in the same run:

1. verified upload (content-addressed, sha256 checked on the pod while the bytes arrive, renamed only
   on a match) against `scp` of the same file, and the bare channel (`cat > file`, no checks);
2. a folder of small files (rtrain's tiny model and the trainer's code, as `launch` sends them) and a
   200-byte file, against `scp -r` / `scp`;
3. a file touched but not changed (a new mtime): bytes sent and time, against `rsync`'s bytes when
   rsync is installed;
4. download of a 256 MiB output (tar stream, extracted safely, every file checked against the
   manifest) against `scp` of the same file;
5. time from the SSH banner to the first authenticated command, paramiko against OpenSSH `ssh`.

    sudo python bench/ssh.py [--mib 256 2048] [--runs 3]

Loopback, so these are CPU-bound upper bounds: the transport and the hashing are the limits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pods import FakePod, free_port, wait_for_banner  # noqa: E402

from launcher.backends.base import SSHEndpoint  # noqa: E402
from launcher.bundle import build_code_zip  # noqa: E402
from launcher.downloads import download_outputs  # noqa: E402
from launcher.executor.ssh import SSHExecutor  # noqa: E402
from launcher.keys import create_job_keys  # noqa: E402
from launcher.state import Registry  # noqa: E402
from launcher.transfer import upload_blob  # noqa: E402
from launcher.ui import Reporter  # noqa: E402
from launcher.uploads import upload_files, upload_model_folder  # noqa: E402
from remote.outputs import publish, staging_dir  # noqa: E402


def median_time(fn: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name: str, seconds: float, baseline: float, mb: float | None = None) -> None:
    rate = f"{mb / seconds:>8.0f}" if mb else f"{'':>8}"
    print(f"  {name:<52} {seconds:>7.3f} {rate} {baseline / seconds:>7.2f}")


def header(title: str) -> None:
    print(f"\n{title}\n  {'':<52} {'seconds':>7} {'MB/s':>8} {'x base':>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        home = base / "home"
        keys = create_job_keys(home, "bench")
        host = "127.0.4.9"
        pod = FakePod(base / "pod", host, free_port(host),
                      {"PUBLIC_KEY": keys.client_public, "RTRAIN_SSH_HOST_KEY": keys.host_private or ""}).start()
        try:
            known = base / "known_hosts"
            known.write_text(keys.known_hosts_line(host, pod.port) + "\n")
            ssh_opts = ["-i", str(keys.client_private_path), "-o", f"UserKnownHostsFile={known}",
                        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
            ex = SSHExecutor(SSHEndpoint(host, pod.port, "root"), keys)
            ex.run("true")

            def scp(src: Path, dest: str, *flags: str) -> None:
                subprocess.run(["scp", "-q", *flags, "-P", str(pod.port), *ssh_opts, str(src),
                                f"root@{host}:{dest}"], check=True)

            def scp_back(src: str, dest: Path) -> None:
                subprocess.run(["scp", "-q", "-P", str(pod.port), *ssh_opts, f"root@{host}:{src}",
                                str(dest)], check=True)

            for mib in args.mib:
                data = base / f"payload-{mib}.bin"
                with data.open("wb") as fh:
                    for _ in range(mib):
                        fh.write(os.urandom(1 << 20))
                mb = data.stat().st_size / 1e6

                def bare(data: Path = data) -> None:
                    with data.open("rb") as fh:
                        assert ex.run_stdin("cat > /workspace/bare.bin", fh).ok

                def clean() -> None:
                    ex.run("rm -rf /workspace/blobs /workspace/bare.bin /workspace/scp.bin")

                t_scp = median_time(lambda data=data: scp(data, "/workspace/scp.bin"), args.runs, clean)
                t_bare = median_time(bare, args.runs, clean)
                t_new = median_time(lambda data=data: upload_blob(ex, data, "/workspace/blobs"), args.runs, clean)
                header(f"upload of {mib} MiB (median of {args.runs})")
                row("OpenSSH scp (baseline)", t_scp, t_scp, mb)
                row("rtrain channel, cat > file (no checks)", t_bare, t_scp, mb)
                row("rtrain verified upload, sha256 not known before", t_new, t_scp, mb)
                clean()
                data.unlink()

            # small files: what launch sends besides the datasets
            from launcher.bundle import ensure_tiny_model

            model = ensure_tiny_model(home, sys.executable)
            code = build_code_zip(base / "remote.zip")
            registry = Registry(home / "state.db")
            quiet = Reporter(quiet=True)
            small = sorted(p for p in model.rglob("*") if p.is_file())
            tiny = base / "small.txt"
            tiny.write_bytes(b"x" * 200)

            def ours_small() -> None:
                upload_files(ex, registry, quiet, "bench", [(code, "trainer code")], "/workspace/blobs", quiet=True)
                upload_model_folder(ex, registry, quiet, "bench", model, "/workspace/blobs", "/workspace/job/model")

            def scp_small() -> None:
                scp(code, "/workspace/remote.zip")
                scp(model, "/workspace/model-scp", "-r")

            def clean_small() -> None:
                ex.run("rm -rf /workspace/blobs /workspace/job /workspace/model-scp /workspace/remote.zip")

            nfiles = len(small) + 1
            t_scp = median_time(scp_small, args.runs, clean_small)
            t_ours = median_time(ours_small, args.runs, clean_small)
            t_scp1 = median_time(lambda: scp(tiny, "/workspace/small.txt"), args.runs)
            t_ours1 = median_time(lambda: upload_blob(ex, tiny, "/workspace/blobs"), args.runs, clean_small)
            header(f"small files (median of {args.runs})")
            row(f"scp -r: tiny model + trainer code ({nfiles} files, baseline)", t_scp, t_scp)
            row("rtrain: the same, verified, one stream (goal < 0.6 s)", t_ours, t_scp)
            row("scp of a 200-byte file (baseline)", t_scp1, t_scp1)
            row("rtrain verified upload of a 200-byte file", t_ours1, t_scp1)

            # a touched, unchanged file
            touched = base / "dataset.jsonl"
            with touched.open("wb") as fh:
                for _ in range(64):
                    fh.write(os.urandom(1 << 20))
            clean_small()
            first = upload_files(ex, registry, quiet, "bench", [(touched, "dataset")], "/workspace/blobs", quiet=True)
            os.utime(touched)  # `touch`: a new mtime, the same bytes
            t0 = time.perf_counter()
            again = upload_files(ex, registry, quiet, "bench", [(touched, "dataset")], "/workspace/blobs", quiet=True)
            t_touch = time.perf_counter() - t0
            print(f"\ntouched, unchanged 64 MiB file: rtrain sent {again[0].sent} bytes in {t_touch:.2f} s "
                  f"(the first upload sent {first[0].sent})", end="")
            if shutil.which("rsync"):
                scp(touched, "/workspace/rsync.bin")
                subprocess.run(["ssh", "-p", str(pod.port), *ssh_opts, f"root@{host}",
                                "touch -d 2000-01-01 /workspace/rsync.bin"], check=True)
                rsync = subprocess.run(["rsync", "--stats", "-e",
                                        " ".join(["ssh", "-p", str(pod.port), *ssh_opts]),
                                        str(touched), f"root@{host}:/workspace/rsync.bin"],
                                       check=True, capture_output=True, text=True)
                sent = next((line.split(":")[1].strip() for line in rsync.stdout.splitlines()
                             if line.startswith("Total bytes sent")), "?")
                print(f"; rsync sent {sent} bytes")
            else:
                print()

            # download of an output
            out = pod.workspace / "out"
            ex.run("rm -rf /workspace/out")
            stage = staging_dir(out)
            stage.mkdir(parents=True, exist_ok=True)
            with (stage / "adapter.bin").open("wb") as fh:
                for _ in range(256):
                    fh.write(os.urandom(1 << 20))
            publish(stage, out)
            mb = (out / "adapter.bin").stat().st_size / 1e6
            dest = base / "local-out"

            def clean_down() -> None:
                shutil.rmtree(dest, ignore_errors=True)
                (base / "scp-out.bin").unlink(missing_ok=True)

            t_scp = median_time(lambda: scp_back("/workspace/out/adapter.bin", base / "scp-out.bin"), args.runs,
                                clean_down)
            t_ours = median_time(lambda: download_outputs(ex, "/workspace/out", dest, ("/workspace/out", [])),
                                 args.runs, clean_down)
            header(f"download of a 256 MiB output (median of {args.runs})")
            row("OpenSSH scp (baseline)", t_scp, t_scp, mb)
            row("rtrain: tar stream, safe extract, manifest verified", t_ours, t_scp, mb)

            def ours_login() -> None:
                fresh = SSHExecutor(SSHEndpoint(host, pod.port, "root"), keys)
                assert fresh.run("true").ok
                fresh.close()

            def openssh_login() -> None:
                subprocess.run(["ssh", "-p", str(pod.port), *ssh_opts, f"root@{host}", "true"], check=True)

            wait_for_banner(host, pod.port)
            t_ssh, t_para = median_time(openssh_login, 5), median_time(ours_login, 5)
            print("\nbanner -> first authenticated command (median of 5)")
            print(f"  {'OpenSSH ssh (baseline)':<52} {t_ssh * 1000:>6.0f} ms")
            print(f"  {'rtrain (paramiko, pinned host key)':<52} {t_para * 1000:>6.0f} ms  x{t_ssh / t_para:.2f}")
            ex.close()
        finally:
            pod.stop()


if __name__ == "__main__":
    main()
