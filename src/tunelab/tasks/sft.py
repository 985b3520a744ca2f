"""Instruction / chat supervised fine-tuning of causal language models (`task: sft`).

Rows, detected per row (or forced with `task.format`), all become a list of `{role, content}` messages:
alpaca `{instruction, input?, output, history?}`, sharegpt `{conversations: [{from: human|gpt|system, value}]}`,
OpenAI `{messages: [{role: system|user|assistant, content}]}` and `{prompt, completion}`; a `system` column opens
any of them (tasks/sft_rows.py), and so do an alpaca `history` and a `system` column of rows read through
`task.prompt_template`. LLaMA-Factory's tool use — `function_call` / `observation` turns, a `tools` column — is
rendered as the model's template takes it, or refused where it would leave it out (tasks/sft_tools.py).

Template: the tokenizer's own `chat_template`; a model without one gets a built-in template, saved with the
tokenizer: Gemma's `<start_of_turn>` / `<end_of_turn>` format when those tokens are in the vocabulary (Gemma
base models, whose embeddings for them exist), else ChatML (`<|im_start|>` / `<|im_end|>` added as special
tokens, embeddings resized). Either starts with the BOS token when the tokenizer adds one by default. Added
tokens are `Task.new_token_ids`: LoRA / DoRA train just their embedding (and untied output) rows.

Loss only on assistant tokens, for every assistant turn (not one of `"weight": 0`), end-of-turn marker included.
The span of turn i in the rendered text is render(messages[:i+1]) minus render(messages[:i], add_generation_prompt=True)
(trailing whitespace dropped); a token is trained when its character offsets overlap a span. Works for any
prefix-stable template (no `{% generation %}` markers needed), and for one that writes a reply otherwise once more
turns follow it (Qwen3's think block, Phi-3's final eos: chat_template._turn_end).

Training loss: cross-entropy over the trained positions only (tasks/causal_loss.py); `task.packing` packs
several examples per training row (tasks/packing.py).

Truncation (`data.max_length`, tasks/sft_truncation.py): rows are cut at the end (`data.truncation: head`), or first
lose the middle of their longest user / system messages (`head+tail`: LLaMA-Factory's infer_seqlen budget for the last
reply against the rest, a middle cut of tunelab's own); the
number cut is reported on stderr. A row whose assistant tokens are all cut is a DataError naming file:line (nothing
is dropped silently).

Evaluation: mean token cross-entropy over assistant tokens (`loss`) and `perplexity` = exp(loss), computed
per batch. Predict: generation of the next assistant reply (`response`; `task.generation`, greedy by
default), stopped at the template's end-of-turn token or eos. Generation metrics: evaluation/generation.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from tokenizers import AddedToken
from transformers import AutoTokenizer

from tunelab.config.sections import TaskConfig
from tunelab.data.hygiene import clean_text
from tunelab.data.prompt_template import check_template, template_fields, template_messages
from tunelab.data.readers import Record, Table
from tunelab.errors import ConfigError, DataError
from tunelab.metrics.perplexity import perplexity_metrics
from tunelab.models.aliases import as_named
from tunelab.models.precision import autocast_dtype
from tunelab.progress import say
from tunelab.registry import TASKS
from tunelab.tasks import sft_peers, sft_report
from tunelab.tasks.base import Example, Features, Task, head_lengths, pad_batch
from tunelab.tasks.causal_loss import (
    causal_lm_loss,
    eval_batches,
    eval_tokens,
    example_nll,
    trained_count,
)
from tunelab.tasks.chat_template import (
    TEMPLATES,
    adds_bos,
    assistant_spans,
    builtin_template,
    end_of_turn_ids,
    render,
    row_named,
    unwritten_reasoning,
)
from tunelab.tasks.generation import GenerationConfig, decode_reply, generate, model_stop_ids
from tunelab.tasks.model_rows import model_rules, with_row
from tunelab.tasks.packing import check_isolated, collate_packed, pack
from tunelab.tasks.reasoning import REASONING, reply_of, thinks
from tunelab.tasks.sft_distill import open_end_spans, sft_distill_loss, teacher_prompts, teacher_replies
from tunelab.tasks.sft_prompts import fitted_prompts, prompt_room
from tunelab.tasks.sft_report import sft_records
from tunelab.tasks.sft_rows import DETECT, row_messages, row_text, template_row
from tunelab.tasks.sft_tools import with_tools
from tunelab.tasks.sft_truncation import Cuts, reply_cuts
from tunelab.text import rules_version

PROMPT_OF = "prompt_of"  # an unlabelled feature's example (its messages: the prompt to fit)


class SftConfig(TaskConfig):
    name: Literal["sft"] = "sft"
    format: Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion"] = Field(
        "auto", description="Row format. auto: detected per row from its fields (messages, conversations, "
        "instruction, prompt); otherwise every row must have that format's fields."
    )
    template: Literal["auto", "chatml", "gemma"] = Field(
        "auto", description="Chat template. auto: the tokenizer's own chat_template; without one, gemma when the "
        "vocabulary has Gemma's <start_of_turn>/<end_of_turn> (Gemma base models), else ChatML. chatml / gemma: "
        "always that built-in template. A built-in template starts with the BOS token when the tokenizer adds "
        "one, and is saved with the tokenizer."
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="Reply generation for predict, eval and chat (greedy by "
        "default), and generation metrics in train's final evaluation (eval_generate)."
    )
    prompt_template: str | None = Field(
        None, description="Build the user turn from the row's fields, e.g. 'Translate into Chinese:\\n{source}' "
        "({field} placeholders); the reply is task.response_field. A row's system column becomes a system message "
        "and its history pairs ([[user, assistant], ...], as LLaMA-Factory's alpaca rows have them) the turns before "
        "it, unless the template names {system} / {history}; a tools column goes to the chat template unless it "
        "names {tools}. Overrides task.format."
    )
    response_field: str | None = Field(None, description="With prompt_template: the column holding the reply.")
    packing: bool = Field(
        False, description="Training: pack several examples into each row of up to data.max_length tokens "
        "(best-fit decreasing; positions restart and attention stays within each example). train.batch_size "
        "then counts packed rows. Not with prefix or prompt tuning. Evaluation is never packed."
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_max_new_tokens(cls, values: Any) -> Any:
        """`task.max_new_tokens` (model directories saved before task.generation) → generation.max_new_tokens."""
        if isinstance(values, dict) and "max_new_tokens" in values:
            values = dict(values)
            values["generation"] = {"max_new_tokens": values.pop("max_new_tokens"), **(values.get("generation") or {})}
        return values

    @model_validator(mode="after")
    def _check_template(self) -> SftConfig:
        check_template(self.prompt_template, self.response_field)
        return self


@TASKS.register("sft")
class Sft(Task):
    Config = SftConfig
    auto_model_class = "AutoModelForCausalLM"
    export_formats = ("gguf",)
    training_cuts_said = True  # a row cut at data.max_length still trains, less its tail: train says how many
    headline = "loss"  # perplexity_metrics: the loss first
    paired_parts = staticmethod(sft_report.paired_parts)  # compare: the token-weighted loss
    peer_stage = "sft"  # LLaMA-Factory's
    peer_dataset = staticmethod(sft_peers.dataset_settings)  # its dataset_info.json entries, as task settings
    peer_row = staticmethod(sft_peers.joined_row)  # several datasets' rows as messages rows of one file
    peer_joined = sft_peers.JOINED
    # LLaMA-Factory's infer_seqlen budget (it applies it per turn and keeps each prompt's head; tunelab once, for the
    # last reply against the rest, cutting the middle: tasks/sft_truncation.py)
    peer_task = {"data.truncation": "head+tail"}
    cfg: SftConfig

    def __init__(self, cfg: SftConfig, data: Any) -> None:
        super().__init__(cfg, data)
        self._tokenizer: Any = None
        self.truncated = 0
        self._cuts = (Cuts(0, "head"), 0)  # the last `encode`'s, and its examples (`cut_note`)
        self._unwritten: set[str] = set()  # files whose earlier turns' reasoning the template leaves out: said once
        self.refuse_row_edits("not supported by task sft (no classes to balance; word edits would corrupt replies)",
                              ("sampling", "augment"))
        if getattr(data, "truncation", "head") not in ("head", "head+tail"):
            raise ConfigError(f"config: data.truncation: {data.truncation}: task sft cuts a row at its end (head), or "
                              "first the middle of its prompt (head+tail)")

    # -- data --------------------------------------------------------------------------------
    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        out = []
        text_field = self.data.text_field
        template = self.cfg.prompt_template  # one that names {tools} has them in its user turn: not given again
        # (since text rules 4: a run trained by rules 3 had them given to the chat template too; read again as it was)
        tools = template is None or "tools" not in template_fields(template) or rules_version() < 4
        for rec in table.records:
            plain = not labelled and text_field in rec.data and not any(k in rec.data for k, _ in DETECT)
            if self.cfg.prompt_template is not None:  # the row's fields fill the user turn
                field, msgs = template_row(rec, self.cfg.prompt_template, self.cfg.response_field or "", labelled,
                                           text_field)
            elif plain:  # predict: one user message per row (`--input -`)
                field, msgs = text_field, [{"role": "user", "content": row_text(rec, text_field)}]
            else:
                field, msgs = row_messages(rec, self.cfg.format, labelled)
            msgs = with_tools(rec, msgs) if tools else msgs  # a `tools` column, in a row of any format
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
        from tunelab.models.decoder_heads import causal_lm  # (transformers' model code: once a model is built)
        tokenizer = self.load_tokenizer(model_path)
        model = causal_lm(model_path, "task sft", "use a causal LM (smollm2-135m, gemma3-270m, a hub decoder)")
        rows = model.get_input_embeddings().num_embeddings
        if len(tokenizer) > rows:  # every row the resize creates is new, not only the template's markers
            model.resize_token_embeddings(len(tokenizer))
            self.new_token_ids = sorted({*self.new_token_ids, *range(rows, len(tokenizer))})
        if self.cfg.packing:
            check_isolated(model)
        return model, tokenizer

    def load_tokenizer(self, model_path: str) -> Any:
        """The model's fast tokenizer with the chat template of `task.template`: its own, or a built-in one whose
        markers are added as special tokens (never split; found by end_of_turn_ids; existing ids are kept)."""
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if not tokenizer.is_fast:
            raise ConfigError("config: model: task sft needs a fast tokenizer (offset mapping); "
                              f"{as_named(model_path)} has none")
        if self.cfg.template != "auto" or not tokenizer.chat_template:
            template, specials = TEMPLATES[builtin_template(tokenizer, self.cfg.template)]
            tokenizer.chat_template = ("{{ bos_token }}" if adds_bos(tokenizer) else "") + template
            vocab = tokenizer.get_vocab()
            tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials],
                                 special_tokens=True)
            self.new_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in specials if t not in vocab]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encodes_in_parts(self, examples: Sequence[Example]) -> bool:
        return not self.cfg.packing  # packing fills rows across examples

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        self.bind_tokenizer(tokenizer)
        feats, cuts = [], Cuts(self.data.max_length, self.data.truncation)  # rows over max_length: sft_truncation.py
        for ex in examples:
            if not ex["labelled"]:  # the prompt for generation
                with row_named(ex):
                    text = render(tokenizer, ex["messages"], generation_prompt=True)
                # (the example beside its ids: _generate fits the prompt to the model's room)
                feats.append({"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"], PROMPT_OF: ex})
                continue
            feats.append(cuts.fit(tokenizer, ex, lambda msgs, ex=ex: self._rendered(tokenizer, ex, msgs)))
        self.truncated, self._cuts = cuts.rows, (cuts, len(examples))
        return feats

    def cut_note(self) -> str | None:
        cuts, examples = self._cuts
        return cuts.note(examples) if cuts.rows else None

    def training_parts(self, examples: Sequence[Example], tokenizer: Any) -> Iterator[tuple[list[Features], int]]:
        total = Cuts(self.data.max_length, self.data.truncation)  # encoded part by part: `cut_note` of them all
        for part in super().training_parts(examples, tokenizer):
            total.add(self._cuts[0])
            yield part
        self.truncated, self._cuts = total.rows, (total, len(examples))

    def _rendered(self, tokenizer: Any, ex: Example, messages: list[dict[str, Any]]) -> tuple[str, list[Any]]:
        """The example's `messages` (its own, or with prompt middles cut) rendered, with the spans that train."""
        with row_named(ex):
            text, spans = assistant_spans(tokenizer, messages)
            if ex["source"] not in self._unwritten and unwritten_reasoning(tokenizer, messages):
                self._unwritten.add(ex["source"])
                say(f"note: {ex['source']}: {REASONING} of an assistant turn the chat template leaves out (Qwen3's "
                    f"writes it only after the last user turn) is not trained (e.g. line {ex['line']})")
            if ex.get("open_end"):  # a teacher's reply cut at max_new_tokens: its end-of-turn is not trained
                last = messages[-1]
                spans = open_end_spans(text, spans, last["content"], last.get(REASONING))
        return text, spans

    def reply_cuts(self, examples: Sequence[Example], tokenizer: Any) -> list[tuple[int, bool, bool]]:
        """data check: each labelled example as encode fits it into data.max_length (sft_truncation.reply_cuts)."""
        return reply_cuts(tokenizer, list(examples), self.data.max_length, self.data.truncation,
                          lambda ex, msgs: self._rendered(tokenizer, ex, msgs))

    # -- training: loss on trained positions only, optional packing ----------------------------
    def check_method(self, method: str) -> None:
        if self.cfg.packing and method in ("prefix", "prompt"):
            raise ConfigError(f"config: task.packing: {method} tuning cannot be packed (its virtual tokens "
                              "would be shared by every example of a row); set task.packing: false")

    def train_features(self, features: list[Features]) -> list[Features]:
        return pack(features, self.data.max_length) if self.cfg.packing else features

    def collate(self, features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_packed(features, pad_id) if "position_ids" in features[0] else pad_batch(features, pad_id)

    def loss_fn(self) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
        return causal_lm_loss

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        return trained_count(batch)

    def distill_step(self, model: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
                     hard: Callable[..., torch.Tensor] | None, temperature: float, alpha: float,
                     divergence: str = "kl") -> torch.Tensor:
        """Token-level logit distillation at the reply positions (tasks/sft_distill.py)."""
        return sft_distill_loss(model, teacher, batch, temperature, alpha, divergence)

    def unlabeled_examples(self, examples: Sequence[Example], teacher: torch.nn.Module,
                           tokenizer: Any) -> list[Example]:
        """Unlabelled prompts with the teacher's replies (sequence-level distillation; tasks/sft_distill.py)."""
        if self.data.truncation == "head+tail":  # a prompt too long for a reply loses its middle, as in training
            examples = teacher_prompts(examples, tokenizer, self.data.max_length, self.cfg.generation.max_new_tokens)
        prompts = [f["input_ids"] for f in self.encode(examples, tokenizer)]  # unlabelled: the generation prompt
        return teacher_replies(examples, prompts, teacher, tokenizer, self.cfg.generation,
                               self.stop_ids(tokenizer, teacher), self.data.max_length)

    # -- scoring -----------------------------------------------------------------------------
    def logits(self, model: torch.nn.Module, features: Sequence[Features], collate: Callable[..., Any],
               batch_size: int) -> np.ndarray:
        """Labelled features: per example [sum of assistant-token NLL, token count], computed batch by batch
        from the logits of the trained positions only (at most 2048 per forward; tasks/causal_loss.py).
        Unlabelled: per example the generated token ids (object array)."""
        if features and "labels" not in features[0]:
            return self._generate(model, features, batch_size)

        model.eval()
        device = next(model.parameters()).device
        dtype = autocast_dtype(device, model=model)
        out = np.zeros((len(features), 2), dtype=np.float64)
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        with torch.no_grad():
            trained = [sum(v != -100 for v in f["labels"][1:]) for f in features]
            lengths = [len(f["input_ids"]) for f in features]
            for chunk in eval_batches(order, trained, batch_size, lengths=lengths, max_tokens=eval_tokens(device)):
                batch = {k: v.to(device) for k, v in collate([features[i] for i in chunk]).items()}
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    sums, counts = example_nll(model, batch)  # logits of the trained positions only
                out[chunk, 0] = sums.cpu().numpy()
                out[chunk, 1] = counts.cpu().numpy()
        return out

    def _generate(self, model: torch.nn.Module, features: Sequence[Features], batch_size: int) -> np.ndarray:
        """Replies as `task.generation` says (tasks/generation.py generate: left-padded batches), to the prompts fitted
        to data.max_length and the model's room for the reply (tasks/sft_prompts.py)."""
        tok, gen = self._tokenizer, self.cfg.generation
        out = np.empty(len(features), dtype=object)
        room = prompt_room(model, self.data.max_length, gen.max_new_tokens)
        prompts = fitted_prompts(tok, [(f[PROMPT_OF], f[PROMPT_OF]["messages"], f["input_ids"]) for f in features],
                                 room, "predict")
        replies = generate(model, tok, prompts, gen, batch_size, self.stop_ids(tok, model))
        for i, reply in enumerate(replies):
            out[i] = reply
        return out

    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        return perplexity_metrics(logits)

    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Each row with its `response`; a model whose template thinks (Qwen3's) its `reasoning` beside it, the think
        block out of the response (tasks/reasoning.py; null: none)."""
        tok, think = self._tokenizer, thinks(self._tokenizer)
        replies = [reply_of(tok, decode_reply(tok, ids)) for ids in logits]
        return [with_row(ex["row"], {"response": reply, **({"reasoning": reasoning} if think else {})})
                for (reply, reasoning), ex in zip(replies, examples, strict=True)]

    def records(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Prompt, reference reply and per-example loss (see sft_records)."""
        return sft_records(logits, examples, self._tokenizer)

    # -- what reports, baselines, chat and eval ask ----------------------------------------------
    generates_replies = True
    baselines = "language_model"

    def chat_turn(self, line: str, last: bool = True) -> str:
        """A chat turn's text as training had it: cleaned by data.clean (every turn's, a tool's result too); the
        conversation's last user turn (`last`; not one before it, as a row's history turns are) filled into a
        one-placeholder prompt_template."""
        template, clean = self.cfg.prompt_template, getattr(self.data, "clean", None)  # as training turns were
        if last and template is not None and len(template_fields(template)) == 1:
            _, msgs = template_messages(Record("<chat>", 0, {template_fields(template)[0]: line}), template,
                                        self.cfg.response_field or "", labelled=False)
            line = msgs[0]["content"]
        with model_rules(self):  # by the text rules the model trained by
            return clean_text(line, clean, layout=True) if clean is not None else line

    def example_text(self, example: Example) -> str:
        return "\n".join(m["content"] for m in example["messages"] if m["role"] != "assistant")

    def token_lengths(self, tokenizer: Any, examples: Sequence[Example]) -> list[int]:
        return self.in_chunks(examples, lambda part, _: head_lengths(
            tokenizer, [render(tokenizer, ex["messages"]) for ex in part], None, self.length_cap(),
            add_special_tokens=False))

    def length_note(self) -> str:
        return ("rows first lose the middle of their longest prompt messages, then are cut at the end"
                if self.data.truncation == "head+tail" else "rows are cut at the end")

    def report_results(self, records: Sequence[dict[str, Any]], metrics: dict[str, Any],
                       generations: Sequence[dict[str, Any]] | None = None) -> str:
        return sft_report.results(records, metrics, generations)

    def stop_ids(self, tokenizer: Any, model: Any) -> list[int]:
        """The template's end of turn and eos (`end_of_turn_ids`), and the model's own eos ids (Llama 3.1's <|eom_id|>,
        which ends a tool call: `model_stop_ids`)."""
        return model_stop_ids(model, end_of_turn_ids(tokenizer))
