"""GPU aliases, prices (live from the fake providers, or bundled), and estimates a user can check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLE
from fake_lambda import FakeLambda

from launcher.catalog import catalog, resolve_gpu
from launcher.config import JobSpec
from launcher.cost import KNOWN_MODELS, peak_vram_gb
from launcher.errors import UsageError


def test_every_alias_resolves_to_its_provider_ids() -> None:
    for alias, gpu in catalog().items():
        assert resolve_gpu(alias) is gpu
        assert resolve_gpu(alias.upper()) is gpu
        for backend in ("runpod", "lambda"):
            pid = gpu.provider_id(backend)
            if pid:
                assert resolve_gpu(alias, backend) is gpu and resolve_gpu(pid, backend) is gpu
            else:
                with pytest.raises(UsageError, match=f"not offered by {backend}"):
                    resolve_gpu(alias, backend)
    assert resolve_gpu("NVIDIA H100 80GB HBM3").alias == "h100"
    with pytest.raises(UsageError, match=r"--gpu h1000: unknown GPU \(valid: h100, h100-pcie"):
        resolve_gpu("h1000")


def test_unknown_alias_through_the_cli(cli, home: Path) -> None:
    result = cli("cost", "--gpu", "v100", "--model", "unsloth/Qwen3-8B", "--dataset", str(SAMPLE))
    assert result.code == 2 and "--gpu v100: unknown GPU (valid: h100" in result.err


def test_gpus_shows_every_provider_from_the_bundled_catalog_without_keys(cli, home: Path) -> None:
    result = cli("gpus", "--json")
    data = json.loads(result.out)
    assert result.code == 0 and set(data["sources"]) == {"runpod", "lambda"}
    assert all(source.startswith("bundled catalog of 20") for source in data["sources"].values())
    rows = {g["alias"]: g for g in data["gpus"]}
    assert rows["h100"]["vram_gb"] == 80 and rows["h100"]["arch"] == "sm_90"
    assert rows["h100"]["offers"] == {
        "runpod": {"id": "NVIDIA H100 80GB HBM3", "price_per_hr": 2.69, "prices": {"secure": 2.69, "community": 2.39}},
        "lambda": {"id": "gpu_1x_h100_sxm5", "price_per_hr": 3.29, "prices": {"on_demand": 3.29}}}
    assert set(rows["gh200"]["offers"]) == {"lambda"} and set(rows["rtx4090"]["offers"]) == {"runpod"}
    table = cli("gpus")
    assert "RunPod: $/GPU-hour on demand, bundled catalog" in table.out and "LAMBDA $/HR" in table.out
    assert "NVIDIA GeForce RTX 5090" not in table.out and "sm_120" in table.out  # ids only for one provider
    only = json.loads(cli("gpus", "--backend", "runpod", "--json").out)
    assert set(only["sources"]) == {"runpod"} and "gh200" not in {g["alias"] for g in only["gpus"]}


@pytest.fixture
def fake_runpod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fake_runpod import FakeRunPod

    fake = FakeRunPod(tmp_path / "pods", api_key="price-key").start()
    monkeypatch.setenv("RUNPOD_API_KEY", "price-key")
    monkeypatch.setenv("RTRAIN_RUNPOD_API_URL", fake.url)
    yield fake
    fake.stop()


def test_gpus_reads_live_runpod_prices(cli, home: Path, fake_runpod) -> None:
    data = json.loads(cli("gpus", "--json").out)
    assert data["sources"] == {"runpod": "live from RunPod", "lambda": data["sources"]["lambda"]}
    h100 = next(g for g in data["gpus"] if g["alias"] == "h100")["offers"]["runpod"]
    assert h100["price_per_hr"] == 2.99 and h100["prices"] == {"secure": 2.99, "community": 2.69, "spot": 1.75}
    assert any("gpuTypes" in c["query"] for c in fake_runpod.calls) and fake_runpod.ledger == {}


def test_gpus_reads_live_lambda_prices_per_gpu(cli, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    fake = FakeLambda(tmp_path / "vms").start()
    try:
        monkeypatch.setenv("LAMBDA_API_KEY", fake.api_key)
        monkeypatch.setenv("RTRAIN_LAMBDA_API_URL", fake.url)
        data = json.loads(cli("gpus", "--backend", "lambda", "--json").out)
        prices = {g["alias"]: g["offers"]["lambda"]["price_per_hr"] for g in data["gpus"]}
        assert data["sources"] == {"lambda": "live from Lambda Cloud"}
        assert prices["h100"] == 3.29 and prices["a10"] == 0.75
        assert prices["a100"] == pytest.approx(1.79)  # an 8-GPU instance, priced per GPU
        monkeypatch.setenv("LAMBDA_API_KEY", "wrong-key-SECRET")
        bad = cli("gpus", "--backend", "lambda")  # a rejected key: the catalog's prices, and why
        assert bad.code == 0 and "bundled catalog" in bad.out
        assert "warning: Lambda Cloud rejected the API key: check LAMBDA_API_KEY; using the bundled" in bad.err
        assert "wrong-key-SECRET" not in bad.out + bad.err
    finally:
        fake.stop()


def cost_json(cli, *args: str) -> dict:
    result = cli("cost", "--dataset", str(SAMPLE), "--json", *args)
    assert result.code == 0, result.err
    return json.loads(result.out)


def by_alias(data: dict, provider: str = "runpod") -> dict:
    return {g["alias"]: g for g in data["gpus"] if g["provider"] == provider}


def test_14b_qlora_preset_fits_a_24gb_card_and_32b_lora16_does_not(cli, home: Path) -> None:
    qlora = by_alias(cost_json(cli, "--template", "qwen3-14b-lora", "--load-in-4bit", "--gpu", "rtx4090"))
    assert qlora["rtx4090"]["fits"] is True and qlora["rtx4090"]["needs_gb"] < 24
    lora16 = by_alias(cost_json(cli, "--model", "unsloth/Qwen3-32B", "--gpu", "rtx4090,h100"))
    assert lora16["rtx4090"]["fits"] is False and lora16["h100"]["fits"] is True


def test_doubling_epochs_doubles_training_time(cli, home: Path) -> None:
    one = by_alias(cost_json(cli, "--model", "unsloth/Qwen3-8B", "--epochs", "1", "--gpu", "h100"))["h100"]
    two = by_alias(cost_json(cli, "--model", "unsloth/Qwen3-8B", "--epochs", "2", "--gpu", "h100"))["h100"]
    assert two["training_hours"] == pytest.approx(2 * one["training_hours"], rel=1e-3)
    assert two["hours"]["expected"] > one["hours"]["expected"]  # the fixed overheads do not double


def test_the_same_flags_give_the_estimate_launch_would_use(cli, home: Path) -> None:
    base = by_alias(cost_json(cli, "--template", "qwen3-14b-lora", "--gpu", "h100"))["h100"]
    smaller = by_alias(cost_json(cli, "--template", "qwen3-14b-lora", "--gpu", "h100", "--max-seq-length", "512",
                                 "--batch-size", "1"))["h100"]
    assert smaller["needs_gb"] < base["needs_gb"]
    data = cost_json(cli, "--template", "qwen3-14b-lora", "--gpu", "h100", "--max-samples", "10")
    assert data["tokens"]["examples"] == 10


def test_cheapest_fit_follows_the_prices(cli, home: Path, fake_runpod) -> None:
    data = cost_json(cli, "--model", "unsloth/Qwen3-0.6B", "--gpu", "h100,h100-pcie,rtx4090")
    assert data["prices"]["runpod"] == "live from RunPod" and data["prices"]["lambda"].startswith("bundled")
    assert data["cheapest_fit"] == {"provider": "runpod", "gpu": "rtx4090"}
    for g in fake_runpod.gpu_types:
        if g["id"] == "NVIDIA GeForce RTX 4090":
            g["securePrice"] = 9.99
        if g["id"] == "NVIDIA H100 PCIe":
            g["securePrice"] = 2.59  # now above Lambda's 2.49
    assert cost_json(cli, "--model", "unsloth/Qwen3-0.6B", "--gpu", "h100,h100-pcie,rtx4090")["cheapest_fit"] == \
        {"provider": "lambda", "gpu": "h100-pcie"}
    text = cli("cost", "--dataset", str(SAMPLE), "--model", "unsloth/Qwen3-0.6B", "--gpu", "h100-pcie")
    assert "cheapest that fits: h100-pcie on lambda" in text.out


def test_tiny_model_is_counted_with_its_own_tokenizer(cli, home_with_tiny: Path) -> None:
    data = cost_json(cli, "--template", "tiny-cpu", "--gpu", "h100")
    assert data["model"]["source"] == "its config.json" and data["model"]["parameters"] < 1e6
    assert data["tokens"]["method"] == "counted with the model's tokenizer and chat template"


@pytest.mark.parametrize("args, needle", [
    (["--model", "someorg/mystery-model", "--dataset", str(SAMPLE)], "--model someorg/mystery-model: unknown size"),
    (["--model", "unsloth/Qwen3-8B", "--dataset", "missing.jsonl"], "missing.jsonl: no such file"),
    (["--model", "unsloth/Qwen3-8B", "--dataset", str(SAMPLE), "--epochs", "0"], "--epochs: input should be greater"),
    (["--model", "unsloth/Qwen3-8B", "--dataset", str(SAMPLE), "--gpu", "gh200", "--backend", "runpod"],
     "not offered by runpod"),
])
def test_bad_cost_inputs_exit_2(cli, home: Path, args: list[str], needle: str) -> None:
    result = cli("cost", *args)
    assert result.code == 2 and needle in result.err and len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("name, qlora_gb, lora16_gb", [
    ("llama-3.1-8b", 6, 22), ("qwen3-14b", 8.5, 33), ("qwen3-32b", 26, 76), ("llama-3.1-70b", 41, 164),
])
def test_memory_lands_near_unsloths_published_minimums(name: str, qlora_gb: float, lora16_gb: float) -> None:
    shape = next(s for pattern, s in KNOWN_MODELS if pattern.replace("\\", "") == name)
    spec = JobSpec(model=name, datasets=["d"], lora_rank=16, max_seq_length=2048, batch_size=1)
    lora16 = peak_vram_gb(shape, spec)
    qlora = peak_vram_gb(shape, spec.model_copy(update={"load_in_4bit": True}))
    assert 0.85 * lora16_gb <= lora16 <= 1.15 * lora16_gb, lora16
    # Unsloth's QLoRA table leaves the 16-bit embeddings and lm_head out (3 GB for Qwen's vocabulary)
    assert 0.75 * qlora_gb <= qlora <= 1.6 * qlora_gb, qlora
