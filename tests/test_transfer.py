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

from launcher.errors import TrainingError
from launcher.executor.local import LocalExecutor
from launcher.transfer import _safe_members, fetch_tree, read_from, upload_blob, verify_manifest
from remote.outputs import build_manifest, publish, sha256_file, staging_dir


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_upload_verifies_then_skips(tmp_path: Path, payload: tuple[Path, str]) -> None:
    ex, (src, sha) = LocalExecutor(), payload
    blobs = str(tmp_path / "machine" / "blobs")
    moved: list[int] = []
    dest, sent = upload_blob(ex, src, blobs, sha, progress=moved.append)
    assert sent and dest == f"{blobs}/{sha}" and sha256_file(Path(dest)) == sha
    assert sum(moved) == src.stat().st_size
    assert not list(Path(blobs).glob(".*.part"))
    moved.clear()
    assert upload_blob(ex, src, blobs, sha, progress=moved.append) == (dest, False)
    assert moved == []  # nothing sent the second time


def test_upload_resumes_a_partial_copy(tmp_path: Path, payload: tuple[Path, str]) -> None:
    ex, (src, sha) = LocalExecutor(), payload
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    head = src.read_bytes()[: 1024 * 1024]
    (blobs / f".{sha}.part").write_bytes(head)
    moved: list[int] = []
    dest, sent = upload_blob(ex, src, str(blobs), sha, progress=moved.append)
    assert sent and sha256_file(Path(dest)) == sha
    # progress counted the resumed head once, then only the tail was streamed
    assert moved[0] == len(head) and sum(moved) == src.stat().st_size


def test_upload_restarts_when_the_partial_copy_is_corrupt(tmp_path: Path, payload: tuple[Path, str]) -> None:
    ex, (src, sha) = LocalExecutor(), payload
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / f".{sha}.part").write_bytes(b"\0" * 4096)  # wrong bytes: the resumed file cannot verify
    dest, sent = upload_blob(ex, src, str(blobs), sha)
    assert sent and sha256_file(Path(dest)) == sha


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
    with pytest.raises(TrainingError, match="does not match manifest.json"):
        verify_manifest(out)
    target.unlink()
    with pytest.raises(TrainingError, match="missing"):
        verify_manifest(out)
    target.write_bytes(original)
    verify_manifest(out)
    (out / "surprise.bin").write_bytes(b"x")
    with pytest.raises(TrainingError, match="not in manifest.json: surprise.bin"):
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
    with pytest.raises(TrainingError, match="outside the folder"):
        _safe_members(_tar_with(info, b"x"), "output")


def test_links_in_the_download_are_refused(tmp_path: Path) -> None:
    remote = make_output(tmp_path / "machine" / "output")
    (remote / "adapter" / "link").symlink_to("/etc/passwd")
    with pytest.raises(TrainingError, match="is a link"):
        fetch_tree(LocalExecutor(), str(remote), tmp_path / "local")


def test_manifest_lists_every_file_but_itself(tmp_path: Path) -> None:
    out = make_output(tmp_path / "o")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {"version": 1, "files": build_manifest(out)["files"]}
    assert "manifest.json" not in manifest["files"]
