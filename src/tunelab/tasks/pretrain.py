"""Continued (domain-adaptive) pretraining on raw text (`task: pretrain`): causal LM (clm) or masked LM (mlm).

Input: `.txt` files (one document per paragraph: runs of non-blank lines, separated by blank lines) or any
table format with one document per row in `data.text_field`. An empty document is a DataError (file:line).

CLM: each document is tokenised as the tokenizer does by default (Llama/Gemma add their BOS) and followed by
EOS; the stream of all documents is cut into blocks of `data.max_length` tokens ("group texts"); the last,
shorter block is kept (nothing is dropped). Labels are the inputs (the model shifts them).
MLM: documents tokenised with their special tokens ([CLS] ... [SEP]), concatenated and cut the same way.
Training masks are drawn afresh for every batch (dynamic masking; seeded, restored on resume); evaluation
masks are fixed per block (seed EVAL_MASK_SEED + block index), so perplexities are comparable between runs.
`task.whole_word_mask` masks whole words (the tokenizer's word_ids; every CJK character is a word).

Metrics: `loss` (mean NLL per predicted token: every next token for clm, the masked tokens for mlm),
`perplexity` = exp(loss), `tokens`. The run also scores the untrained model on validation (`baseline` in
metrics.json). Predict: clm continues each `text` greedily (`continuation`); mlm fills every [MASK] of
`text` with its `task.top_k` most likely tokens (`masks`, and `filled` with the best ones put in).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from tunelab.config.sections import TaskConfig
from tunelab.data.lm import mask_block, pack_stream, token_units, word_units
from tunelab.data.readers import Table, require_text
from tunelab.errors import ConfigError, DataError
from tunelab.metrics.perplexity import perplexity_metrics
from tunelab.models.aliases import as_named
from tunelab.models.precision import autocast_dtype
from tunelab.registry import TASKS
from tunelab.tasks import base, pretrain_peers
from tunelab.tasks.base import Example, Features, Task, pad_batch
from tunelab.tasks.causal_loss import eval_batches, example_nll, trained_count
from tunelab.tasks.generation import GenerationConfig, decode_reply, generate, position_limit
from tunelab.tasks.masked_heads import fresh_modules, keep_pooler
from tunelab.tasks.masked_loss import masked_lm_loss, masked_nll
from tunelab.tasks.model_rows import with_row

EVAL_MASK_SEED = 1234
MASK_LITERAL = "[MASK]"
PROMPT_AT = "prompt_at"  # a text to continue: its (file, line), for a refusal naming it


class PretrainConfig(TaskConfig):
    name: Literal["pretrain"] = "pretrain"
    objective: Literal["auto", "clm", "mlm"] = Field(
        "auto", description="clm: next-token prediction (causal LMs); mlm: masked-token prediction (encoders); "
        "auto: mlm for encoder models (not is_decoder, a masked-LM class exists), clm for causal LMs."
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="mlm: share of tokens (or words) masked; of "
                                   "those 80 % become [MASK], 10 % a random token, 10 % stay.")
    whole_word_mask: bool = Field(False, description="mlm: mask all pieces of a word together (the tokenizer's "
                                  "words; each Chinese character is a word).")
    max_new_tokens: int = Field(64, ge=1, description="Predict (clm): tokens generated per prompt (greedy).")
    top_k: int = Field(5, ge=1, description="Predict (mlm): candidates listed per [MASK].")


def resolve_objective(objective: str, model_path: str) -> str:
    """`auto` → mlm for encoders with a masked-LM class (is_decoder false), clm for causal LMs."""
    if objective != "auto":
        return objective
    cfg = AutoConfig.from_pretrained(model_path)
    archs = cfg.architectures or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return "clm"
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "mlm"
    if cfg.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(cfg, "is_decoder", False):
        return "mlm"
    if cfg.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "clm"
    raise ConfigError(f"config: task.objective: cannot tell whether {as_named(model_path)} ({cfg.model_type}) is a "
                      "masked or a causal LM; set task.objective to mlm or clm")


@TASKS.register("pretrain")
class Pretrain(Task):
    Config = PretrainConfig
    auto_model_class = "AutoModelForCausalLM"  # per instance: AutoModelForMaskedLM for mlm
    baseline_eval: ClassVar[bool] = True
    over_length = "packed across blocks, nothing cut"
    headline = "loss"  # perplexity_metrics: the loss first
    peer_stage = "pt"  # LLaMA-Factory's continued pretraining (causal LM)
    peer_dataset = staticmethod(pretrain_peers.dataset_settings)  # its dataset_info.json entries: the text column
    peer_row = staticmethod(pretrain_peers.joined_row)  # several datasets' rows as text rows of one file
    peer_joined, peer_task, peer_said = pretrain_peers.JOINED, pretrain_peers.TASK, pretrain_peers.SAID
    cfg: PretrainConfig

    def __init__(self, cfg: PretrainConfig, data: Any) -> None:
        super().__init__(cfg, data)
        for key, why in (("sampling", "there are no classes to balance"), ("augment", "EDA edits would corrupt "
                         "the corpus"), ("text_pair_field", "documents are single texts")):
            if getattr(data, key, None):
                raise ConfigError(f"config: data.{key}: not supported by task pretrain ({why})")
        if getattr(data, "truncation", "head") != "head":
            raise ConfigError("config: data.truncation: task pretrain packs documents into blocks of "
                              "data.max_length tokens; nothing is truncated")
        self.objective = None if cfg.objective == "auto" else cfg.objective
        self._tok: Any = None

    def _set_objective(self, objective: str) -> None:
        self.objective = objective
        self.auto_model_class = "AutoModelForMaskedLM" if objective == "mlm" else "AutoModelForCausalLM"
        self.export_formats = () if objective == "mlm" else ("gguf",)
        if objective == "clm" and self.cfg.whole_word_mask:
            raise ConfigError("config: task.whole_word_mask: applies to objective mlm only; this model trains clm")

    # -- data --------------------------------------------------------------------------------
    def parse(self, table: Table, *, labelled: bool = True) -> list[Example]:
        """Each row's `data.text_field`; a paragraph of a `.txt` file read whole (training, eval) is `text` whatever
        that field is named, a line of one read to predict on holds it under the field as every other row does."""
        txt, field = table.source.lower().endswith(".txt"), self.data.text_field

        def key(data: dict[str, Any]) -> str:
            return "text" if txt and field not in data and "text" in data else field

        return [{"text": require_text(rec, key(rec.data), table.columns), "source": rec.source, "line": rec.line,
                 "row": rec.data, "labelled": labelled} for rec in table.records]

    # -- model -------------------------------------------------------------------------------
    def build_model(self, model_path: str, train: list[Example]) -> tuple[torch.nn.Module, Any]:
        self._set_objective(resolve_objective(self.cfg.objective, model_path))
        tok = AutoTokenizer.from_pretrained(model_path)
        if self.objective == "mlm":
            if tok.mask_token_id is None:
                raise ConfigError("config: task.objective: mlm needs a tokenizer with a mask token; "
                                  f"{as_named(model_path)} has none (use clm for causal LMs)")
            if self.cfg.whole_word_mask and not tok.is_fast:
                raise ConfigError("config: task.whole_word_mask: needs a fast tokenizer (word ids)")
            try:
                model, info = AutoModelForMaskedLM.from_pretrained(model_path, output_loading_info=True)
            except ValueError as e:
                raise ConfigError(f"config: task.objective: mlm needs a masked-LM model class: {e}".split("\n")[0]
                                  ) from None
            self.fresh = fresh_modules(model, set(info["missing_keys"]))
            if self.fresh:
                print(f"pretrain: {as_named(model_path)} has no masked-LM head: {', '.join(self.fresh)} start from "
                      "random weights (the baseline perplexity reflects that)", file=sys.stderr)
            keep_pooler(model, model_path, set(info["unexpected_keys"]))
        else:
            if tok.eos_token_id is None:
                raise ConfigError(f"config: model: clm pretraining needs an eos token between documents; the "
                                  f"tokenizer of {as_named(model_path)} has none")
            try:
                from tunelab.models.decoder_heads import causal_lm  # (transformers' model code)

                model = causal_lm(model_path, "task.objective clm", "use objective mlm for an encoder")
            except ValueError as e:
                raise ConfigError(f"config: task.objective: clm needs a causal-LM model class: {e}".split("\n")[0]
                                  ) from None
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        self.check_positions(getattr(model.config.get_text_config(), "max_position_embeddings", None), True, 0)
        return model, tok

    def check_positions(self, positions: int | None, learned: bool, longest: int) -> None:
        """Blocks are max_length tokens whatever the documents' lengths, and rotary positions too are refused past
        the model's (what it was trained on)."""
        if positions is not None and self.data.max_length > positions:
            raise ConfigError(f"config: data.max_length: {self.data.max_length} is more than the model's "
                              f"{positions} positions")

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        return list(getattr(self, "fresh", []))

    def bind_tokenizer(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        if self.objective is None:
            self._set_objective("mlm" if tokenizer.mask_token_id is not None else "clm")

    def encodes_in_parts(self, examples: Sequence[Example]) -> bool:
        return False  # documents are packed into blocks across examples: `training_parts` carries the open ones

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        self.bind_tokenizer(tokenizer)
        if examples and not examples[0]["labelled"]:
            return self._prompts(examples, tokenizer)
        return [f for part in self._blocks(examples, tokenizer) for f in part]

    def training_parts(self, examples: Sequence[Example], tokenizer: Any) -> Iterator[tuple[list[Features], int]]:
        """The blocks a chunk of documents at a time (the same blocks as `encode`): the feature cache writes them
        part by part, so a large corpus is never held as blocks in memory."""
        self.bind_tokenizer(tokenizer)
        for part in self._blocks(examples, tokenizer):
            yield part, max(len(f["input_ids"]) for f in part)

    def _blocks(self, examples: Sequence[Example], tokenizer: Any) -> Iterator[list[Features]]:
        """Documents tokenised `base.TOKENIZE_CHUNK` at a time and packed into blocks of data.max_length as they
        come (`lm.pack_stream`): clm puts eos after every document, mlm numbers the masking units across them."""
        clm, wwm = self.objective == "clm", self.cfg.whole_word_mask
        special_ids, eos = set(tokenizer.all_special_ids), tokenizer.eos_token_id

        def chunks() -> Iterator[dict[str, list[int]]]:
            nxt = 0
            for texts in _text_chunks(examples):
                enc = tokenizer(texts, return_offsets_mapping=wwm and not clm)
                stream: list[int] = []
                units: list[int] = []
                for i, ids in enumerate(enc["input_ids"]):
                    if clm:
                        stream += ids if ids and ids[-1] == eos else [*ids, eos]
                        continue
                    special = [t in special_ids for t in ids]
                    if wwm:
                        u, nxt = word_units(enc.word_ids(i), enc["offset_mapping"][i], texts[i], special, nxt)
                    else:
                        u, nxt = token_units(special, nxt)
                    stream += ids
                    units += u
                yield {"input_ids": stream} if clm else {"input_ids": stream, "units": units}

        def tail_ok(carried: dict[str, list[int]], start: int) -> bool:
            if clm:
                return len(carried["input_ids"]) - start >= 2  # a block of one token has nothing to predict
            return any(u >= 0 for u in carried["units"][start:])  # something maskable

        tokens = blocks = 0
        for part in pack_stream(chunks(), self.data.max_length, tail_ok):
            tokens += sum(len(b["input_ids"]) for b in part)
            blocks += len(part)
            yield [{"input_ids": b["input_ids"], "labels": list(b["input_ids"])} for b in part] if clm else part
        print(f"pretrain ({self.objective}): {len(examples)} documents, {tokens} tokens -> {blocks} blocks of up "
              f"to {self.data.max_length}", file=sys.stderr)

    def _prompts(self, examples: Sequence[Example], tokenizer: Any) -> list[Features]:
        feats = []
        for ex in examples:
            text = ex["text"]
            if self.objective == "mlm":
                text = text.replace(MASK_LITERAL, tokenizer.mask_token)
                ids = tokenizer(text)["input_ids"]
                if tokenizer.mask_token_id not in ids:
                    raise DataError(ex["source"], ex["line"], self.data.text_field,
                                    f"no {MASK_LITERAL} token to fill")
            else:
                ids = tokenizer(text)["input_ids"]
                if ids and ids[-1] == tokenizer.eos_token_id:
                    ids = ids[:-1]
            if len(ids) > self.data.max_length:
                raise DataError(ex["source"], ex["line"], self.data.text_field,
                                f"{len(ids)} tokens, more than data.max_length={self.data.max_length}")
            feats.append({"input_ids": ids, PROMPT_AT: (ex["source"], ex["line"])})
        return feats

    def _masking(self) -> tuple[int, np.ndarray]:
        tok = self._tok
        special = set(tok.all_special_ids)
        return tok.mask_token_id, np.array([i for i in range(len(tok)) if i not in special], dtype=np.int64)

    def _masked(self, features: Sequence[Features], rngs: Sequence[np.random.Generator]) -> list[Features]:
        mask_id, random_ids = self._masking()
        out = []
        for f, rng in zip(features, rngs, strict=True):
            ids, labels = mask_block(f["input_ids"], f["units"], rng, self.cfg.mlm_probability, mask_id, random_ids)
            out.append({"input_ids": ids, "labels": labels})
        return out

    def loss_fn(self) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None:
        """mlm: the loss of the masked positions' logits only (tasks/masked_loss.py); clm: the model's own."""
        return masked_lm_loss if self.objective == "mlm" else None

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        if self.objective == "clm":  # the model's own loss predicts every next token: labels shifted by one

            return trained_count(batch)
        return super().loss_units(batch)

    def collate(self, features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
        """Training batches; mlm blocks get fresh masks, drawn from torch's (seeded, checkpointed) RNG."""
        if features and "units" in features[0]:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
            features = self._masked(features, [rng] * len(features))
        return pad_batch(features, pad_id)

    # -- scoring -----------------------------------------------------------------------------
    def logits(self, model: torch.nn.Module, features: Sequence[Features], collate: Callable[..., Any],
               batch_size: int) -> np.ndarray:
        """Labelled blocks: per block [sum of token NLL, predicted tokens]. Prompts: per prompt the generated
        ids (clm) or, per [MASK], the top-k (ids, probabilities) (mlm); object arrays."""
        if not features:
            return np.zeros((0, 2))
        if "labels" not in features[0] and "units" not in features[0]:
            return self._generate(model, features, batch_size) if self.objective == "clm" else \
                self._fill(model, features, batch_size)

        if "units" in features[0]:  # the fixed evaluation masks
            features = self._masked(features, [np.random.default_rng([EVAL_MASK_SEED, i])
                                               for i in range(len(features))])
        model.eval()
        device = next(model.parameters()).device
        dtype = autocast_dtype(device, model=model)
        out = np.zeros((len(features), 2), dtype=np.float64)
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        lengths = [len(f["input_ids"]) for f in features]
        with torch.no_grad():
            for chunk in eval_batches(order, lengths, batch_size, max_trained=2048):
                batch = {k: v.to(device) for k, v in pad_batch([features[i] for i in chunk], self._tok.pad_token_id
                                                               ).items()}
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    if self.objective == "clm":
                        sums, counts = example_nll(model, batch)
                    else:
                        sums, counts = masked_nll(model, batch)
                out[chunk, 0] = sums.double().cpu().numpy()
                out[chunk, 1] = counts.cpu().numpy()
        return out

    def _generate(self, model: torch.nn.Module, features: Sequence[Features], batch_size: int) -> np.ndarray:
        limit = position_limit(model)  # a learned position table (GPT-2): a text that fills it leaves no room
        for f in features:
            if limit and len(f["input_ids"]) >= limit:
                raise DataError(*f[PROMPT_AT], self.data.text_field,
                                f"{len(f['input_ids'])} tokens; the model has {limit} positions and the continuation "
                                f"needs one at least: at most {limit - 1}")
        gen = generate(model, self._tok, [f["input_ids"] for f in features],
                       GenerationConfig(max_new_tokens=self.cfg.max_new_tokens), batch_size,
                       stop_ids=[self._tok.eos_token_id])
        out = np.empty(len(features), dtype=object)
        out[:] = gen
        return out

    def _fill(self, model: torch.nn.Module, features: Sequence[Features], batch_size: int) -> np.ndarray:
        model.eval()
        device = next(model.parameters()).device
        mask_id = self._tok.mask_token_id
        out = np.empty(len(features), dtype=object)
        with torch.no_grad():
            for s in range(0, len(features), batch_size):
                chunk = list(range(s, min(s + batch_size, len(features))))
                batch = pad_batch([features[i] for i in chunk], self._tok.pad_token_id)
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
                for j, i in enumerate(chunk):
                    where = (batch["input_ids"][j] == mask_id).nonzero()[:, 0].to(device)
                    top = torch.softmax(logits[j, where], -1).topk(self.cfg.top_k, dim=-1)
                    out[i] = [list(zip(ix.tolist(), p.tolist(), strict=True))
                              for ix, p in zip(top.indices, top.values, strict=True)]
        return out

    def metrics(self, logits: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
        return perplexity_metrics(logits)

    def predictions(self, logits: np.ndarray, examples: Sequence[Example]) -> list[dict[str, Any]]:
        tok, out = self._tok, []
        for res, ex in zip(logits, examples, strict=True):
            if self.objective == "clm":
                out.append(with_row(ex["row"], {"continuation": decode_reply(tok, res, strip=False)}))
                continue
            masks = [[{"token": tok.decode([i]).strip(), "score": round(p, 6)} for i, p in cands] for cands in res]
            parts = re.split(re.escape(MASK_LITERAL) + "|" + re.escape(tok.mask_token), ex["text"])
            best = [m[0]["token"] for m in masks] + [tok.mask_token] * len(parts)
            filled = parts[0] + "".join(best[i] + p for i, p in enumerate(parts[1:]))
            out.append(with_row(ex["row"], {"masks": masks, "filled": filled}))
        return out

    # -- saved with the model ----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {"objective": self.objective}

    def load_metadata(self, meta: dict[str, Any]) -> None:
        if meta.get("objective"):
            self._set_objective(meta["objective"])

    baselines = "language_model"  # tunelab baseline: the character n-gram LM

    def length_note(self) -> str:
        return "documents are packed into blocks of data.max_length tokens (nothing is cut)"


def _text_chunks(examples: Sequence[Example]) -> Iterator[list[str]]:
    """The documents' texts `base.TOKENIZE_CHUNK` at a time: the tokenizer's per-row `Encoding` objects (~4 KB each)
    then live for one chunk, not the whole corpus (1.2 M short paragraphs tokenised in one call peaked at ~7 GB)."""
    for start in range(0, len(examples), base.TOKENIZE_CHUNK):
        yield [ex["text"] for ex in examples[start:start + base.TOKENIZE_CHUNK]]
