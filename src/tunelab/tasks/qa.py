"""Extractive question answering (SQuAD v1.1 / v2.0 style), English or Chinese.

Rows: `{id, context, question, answers: {text: [...], answer_start: [...]}}` (JSONL; `answers` may also
be a list of `{text, answer_start}`), or a SQuAD JSON file (`{"data": [{"paragraphs": [...]}]}`).
`answer_start` must point at the answer in the context (`context[s:s+len(text)] == text`); -1 marks an
answer that is not located in the context, allowed outside training (scored on its text only). Empty
`answers` make a question unanswerable; a model trained with such questions may answer "" (when the
[CLS] score beats the best span's by more than `task.null_threshold`).

Long contexts become windows of `data.max_length` tokens overlapping by `task.doc_stride` (the question,
cut to `task.max_question_length` tokens, repeats in each). A training window that does not hold the
whole answer points at [CLS] (position 0). Decoding takes, per window, the `task.n_best` best start and
end positions within the context, keeps pairs with start ≤ end < start + `task.max_answer_length`, and
picks the best-scoring span over all windows; its character offsets come from the tokenizer's offset
mapping, so `context[start:end] == answer` always. Features outnumber examples, so each carries its
`example_index` (and its `offset_mapping`, neither of which reaches the model).

Predict returns each input row plus `{answer, score, start, end}` (score: the answer's probability among
the n-best candidates; start/end: character offsets in the context, null for "").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from transformers import AutoTokenizer

from tunelab.config.sections import TaskConfig
from tunelab.data.readers import Record, Table, require_field, require_text
from tunelab.errors import ConfigError, DataError
from tunelab.metrics.qa import qa_metrics, score, style
from tunelab.models.aliases import as_named
from tunelab.registry import TASKS
from tunelab.tasks import qa_report
from tunelab.tasks.base import Example, Features, Task, head_lengths, pad_batch
from tunelab.tasks.label_head import head_modules
from tunelab.tasks.losses import soft_kl
from tunelab.tasks.model_rows import with_row
from tunelab.text.offsets import offset_hint

_SHAPE = 'expected {"text": [...], "answer_start": [...]} or a list of {"text", "answer_start"}'


class QaConfig(TaskConfig):
    name: Literal["qa"] = "qa"
    label_setting: ClassVar[str] = "task.answers_field"  # (not data.label_field: refused, config/run.py)
    context_field: str = Field("context", description="Column holding the context passage.")
    question_field: str = Field("question", description="Column holding the question.")
    answers_field: str = Field(
        "answers", description="Column holding the answers: {text: [...], answer_start: [...]}; empty = unanswerable."
    )
    doc_stride: int = Field(
        128, ge=0, description="Tokens shared by consecutive windows of a long context (data.max_length each)."
    )
    max_question_length: int = Field(64, ge=1, description="Questions longer than this many tokens are cut.")
    max_answer_length: int = Field(30, ge=1, description="Longest predicted answer, in tokens.")
    n_best: int = Field(20, ge=1, description="Best start and end positions per window combined into candidate spans.")
    null_threshold: float = Field(
        0.0, allow_inf_nan=True, description="Unanswerable training data only: answer \"\" when the [CLS] score "
        "exceeds the best span's score by more than this (.inf: never answer \"\")."
    )
    bidirectional: bool = Field(
        False, description="Decoder models (gemma3-270m, smollm2-135m): attend to later tokens too (non-causal "
        "attention); an error for encoders, which already do."
    )


@TASKS.register("qa")
class Qa(Task):
    Config = QaConfig
    auto_model_class = "AutoModelForQuestionAnswering"
    over_length = "split into windows of the context, nothing cut"  # (task.doc_stride)
    export_formats = ("onnx", "torch")
    compressible = True
    onnx_outputs = ("start_logits", "end_logits")
    grouped_by = "context"
    cfg: QaConfig

    def __init__(self, cfg: QaConfig, data: Any) -> None:
        super().__init__(cfg, data)
        self.unanswerable = False  # the training data had unanswerable questions: "" is a possible answer
        self.refuse_row_edits("not supported by task qa (answer offsets index the context as it is)")
        if getattr(data, "truncation", "head") != "head":
            raise ConfigError("config: data.truncation: task qa always cuts long contexts into windows "
                              "(see task.doc_stride)")
        room = data.max_length - cfg.max_question_length - 4  # 4: the most special tokens of a pair
        if cfg.doc_stride >= room > 1 and getattr(data, "_cut_from", None):  # a loaded model's inputs cut to its
            self.cfg = cfg = cfg.model_copy(update={"doc_stride": room // 2})  # positions: its windows' stride too
        if cfg.doc_stride >= room:
            raise ConfigError(f"config: task.doc_stride: {cfg.doc_stride} leaves windows no room to advance; it "
                              f"must be < data.max_length - task.max_question_length - 4 = {room}")

    # -- data --------------------------------------------------------------------------------
    def input_fields(self) -> tuple[str, ...]:
        return (self.cfg.question_field, self.cfg.context_field)

    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        out = []
        for rec in table.records:
            context = require_text(rec, self.cfg.context_field, table.columns)
            ex: Example = {"context": context,
                           "question": require_text(rec, self.cfg.question_field, table.columns),
                           "source": rec.source, "line": rec.line, "row": rec.data}
            # (a SQuAD v2 question flattened, `is_impossible` and no answers: unanswerable, as data/jsonl.py reads
            # the nested form)
            flat_v2 = self.cfg.answers_field not in rec.data and rec.data.get("is_impossible") is True
            if labelled:
                ex["answers"] = [] if flat_v2 else self._answers(rec, context, table.columns)
            out.append(ex)
        return out

    def _answers(self, rec: Record, context: str, columns: list[str] | None) -> list[tuple[str, int]]:
        field = self.cfg.answers_field
        value = require_field(rec, field, columns)

        def fail(problem: str) -> DataError:
            return DataError(rec.source, rec.line, field, problem)

        if isinstance(value, dict):
            texts, starts = value.get("text"), value.get("answer_start")
            if not isinstance(texts, list) or not isinstance(starts, list):
                raise fail(_SHAPE)
            if len(texts) != len(starts):
                raise fail(f"{len(texts)} answer texts for {len(starts)} answer_start values")
            pairs = list(zip(texts, starts, strict=True))
        elif isinstance(value, list):
            if not all(isinstance(a, dict) and "text" in a and "answer_start" in a for a in value):
                raise fail(_SHAPE)
            pairs = [(a["text"], a["answer_start"]) for a in value]
        else:
            raise fail(_SHAPE)
        out = []
        for k, (text, start) in enumerate(pairs, start=1):
            if not isinstance(text, str) or not text.strip():
                raise fail(f"answer {k}: expected non-empty text, got {text!r}")
            if isinstance(start, bool) or not isinstance(start, int):
                raise fail(f"answer {k}: answer_start must be an integer, got {start!r}")
            if start != -1:
                found = context[start : start + len(text)] if start >= 0 else ""
                if found != text:
                    hint = offset_hint(context, text, start, "answer_start", "answer")
                    raise fail(f"answer {k} {text!r} does not match the context at answer_start {start} "
                               f"(the context there: {found!r}){hint}; fix the offset, or use -1 outside training")
            out.append((text, start))
        return out

    def group_key(self, example: Example) -> str:
        """The context, the paragraph a question would leak (not the article `title`: a one-article SQuAD file of 20
        paragraphs had one group, and two articles of 1000 rows one at 0.1 held out half): a validation question is
        never about a paragraph trained on."""
        return str(example["context"])

    def check_train(self, examples: list[Example]) -> None:
        for ex in examples:
            if any(start < 0 for _, start in ex["answers"]):
                raise DataError(ex["source"], ex["line"], self.cfg.answers_field,
                                "answer_start -1 (answer not located in the context) is allowed only outside "
                                "training; training needs the answer's offset")
        if not any(ex["answers"] for ex in examples):
            raise DataError(examples[0]["source"], None, self.cfg.answers_field, "training data has no answers")

    # -- model -------------------------------------------------------------------------------
    def build_model(self, model_path: str, train: list[Example]) -> tuple[torch.nn.Module, Any]:

        self.unanswerable = any(not ex["answers"] for ex in train)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(f"config: model: task qa needs a fast tokenizer (offset mapping); {as_named(model_path)} "
                              "has none")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        from tunelab.models.decoder_heads import load_head  # (transformers' model code: once a model is built)

        model = load_head(self.auto_model_class, model_path)
        model.config.pad_token_id = tokenizer.pad_token_id
        return self.optimize(model), tokenizer

    def optimize(self, model: torch.nn.Module) -> torch.nn.Module:
        from tunelab.models.decoder_heads import make_bidirectional

        return make_bidirectional(model) if self.cfg.bidirectional else model

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        return head_modules(model)

    def unlabeled_example(self, example: Example) -> Example:
        return {**example, "answers": []}

    def ignore_targets(self, batch: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Answer positions past the window: the QA loss clamps them to its width and ignores that index."""
        width = batch["input_ids"].shape[1]
        return {**batch, **{k: batch[k].masked_fill(rows, width) for k in ("start_positions", "end_positions")}}

    def soft_target_loss(self, student: Any, teacher: Any, batch: dict[str, torch.Tensor], temperature: float,
                         divergence: str = "kl") -> torch.Tensor:
        """Start and end distributions over the window's positions (padding excluded), averaged."""
        pad = batch["attention_mask"] == 0
        return sum(soft_kl(getattr(student, k).masked_fill(pad, -1e4), getattr(teacher, k).masked_fill(pad, -1e4),
                           temperature, divergence=divergence) for k in ("start_logits", "end_logits")) / 2

    def _questions(self, examples: Sequence[Example], tokenizer: Any) -> list[str]:
        """Questions cut to `max_question_length` tokens (at a token's end, by character offset)."""
        questions = [ex["question"] for ex in examples]
        limit = self.cfg.max_question_length
        enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        return [q if len(ids) <= limit else q[: offsets[limit - 1][1]]
                for q, ids, offsets in zip(questions, enc["input_ids"], enc["offset_mapping"], strict=True)]

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        if not examples:
            return []
        enc = tokenizer(self._questions(examples, tokenizer), [ex["context"] for ex in examples],
                        truncation="only_second", max_length=self.data.max_length, stride=self.cfg.doc_stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
        feats: list[Features] = []
        for j, i in enumerate(enc["overflow_to_sample_mapping"]):
            seq = enc.sequence_ids(j)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][j], seq, strict=True)]
            f: Features = {"input_ids": enc["input_ids"][j], "example_index": i, "offset_mapping": offsets}
            if "token_type_ids" in enc:
                f["token_type_ids"] = enc["token_type_ids"][j]
            if "answers" in examples[i]:
                f["start_positions"], f["end_positions"] = answer_positions(examples[i]["answers"], offsets)
            feats.append(f)
        return feats

    def collate(self, features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
        """The padded batch (offsets and example indices stay behind) plus the answer positions."""
        batch = pad_batch(features, pad_id)
        if "start_positions" in features[0]:
            batch["start_positions"] = torch.as_tensor([f["start_positions"] for f in features])
            batch["end_positions"] = torch.as_tensor([f["end_positions"] for f in features])
        return batch

    # -- scoring -----------------------------------------------------------------------------
    def logits(self, model: torch.nn.Module, features: Sequence[Features], collate: Callable[..., Any],
               batch_size: int) -> np.ndarray:
        """Per example, the list of its windows as (logits [tokens, 2] = start, end; offset mapping)."""
        raw = super().logits(model, features, collate, batch_size)
        n = max((f["example_index"] for f in features), default=-1) + 1
        per: list[list[tuple[np.ndarray, list[Any]]]] = [[] for _ in range(n)]
        for f, lg in zip(features, raw, strict=True):
            per[f["example_index"]].append((lg, f["offset_mapping"]))
        out = np.empty(n, dtype=object)
        for i, windows in enumerate(per):
            out[i] = windows
        return out

    def decode(self, windows: Sequence[tuple[np.ndarray, list[Any]]], context: str) -> dict[str, Any]:
        return best_span(windows, context, self.cfg.n_best, self.cfg.max_answer_length,
                         self.cfg.null_threshold if self.unanswerable else None)

    def metric_names(self) -> tuple[str, ...]:  # (has_answer_ / no_answer_: a split with unanswerable questions)
        kinds = ("has_answer", "no_answer")
        return ("f1", "exact_match", "n", *(f"{k}_{m}" for k in kinds for m in ("f1", "exact_match", "n")))

    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        preds = [self.decode(w, ex["context"])["answer"] for w, ex in zip(logits, examples, strict=True)]
        golds = [[t for t, _ in ex["answers"]] for ex in examples]
        return qa_metrics(preds, golds, [style(g, ex["context"]) for g, ex in zip(golds, examples, strict=True)])

    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        return [with_row(ex["row"], self.decode(w, ex["context"])) for w, ex in zip(logits, examples, strict=True)]

    def records(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Gold answer texts and the predicted answer; score: the question's F1 (metrics/qa.py `style`: SQuAD's,
        CMRC 2018's for Chinese, per character for Japanese), max over the golds; correct: exact match."""
        out = []
        for w, ex in zip(logits, examples, strict=True):
            pred, golds = self.decode(w, ex["context"])["answer"], [t for t, _ in ex["answers"]]
            em, f1 = score(pred, golds, style(golds, ex["context"]))
            out.append({"text": ex["question"] + "\n" + ex["context"], "gold": golds, "prediction": pred,
                        "correct": bool(em), "score": f1, "question": ex["question"]})
        return out

    def metadata(self) -> dict[str, Any]:
        return {"unanswerable": self.unanswerable}

    def load_metadata(self, meta: dict[str, Any]) -> None:
        self.unanswerable = bool(meta.get("unanswerable", False))

    # -- what reports ask ------------------------------------------------------------------------
    def example_text(self, example: Example) -> str:
        return example["question"] + "\n" + example["context"]

    def token_lengths(self, tokenizer: Any, examples: Sequence[Example]) -> list[int]:
        if not examples:
            return []
        return self.in_chunks(examples, lambda part, _: head_lengths(
            tokenizer, [ex["question"] for ex in part], [ex["context"] for ex in part], self.length_cap()))

    count_kind = "answer"

    def length_note(self) -> str:
        return "longer contexts become several windows"

    def label_counts(self, examples: Sequence[Example] = (), records: Sequence[dict[str, Any]] = ()) -> Counter[str]:
        return Counter("answerable" if ex["answers"] else "unanswerable" for ex in examples)

    def dedup_keys(self, example: Example) -> tuple[str, str]:
        """QA has no data.dedup: question + context, case and whitespace folded."""
        key = example["question"] + "\t" + example["context"]
        return key, " ".join(key.lower().split())

    def report_results(self, records: Sequence[dict[str, Any]], metrics: dict[str, Any],
                       generations: Sequence[dict[str, Any]] | None = None) -> str:
        return qa_report.results(records, metrics)


def answer_positions(answers: list[tuple[str, int]], offsets: list[tuple[int, int] | None]) -> tuple[int, int]:
    """Token positions of the first answer in one window, or (0, 0) ([CLS]) when the window does not hold
    all of it (or there is no located answer)."""
    if not answers or answers[0][1] < 0:
        return 0, 0
    text, char_start = answers[0]
    char_end = char_start + len(text)
    ctx = [k for k, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > char_start or offsets[ctx[-1]][1] < char_end:
        return 0, 0
    start = next(k for k in ctx if offsets[k][1] > char_start)  # the token holding the answer's first char
    end = next(k for k in reversed(ctx) if offsets[k][0] < char_end)  # ... and its last char
    return start, max(start, end)


def best_span(windows: Sequence[tuple[np.ndarray, list[Any]]], context: str, n_best: int, max_answer_length: int,
              null_threshold: float | None = None) -> dict[str, Any]:
    """The best answer over all windows of one example: per window the `n_best` highest start and end
    logits among context tokens, pairs with start ≤ end < start + max_answer_length, score = start + end
    logit. `null_threshold` (unanswerable allowed): "" when the lowest [CLS] score over the windows beats
    the best span by more than it. `score`: softmax probability among the n-best candidates (and "")."""
    spans: dict[tuple[int, int], float] = {}
    null = np.inf
    for logits, offsets in windows:
        start_lg, end_lg = logits[:, 0], logits[:, 1]
        null = min(null, float(start_lg[0] + end_lg[0]))
        ctx = np.asarray([k for k, o in enumerate(offsets[: len(logits)]) if o is not None], dtype=int)
        if not len(ctx):
            continue
        starts = ctx[np.argsort(-start_lg[ctx], kind="stable")[:n_best]]
        ends = ctx[np.argsort(-end_lg[ctx], kind="stable")[:n_best]]
        for a in starts:
            for b in ends:
                if a <= b < a + max_answer_length:
                    key = _strip_space(context, offsets[a][0], offsets[b][1])
                    s = float(start_lg[a] + end_lg[b])
                    if key[0] < key[1] and s > spans.get(key, -np.inf):  # not a lone space token
                        spans[key] = s
    ranked = sorted(spans.items(), key=lambda kv: -kv[1])[:n_best]
    scores = [s for _, s in ranked] + ([null] if null_threshold is not None and np.isfinite(null) else [])
    probs = np.exp(np.asarray(scores) - max(scores)) if scores else np.zeros(0)
    probs = probs / probs.sum() if len(probs) else probs
    if ranked and (null_threshold is None or null - ranked[0][1] <= null_threshold):
        (s, e), _ = ranked[0]
        return {"answer": context[s:e], "score": round(float(probs[0]), 6), "start": s, "end": e}
    return {"answer": "", "score": round(float(probs[-1]), 6) if len(probs) else 0.0, "start": None, "end": None}


def _strip_space(context: str, start: int, end: int) -> tuple[int, int]:
    """A span without the leading space that SentencePiece/BPE tokens (`▁word`, `Ġword`) carry in their offsets."""
    while start < end and context[start].isspace():
        start += 1
    return start, end
