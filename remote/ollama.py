"""The Ollama Modelfile: a Go TEMPLATE that renders a conversation exactly as the model's own chat
template rendered it in training, and the stop words of its family.

A fixed ChatML or Llama-3 template would be wrong for every other model (a DeepSeek-R1 distill
served with ChatML turns answers garbage), and even within a family templates differ: Qwen2.5 adds
a default system prompt, Llama 3.1 a knowledge-date header, DeepSeek-R1 opens a ``<think>`` block,
Mistral puts the system prompt inside the last user turn, Gemma has no system role. So the template
is not guessed: the model's template is *probed* with marker turns, the literal text between the
turns is read off, and a Go template is assembled from those pieces. Before it is written, the
pieces are checked against the model's template on sample conversations; a template that does not
render plain alternating turns (or a family whose stop words rtrain does not know) is refused.

Tested by rendering the written TEMPLATE with Go's own ``text/template`` (Ollama's engine) against
real models' chat templates (tests/test_ollama_template.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: probe contents: plain words every template passes through unchanged
SYSTEM, USER1 = "RTRAINPROBESYSTEM", "RTRAINPROBEUSERONE"
ASSISTANT1, USER2 = "RTRAINPROBEANSWERONE", "RTRAINPROBEUSERTWO"

Messages = list[dict[str, str]]
Render = Callable[[Messages], str]


class TemplateRefused(ValueError):
    """No faithful Ollama template can be made from this chat template (the reason is the message)."""


@dataclass(frozen=True)
class Family:
    name: str
    #: text that identifies the family in a jinja chat template
    marker: str
    #: Ollama stop words: the end of an assistant turn and the start of the next
    stops: tuple[str, ...]


FAMILIES = (
    Family("ChatML", "<|im_start|>", ("<|im_end|>", "<|im_start|>")),
    Family("Llama 3", "<|start_header_id|>", ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")),
    Family("DeepSeek-R1", "<｜Assistant｜>", ("<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", "<｜User｜>",
                                           "<｜Assistant｜>")),
    Family("Gemma", "<start_of_turn>", ("<end_of_turn>", "<start_of_turn>")),
    Family("Mistral", "[INST]", ("</s>", "[INST]", "[/INST]")),
)

#: conversations every derived template must render exactly as the model's own does
CHECKS: list[Messages] = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "You answer in one line."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Name a colour.\nJust one."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another?"}],
    [{"role": "system", "content": "Be brief.\nBe kind."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Tell me a fact."},
     {"role": "assistant", "content": "Water boils at 100 C at sea level."}, {"role": "user", "content": "Thanks"}],
]


def _turns(*pairs: tuple[str, str]) -> Messages:
    return [{"role": r, "content": c} for r, c in pairs]


@dataclass(frozen=True)
class TurnTemplate:
    """A conversation as literal pieces between its turns (all read off the model's own template)."""

    family: Family
    head: str  # before the first user turn, with no system prompt
    #: around the system prompt: in place of ``head`` (``system_in_last_turn`` False) or right before
    #: the content of the last user turn (Mistral); None when the template has no system role
    system: tuple[str, str] | None
    system_in_last_turn: bool
    user_to_assistant: str
    assistant_to_user: str
    generation: str  # after the last user turn: the assistant's opening

    def render(self, messages: Messages) -> str:
        """What the Go template renders for ``messages`` (as Ollama passes them), in Python."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] in ("user", "assistant")]
        leading = self.system is not None and system and not self.system_in_last_turn
        out = f"{self.system[0]}{system}{self.system[1]}" if leading else self.head  # type: ignore[index]
        for i, m in enumerate(turns):
            if m["role"] == "user":
                out += self.assistant_to_user if i else ""
                if self.system is not None and system and self.system_in_last_turn and i == len(turns) - 1:
                    out += f"{self.system[0]}{system}{self.system[1]}"
            else:
                out += self.user_to_assistant
            out += m["content"]
        return out + self.generation

    def go_template(self) -> str:
        """The same as :meth:`render`, in Go's text/template over Ollama's ``.System`` and ``.Messages``
        (which holds the system messages too). Every literal is a quoted string action, so that no
        whitespace of the model's template is lost to the template's own layout."""
        q = _go_string
        if self.system is None:
            opening = q(self.head)
        elif self.system_in_last_turn:
            opening = q(self.head)
        else:
            opening = f"{{{{ if .System }}}}{q(self.system[0])}{{{{ .System }}}}{q(self.system[1])}" \
                      f"{{{{ else }}}}{q(self.head)}{{{{ end }}}}"
        last_system = ""
        if self.system is not None and self.system_in_last_turn:
            last_system = (f"{{{{ if and $.System (eq (len (slice $.Messages $i)) 1) }}}}{q(self.system[0])}"
                           f"{{{{ $.System }}}}{q(self.system[1])}{{{{ end }}}}")
        return (
            f"{opening}{{{{ $first := true }}}}"
            "{{ range $i, $m := .Messages }}"
            f"{{{{ if eq $m.Role \"user\" }}}}{{{{ if not $first }}}}{q(self.assistant_to_user)}{{{{ end }}}}"
            f"{last_system}{{{{ $m.Content }}}}{{{{ $first = false }}}}"
            f"{{{{ else if eq $m.Role \"assistant\" }}}}{q(self.user_to_assistant)}{{{{ $m.Content }}}}"
            "{{ $first = false }}{{ end }}{{ end }}"
            f"{q(self.generation)}"
        )


def _go_string(text: str) -> str:
    """A Go template string action printing ``text`` (JSON's escapes are valid Go string escapes)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def _between(text: str, start: str, end: str) -> str:
    i = text.index(start) + len(start)
    return text[i:text.index(end, i)]


def derive(render: Render, chat_template: str) -> TurnTemplate:
    """Read a TurnTemplate off a chat template by rendering marker conversations with ``render`` (the
    trainer's own rendering, generation prompt on, BOS dropped). TemplateRefused when the template is
    of no family rtrain knows the stops of, or does not render plain alternating turns."""
    family = next((f for f in FAMILIES if f.marker in chat_template), None)
    if family is None:
        raise TemplateRefused("the model's chat template is of no family rtrain can write an Ollama template for "
                              f"({', '.join(f.name for f in FAMILIES)}); use the GGUF adapter with llama.cpp's "
                              "--jinja, which reads the template itself")
    try:
        one = render(_turns(("user", USER1)))
        two = render(_turns(("user", USER1), ("assistant", ASSISTANT1), ("user", USER2)))
        head, generation = one.split(USER1)
        if not two.startswith(head + USER1) or not two.endswith(USER2 + generation):
            raise ValueError("the turns are not rendered one after another")
        ua, au = _between(two, USER1, ASSISTANT1), _between(two, ASSISTANT1, USER2)
        system, in_last = _system_pieces(render, head, ua, au, generation)
    except (ValueError, KeyError) as exc:
        raise TemplateRefused(f"the model's {family.name} chat template does not render plain alternating turns "
                              f"({exc}): no Ollama template can be derived from it") from None
    derived = TurnTemplate(family, head, system, in_last, ua, au, generation)
    for messages in CHECKS:
        if system is None and any(m["role"] == "system" for m in messages):
            continue
        if derived.render(messages) != render(messages):
            raise TemplateRefused(f"the model's {family.name} chat template renders some conversations in a way "
                                  "rtrain cannot reproduce in an Ollama template (it rewrites turns)")
    return derived


def _system_pieces(render: Render, head: str, ua: str, au: str,
                   generation: str) -> tuple[tuple[str, str] | None, bool]:
    """Where the system prompt goes: (before, after) it, and whether inside the last user turn."""
    try:
        with_system = render(_turns(("system", SYSTEM), ("user", USER1)))
    except Exception:  # noqa: BLE001 - a template that raises on a system turn (Gemma) has no system role
        return None, False
    if SYSTEM not in with_system:
        return None, False
    opening = with_system[:with_system.index(USER1)]
    before, after = opening.split(SYSTEM)
    full = render(_turns(("system", SYSTEM), ("user", USER1), ("assistant", ASSISTANT1), ("user", USER2)))
    if full == f"{opening}{USER1}{ua}{ASSISTANT1}{au}{USER2}{generation}":
        return (before, after), False
    if opening.startswith(head) and full == f"{head}{USER1}{ua}{ASSISTANT1}{au}{opening[len(head):]}{USER2}" \
                                           f"{generation}":
        return (before[len(head):], after), True
    raise ValueError("the system prompt is placed where rtrain cannot follow")


def tokenizer_render(tokenizer: Any) -> Render:
    """Render as the trainer did in training (the tokenizer's template, generation prompt on), without
    the BOS text a template may start with (llama.cpp and Ollama add BOS as a token themselves)."""
    bos = getattr(tokenizer, "bos_token", None) or ""

    def render(messages: Messages) -> str:
        text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return text[len(bos):] if bos and text.startswith(bos) else text

    return render


#: hub model names -> Ollama model names, for the Modelfile's FROM
OLLAMA_BASES = {"qwen3-0.6b": "qwen3:0.6b", "qwen3-1.7b": "qwen3:1.7b", "qwen3-4b": "qwen3:4b",
                "qwen3-8b": "qwen3:8b", "qwen3-14b": "qwen3:14b", "qwen3-32b": "qwen3:32b",
                "qwen3-30b-a3b": "qwen3:30b", "meta-llama-3.1-8b-instruct": "llama3.1:8b",
                "llama-3.1-8b-instruct": "llama3.1:8b", "llama-3.1-70b-instruct": "llama3.1:70b",
                "deepseek-r1-distill-qwen-32b": "deepseek-r1:32b", "mistral-7b-instruct-v0.3": "mistral:7b"}
#: sampling defaults written into the Modelfile (the seed project's serving settings)
TEMPERATURE, TOP_P = 0.7, 0.9


def modelfile_text(turns: TurnTemplate, base: str, adapter_gguf: str) -> str:
    """An Ollama Modelfile: FROM the base, ADAPTER the GGUF, the derived TEMPLATE and its stops."""
    ollama = OLLAMA_BASES.get(base.rsplit("/", 1)[-1].lower())
    lines = ["# Ollama Modelfile written by rtrain. Create the model with: ollama create NAME -f Modelfile",
             f"# TEMPLATE: read off the base's own {turns.family.name} chat template (turns render as in training)"]
    if turns.system is None:
        lines.append("# the base's chat template has no system role: a SYSTEM prompt is not used")
    if ollama:
        lines.append(f"FROM {ollama}")
    else:
        lines += ["# FROM needs the base model as GGUF (llama.cpp's convert_hf_to_gguf.py makes one)",
                  "FROM ./base.gguf"]
    lines += [f"ADAPTER ./{adapter_gguf}", f'TEMPLATE """{turns.go_template()}"""']
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in turns.family.stops]
    lines += [f"PARAMETER temperature {TEMPERATURE}", f"PARAMETER top_p {TOP_P}"]
    return "\n".join(lines) + "\n"
