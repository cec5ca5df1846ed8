"""Content-addressed upload, safe download and manifest checks, through the real local executor
(the same shell commands the SSH executor sends)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from launcher.downloads import _safe_members, fetch_tree, verify_manifest
from launcher.errors import ProviderError, TrainingError
from launcher.executor.base import ConnectionLost
from launcher.executor.local import LocalExecutor
from launcher.state import Registry
from launcher.transfer import read_from, send_blobs, upload_blob
from launcher.ui import Reporter
from launcher.uploads import upload_files
from remote.outputs import build_manifest, publish, sha256_file, staging_dir


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_upload_hashes_while_streaming_verifies_and_skips_when_known(tmp_path: Path, payload) -> None:
    ex, (src, sha) = LocalExecutor(), payload
    blobs = str(tmp_path / "machine" / "blobs")
    moved: list[int] = []
    up = upload_blob(ex, src, blobs, progress=moved.append)  # hash unknown: computed on the way
    assert up.sha256 == sha and up.path == f"{blobs}/{sha}" and up.sent == src.stat().st_size
    assert sha256_file(Path(up.path)) == sha and sum(moved) == src.stat().st_size
    assert not list(Path(blobs).glob(".*.part"))
    moved.clear()
    again = upload_blob(ex, src, blobs, known_sha256=sha, progress=moved.append)
    assert (again.path, again.sent, moved) == (up.path, 0, [])  # nothing sent the second time


def test_unknown_hash_of_a_blob_already_there_keeps_one_copy(tmp_path: Path, payload) -> None:
    ex, (src, sha) = LocalExecutor(), payload
    blobs = tmp_path / "blobs"
    upload_blob(ex, src, str(blobs))
    up = upload_blob(ex, src, str(blobs))  # no cache: it streams, verifies, and finds the blob there
    assert up.sha256 == sha and sorted(p.name for p in blobs.iterdir()) == [sha]


def test_upload_resumes_a_partial_copy(tmp_path: Path, payload) -> None:
    ex, (src, sha) = LocalExecutor(), payload
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    head = src.read_bytes()[: 1024 * 1024]
    (blobs / f".{sha}.part").write_bytes(head)
    moved: list[int] = []
    up = upload_blob(ex, src, str(blobs), known_sha256=sha, progress=moved.append)
    assert sha256_file(Path(up.path)) == sha
    assert up.sent == src.stat().st_size - len(head)  # only the tail crossed the wire
    assert moved[0] == len(head) and sum(moved) == src.stat().st_size


def test_upload_restarts_when_the_partial_copy_is_corrupt(tmp_path: Path, payload) -> None:
    ex, (src, sha) = LocalExecutor(), payload
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / f".{sha}.part").write_bytes(b"\0" * 4096)  # wrong bytes: the resumed copy cannot verify
    up = upload_blob(ex, src, str(blobs), known_sha256=sha)
    assert up.retried and sha256_file(Path(up.path)) == sha


class Meddler(LocalExecutor):
    """The local executor with a wire that misbehaves on the first upload stream: it flips one byte
    (``flip``), or it carries only the first ``cut`` bytes and then drops (``ConnectionLost``)."""

    def __init__(self, *, flip: int | None = None, cut: int | None = None) -> None:
        super().__init__()
        self.flip, self.cut, self.streams = flip, cut, 0

    def run_stdin(self, command, source, *, progress=None):  # type: ignore[override]
        self.streams += 1
        if self.streams > 1 or (self.flip is None and self.cut is None):
            return super().run_stdin(command, source, progress=progress)
        data = bytearray()
        while (self.cut is None or len(data) < self.cut) and (chunk := source.read(1 << 20)):
            data += chunk  # a drop stops the reading where it happens
        if self.flip is not None:
            data[self.flip] ^= 0x01
            return super().run_stdin(command, io.BytesIO(bytes(data)), progress=progress)
        super().run_stdin(command, io.BytesIO(bytes(data[: self.cut])), progress=progress)
        raise ConnectionLost("the wire dropped")


def header_length(src: Path, blobs: str, sha: str | None) -> int:
    """How many bytes of a stream come before the file's first byte (remote/receive.py's header)."""
    from launcher.transfer import part_name

    part = part_name(src, blobs, sha)
    return len(json.dumps({"part": part, "offset": 0, "length": src.stat().st_size, "sha256": sha})) + 1


@pytest.mark.parametrize("known", [False, True])
def test_a_byte_damaged_on_the_way_is_caught_and_sent_again(tmp_path: Path, payload, known: bool) -> None:
    (src, sha), blobs = payload, str(tmp_path / "blobs")
    ex = Meddler(flip=header_length(src, blobs, sha if known else None) + 12345)
    up = upload_blob(ex, src, blobs, known_sha256=sha if known else None)
    assert up.retried and ex.streams == 2
    assert sha256_file(Path(up.path)) == sha and os.listdir(blobs) == [sha]  # no damaged copy kept


def test_a_drop_mid_stream_resumes_from_what_arrived(tmp_path: Path, payload) -> None:
    (src, sha), blobs = payload, str(tmp_path / "blobs")
    arrived = 1 << 20
    ex = Meddler(cut=header_length(src, blobs, None) + arrived)
    up = upload_blob(ex, src, blobs)  # sha not known: hashed here while it streams, head included
    assert up.retried and ex.streams == 2 and sha256_file(Path(up.path)) == sha
    assert up.sent == src.stat().st_size  # the first try's 1 MiB and the rest: nothing sent twice


def test_the_machine_never_reads_back_what_it_wrote(tmp_path: Path, payload) -> None:
    """One pass: remote/receive.py hashes the bytes as they arrive, so the blob is never read after it
    was written (its atime stays before its mtime: relatime updates atime on the first read after a
    write), where `sha256sum` after the copy read every byte a second time."""
    (src, sha), blobs = payload, tmp_path / "blobs"
    control = tmp_path / "control"
    control.write_bytes(b"x" * 4096)
    before = control.stat()
    control.read_bytes()
    if control.stat().st_atime_ns == before.st_atime_ns:
        pytest.skip(f"{tmp_path} does not record reads (mounted noatime)")
    up = upload_blob(LocalExecutor(), src, str(blobs))
    st = Path(up.path).stat()
    assert st.st_atime_ns < st.st_mtime_ns, "the blob was read back on the machine after it was written"
    assert sha256_file(Path(up.path)) == sha


def test_many_files_go_in_one_stream_and_a_touched_file_is_not_sent_again(tmp_path: Path, payload) -> None:
    (big, _), home = payload, tmp_path / "home"
    home.mkdir()
    small = []
    for i in range(6):
        small.append(tmp_path / f"f{i}.txt")
        small[-1].write_bytes(os.urandom(200 + i))
    ex, registry = Meddler(), Registry(home / "registry.db")
    files = [(p, p.name) for p in [big, *small]]
    first = upload_files(ex, registry, Reporter(quiet=True), "job", files, str(tmp_path / "blobs"), quiet=True)
    assert ex.streams == 1 and [u.sent for u in first] == [p.stat().st_size for p, _ in files]
    os.utime(big, ns=(big.stat().st_atime_ns, big.stat().st_mtime_ns + 10**9))  # touched: a new mtime
    again = upload_files(ex, registry, Reporter(quiet=True), "job", files, str(tmp_path / "blobs"), quiet=True)
    assert [u.sent for u in again] == [0] * len(files) and ex.streams == 1  # no stream opened at all
    big.write_bytes(big.read_bytes()[:-1] + b"!")  # changed: same size, new content
    changed = upload_files(ex, registry, Reporter(quiet=True), "job", files[:1], str(tmp_path / "blobs"),
                           quiet=True)
    assert changed[0].sent == big.stat().st_size and changed[0].sha256 == sha256_file(big)


def test_a_command_that_fails_on_the_machine_is_named(tmp_path: Path, payload) -> None:
    src, _ = payload
    blocked = tmp_path / "blobs"
    blocked.mkdir()
    ex = LocalExecutor()
    probe_ok = ex.run(f"chmod 500 {blocked}")
    assert probe_ok.ok
    try:
        if os.geteuid() == 0:  # root writes anywhere: a file where the part would go stops it instead
            blocked.chmod(0o700)
            from launcher.transfer import part_name

            Path(part_name(src, str(blocked), None)).mkdir()
        with pytest.raises(ProviderError, match="failed on the machine: .*Error"):
            send_blobs(ex, str(blocked), [(src, None)])
    finally:
        blocked.chmod(0o700)


def test_read_from_offset(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"abcdef\nghij\n")
    ex = LocalExecutor()
    assert read_from(ex, str(f), 0) == b"abcdef\nghij\n"
    assert read_from(ex, str(f), 7) == b"ghij\n"
    assert read_from(ex, str(f), 12) == b""
    assert read_from(ex, str(tmp_path / "missing"), 0) == b""


def make_output(folder: Path) -> Path:
    staging = staging_dir(folder)
    (staging / "adapter").mkdir()
    (staging / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(5000))
    (staging / "metrics.json").write_text("{}")
    publish(staging, folder)
    return folder


def test_fetch_and_verify(tmp_path: Path) -> None:
    remote = make_output(tmp_path / "machine" / "output")
    assert not (tmp_path / "machine" / "output.tmp").exists()
    local = tmp_path / "local"
    fetch_tree(LocalExecutor(), str(remote), local)
    files = verify_manifest(local)
    assert set(files) == {"adapter/adapter_model.safetensors", "metrics.json"}


def test_verify_detects_damage_missing_and_extra(tmp_path: Path) -> None:
    out = make_output(tmp_path / "out")
    target = out / "adapter" / "adapter_model.safetensors"
    original = target.read_bytes()
    target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ProviderError, match="does not match manifest.json"):
        verify_manifest(out)
    target.unlink()
    with pytest.raises(ProviderError, match="missing"):
        verify_manifest(out)
    target.write_bytes(original)
    verify_manifest(out)
    (out / "surprise.bin").write_bytes(b"x")
    with pytest.raises(ProviderError, match="not in manifest.json: surprise.bin"):
        verify_manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(TrainingError, match="no manifest.json"):
        verify_manifest(out)


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r:")


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "adapter/../../evil"])
def test_tar_members_outside_the_folder_are_refused(name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = 1
    with pytest.raises(ProviderError, match="outside the folder"):
        _safe_members(_tar_with(info, b"x"), "output")


def test_links_in_the_download_are_refused(tmp_path: Path) -> None:
    remote = make_output(tmp_path / "machine" / "output")
    (remote / "adapter" / "link").symlink_to("/etc/passwd")
    with pytest.raises(ProviderError, match="is a link"):
        fetch_tree(LocalExecutor(), str(remote), tmp_path / "local")


def test_manifest_lists_every_file_but_itself(tmp_path: Path) -> None:
    out = make_output(tmp_path / "o")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {"version": 1, "files": build_manifest(out)["files"]}
    assert "manifest.json" not in manifest["files"]
