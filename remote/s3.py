"""Datasets given as ``s3://bucket/key``, fetched by the trainer itself on the machine (server-side:
the data never passes through the user's laptop). Needs boto3 where the trainer runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from remote.jobconfig import ConfigError


def fetch(url: str, folder: Path) -> Path:
    """Download ``url`` into ``folder`` (once: a second job on the same machine reuses it)."""
    try:
        import boto3
    except ImportError:
        raise ConfigError(f"{url}: boto3 is not installed where the trainer runs") from None
    bucket, _, key = url.removeprefix("s3://").partition("/")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (hashlib.sha256(url.encode()).hexdigest()[:16] + Path(key).suffix)
    if not target.exists():
        partial = target.with_name(target.name + ".part")
        try:
            boto3.client("s3").download_file(bucket, key, str(partial))
        except Exception as exc:  # botocore's errors: name the URL, not the stack
            raise ConfigError(f"{url}: cannot download it: {exc}") from None
        partial.replace(target)
    return target
