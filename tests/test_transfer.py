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
from launcher.executor.local import LocalExecutor
from launcher.transfer import read_from, upload_blob
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
