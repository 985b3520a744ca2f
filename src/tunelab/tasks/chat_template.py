"""Chat templates: the built-in ChatML and Gemma turn formats, rendering a conversation, locating the assistant
turns in it, the end-of-turn ids generation stops at, and a conversation's generation prompt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tunelab.errors import ConfigError, DataError
from tunelab.tasks.chat_tools import SAID, TemplateRefusal, template_form
from tunelab.tasks.generation import decode_reply
from tunelab.tasks.reasoning import REASONING, writes_reasoning

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
GEMMA = (  # Gemma's turn format; a system message opens the first user turn (Gemma has no system role)
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n'"
    " + (system if loop.first else '') + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# name -> (template, its turn markers: special tokens, added to the vocabulary when missing)
TEMPLATES = {"chatml": (CHATML, ["<|im_start|>", "<|im_end|>"]), "gemma": (GEMMA, ["<start_of_turn>", "<end_of_turn>"])}


def render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool = False) -> str:
    """The conversation as the template writes it (a turn's `weight`, which says only whether it trains, left out), its
    tool calls and tools as transformers' templates take them (tasks/chat_tools.py: a `TemplateRefusal` where the
    template would leave them out)."""
    if any(REASONING in m for m in messages) and not writes_reasoning(tokenizer):
        raise TemplateRefusal(None, f"{REASONING}: the model's chat template does not write an assistant turn's "
                              "reasoning (Qwen3's writes it in a <think> block); use a model whose template does, "
                              "or leave the field out")
    messages, tools = template_form(tokenizer, messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         **({"tools": tools} if tools else {}))


def template_error(example: dict[str, Any], error: Exception) -> DataError:
    """A row the chat template could not render, in one line naming it: a `TemplateRefusal` names its own field; any
    other error is the template's (jinja's `roles must alternate`)."""
    if isinstance(error, TemplateRefusal):
        return DataError(example["source"], example["line"], error.field or example["field"], str(error))
    return DataError(example["source"], example["line"], example["field"], f"chat template: {error}")


@contextmanager
def row_named(example: dict[str, Any]) -> Iterator[None]:
    """Rendering `example`: an error of the template's raised as `template_error` (a ConfigError as it is)."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - jinja errors (e.g. roles must alternate) name the row
        raise template_error(example, e) from None


def assistant_spans(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of every assistant turn that trains (reply + end-of-turn;
    not one of `"weight": 0`)."""
    full = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        prefix = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        if not upto.startswith(prefix) or not full.startswith(prefix):
            raise ConfigError(NOT_PREFIX_STABLE)
        end = len(upto.rstrip()) if full.startswith(upto) else _turn_end(tokenizer, messages, i, full)
        if end > len(prefix):
            spans.append((len(prefix), end))
    return full, spans


def unwritten_reasoning(tokenizer: Any, messages: list[dict[str, Any]]) -> bool:
    """Whether the chat template leaves out an assistant turn's `reasoning_content` that the row gives (Qwen3's writes
    a think block only after the last user turn: an earlier turn's is not trained), told by rendering the
    conversation with a mark for each."""
    turns = [i for i, m in enumerate(messages) if m.get(REASONING)]
    if not turns:
        return False
    marks = {i: f"{MARK}{i}{MARK}" for i in turns}
    text = render(tokenizer, [{**m, REASONING: marks[i]} if i in marks else m for i, m in enumerate(messages)])
    return any(mark not in text for mark in marks.values())


NOT_PREFIX_STABLE = ("config: task.template: the chat template is not prefix-stable (rendering fewer turns is not a "
                     "prefix of rendering more); assistant tokens cannot be located")
MARK = "\u2063TURN-END\u2063"


def _turn_end(tokenizer: Any, messages: list[dict[str, Any]], i: int, full: str) -> int:
    """Where assistant turn `i` (its end-of-turn marker included) ends in `full`, for a template that writes a reply
    otherwise once more turns follow it: Qwen3's drops an earlier reply's `<think>` block, Phi-3's writes eos only
    after the last turn. The reply's end is found by rendering the conversation with a mark after its content (a
    tool-call turn's own text, `SAID`: its content is not written; Qwen3 then writes a `\n` before the calls, which
    `full` has not); the end-of-turn marker is what the turn rendered alone writes after its content, as far as `full`
    writes it too, in whole tokens, and only where that ends in a special token or whitespace: else the match ran into
    the next turn's header (`### end` after the last turn only, `### user:` after the others)."""
    field = SAID if "tool_calls" in messages[i] else "content"
    marked = [*messages[:i], {**messages[i], field: messages[i].get(field, "") + MARK}]
    alone = render(tokenizer, marked)
    whole = render(tokenizer, [*marked, *messages[i + 1:]])
    at, extra = whole.find(MARK), len(whole) - len(MARK) - len(full)  # extra: what the mark made it write after it
    rest = whole[at + len(MARK):]
    if (alone.count(MARK) != 1 or whole.count(MARK) != 1 or extra < 0 or whole[:at] != full[:at]
            or rest[extra:] != full[at:]):
        raise ConfigError(NOT_PREFIX_STABLE)
    tail = alone.split(MARK, 1)[1].rstrip()
    same = next((k for k, (a, b) in enumerate(zip(tail, rest, strict=False)) if a != b), min(len(tail), len(rest)))
    tokens = tokenizer(tail, add_special_tokens=False, return_offsets_mapping=True)
    ends = [(e, t) for t, (_, e) in zip(tokens["input_ids"], tokens["offset_mapping"], strict=True) if e <= same]
    same, last = ends[-1] if ends else (0, None)  # whole tokens: `<|end|>\n`, not `<|end|>\n<|`
    special = (set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)) - {tokenizer.unk_token_id}
    if same < extra or (same and last not in special and not tail[same - 1].isspace()):
        raise ConfigError(NOT_PREFIX_STABLE)
    return at + len(rest[:same].rstrip()) - extra


def builtin_template(tokenizer: Any, setting: str) -> str:
    """The built-in template for `task.template`: auto picks gemma when Gemma's turn markers are in the vocabulary."""
    if setting != "auto":
        return setting
    vocab = tokenizer.get_vocab()
    return "gemma" if all(t in vocab for t in TEMPLATES["gemma"][1]) else "chatml"


def adds_bos(tokenizer: Any) -> bool:
    """Whether plain tokenisation starts with BOS (the model was pretrained on BOS-led text: Llama, Gemma)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def completion_bos(tokenizer: Any) -> int | None:
    """The BOS id a raw-text prompt (serve's /v1/completions) starts with: where plain tokenisation adds it, as vLLM's
    completions tokenise a prompt (Llama, Gemma); else None. Not where only a chat template opens with the BOS token:
    SmolLM2's is `<|im_start|>`, its turn marker, which a raw prompt does not start with."""
    return tokenizer.bos_token_id if adds_bos(tokenizer) else None


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """eos plus the first special token the template puts after an assistant reply (e.g. <|im_end|>)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    marker = "\u2063REPLY\u2063"
    user = [{"role": "user", "content": "x"}]
    try:
        after = render(tokenizer, [*user, {"role": "assistant", "content": marker}]).split(marker, 1)[1]
    except Exception:  # noqa: BLE001 - a template may reject the probe conversation; eos alone then
        return ids
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    for t in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if t in special:
            return list(dict.fromkeys([t, *ids]))
    return ids


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the conversation rendered with the generation prompt (the assistant's turn opened)."""
    return tokenizer(render(tokenizer, messages, generation_prompt=True), add_special_tokens=False)["input_ids"]


def reply_index(messages: list[dict[str, Any]]) -> int | None:
    """The index of the reply a conversation is scored on: its last assistant turn that trains (not one of Axolotl's
    `"weight": 0`, which the model is not taught to write), else its last assistant turn; None without one."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return next((i for i in reversed(assistant) if messages[i].get("weight", 1) != 0), assistant[-1] if assistant
                else None)


def split_reply(messages: list[dict[str, Any]], tokenizer: Any = None) -> tuple[list[dict[str, Any]], str]:
    """(the turns before the reply scored, its reference): the last trained assistant turn (`reply_index`), generated
    from the conversation up to it; the turns after it are not part of the prompt. The reference is the turn's content
    — for a tool-call turn, given the `tokenizer`, what training taught the model to write for it: its calls as the
    chat template writes them (Qwen2.5's `<tool_call>` tags), decoded as a generated reply is (`decode_reply`: special
    tokens, the end-of-turn marker among them, left out), not the row's JSON."""
    last = reply_index(messages)
    if last is None:  # (a labelled row has one: tasks/sft_rows.py)
        raise ValueError("no assistant turn to score")
    before, reply = messages[:last], messages[last]
    if tokenizer is None or "tool_calls" not in reply:
        return before, reply["content"]
    prefix = render(tokenizer, before, generation_prompt=True)
    turn = render(tokenizer, messages[: last + 1])
    span = turn[len(prefix):] if turn.startswith(prefix) else turn  # (assistant_spans refuses a template that is not)
    return before, decode_reply(tokenizer, tokenizer(span, add_special_tokens=False)["input_ids"])


def chat_turns(task: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation sent to a model (`tunelab chat`, serve's chat endpoint, the web UI's playground) with its turns
    as the model trained on them (`Task.chat_turn`): every turn's text — system, user, assistant, a tool's result —
    as data.clean cleaned a row's, and only the last user turn filling sft's one-placeholder prompt_template, as
    training fills it with a row's last user turn (its history turns are plain); an assistant turn's reasoning
    cleaned as its content."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return [{**m, "content": task.chat_turn(m["content"], last=i == last),
             **{key: task.chat_turn(m[key], last=False) for key in (SAID, REASONING) if key in m}}
            for i, m in enumerate(messages)]
