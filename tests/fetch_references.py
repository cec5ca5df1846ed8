"""Fetch the reference code the tests compare against into tests/.refs/ (run by tests/system-deps.sh).

llama.cpp's ``convert_lora_to_gguf.py`` (with the ``gguf-py`` and ``conversion/`` it imports) and the real
chat templates llama.cpp keeps (``models/templates``), from the llama-cpp-python sdist on PyPI, pinned by
version and sha256 so that CI compares against the same reference every time.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
INDEX = "https://pypi.org/simple/llama-cpp-python/"
KEEP = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/templates/",
        "LICENSE")


def main() -> int:
    dest = Path(__file__).resolve().parent / ".refs" / "llama.cpp"
    if (dest / "convert_lora_to_gguf.py").is_file():
        return 0
    html = urllib.request.urlopen(INDEX, timeout=60).read().decode()
    found = re.search(rf'href="([^"#]*llama_cpp_python-{re.escape(VERSION)}\.tar\.gz)[^"]*"', html)
    if not found:
        print(f"fetch_references: no llama-cpp-python {VERSION} sdist on {INDEX}", file=sys.stderr)
        return 1
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "sdist.tar.gz"
        with urllib.request.urlopen(found.group(1), timeout=300) as response, archive.open("wb") as fh:
            shutil.copyfileobj(response, fh)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SHA256:
            print(f"fetch_references: sha256 {digest} is not the pinned {SHA256}", file=sys.stderr)
            return 1
        staging = Path(tmp) / "llama.cpp"
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix(prefix)
                if member.name.startswith(prefix) and member.isfile() and rel.startswith(KEEP):
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, target.open("wb") as out:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(staging), dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
