"""Settings from environment and .env; secrets stay secret; templates merge under flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config import JobSpec, Settings
from launcher.errors import UsageError
from launcher.plan import merge_values, parse_gpu
from launcher.templates import available, load_template


def test_settings_read_env_and_dotenv(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("RUNPOD_API_KEY=rp-secret-123\nRTRAIN_IMAGE=example/img:1\nHF_TOKEN=hf_abc\n")
    monkeypatch.setenv("LAMBDA_API_KEY", "lam-secret-456")
    s = Settings()
    assert s.runpod_api_key is not None and s.runpod_api_key.get_secret_value() == "rp-secret-123"
    assert s.lambda_api_key is not None and s.lambda_api_key.get_secret_value() == "lam-secret-456"
    assert s.image == "example/img:1"
    assert s.home == home
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "rp-secret-123" not in text and "lam-secret-456" not in text and "hf_abc" not in text


def test_rtrain_home_is_private(home: Path) -> None:
    path = Settings().rtrain_home()
    assert path == home and path.stat().st_mode & 0o777 == 0o700


def test_env_example_lists_every_setting() -> None:
    text = (Path(__file__).parent.parent / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = list(alias.choices) if alias is not None else [f"RTRAIN_{name.upper()}"]
        assert any(n in text for n in names), f"{names[0]} is missing from .env.example"


def test_parse_gpu() -> None:
    assert parse_gpu("H100") == (["h100"], 1)
    assert parse_gpu("h100:2") == (["h100"], 2)
    assert parse_gpu("h100, h100-pcie,a100:1") == (["h100", "h100-pcie", "a100"], 1)
    for bad in ("h100:0", ":2", "h100:x", ","):
        with pytest.raises(UsageError):
            parse_gpu(bad)


def test_flags_override_template_and_origin_is_tracked() -> None:
    values, origin, notes = merge_values({"lr": 0.1}, "tiny-cpu")
    assert values["lr"] == 0.1 and values["model"] == "rtrain-tiny" and values["template"] == "tiny-cpu"
    assert "lr" not in origin and origin["max_steps"] == "tiny-cpu.yaml: max_steps"
    assert notes == []
    _, _, notes = merge_values({}, None)
    assert "embedded default template 'tiny-cpu'" in notes[0]


def test_every_bundled_template_is_a_valid_job() -> None:
    names = available()
    assert "tiny-cpu" in names
    for name in names:
        t = load_template(name)
        assert t.description, name
        JobSpec.model_validate({"datasets": ["d.jsonl"], **t.job})


def test_template_with_a_bad_value_names_the_template_key(cli, home: Path, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    folder = tmp_path / "bundle" / "templates"
    folder.mkdir(parents=True)
    (folder / "broken.yaml").write_text("description: x\njob:\n  model: rtrain-tiny\n  lora_rank: 0\n")
    monkeypatch.setattr("launcher.templates.templates_dir", lambda: folder)
    result = cli("launch", "--local", "--template", "broken")
    assert result.code == 2
    assert result.err.strip() == "error: broken.yaml: lora_rank: input should be greater than 0 (got 0)"


def test_a_gguf_export_of_an_adapter_with_embeddings_is_refused_up_front() -> None:
    from launcher.plan import check_exports

    spec = JobSpec(model="m", datasets=["d"], target_modules=["q_proj", "embed_tokens"], exports=["gguf"])
    with pytest.raises(UsageError, match="would carry embed_tokens weights"):
        check_exports(spec)
    check_exports(spec.model_copy(update={"exports": ["merged"]}))  # a merged model can hold them


def test_jobspec_and_the_trainers_config_agree_on_fields_defaults_and_bounds() -> None:
    # two classes (the trainer must run without pydantic), one schema
    import dataclasses
    import math

    from pydantic import ValidationError

    from launcher.uploads import LAUNCHER_ONLY
    from remote.jobconfig import BOUNDS, ConfigError, TrainConfig

    trainer_only = {"job_id", "dataset_names", "model_name", "version", "output_dir"}
    spec_fields = set(JobSpec.model_fields) - LAUNCHER_ONLY
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)} - trainer_only
    assert spec_fields == config_fields
    spec = JobSpec(model="m", datasets=["d"])
    config = TrainConfig(job_id="j", model="m", datasets=["d"])
    for name in sorted(spec_fields - {"model", "datasets"}):
        assert getattr(spec, name) == getattr(config, name), name
    assert set(BOUNDS) <= spec_fields
    for name, bound in BOUNDS.items():
        integer = isinstance(getattr(config, name) or 0, int) and not isinstance(getattr(config, name), float)
        edges = [v for limit in bound.values() for v in (limit - 1, limit, limit + 1)] + [math.inf, math.nan]
        for value in edges:
            value = int(value) if integer and math.isfinite(value) else value
            try:
                JobSpec(model="m", datasets=["d"], **{name: value})
                spec_ok = True
            except ValidationError:
                spec_ok = False
            try:
                TrainConfig(job_id="j", model="m", datasets=["d"], **{name: value}).check()
                config_ok = True
            except ConfigError:
                config_ok = False
            assert spec_ok == config_ok, (name, value, spec_ok, config_ok)
