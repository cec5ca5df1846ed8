"""S3 on the launcher's side (boto3, imported only when a job uses S3): checking that an ``s3://``
dataset exists before anything is rented, and pushing a job's verified outputs to a bucket.

Credentials and endpoint come from boto3's usual sources (``AWS_*`` environment variables, profiles);
``AWS_ENDPOINT_URL`` points it at any S3-compatible store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from launcher.errors import ProviderError, UsageError

#: what the trainer on a pod needs to fetch an s3:// dataset itself (sent in the 0600 secrets file)
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
           "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


def split_url(url: str, flag: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise UsageError(f"{flag} {url}: expected s3://bucket/key")
    return bucket, key


def _client() -> Any:
    try:
        import boto3
    except ImportError:
        raise UsageError("S3 needs boto3: pip install boto3") from None
    return boto3.client("s3")


def check_object(url: str) -> int:
    """The size of an s3:// object; UsageError naming the URL when it is not there."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_url(url, "--dataset")
    if not key:
        raise UsageError(f"--dataset {url}: expected s3://bucket/key (a file, not a bucket)")
    try:
        head = _client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise UsageError(f"--dataset {url}: no such object") from None
        raise ProviderError(f"S3 refused to look at {url}: {code or exc}") from None
    except BotoCoreError as exc:
        raise ProviderError(f"cannot reach S3 for {url}: {exc}") from None
    return int(head["ContentLength"])


def push_folder(folder: Path, url: str, manifest: dict[str, dict[str, Any]]) -> list[str]:
    """Upload every file of ``folder`` under ``url``; each object carries its sha256 (from the
    manifest when listed) and its size is checked after the upload."""
    from botocore.exceptions import BotoCoreError, ClientError

    from remote.outputs import sha256_file

    bucket, prefix = split_url(url, "--s3")
    client = _client()
    keys = []
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            key = f"{prefix.rstrip('/')}/{rel}" if prefix else rel
            sha = str(manifest.get(rel, {}).get("sha256") or sha256_file(path))
            client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
            head = client.head_object(Bucket=bucket, Key=key)
            if int(head["ContentLength"]) != path.stat().st_size or head.get("Metadata", {}).get("sha256") != sha:
                raise ProviderError(f"s3://{bucket}/{key} does not match {path} after the upload")
            keys.append(f"s3://{bucket}/{key}")
    except (ClientError, BotoCoreError) as exc:
        raise ProviderError(f"upload to {url} failed: {exc}") from None
    return keys


def aws_env() -> dict[str, str]:
    return {k: os.environ[k] for k in AWS_ENV if os.environ.get(k)}
