"""Writing the job's outputs so that a half-written adapter can never pass for a good one.

Everything is written into ``<output>.tmp/``; ``manifest.json`` (sha256 and size of every file) is
written last; only then is the folder renamed to ``<output>/``. The launcher checks every file
against the manifest after download.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """The sha256 of a file, one pass (``hashlib.file_digest`` where Python has it, 3.11+)."""
    with path.open("rb") as fh:
        if hasattr(hashlib, "file_digest"):
            return hashlib.file_digest(fh, "sha256").hexdigest()
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()


def build_manifest(folder: Path) -> dict[str, Any]:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"version": 1, "files": files}


def staging_dir(output: Path) -> Path:
    staging = output.with_name(output.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def publish(staging: Path, output: Path) -> dict[str, Any]:
    """Write the manifest into ``staging`` and move it to ``output`` in one rename."""
    manifest = build_manifest(staging)
    write_json(staging / MANIFEST, manifest)
    if output.exists():
        shutil.rmtree(output)
    os.replace(staging, output)
    return manifest
