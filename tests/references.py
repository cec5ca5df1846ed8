"""Where the reference code the tests compare against lives (fetched by tests/system-deps.sh)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LLAMA_CPP = Path(__file__).resolve().parent / ".refs" / "llama.cpp"


def llama_cpp() -> Path:
    """llama.cpp's converter and templates; a missing reference fails the test (a skipped comparison
    proves nothing), unless RTRAIN_ALLOW_MISSING_REFERENCES=1 says skipping is meant."""
    if (LLAMA_CPP / "convert_lora_to_gguf.py").is_file():
        return LLAMA_CPP
    why = f"{LLAMA_CPP} is missing: run `bash tests/system-deps.sh` (it fetches llama.cpp's converter)"
    if os.environ.get("RTRAIN_ALLOW_MISSING_REFERENCES") == "1":
        pytest.skip(why)
    pytest.fail(why)


def chat_template(name: str) -> str:
    """A real model's chat template, as llama.cpp keeps it (models/templates/NAME.jinja)."""
    return (llama_cpp() / "models" / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
