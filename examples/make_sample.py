"""Writes chats.jsonl, the bundled sample dataset (deterministic: same file on every run).

Hand-written answers, combined into single- and multi-turn conversations, some with a system prompt.
Run: python examples/make_sample.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEMS = [
    "You are a concise assistant. Answer in one or two sentences.",
    "You are a friendly tutor who explains things simply.",
    "You are a helpful assistant for a small software team.",
    "You answer questions about science and geography accurately.",
]

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra, not Sydney."),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi."),
    ("What is the capital of Brazil?", "The capital of Brazil is Brasilia."),
    ("What is the capital of Norway?", "The capital of Norway is Oslo."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("How many continents are there?", "There are seven continents."),
    ("What gas do plants take in for photosynthesis?", "Plants take in carbon dioxide and release oxygen."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light, so the sky looks blue."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("What is the closest star to Earth?", "The Sun is the closest star to Earth."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe."),
    ("What does a GPU do?", "A GPU runs many small calculations in parallel, which suits graphics and neural networks."),
    ("What is LoRA?", "LoRA trains small low-rank matrices beside a frozen model instead of all of its weights."),
    ("What is an adapter in fine-tuning?", "An adapter is a small set of trained weights that changes a base model's behaviour."),
    ("What is a learning rate?", "The learning rate sets how big a step the optimizer takes on each update."),
    ("What is overfitting?", "Overfitting is when a model learns its training data too closely and does worse on new data."),
    ("What is a token?", "A token is a piece of text, often part of a word, that a language model reads."),
    ("What is SSH?", "SSH is a protocol for logging in to and running commands on a remote machine securely."),
    ("What port does SSH use?", "SSH uses TCP port 22 by default."),
    ("What is a checksum?", "A checksum is a short value computed from data to check that it arrived unchanged."),
    ("What is JSON?", "JSON is a text format for structured data built from objects, arrays, strings and numbers."),
    ("What does HTTP stand for?", "HTTP stands for Hypertext Transfer Protocol."),
    ("What is a Python list?", "A Python list is an ordered, changeable collection written with square brackets."),
    ("How do I reverse a list in Python?", "Use my_list.reverse() to reverse it in place, or my_list[::-1] for a reversed copy."),
    ("How do I read a file in Python?", "Open it with open(path) in a with block and call read() on the file object."),
    ("What is git?", "Git is a version control system that records changes to files over time."),
    ("How do I undo my last git commit?", "Run git reset --soft HEAD~1 to undo the commit and keep the changes staged."),
    ("What is a unit test?", "A unit test checks that one small piece of code behaves as expected."),
    ("What is Docker?", "Docker packages software with everything it needs into containers that run the same anywhere."),
    ("Give me a tip for better sleep.", "Keep a regular bedtime and avoid screens for an hour before sleep."),
    ("How can I focus better while working?", "Work in short blocks with breaks, and silence notifications while you work."),
    ("Suggest a name for a grey cat.", "How about Smokey, Ash or Pebble?"),
    ("What is a haiku?", "A haiku is a short poem of three lines with five, seven and five syllables."),
    ("Write a haiku about rain.", "Soft rain on the roof,\nthe garden drinks in silence,\nevening smells of earth."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("Translate 'good morning' into French.", "'Good morning' in French is 'bonjour'."),
    ("Translate 'cat' into German.", "'Cat' in German is 'Katze'."),
    ("What is the opposite of 'ancient'?", "The opposite of 'ancient' is 'modern'."),
    ("What is a synonym for 'happy'?", "A synonym for 'happy' is 'cheerful'."),
    ("Spell 'necessary'.", "N-E-C-E-S-S-A-R-Y."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
]

FOLLOW_UPS = [
    ("Can you say that more simply?", "Sure: {short}"),
    ("Thanks! Can you repeat the answer?", "Of course. {answer}"),
    ("Are you sure?", "Yes. {answer}"),
]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    op = rng.choice(["plus", "times", "minus"])
    value = {"plus": a + b, "times": a * b, "minus": a - b}[op]
    return f"What is {a} {op} {b}?", f"{a} {op} {b} is {value}."


def conversion(rng: random.Random) -> tuple[str, str]:
    km = rng.randint(1, 50)
    if rng.random() < 0.5:
        return f"How many metres are in {km} kilometres?", f"There are {km * 1000} metres in {km} kilometres."
    c = rng.randint(-10, 40)
    return f"What is {c} degrees Celsius in Fahrenheit?", f"{c} degrees Celsius is {c * 9 / 5 + 32:g} degrees Fahrenheit."


def counting(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(1, 10)
    return f"Write the number {n} as a word.", f"{n} is written '{NUMBER_WORDS[n]}'."


def conversation(rng: random.Random) -> dict:
    messages = []
    if rng.random() < 0.4:
        messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
    turns = rng.choices([1, 2, 3], weights=[5, 3, 2])[0]
    for _ in range(turns):
        kind = rng.random()
        if kind < 0.55:
            q, a = rng.choice(QA)
        elif kind < 0.75:
            q, a = arithmetic(rng)
        elif kind < 0.9:
            q, a = conversion(rng)
        else:
            q, a = counting(rng)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if len(messages) > 2 and rng.random() < 0.25:
        follow, reply = rng.choice(FOLLOW_UPS)
        last = messages[-1]["content"]
        messages += [{"role": "user", "content": follow},
                     {"role": "assistant", "content": reply.format(answer=last, short=last.split(",")[0].rstrip("."))}]
    return {"messages": messages}


def main() -> None:
    rng = random.Random(2026)
    rows = [conversation(rng) for _ in range(320)]
    out = Path(__file__).with_name("chats.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} conversations to {out}")


if __name__ == "__main__":
    main()
