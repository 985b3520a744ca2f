"""Reply generation for causal LMs, and scoring generated replies (SFT evaluation).

`generate` runs batches of prompts sorted by length, left-padded with an attention mask (positions come
from the mask, so a padded prompt generates what it would alone), greedy, beam search or sampling
(`task.generation`), and cuts each reply at the first end-of-turn id (`tasks.sft.end_of_turn_ids`).
`evaluate_generation` generates the last assistant reply of held-out conversations from the turns before
it and scores it against the reference (`metrics.generation`); `final_generation` does that for a run's
final evaluation when `task.generation.eval_generate` is on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from tunelab.errors import ConfigError, DataError
from tunelab.precision import autocast_dtype
from tunelab.sections import Section


class GenerationConfig(Section):
    max_new_tokens: int = Field(128, ge=1, description="Most tokens generated per reply (predict, eval, chat).")
    num_beams: int = Field(1, ge=1, description="Beam search width; 1 = no beam search.")
    do_sample: bool = Field(False, description="Sample (temperature, top_p) instead of taking the likeliest token.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: the smallest token set with this "
                         "probability mass (with do_sample; top-k is off).")
    seed: int = Field(0, description="Seed for sampling; replies also depend on how prompts are batched.")
    eval_generate: bool = Field(False, description="tunelab train: also generate the validation / test replies in "
                                "the final evaluation and score them (exact_match, BLEU, chrF, ROUGE). Slow, so "
                                "off by default; `tunelab eval` generates unless --no-generate.")
    eval_limit: int | None = Field(None, ge=1, description="tunelab train with eval_generate: generate only the "
                                   "first N rows of each split (null: all).")


def with_overrides(cfg: GenerationConfig, *, max_new_tokens: int | None = None, num_beams: int | None = None,
                   temperature: float | None = None, top_p: float | None = None) -> GenerationConfig:
    """`cfg` with command-line overrides; a temperature of 0 means greedy, above 0 sampling at it."""
    update: dict[str, Any] = {}
    if max_new_tokens is not None:
        update["max_new_tokens"] = max_new_tokens
    if num_beams is not None:
        update["num_beams"] = num_beams
    if temperature is not None:
        if temperature < 0:
            raise ConfigError(f"--temperature: must be 0 (greedy) or positive, got {temperature}")
        update.update(do_sample=temperature > 0, **({"temperature": temperature} if temperature > 0 else {}))
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ConfigError(f"--top-p: must be in (0, 1], got {top_p}")
        update["top_p"] = top_p
    return GenerationConfig(**{**cfg.model_dump(), **update})


def generate_kwargs(cfg: GenerationConfig, tokenizer: Any, stop: Sequence[int]) -> dict[str, Any]:
    """`model.generate` keyword arguments for `cfg`, stopping at `stop` (settings that `cfg` does not name,
    e.g. repetition_penalty, come from the model's generation_config.json)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else 0)
    kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "num_beams": cfg.num_beams,
                              "do_sample": cfg.do_sample, "pad_token_id": pad, "eos_token_id": list(stop) or None}
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
    return kwargs


def stop_ids_of(tokenizer: Any, stop_ids: Sequence[int] | None) -> list[int]:
    if stop_ids:
        return list(stop_ids)
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]], cfg: GenerationConfig,
             batch_size: int, stop_ids: Sequence[int] | None = None) -> list[list[int]]:
    """The new token ids of each prompt's reply (in prompt order), cut before the first stop id
    (default: eos)."""
    if batch_size < 1:
        raise ConfigError("config: batch size must be at least 1")
    stop = stop_ids_of(tokenizer, stop_ids)
    kwargs = generate_kwargs(cfg, tokenizer, stop)
    pad = kwargs["pad_token_id"]
    if cfg.do_sample:
        torch.manual_seed(cfg.seed)
    model.eval()
    device = next(model.parameters()).device
    dtype = autocast_dtype(device)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            chunk = order[s: s + batch_size]
            width = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # left padding: every prompt ends at the last column
                n = len(prompts[i])
                ids[row, width - n:] = torch.as_tensor(list(prompts[i]), dtype=torch.long)
                mask[row, width - n:] = 1
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            for row, i in enumerate(chunk):
                new = gen[row, width:].tolist()
                out[i] = new[: next((k for k, t in enumerate(new) if t in stop), len(new))]
    return out


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the conversation rendered with the generation prompt (the assistant's turn opened)."""
    from tunelab.tasks.sft import render

    return tokenizer(render(tokenizer, messages, generation_prompt=True), add_special_tokens=False)["input_ids"]


def split_reply(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """(the turns before the last assistant turn, that turn's content)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def evaluate_generation(task: Any, model: torch.nn.Module, tokenizer: Any, examples: Sequence[dict[str, Any]],
                        batch_size: int, cfg: GenerationConfig | None = None,
                        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate the last assistant reply of each labelled SFT example and score it. Returns the corpus
    metrics and one row per example: file, line, prompt (the last turn before the reply), turns (how many
    turns precede the reply), reference, prediction and the per-sample scores."""
    from tunelab.metrics.generation import score_generations
    from tunelab.tasks.sft import end_of_turn_ids

    cfg = cfg or task.cfg.generation
    prompts, refs, ids = [], [], []
    for ex in examples:
        before, ref = split_reply(ex["messages"])
        try:
            ids.append(prompt_ids(tokenizer, before))
        except Exception as e:  # noqa: BLE001 - jinja errors (e.g. roles must alternate) name the row
            raise DataError(ex["source"], ex["line"], ex["field"], f"chat template: {e}") from None
        prompts.append(before)
        refs.append(ref)
    replies = generate(model, tokenizer, ids, cfg, batch_size, end_of_turn_ids(tokenizer))
    preds = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies]
    metrics, samples = score_generations(preds, refs)
    rows = [{"file": ex["source"], "line": ex["line"], "prompt": before[-1]["content"] if before else "",
             "turns": len(before), "reference": ref, "prediction": pred, **sc}
            for ex, before, ref, pred, sc in zip(examples, prompts, refs, preds, samples, strict=True)]
    return metrics, rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as JSON lines atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def final_generation(task: Any, model: torch.nn.Module, tokenizer: Any, splits: dict[str, list[dict[str, Any]]],
                     batch_size: int, out_dir: Path, prefix: str = "") -> dict[str, dict[str, Any]]:
    """With `task.generation.eval_generate`: generation metrics of each evaluation split (the first
    `eval_limit` rows), replies written to `RUN/predictions/<prefix><split>.generations.jsonl` and, without a
    prefix, set as `example["generated"]` (picked up by the per-example records). Otherwise {}."""
    cfg = getattr(task.cfg, "generation", None)
    if not isinstance(cfg, GenerationConfig) or not cfg.eval_generate:
        return {}
    out = {}
    for name, examples in splits.items():
        if name == "train":
            continue
        chosen = examples[: cfg.eval_limit] if cfg.eval_limit else examples
        metrics, rows = evaluate_generation(task, model, tokenizer, chosen, batch_size, cfg)
        if not prefix:
            for ex, row in zip(chosen, rows, strict=True):
                ex["generated"] = row["prediction"]
        write_jsonl(out_dir / "predictions" / f"{prefix}{name}.generations.jsonl", rows)
        out[name] = metrics
    return out


def default_predictions_path(model_dir: Path, data: Path) -> Path:
    """`tunelab eval`'s replies file: RUN/predictions/eval-<data file stem>.generations.jsonl, RUN being the
    model directory's parent."""
    return Path(model_dir).resolve().parent / "predictions" / f"eval-{Path(data).stem}.generations.jsonl"


def eval_generation(task: Any, model: torch.nn.Module, tokenizer: Any, examples: Sequence[dict[str, Any]],
                    batch_size: int, model_dir: Path, data: Path, *, generate: bool | None = None,
                    max_new_tokens: int | None = None, num_beams: int | None = None, temperature: float | None = None,
                    top_p: float | None = None, predictions: Path | None = None,
                    ) -> tuple[dict[str, Any], Path | None]:
    """`tunelab eval`'s generation step: for an SFT model (unless generate is False) the generation metrics
    and the path of the replies file written; ({}, None) otherwise. Generation options on a model of
    another task are an error."""
    from tunelab.errors import TunelabError
    from tunelab.tasks.sft import Sft

    given = [flag for flag, v in (("--max-new-tokens", max_new_tokens), ("--num-beams", num_beams),
                                  ("--temperature", temperature), ("--top-p", top_p), ("--predictions", predictions))
             if v is not None] + (["--generate"] if generate else [])
    if not isinstance(task, Sft):
        if given:
            raise TunelabError(f"eval: {given[0]}: generation is for models of task sft (this one: {task.cfg.name})")
        return {}, None
    if generate is False:
        return {}, None
    cfg = with_overrides(task.cfg.generation, max_new_tokens=max_new_tokens, num_beams=num_beams,
                         temperature=temperature, top_p=top_p)
    metrics, rows = evaluate_generation(task, model, tokenizer, examples, batch_size, cfg)
    path = Path(predictions) if predictions is not None else default_predictions_path(model_dir, data)
    try:
        write_jsonl(path, rows)
    except OSError as e:
        raise TunelabError(f"--predictions: cannot write {path}: {e.strerror or e}") from None
    return metrics, path
