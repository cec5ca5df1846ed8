"""A tiny chat model built from nothing, for offline runs and tests: ``python -m remote.tiny_model DIR``.

A Qwen2-architecture causal LM (2 layers, hidden size 64, a few hundred thousand parameters) with a
byte-level BPE tokenizer trained on the given text files and a ChatML chat template, saved with
``save_pretrained`` so that ``from_pretrained(DIR)`` loads it like any hub model. It gets a few dozen
steps of full pre-training on the same text (seconds on a CPU), so that it is a language model of
sorts rather than noise: a LoRA fine-tune on it then shows a loss that really falls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from remote.formats import CHATML_TEMPLATE, example_text, read_examples

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
#: transformers' Qwen2Tokenizer PRETOKENIZE_REGEX
QWEN2_PRETOKENIZE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                     r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


def corpus(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        for _line, _fmt, example in read_examples(path):
            if "messages" in example:
                for m in example["messages"]:
                    yield f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
            else:
                yield example_text(example)


def build_tokenizer(paths: list[Path], vocab_size: int) -> object:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Qwen2's own pipeline (transformers' Qwen2Tokenizer rebuilds it on load, whatever tokenizer.json
    # says): so the file and what the trainer tokenizes with agree, and the launcher's count with it
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(paths), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        chat_template=CHATML_TEMPLATE, model_max_length=4096,
    )


def say(message: str) -> None:
    """A progress line for whoever waits (the launcher shows ``progress:`` lines as they come)."""
    print(f"progress: {message}", file=sys.stderr, flush=True)


def pretrain(model: object, tokenizer: object, data: list[Path], steps: int, seed: int) -> None:
    """A few full-parameter steps of next-token prediction on the rendered text."""
    import torch

    texts = list(corpus(data))
    ids = [tokenizer(t)["input_ids"][:128] for t in texts]  # type: ignore[operator]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id  # type: ignore[attr-defined]
    for step in range(steps):
        if step % 10 == 0:
            say(f"pre-training it so a fine-tune has something to improve: step {step}/{steps}")
        batch = [ids[i] for i in torch.randint(len(ids), (16,), generator=gen).tolist()]
        width = max(len(b) for b in batch)
        x = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        for row, b in enumerate(batch):
            x[row, : len(b)] = torch.tensor(b)
            labels[row, : len(b)] = torch.tensor(b)
        loss = model(input_ids=x, labels=labels, attention_mask=(labels != -100).long()).loss  # type: ignore[operator]
        loss.backward()
        opt.step()
        opt.zero_grad()


def build_tiny_model(out: Path, data: list[Path], vocab_size: int = 1024, seed: int = 0,
                     pretrain_steps: int = 40) -> Path:
    say("loading torch and transformers")
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    say(f"training a {vocab_size}-token BPE tokenizer on {', '.join(p.name for p in data)}")
    tokenizer = build_tokenizer(data, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    pretrain(model, tokenizer, data, pretrain_steps, seed)
    say(f"pre-training done: saving it to {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        params = sum(p.numel() for p in model.parameters())
        (staging / "rtrain_tiny.json").write_text(json.dumps({"parameters": params, "vocab_size": len(tokenizer)}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.tiny_model", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the model into")
    parser.add_argument("--data", type=Path, action="append", required=True, help="JSONL text for the tokenizer")
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    out = build_tiny_model(args.out, args.data, args.vocab_size)
    info = json.loads((out / "rtrain_tiny.json").read_text())
    print(f"tiny model: {out} ({info['parameters']:,} parameters, vocabulary {info['vocab_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
