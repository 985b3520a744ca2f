"""Instruction / chat supervised fine-tuning of causal language models (`task: sft`).

Rows, detected per row (or forced with `task.format`), all become a list of `{role, content}` messages:
alpaca `{instruction, input?, output}`, sharegpt `{conversations: [{from: human|gpt|system, value}]}`,
OpenAI `{messages: [{role: system|user|assistant, content}]}` and `{prompt, completion}`.

Template: the tokenizer's own `chat_template`; a model without one gets the built-in ChatML template (and
`<|im_start|>` / `<|im_end|>` as special tokens, embeddings resized), saved with the tokenizer.

Loss only on assistant tokens, for every assistant turn, end-of-turn marker included. The span of turn i
in the rendered text is render(messages[:i+1]) minus render(messages[:i], add_generation_prompt=True)
(trailing whitespace dropped); a token is trained when its character offsets overlap a span. Works for any
prefix-stable template (no `{% generation %}` markers needed).

Truncation (`data.max_length`): rows are cut at the end; the number cut is reported on stderr. A row whose
assistant tokens are all cut is a DataError naming file:line (nothing is dropped silently).

Evaluation: mean token cross-entropy over assistant tokens (`loss`) and `perplexity` = exp(loss), computed
per batch. Predict: greedy generation of the next assistant reply (`response`), stopped at the template's
end-of-turn token or eos.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from tunelab.config import TaskConfig
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError, DataError
from tunelab.tasks import TASKS
from tunelab.tasks.base import Example, Features, Task

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEMPLATES = {"chatml": (CHATML, ["<|im_start|>", "<|im_end|>"])}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion")
_DETECT = (("messages", "messages"), ("conversations", "sharegpt"), ("instruction", "alpaca"),
           ("prompt", "prompt_completion"))


class SftConfig(TaskConfig):
    name: Literal["sft"] = "sft"
    format: Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion"] = Field(
        "auto", description="Row format. auto: detected per row from its fields (messages, conversations, "
        "instruction, prompt); otherwise every row must have that format's fields."
    )
    template: Literal["auto", "chatml"] = Field(
        "auto", description="Chat template. auto: the tokenizer's own chat_template, ChatML when it has none; "
        "chatml: always the built-in ChatML template. A built-in template is saved with the tokenizer."
    )
    max_new_tokens: int = Field(128, ge=1, description="Predict: most tokens generated per reply (greedy).")


def _message(rec: Record, field: str, i: int, role: Any, content: Any, roles: dict[str, str]) -> dict[str, str]:
    if role not in roles:
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: unknown role {role!r} "
                        f"(expected {', '.join(roles)})")
    if not isinstance(content, str):
        raise DataError(rec.source, rec.line, field, f"turn {i + 1}: content is not a string: {type(content).__name__}")
    return {"role": roles[role], "content": content}


def _text(rec: Record, field: str, *, required: bool = True) -> str | None:
    if field not in rec.data or rec.data[field] is None:
        if required:
            raise DataError(rec.source, rec.line, field, "missing field")
        return None
    value = rec.data[field]
    if not isinstance(value, str):
        raise DataError(rec.source, rec.line, field, f"is not a string: {type(value).__name__}")
    return value


def row_messages(rec: Record, fmt: str, labelled: bool) -> tuple[str, list[dict[str, str]]]:
    """(field, messages) of one row; unlabelled rows may lack the final assistant turn."""
    if fmt == "auto":
        fmt = next((f for key, f in _DETECT if key in rec.data), "")
        if not fmt:
            raise DataError(rec.source, rec.line, None, "no messages, conversations, instruction or prompt field")
    if fmt in ("messages", "sharegpt"):
        field = "messages" if fmt == "messages" else "conversations"
        turns = rec.data.get(field)
        if field not in rec.data:
            raise DataError(rec.source, rec.line, field, "missing field")
        if not isinstance(turns, list) or not turns:
            raise DataError(rec.source, rec.line, field, "expected a non-empty list of turns")
        role_key, content_key = ("role", "content") if fmt == "messages" else ("from", "value")
        roles = {r: r for r in ROLES} if fmt == "messages" else SHAREGPT_ROLES
        msgs = []
        for i, t in enumerate(turns):
            if not isinstance(t, dict):
                raise DataError(rec.source, rec.line, field, f"turn {i + 1}: expected {{{role_key}, {content_key}}}")
            msgs.append(_message(rec, field, i, t.get(role_key), t.get(content_key), roles))
        if labelled and not any(m["role"] == "assistant" for m in msgs):
            raise DataError(rec.source, rec.line, field, "no assistant turn")
        return field, msgs
    if fmt == "alpaca":
        instruction = _text(rec, "instruction")
        extra = _text(rec, "input", required=False)
        output = _text(rec, "output", required=labelled)
        user = instruction + ("\n\n" + extra if extra else "")
        msgs = [{"role": "user", "content": user}]
        return "output", msgs + ([{"role": "assistant", "content": output}] if output is not None else [])
    prompt = _text(rec, "prompt")
    completion = _text(rec, "completion", required=labelled)
    msgs = [{"role": "user", "content": prompt}]
    return "completion", msgs + ([{"role": "assistant", "content": completion}] if completion is not None else [])


def render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of every assistant turn (reply + end-of-turn)."""
    full = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        if not upto.startswith(prefix) or not full.startswith(upto):
            raise ConfigError("config: task.template: the chat template is not prefix-stable (rendering fewer "
                              "turns is not a prefix of rendering more); assistant tokens cannot be located")
        end = len(upto.rstrip())
        if end > len(prefix):
            spans.append((len(prefix), end))
    return full, spans


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


@TASKS.register("sft")
class Sft(Task):
    Config = SftConfig
    auto_model_class = "AutoModelForCausalLM"
    cfg: SftConfig

    def __init__(self, cfg: SftConfig, data: Any) -> None:
        super().__init__(cfg, data)
        self._tokenizer: Any = None
        self.truncated = 0
        self.refuse_row_edits("not supported by task sft yet")
        if getattr(data, "truncation", "head") != "head":
            raise ConfigError("config: data.truncation: task sft cuts rows at the end (head) only")

    # -- data --------------------------------------------------------------------------------
    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        out = []
        text_field = self.data.text_field
        for rec in table.records:
            plain = not labelled and text_field in rec.data and not any(k in rec.data for k, _ in _DETECT)
            if plain:  # predict: one user message per row (`--input -`)
                field, msgs = text_field, [{"role": "user", "content": _text(rec, text_field)}]
            else:
                field, msgs = row_messages(rec, self.cfg.format, labelled)
            if not labelled:
                while msgs and msgs[-1]["role"] == "assistant":
                    msgs = msgs[:-1]
                if not msgs:
                    raise DataError(rec.source, rec.line, field, "nothing before the assistant reply")
            out.append({"messages": msgs, "field": field, "source": rec.source, "line": rec.line, "row": rec.data,
                        "labelled": labelled})
        return out

    # -- model -------------------------------------------------------------------------------
    def build_model(self, model_path: str, train: list[Example]) -> tuple[torch.nn.Module, Any]:
        from tokenizers import AddedToken
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if not tokenizer.is_fast:
            raise ConfigError(f"config: model: task sft needs a fast tokenizer (offset mapping); {model_path} has none")
        model = AutoModelForCausalLM.from_pretrained(model_path)
        if self.cfg.template != "auto" or not tokenizer.chat_template:
            name = "chatml" if self.cfg.template == "auto" else self.cfg.template
            template, specials = TEMPLATES[name]
            tokenizer.chat_template = template
            vocab = tokenizer.get_vocab()
            new = [AddedToken(t, special=True, normalized=False) for t in specials if t not in vocab]
            if new:
                tokenizer.add_tokens(new, special_tokens=True)
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        self._tokenizer = tokenizer
        feats, cut = [], 0
        limit = self.data.max_length
        for ex in examples:
            try:
                if not ex["labelled"]:  # the prompt for generation
                    text = render(tokenizer, ex["messages"], generation_prompt=True)
                    feats.append({"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]})
                    continue
                text, spans = assistant_spans(tokenizer, ex["messages"])
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - jinja errors (e.g. roles must alternate) name the row
                raise DataError(ex["source"], ex["line"], ex["field"], f"chat template: {e}") from None
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = enc["input_ids"]
            labels = [t if any(s < e_ and e > s_ for s_, e_ in spans) and e > s else -100
                      for t, (s, e) in zip(ids, enc["offset_mapping"], strict=True)]
            if len(ids) > limit:
                cut += 1
                ids, labels = ids[:limit], labels[:limit]
                if all(v == -100 for v in labels):
                    raise DataError(ex["source"], ex["line"], ex["field"],
                                    f"the assistant reply starts after data.max_length={limit} tokens; "
                                    "raise data.max_length or shorten the prompt")
            feats.append({"input_ids": ids, "labels": labels})
        self.truncated = cut
        if cut:
            print(f"sft: {cut} of {len(examples)} examples cut at data.max_length={limit} tokens "
                  "(their tail is not trained)", file=sys.stderr)
        return feats

    # -- scoring -----------------------------------------------------------------------------
    def logits(self, model: torch.nn.Module, features: Sequence[Features], collate: Callable[..., Any],
               batch_size: int) -> np.ndarray:
        """Labelled features: per example [sum of assistant-token NLL, token count], computed batch by batch
        (no (B, L, V) logits kept). Unlabelled: per example the generated token ids (object array)."""
        if features and "labels" not in features[0]:
            return self._generate(model, features, batch_size)
        from tunelab.engine import resolve_precision

        model.eval()
        device = next(model.parameters()).device
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision("auto", device))
        out = np.zeros((len(features), 2), dtype=np.float64)
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        with torch.no_grad():
            for s in range(0, len(order), batch_size):
                chunk = order[s: s + batch_size]
                batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk]).items()}
                labels = batch.pop("labels")
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    logits = model(**batch).logits
                target = labels[:, 1:]
                nll = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="none"
                )
                out[chunk, 0] = nll.sum(1).double().cpu().numpy()
                out[chunk, 1] = (target != -100).sum(1).cpu().numpy()
        return out

    def _generate(self, model: torch.nn.Module, features: Sequence[Features], batch_size: int) -> np.ndarray:
        """Greedy replies; a batch holds prompts of one length only, so no padding is ever needed."""
        tok = self._tokenizer
        stop = end_of_turn_ids(tok)
        model.eval()
        device = next(model.parameters()).device
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(features):
            groups.setdefault(len(f["input_ids"]), []).append(i)
        out = np.empty(len(features), dtype=object)
        with torch.no_grad():
            for idx in groups.values():
                for s in range(0, len(idx), batch_size):
                    chunk = idx[s: s + batch_size]
                    ids = torch.as_tensor([features[i]["input_ids"] for i in chunk], device=device)
                    gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                         max_new_tokens=self.cfg.max_new_tokens, eos_token_id=stop,
                                         pad_token_id=tok.pad_token_id)
                    for j, i in enumerate(chunk):
                        new = gen[j, ids.shape[1]:].tolist()
                        cut = next((k for k, t in enumerate(new) if t in stop), len(new))
                        out[i] = new[:cut]
        return out

    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        total, count = float(np.sum(logits[:, 0])), int(np.sum(logits[:, 1]))
        loss = total / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}

    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        tok = self._tokenizer
        return [{**ex["row"], "response": tok.decode(ids, skip_special_tokens=True).strip()}
                for ids, ex in zip(logits, examples, strict=True)]
