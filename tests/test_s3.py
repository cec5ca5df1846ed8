"""S3 through boto3 against a real endpoint (moto_server): outputs pushed and checked, datasets read
by the trainer itself from s3://, bad ones named by their URL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import SAMPLE

pytest.importorskip("boto3")


def test_outputs_are_pushed_with_their_sha256(home_with_tiny: Path, cli_proc, s3) -> None:
    result = cli_proc("launch", "--local", "--max-steps", "2", "--s3", "s3://rtrain/runs", "--json")
    assert result.code == 0, result.err
    job = result.json_line()
    manifest = json.loads((Path(job["output_dir"]) / "manifest.json").read_text())["files"]
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="rtrain", Prefix=f"runs/{job['job_id']}/")["Contents"]}
    assert {f"runs/{job['job_id']}/{rel}" for rel in manifest} <= listed
    head = s3.head_object(Bucket="rtrain", Key=f"runs/{job['job_id']}/adapter/adapter_model.safetensors")
    assert head["Metadata"]["sha256"] == manifest["adapter/adapter_model.safetensors"]["sha256"]
    assert f"files in s3://rtrain/runs/{job['job_id']}" in result.err


def test_an_s3_dataset_is_read_by_the_trainer(home_with_tiny: Path, cli_proc, s3) -> None:
    s3.upload_file(str(SAMPLE), "rtrain", "data/chats.jsonl")
    result = cli_proc("launch", "--local", "--dataset", "s3://rtrain/data/chats.jsonl", "--max-steps", "2",
                      "--json")
    assert result.code == 0, result.err
    metrics = json.loads((Path(result.json_line()["output_dir"]) / "metrics.json").read_text())
    assert metrics["data"]["examples"] + metrics["eval_examples"] == 320
    assert "in S3, read and checked line by line on the machine" in result.err


def test_a_missing_s3_dataset_is_refused_before_anything(home: Path, cli, s3) -> None:
    result = cli("launch", "--local", "--dataset", "s3://rtrain/nope.jsonl")
    assert result.code == 2 and result.err.strip() == "error: --dataset s3://rtrain/nope.jsonl: no such object"
    db = home / "state.db"
    assert not db.exists() or sqlite3.connect(db).execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_a_bad_line_in_an_s3_dataset_is_named_by_its_url(home_with_tiny: Path, cli_proc, s3) -> None:
    s3.put_object(Bucket="rtrain", Key="bad.jsonl", Body=SAMPLE.read_text().splitlines()[0] + "\n{broken\n")
    result = cli_proc("launch", "--local", "--dataset", "s3://rtrain/bad.jsonl", "--max-steps", "2")
    assert result.code == 2
    assert "the trainer refused the job: s3://rtrain/bad.jsonl:2: not valid JSON" in result.err
