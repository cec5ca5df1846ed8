"""The Modelfile's TEMPLATE, rendered by Go's own text/template (Ollama's engine, tests/ollama_render),
must give exactly what the model's own chat template gave in training, for real models' templates
(as llama.cpp keeps them): ChatML (Qwen3, Qwen2.5 with its default system prompt), Llama 3.1, the
DeepSeek-R1 distills, Mistral (system prompt inside the last user turn) and Gemma (no system role)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from references import chat_template

from remote.ollama import CHECKS, TemplateRefused, derive

transformers = pytest.importorskip("transformers")

#: llama.cpp's template file -> the model's BOS and EOS text
REAL = {
    "Qwen-Qwen3-0.6B": ("", "<|im_end|>"),
    "Qwen-Qwen2.5-7B-Instruct": ("", "<|im_end|>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>"),
    "google-gemma-2-2b-it": ("<bos>", "<eos>"),
}
MORE = [
    [{"role": "user", "content": "Über 9000? 日本語 — \"quotes\" and \\backslashes\\ {{ braces }}"}],
    [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
     {"role": "user", "content": "z"}],
]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory) -> Path:
    if shutil.which("go") is None:
        if os.environ.get("RTRAIN_ALLOW_MISSING_REFERENCES") == "1":
            pytest.skip("Go is not installed")
        pytest.fail("Go is not installed: run `bash tests/system-deps.sh` (Debian's golang-go)")
    binary = tmp_path_factory.mktemp("go") / "ollama_render"
    env = dict(os.environ, GOFLAGS="-mod=mod", GOCACHE=str(binary.parent / "cache"), GOPATH=str(binary.parent))
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=Path(__file__).parent / "ollama_render", env=env,
                   check=True, capture_output=True)
    return binary


def render_go(binary: Path, template: str, conversations: list) -> list[str]:
    done = subprocess.run([str(binary)], input=json.dumps({"template": template, "conversations": conversations}),
                          capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout))


def jinja_render(template: str, bos: str, eos: str):
    from transformers.utils.chat_template_utils import render_jinja_template

    def render(messages: list) -> str:
        [text], _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=True,
                                          bos_token=bos, eos_token=eos)
        return text[len(bos):] if bos and text.startswith(bos) else text

    return render


@pytest.mark.parametrize("name", sorted(REAL))
def test_the_template_renders_in_go_exactly_as_the_models_own(name: str, go_render: Path) -> None:
    template = chat_template(name)
    render = jinja_render(template, *REAL[name])
    turns = derive(render, template)
    conversations = [c for c in CHECKS + MORE if turns.system is not None or c[0]["role"] != "system"]
    assert render_go(go_render, turns.go_template(), conversations) == [render(c) for c in conversations]


def test_a_template_of_no_known_family_is_refused() -> None:
    template = chat_template("microsoft-Phi-3.5-mini-instruct")
    with pytest.raises(TemplateRefused, match="of no family rtrain can write an Ollama template for"):
        derive(jinja_render(template, "<s>", "<|endoftext|>"), template)


def test_a_template_that_rewrites_turns_is_refused() -> None:
    # ChatML markers, but every user turn is upper-cased: no Go template of plain turns can follow it
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | upper }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateRefused, match="rtrain cannot reproduce"):
        derive(jinja_render(template, "", ""), template)


def modelfile_template(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]


@pytest.mark.parametrize("name", ["deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "google-gemma-2-2b-it"])
def test_rtrain_export_modelfile_follows_the_adapters_own_template(name: str, tiny_model: Path, tmp_path: Path,
                                                                  go_render: Path, cli) -> None:
    from test_exports import make_adapter

    adapter = make_adapter(tiny_model, tmp_path / "adapter", seed=5)
    (adapter / "chat_template.jinja").write_text(chat_template(name), encoding="utf-8")
    result = cli("export", str(adapter), "--modelfile", "--base", str(tiny_model), "--out", str(tmp_path / "o"))
    assert result.code == 0, result.err
    modelfile = (tmp_path / "o" / "Modelfile").read_text(encoding="utf-8")
    stops = [line.split(" ", 2)[2] for line in modelfile.splitlines() if line.startswith("PARAMETER stop ")]
    if name.startswith("deepseek"):
        assert json.dumps("<｜end▁of▁sentence｜>", ensure_ascii=False) in stops and "<|im_start|>" not in modelfile
    else:
        assert stops == ['"<end_of_turn>"', '"<start_of_turn>"'] and "has no system role" in modelfile
    tokenizer = transformers.AutoTokenizer.from_pretrained(adapter)
    from remote.ollama import tokenizer_render

    render = tokenizer_render(tokenizer)
    conversations = [c for c in CHECKS if name.startswith("deepseek") or c[0]["role"] != "system"]
    assert render_go(go_render, modelfile_template(tmp_path / "o" / "Modelfile"), conversations) == \
        [render(c) for c in conversations]


def test_a_modelfile_for_an_unknown_template_is_refused_before_training(home_with_tiny: Path, tmp_path: Path,
                                                                       tiny_model: Path) -> None:
    from conftest import SAMPLE, launch

    model = tmp_path / "phi-chat-model"
    shutil.copytree(tiny_model, model)
    (model / "chat_template.jinja").write_text(chat_template("microsoft-Phi-3.5-mini-instruct"), encoding="utf-8")
    proc = launch("--local", "--model", str(model), "--dataset", str(SAMPLE), "--modelfile", "--max-steps", "2",
                  "--json")
    assert proc.returncode == 2, proc.stderr
    assert "--modelfile: the model's chat template is of no family" in proc.stderr
    events = [json.loads(line) for line in (Path(json.loads(proc.stdout.splitlines()[-1])["output_dir"]) / "logs" /
                                            "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] in ("start", "step")]  # refused before any training
