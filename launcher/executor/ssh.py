"""The SSH executor (paramiko): the executor's three verbs over one SSH connection to the pod.

The pod's host key is known before the first connection (rtrain made it, launcher/keys.py): paramiko
gets it as a known host and a RejectPolicy, so an unknown or changed key is refused, never added.
Keepalives every 15 s; a dropped connection is re-opened with backoff and an idempotent command
(``run``, ``run_stdout``) is sent again. An upload (``run_stdin``) that loses its connection raises
``ConnectionLost``; the upload resumes from what reached the pod (launcher/transfer.py).
"""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from launcher.errors import ProviderError
from launcher.executor.base import ConnectionLost, Progress, RunResult

if TYPE_CHECKING:
    import paramiko

    from launcher.backends.base import SSHEndpoint
    from launcher.keys import JobKeys

#: Upload pieces: paramiko's sendall re-slices what it is given per 32 KiB packet, so a 1 MiB write
#: copies ~16 MiB; 128 KiB measured best (bench/ssh.py).
CHUNK = 128 << 10
#: A large channel window keeps a fast link full (TESTING.md: 1.03x scp with 2**27, 0.63x with SFTP).
WINDOW = 1 << 27


def _gcm_first_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport that prefers AES-GCM (one pass for cipher and MAC: about 1.5x the
    throughput of its default aes128-ctr + HMAC on loopback, bench/ssh.py); everything else stays
    allowed for servers without it."""
    import paramiko

    class GCMFirst(paramiko.Transport):
        _preferred_ciphers = tuple(sorted(paramiko.Transport._preferred_ciphers, key=lambda c: "gcm" not in c))

    transport = GCMFirst(sock, **kwargs)
    # paramiko starts a key re-exchange every 512 MiB, and a channel closing while it runs deadlocks
    # its transport thread for the 30 s kex timeout (paramiko#822: a 256 MiB download took 7-41 s
    # instead of 1). The server rekeys by its own limits (OpenSSH: by the cipher's safe data volume),
    # which paramiko answers correctly; so rtrain leaves rekeying to the server.
    transport.packetizer.REKEY_BYTES = transport.packetizer.REKEY_PACKETS = 1 << 62
    return transport


class HostKeyMismatch(ProviderError):
    """The pod presented a host key other than the one rtrain generated for it."""


def _connection_errors() -> tuple[type[BaseException], ...]:
    import paramiko

    return (paramiko.SSHException, EOFError, OSError, socket.timeout)


class SSHExecutor:
    def __init__(self, endpoint: SSHEndpoint, keys: JobKeys, *, python: str = "python3",
                 connect_timeout: float = 15.0, reconnect_for_s: float = 120.0) -> None:
        self.endpoint = endpoint
        self.keys = keys
        self.python = python
        self.connect_timeout = connect_timeout
        self.reconnect_for_s = reconnect_for_s
        #: called when the connection drops, before it is re-opened: it may raise (the provider says
        #: the machine is gone), which ends the retrying at once
        self.on_drop: Callable[[], None] | None = None
        self._client: paramiko.SSHClient | None = None
        self.connections = 0

    # connection ---------------------------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        """Open (or return) the connection; HostKeyMismatch and auth failures are raised as they are."""
        if self._client is not None and self._transport_ok():
            return self._client
        import paramiko

        self.close()
        ep = self.endpoint
        client = paramiko.SSHClient()
        key_type, key_b64 = self.keys.host_public.split()[:2]
        host_entry = ep.host if ep.port == 22 else f"[{ep.host}]:{ep.port}"
        client.get_host_keys().add(host_entry, key_type, paramiko.Ed25519Key(data=_b64decode(key_b64)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = paramiko.Ed25519Key.from_private_key_file(str(self.keys.client_private_path))
        try:
            client.connect(ep.host, ep.port, username=ep.user, pkey=pkey, look_for_keys=False, allow_agent=False,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout, transport_factory=_gcm_first_transport)
        except paramiko.BadHostKeyException:
            client.close()
            raise HostKeyMismatch(
                f"{ep.host}:{ep.port} presented a host key other than the one rtrain gave the pod: refusing to "
                "connect (a different machine answers at that address)"
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyMismatch(f"{ep.host}:{ep.port} offered no ed25519 host key: refusing to connect") from None
            raise
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        nodelay(transport.sock)
        self._client = client
        self.connections += 1
        return client

    @property
    def reconnects(self) -> int:
        """How often the connection had to be opened again (a drop noticed by a failed command, or by
        a dead transport before the next one)."""
        return max(self.connections - 1, 0)

    def _transport_ok(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _channel(self, command: str) -> paramiko.Channel:
        transport = self.connect().get_transport()
        assert transport is not None
        chan = transport.open_session(window_size=WINDOW, timeout=self.connect_timeout)
        chan.exec_command(command)
        return chan

    def _again(self, action: Any) -> Any:
        """Run ``action`` (an idempotent command), reconnecting with backoff when the link drops."""
        errors = _connection_errors()
        deadline = time.monotonic() + self.reconnect_for_s
        delay = 0.5
        while True:
            try:
                return action()
            except (HostKeyMismatch, ProviderError):
                raise
            except errors as exc:
                self.close()
                if self.on_drop is not None:
                    self.on_drop()
                if time.monotonic() + delay > deadline:
                    ep = self.endpoint
                    why = str(exc) or type(exc).__name__
                    raise ProviderError(f"lost the SSH connection to {ep.host}:{ep.port} and could not get it "
                                        f"back within {self.reconnect_for_s:.0f}s: {why}") from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # bulk downloads ----------------------------------------------------------------------------

    def bulk_stdout(self, command: str) -> subprocess.Popen[bytes] | None:
        """``command`` run through OpenSSH's own ``ssh`` client, its output on the process's stdout; None
        when this machine has no ``ssh``. paramiko decrypts in Python on one thread (100-200 MB/s
        here); OpenSSH is the reference at wire speed. The same pinned host key (a known_hosts file of
        the job's, StrictHostKeyChecking=yes: an unknown or changed key is refused), the job's key, no
        agent, no user config. Worth its handshake (~0.1-0.3 s) only for large transfers."""
        ssh = shutil.which("ssh")
        if ssh is None:
            return None
        ep = self.endpoint
        known = self.keys.folder / "known_hosts"
        known.write_text(self.keys.known_hosts_line(ep.host, ep.port) + "\n")
        known.chmod(0o600)
        argv = [ssh, "-F", "none", "-p", str(ep.port), "-i", str(self.keys.client_private_path),
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=none",
                "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "BatchMode=yes",
                "-o", "KexAlgorithms=^curve25519-sha256", "-o", "Ciphers=^aes128-gcm@openssh.com",
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ForwardAgent=no",
                "-o", f"ConnectTimeout={int(self.connect_timeout)}", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR", "-T", f"{ep.user}@{ep.host}", command]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _bigger_pipe(proc.stdout)
        return proc

    # the three verbs ----------------------------------------------------------------------------

    def run(self, command: str, *, timeout: float | None = None) -> RunResult:
        def once() -> RunResult:
            chan = self._channel(command)
            out, err = _drain(chan, None, None, timeout)
            return RunResult(_exit_status(chan), out.decode(errors="replace"), err.decode(errors="replace"))

        result: RunResult = self._again(once)
        return result

    def run_stdout(self, command: str, sink: BinaryIO, *, progress: Progress | None = None) -> RunResult:
        """A seekable sink is rewound and the command sent again when the connection drops; a stream
        (a pipe) cannot be, so a drop is ConnectionLost and the caller starts over."""
        start = sink.tell() if sink.seekable() else None

        def once() -> RunResult:
            if start is not None:  # a retry starts the output over
                sink.seek(start)
                sink.truncate()
            chan = self._channel(command)
            try:
                _, err = _drain(chan, sink, progress, None)
                return RunResult(_exit_status(chan), "", err.decode(errors="replace"))
            finally:
                chan.close()  # also when the sink refused more: the command ends with its channel

        if start is not None:
            result: RunResult = self._again(once)
            return result
        try:
            return once()
        except (HostKeyMismatch, ProviderError):
            raise
        except _connection_errors() as exc:
            self.close()
            if self.on_drop is not None:
                self.on_drop()
            raise ConnectionLost(f"the SSH connection dropped during a download: {exc or type(exc).__name__}") \
                from None

    def run_stdin(self, command: str, source: BinaryIO, *, progress: Progress | None = None) -> RunResult:
        errors = _connection_errors()
        try:
            chan = self._again(lambda: self._channel(command))
            while chunk := source.read(CHUNK):
                try:
                    view = memoryview(chunk)  # sent in CHUNK slices whatever the source hands over
                    for start in range(0, len(view), CHUNK):
                        chan.sendall(view[start:start + CHUNK])
                except OSError:
                    if chan.exit_status_ready() and self._transport_ok():
                        break  # the command ended before reading everything: its exit status says why
                    raise
                if progress:
                    progress(len(chunk))
            chan.shutdown_write()
            out, err = _drain(chan, None, None, None)
            return RunResult(_exit_status(chan), out.decode(errors="replace"), err.decode(errors="replace"))
        except errors as exc:
            self.close()
            if self.on_drop is not None:
                self.on_drop()
            raise ConnectionLost(f"the SSH connection dropped during an upload: {exc or type(exc).__name__}") from None


def _bigger_pipe(stream: Any) -> None:
    """A 1 MiB pipe (Linux; 64 KiB by default): fewer wake-ups per byte on both ends."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ValueError, AttributeError, ImportError):
        pass


def nodelay(sock: Any) -> None:
    """Nagle off: a command or a small file is one segment sent now, not held back waiting for the
    acknowledgement of the last one (a 200-byte upload: 250 ms with Nagle, a few ms without)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _drain(chan: paramiko.Channel, sink: BinaryIO | None, progress: Progress | None,
           timeout: float | None) -> tuple[bytes, bytes]:
    """Read a channel's stdout (into ``sink`` when given) and stderr until the command has ended and
    both are exhausted (SSH sends every byte of both before its end-of-file)."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        progressed = False
        if chan.recv_ready():
            data = chan.recv(CHUNK)
            progressed = True
            if sink is None:
                out += data
            else:
                sink.write(data)
                if progress:
                    progress(len(data))
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(CHUNK)
            progressed = True
        if progressed:
            continue
        if (chan.eof_received or chan.closed) and chan.exit_status_ready():
            return bytes(out), bytes(err)
        if deadline is not None and time.monotonic() > deadline:
            chan.close()
            raise ProviderError(f"the remote command did not finish within {timeout:.0f}s")
        select.select([chan], [], [], 0.5)


def _exit_status(chan: paramiko.Channel) -> int:
    """The command's exit status; EOFError (a dropped connection, retried by the caller) when the
    channel closed without one."""
    code = chan.recv_exit_status()
    if code == -1:
        raise EOFError("the connection closed before the command ended")
    return int(code)


def _b64decode(text: str) -> bytes:
    import base64

    return base64.b64decode(text)
