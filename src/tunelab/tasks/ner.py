"""Token classification (NER), English word-level or Chinese character-level.

Rows: `{"tokens": [...], "tags": [...]}` (JSONL), CoNLL column files, or a text with its entities as character spans
(CLUENER, doccano, spaCy, Label Studio: tasks/ner_spans.py). BIO, IOB1, BIOES/BMES and BILOU tags
are normalised to BIO; the label set comes from train and is saved with the model. Subwords: the first
subword of a word carries its label, the rest are ignored (`task.label_all_subwords` labels them too).
A word the tokenizer drops entirely (or cut by max_length) is predicted `O`.

Predict takes pre-tokenised rows or raw `{"text": ...}` (split into words and punctuation, Chinese
into characters) and returns entity spans `{type, text, start, end, token_start, token_end}`: `start`/`end` index
the input text (`text[start:end] == span`; a pre-tokenised row's `text` field where its tokens are found there in
order, else the tokens joined as `text.join_tokens` says — a character-level Chinese row without anything
between — which the output then carries as `text`), `token_start`/`token_end` the tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from transformers import AutoTokenizer

from tunelab.config.sections import TaskConfig, TrainConfig
from tunelab.data.advice import near_label
from tunelab.data.readers import Record, Table, require_field, row_has
from tunelab.errors import DataError
from tunelab.metrics.ner import bio_viterbi, entity_metrics, spans
from tunelab.registry import TASKS
from tunelab.tasks import ner_report
from tunelab.tasks.base import CHARS_PER_TOKEN, Example, Features, Task
from tunelab.tasks.label_head import continued_head, head_modules, tuned_labels
from tunelab.tasks.losses import LossSpec, class_weights, make_loss_fn, soft_kl
from tunelab.tasks.model_rows import with_row
from tunelab.tasks.ner_spans import Changed, span_example, span_key
from tunelab.text import join_tokens

_TAG = re.compile(r"^([BIESMLU])-(.+)$")  # BIO, IOB1, BIOES / BMES, BILOU (L-, U-: E-, S-)


class NerConfig(TaskConfig):
    scoring_only: ClassVar[frozenset[str]] = frozenset({"strict", "decoding"})
    name: Literal["ner"] = "ner"
    label_setting: ClassVar[str] = "task.tags_field"  # (not data.label_field: refused, config/run.py)
    cuts_at_end: ClassVar[str] = ("cuts a row longer than data.max_length at its end: the words past it are tagged O "
                                  "({truncation} is classification's)")  # data.truncation refused: config/run.py
    tokens_field: str = Field("tokens", description="Column holding the list of tokens.")
    tags_field: str = Field("tags", description="Column holding the list of tags (BIO, IOB1, BIOES/BMES or BILOU).")
    label_all_subwords: bool = Field(False, description="Label every subword, not only the first of a word.")
    strict: bool = Field(False, description="Score with seqeval's strict IOB2 mode.")
    decoding: Literal["bio", "argmax"] = Field(
        "bio", description="bio: the most probable tag sequence that is valid BIO (I-X only after B-X or I-X; "
        "Viterbi over each word's log-probabilities, tunelab.metrics.ner.bio_viterbi); argmax: each word's most "
        "probable tag on its own."
    )
    bidirectional: bool = Field(
        False, description="Decoder models (gemma3-270m, smollm2-135m): attend to later tokens too (non-causal "
        "attention); an error for encoders, which already do."
    )


def to_bio(tags: list[str], record: Record, field: str) -> list[str]:
    """BIOES/BMES/BILOU/IOB1 → BIO; an I- that does not continue an entity of its type starts one."""
    out: list[str] = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            ids = " (a tag id, as HF datasets stores ner_tags: write its name, B-PER ...)" * isinstance(tag, int)
            raise DataError(record.source, record.item_line(i), field, f"tag {i + 1} is not a string: {tag!r}{ids}")
        if tag == "O":
            out.append("O")
            continue
        m = _TAG.match(tag)
        if not m:
            raise DataError(record.source, record.item_line(i), field, f"invalid tag {tag!r} at token {i + 1}")
        kind, typ = m.groups()
        inside = kind in ("I", "E", "M", "L") and out and out[-1] in (f"B-{typ}", f"I-{typ}")
        if inside and not (i > 0 and tags[i - 1].startswith(("S-", "E-", "U-", "L-"))):
            out.append(f"I-{typ}")
        else:
            out.append(f"B-{typ}")
    return out


@TASKS.register("ner")
class Ner(Task):
    Config = NerConfig
    auto_model_class = "AutoModelForTokenClassification"
    export_formats = ("onnx", "torch")
    compressible = True
    onnx_outputs = ("logits",)
    paired_parts = staticmethod(ner_report.paired_parts)  # compare: the corpus entity F1
    txt_as_conll = True  # a CoNLL file named .txt is read as CoNLL (`data.conll.looks_like_conll`)
    # HF's run_ner.py text_column_name / label_column_name: the word and tag lists
    peer_renamed = {"data.text_field": "task.tokens_field", "data.label_field": "task.tags_field"}
    cfg: NerConfig

    def __init__(self, cfg: NerConfig, data: Any) -> None:
        super().__init__(cfg, data)
        self.labels: list[str] = []
        self._trained_on: list[str] = []  # the training split's entity types (`check_train`)
        self._loss: LossSpec | None = None
        self._cut = [0, 0]
        self._changed = Changed()  # what reading span rows changed (`read_counts`)

    # -- data --------------------------------------------------------------------------------
    def _tokens(self, rec: Record, columns: list[str] | None) -> list[str]:
        plain = rec.data.keys() == {"text"} and rec.source.lower().endswith(".txt")  # (`Task.txt_as_conll`: not CoNLL)
        if plain and self.cfg.tokens_field not in rec.data:
            raise DataError(rec.source, rec.line, self.cfg.tokens_field, "a .txt read as plain text: its lines are not "
                            "CoNLL's, a token and its tag (`EU B-ORG`, a blank line between sentences); name a CoNLL "
                            "file .conll (a bad line is then named), or write JSONL rows {\"tokens\": [...], "
                            "\"tags\": [...]}")
        if self.cfg.tokens_field not in rec.data and columns is None and self.data.text_field in rec.data:
            raise DataError(rec.source, rec.line, self.cfg.tokens_field, f"missing field ({row_has(rec.data)}): a row "
                            "is tokens + tags, or a text with its entities as character spans under label, labels or "
                            "entities (CLUENER, doccano, spaCy; docs/tasks.md)")
        tokens = require_field(rec, self.cfg.tokens_field, columns)
        if not isinstance(tokens, list) or not tokens:
            raise DataError(rec.source, rec.line, self.cfg.tokens_field, "expected a non-empty list of tokens")
        for i, t in enumerate(tokens):  # a space is a token of a character-level row (no subword: predicted O)
            if not isinstance(t, str) or not t:
                raise DataError(rec.source, rec.item_line(i), self.cfg.tokens_field,
                                f"token {i + 1} is not a non-empty string: {t!r}")
        return tokens

    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        out = []
        self._changed.source = table.source
        for rec in table.records:
            key = span_key(rec.data, self.data.text_field) if self.cfg.tokens_field not in rec.data else None
            if key or not labelled and self.cfg.tokens_field not in rec.data and self.data.text_field in rec.data:
                # a text and its entities as spans; or (to predict on) a raw text: its words, as a span row's
                out.append(span_example(rec, key or "", self.data.text_field, labelled, self._changed))
                continue
            ex: Example = {"tokens": self._tokens(rec, table.columns), "source": rec.source, "line": rec.line,
                           "row": rec.data}
            if rec.first_item_line is not None:  # a CoNLL sentence: each word's own line (an unseen tag names it)
                ex["first_item_line"] = rec.first_item_line
            if labelled:
                tags = require_field(rec, self.cfg.tags_field, table.columns)
                if not isinstance(tags, list):
                    raise DataError(rec.source, rec.line, self.cfg.tags_field, "expected a list of tags")
                if len(tags) != len(ex["tokens"]):
                    raise DataError(rec.source, rec.line, self.cfg.tags_field,
                                    f"{len(tags)} tags for {len(ex['tokens'])} tokens")
                ex["tags"] = to_bio(tags, rec, self.cfg.tags_field)
            out.append(ex)
        return out

    def check_train(self, examples: list[Example]) -> None:
        if not any(t != "O" for ex in examples for t in ex["tags"]):  # (a span row's field: label, entities ...)
            raise DataError(examples[0]["source"], None, examples[0].get("tags_from", self.cfg.tags_field),
                            "training data has no entities")
        self._trained_on = sorted({t[2:] for ex in examples for t in ex["tags"] if t != "O"})

    def check_labels(self, examples: Sequence[Example], model_path: str) -> None:
        """The tags `build_model` gives the model: a tuned model's, then O, B- and I- of the training split's types."""
        known = tuned_labels(model_path, "ForTokenClassification") + ["O"] + [
            f"{p}-{t}" for t in self._trained_on for p in ("B", "I")]
        index = {n: i for i, n in enumerate(dict.fromkeys(known))}
        for ex in examples:
            if "tags" in ex:
                self._check_tags(ex, index)

    def read_counts(self) -> dict[str, tuple[int, str]]:
        return self._changed.take()

    # -- model -------------------------------------------------------------------------------
    def build_model(self, model_path: str, train: list[Example]) -> tuple[torch.nn.Module, Any]:
        """The tags of the training data (O, then B- and I- of each type); continuing a tuned NER model, its own tags
        first, in its order, and the new types' after them (the head grown: tasks/label_head.py)."""
        from tunelab.models.decoder_heads import load_head  # (transformers' model code: once a model is built)

        types = sorted({t[2:] for ex in train for t in ex["tags"] if t != "O"})
        wanted = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
        model, self.labels = continued_head(partial(load_head, self.auto_model_class, model_path), model_path,
                                            "ForTokenClassification", wanted, self.head_modules)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return self.optimize(model), tokenizer

    def optimize(self, model: torch.nn.Module) -> torch.nn.Module:
        from tunelab.models.decoder_heads import make_bidirectional

        return make_bidirectional(model) if self.cfg.bidirectional else model

    def configure_loss(self, train: TrainConfig, examples: list[Example]) -> dict[str, Any]:
        """Token-level cross-entropy with class weights (per BIO tag; a mapping may name an entity type
        for both its B- and I- tags), focal loss and label smoothing; counts are of word-level tags."""
        counts = Counter(t for ex in examples for t in ex["tags"])
        types = {label[2:] for label in self.labels if label != "O"}
        aliases = {t: [f"B-{t}", f"I-{t}"] for t in types}
        weights = class_weights(train.class_weights, self.labels, counts, len(examples), False, aliases)
        custom = weights is not None or train.focal_gamma or train.label_smoothing
        self._loss = LossSpec(False, weights, train.focal_gamma, train.label_smoothing) if custom else None
        if self._loss is None:
            return {"type": "model"}
        shown = dict(zip(self.labels, (round(w, 6) for w in weights), strict=True)) if weights else None
        return {"type": "token_" + self._loss.kind(), "class_weights": shown,
                "focal_gamma": train.focal_gamma, "label_smoothing": train.label_smoothing}

    def loss_fn(self) -> Any:
        return make_loss_fn(self._loss) if self._loss is not None else None

    def unlabeled_example(self, example: Example) -> Example:
        """Placeholder tags ("O"): they mark each word's first piece, the positions the soft loss reads."""
        return {**example, "tags": ["O"] * len(example["tokens"])}

    def soft_target_loss(self, student: Any, teacher: Any, batch: dict[str, torch.Tensor], temperature: float,
                         divergence: str = "kl") -> torch.Tensor:
        """Per token, on the tokens that carry a word's tag (the first piece of each word)."""
        return soft_kl(student.logits, teacher.logits, temperature, batch["labels"] != -100, divergence)

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        return head_modules(model)

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        self._cut = [0, 0]  # rows cut by max_length, and their words past it (`cut_note`)
        return self.in_chunks(examples, lambda part, _: self._encode(part, tokenizer))

    def length_note(self) -> str:
        return "rows are cut at the end, the words past max_length tagged O"

    def cut_note(self) -> str | None:
        rows, words = self._cut
        if not rows:  # said: their entities would otherwise go missing without a word
            return None
        return (f"ner: {rows} row{'s' * (rows > 1)} longer than data.max_length ({self.data.max_length} tokens): "
                f"{words} word{'s' * (words > 1)} past it tagged O (split long texts into sentences)")

    def _encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        enc = tokenizer([ex["tokens"] for ex in examples], is_split_into_words=True, truncation=True,
                        max_length=self.data.max_length)
        index = {n: i for i, n in enumerate(self.labels)}
        feats: list[Features] = []
        for i, ex in enumerate(examples):
            word_ids = enc.word_ids(i)
            ex["word_ids"] = word_ids  # decoding maps subword logits back to words
            if len(enc["input_ids"][i]) >= self.data.max_length and (  # cut, not words dropped
                    left := len(ex["tokens"]) - 1 - max((w for w in word_ids if w is not None), default=-1)) > 0:
                self._cut = [self._cut[0] + 1, self._cut[1] + left]
            f: Features = {"input_ids": enc["input_ids"][i]}
            if "token_type_ids" in enc:
                f["token_type_ids"] = enc["token_type_ids"][i]
            if "tags" in ex:
                self._check_tags(ex, index)
                f["labels"] = self._align(ex, word_ids, index)
            feats.append(f)
        return feats

    def _check_tags(self, ex: Example, index: dict[str, int]) -> None:
        """Every word's tag is one the model trained on, past max_length too (scored there as a miss), else a
        DataError at the word's own line (CoNLL; else the row's)."""
        for i, tag in enumerate(ex["tags"]):
            if tag not in index:
                first = ex.get("first_item_line")
                raise DataError(ex["source"], ex["line"] if first is None else first + i,
                                ex.get("tags_from", self.cfg.tags_field),
                                f"tag {tag!r} is not among the training tags" + near_label(tag, index))

    def _align(self, ex: Example, word_ids: list[int | None], index: dict[str, int]) -> list[int]:
        labels, previous = [], None
        for w in word_ids:
            if w is None:
                labels.append(-100)
            elif w != previous:
                labels.append(index[ex["tags"][w]])
            elif self.cfg.label_all_subwords:
                tag = ex["tags"][w]
                labels.append(index["I-" + tag[2:]] if tag != "O" else index["O"])
            else:
                labels.append(-100)
            previous = w
        return labels

    # -- scoring -----------------------------------------------------------------------------
    def word_tags(self, logits: np.ndarray, ex: Example) -> list[str]:
        """Each word's tag from its first subword (`task.decoding`); words without subwords are `O`."""
        first: dict[int, int] = {}
        for pos, w in enumerate(ex["word_ids"]):
            if w is not None and w not in first and pos < len(logits):
                first[w] = pos
        if self.cfg.decoding == "argmax":
            tags = ["O"] * len(ex["tokens"])
            for w, pos in first.items():
                tags[w] = self.labels[int(np.argmax(logits[pos]))]
            return tags
        scores = np.full((len(ex["tokens"]), len(self.labels)), -np.inf)
        scores[:, self.labels.index("O") if "O" in self.labels else slice(None)] = 0.0  # no subword: O
        if first:
            rows = np.nan_to_num(logits[list(first.values())].astype(np.float64), nan=-1e30, posinf=1e30, neginf=-1e30)
            from scipy.special import log_softmax

            scores[list(first)] = log_softmax(rows, axis=-1)
        path = bio_viterbi(scores, self.labels)
        return [self.labels[k] if w in first else "O" for w, k in enumerate(path)]

    def metric_names(self) -> tuple[str, ...]:
        return ("f1", "precision", "recall", "token_accuracy", "n")

    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        pred = [self.word_tags(lg, ex) for lg, ex in zip(logits, examples, strict=True)]
        return entity_metrics([ex["tags"] for ex in examples], pred, strict=self.cfg.strict)

    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        out = []
        for lg, ex in zip(logits, examples, strict=True):
            tags = self.word_tags(lg, ex)
            joined: dict[str, Any] = {}
            if "offsets" in ex:
                text, offsets = ex["raw_text"], ex["offsets"]
            elif found := _in_text(ex, self.data.text_field):  # pre-tokenised: offsets into the row's own text
                text, offsets = found
            else:  # else into the tokens joined (text.join_tokens), which the output then carries
                text, offsets = join_tokens(ex["tokens"])
                joined = {self.data.text_field: text}
            entities = [{"type": typ, "text": text[offsets[s][0]:offsets[e - 1][1]], "start": offsets[s][0],
                         "end": offsets[e - 1][1], "token_start": s, "token_end": e} for typ, s, e in spans(tags)]
            out.append(with_row(ex["row"], {**joined, "pred_tags": tags, "entities": entities}))
        return out

    def records(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Gold and predicted BIO tags per token; score: the sentence's entity F1 (exact type and span;
        1.0 when neither has entities); correct: the same entities."""
        out = []
        for lg, ex in zip(logits, examples, strict=True):
            pred = self.word_tags(lg, ex)
            g, p = set(spans(ex["tags"])), set(spans(pred))
            f1 = 1.0 if not g and not p else 2 * len(g & p) / (len(g) + len(p))
            out.append({"text": join_tokens(ex["tokens"])[0], "gold": ex["tags"], "prediction": pred,
                        "correct": g == p, "score": f1, "tokens": ex["tokens"]})
        return out

    def metadata(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def load_metadata(self, meta: dict[str, Any]) -> None:
        self.labels = list(meta["labels"])

    # -- what reports ask ------------------------------------------------------------------------
    count_kind = "entity type"
    label_spans = "entities"

    def example_text(self, example: Example) -> str:
        return join_tokens(example["tokens"])[0]

    def token_lengths(self, tokenizer: Any, examples: Sequence[Example]) -> list[int]:
        if not examples:
            return []
        cap = self.length_cap() // CHARS_PER_TOKEN * 4  # words: at most 4 × max_length tokenised per sentence

        def lengths(part: Sequence[Example]) -> list[int]:
            ids = tokenizer([ex["tokens"][:cap] for ex in part], is_split_into_words=True)["input_ids"]
            return [len(x) if len(ex["tokens"]) <= cap else round(len(x) * len(ex["tokens"]) / cap)
                    for x, ex in zip(ids, part, strict=True)]

        return self.in_chunks(examples, lambda part, _: lengths(part))

    def label_counts(self, examples: Sequence[Example] = (), records: Sequence[dict[str, Any]] = ()) -> Counter[str]:
        tags = [ex["tags"] for ex in examples if "tags" in ex] or [r["gold"] for r in records]
        return Counter(t for seq in tags for t, _, _ in spans(seq))

    def report_results(self, records: Sequence[dict[str, Any]], metrics: dict[str, Any],
                       generations: Sequence[dict[str, Any]] | None = None) -> str:
        return ner_report.results(records, metrics)


def _in_text(ex: Example, field: str) -> tuple[str, list[tuple[int, int]]] | None:
    """(the row's text (`field`), each token's span in it) where the pre-tokenised row also holds the text its tokens
    were cut from (found there one after another), else None."""
    text = ex["row"].get(field) if isinstance(ex.get("row"), dict) else None
    if not isinstance(text, str):
        return None
    offsets, pos = [], 0
    for tok in ex["tokens"]:
        at = text.find(tok, pos)
        if at < 0:
            return None
        offsets.append((at, at + len(tok)))
        pos = at + len(tok)
    return text, offsets
