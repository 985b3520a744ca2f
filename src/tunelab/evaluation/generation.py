"""Scoring generated replies (SFT evaluation).

`evaluate_generation` generates the last trained assistant reply of held-out conversations (the last one not of
Axolotl's `"weight": 0`: the model was not taught to write those) from the turns before it and scores it against the
reference (`metrics.generation`); `final_generation` does that for a run's final evaluation
when `task.generation.eval_generate` is on; `eval_generation` is `tunelab eval`'s (and `Model.evaluate`'s)
generation step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError, UnwritableError, option
from tunelab.io import write_jsonl_atomic
from tunelab.metrics.generation import score_generations
from tunelab.registry import TASKS
from tunelab.tasks.base import Task
from tunelab.tasks.chat_template import split_reply, template_error
from tunelab.tasks.generation import (
    GenerationConfig,
    check_reply_room,
    decode_reply,
    gen_flag,
    generate,
    with_overrides,
)
from tunelab.tasks.reasoning import reference_of, reply_of, thinks
from tunelab.tasks.sft_prompts import fitted_prompts, prompt_room
from tunelab.training.layout import run_of


def evaluate_generation(task: Task, model: torch.nn.Module, tokenizer: Any, examples: Sequence[dict[str, Any]],
                        batch_size: int, cfg: GenerationConfig | None = None, who: str | None = "eval",
                        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate the last trained assistant reply of each labelled SFT example (`chat_template.split_reply`) and score
    it. Returns the corpus metrics and one row per example: file, line, prompt (the last turn before the reply), turns
    (how many turns precede the reply), reference, prediction and the per-sample scores. The prompts are fitted to
    data.max_length and the model's room for the reply as predict's are (tasks/sft_prompts.py; `who`: the command its
    stderr line names, None: not said)."""
    cfg = cfg or task.cfg.generation
    prompts, refs = [], []
    for ex in examples:
        try:
            before, ref = split_reply(ex["messages"], tokenizer)  # a tool-call turn: the calls as training wrote them
        except Exception as e:  # noqa: BLE001 - jinja errors (e.g. roles must alternate) name the row
            raise template_error(ex, e) from None
        prompts.append(before)
        refs.append(ref)
    room = prompt_room(model, task.data.max_length, cfg.max_new_tokens)
    ids = fitted_prompts(tokenizer, [(ex, before, None) for ex, before in zip(examples, prompts, strict=True)], room,
                         who)
    replies = generate(model, tokenizer, ids, cfg, batch_size, task.stop_ids(tokenizer, model))
    think = thinks(tokenizer)  # (Qwen3's): the replies and references scored without their think blocks
    said = [reply_of(tokenizer, decode_reply(tokenizer, r)) for r in replies]
    preds, refs = [p for p, _ in said], [reference_of(tokenizer, ref) for ref in refs]
    metrics, samples = score_generations(preds, refs)
    rows = [{"file": ex["source"], "line": ex["line"], "prompt": before[-1]["content"] if before else "",
             "turns": len(before), "reference": ref, "prediction": pred, **({"reasoning": why} if think else {}), **sc}
            for ex, before, ref, (pred, why), sc in zip(examples, prompts, refs, said, samples, strict=True)]
    return metrics, rows


def final_generation(task: Task, model: torch.nn.Module, tokenizer: Any, splits: dict[str, list[dict[str, Any]]],
                     batch_size: int, out_dir: Path, prefix: str = "",
                     pending: list[tuple[Path, list[dict[str, Any]]]] | None = None) -> dict[str, dict[str, Any]]:
    """With `task.generation.eval_generate`: generation metrics of each evaluation split (the first
    `eval_limit` rows), replies written to `RUN/predictions/<prefix><split>.generations.jsonl` (or, given `pending`,
    added to it as (path, rows) for the caller to write once it may) and, without a prefix, set as
    `example["generated"]` (picked up by the per-example records). Otherwise {}."""
    cfg = getattr(task.cfg, "generation", None)
    if not isinstance(cfg, GenerationConfig) or not cfg.eval_generate:
        return {}
    out = {}
    for name, examples in splits.items():
        if name == "train":
            continue
        chosen = examples[: cfg.eval_limit] if cfg.eval_limit else examples
        # (its prompts' cut line said once a split, naming it: by the trained model's, not again by the untrained one's)
        metrics, rows = evaluate_generation(task, model, tokenizer, chosen, batch_size, cfg,
                                            None if prefix else f"train ({name})")
        if not prefix:
            for ex, row in zip(chosen, rows, strict=True):
                ex["generated"] = row["prediction"]
        path = out_dir / "predictions" / f"{prefix}{name}.generations.jsonl"
        if pending is None:
            write_jsonl_atomic(path, rows)
        else:
            pending.append((path, rows))
        out[name] = metrics
    return out


def default_predictions_path(model_dir: Path, data: Path) -> Path:
    """`tunelab eval`'s replies file: RUN/predictions/eval-<data file stem>.generations.jsonl, RUN being the
    model directory's parent; for a run's merged model (RUN/merged) or export (RUN/exports/NAME) its run's, named for
    it: RUN/predictions/eval-<data file stem>.merged.generations.jsonl, eval-<data file stem>.NAME.generations.jsonl
    (not RUN/model's file, nor a predictions/ folder among the exports, shared by all of them)."""
    here = Path(model_dir).resolve()
    run = run_of(here)  # (RUN of RUN/model, RUN/merged, RUN/exports/NAME)
    named = f".{here.name}" if run is not None and (run != here.parent or here.name == "merged") else ""
    return (run or here.parent) / "predictions" / f"eval-{Path(data).stem}{named}.generations.jsonl"


def eval_generation_config(task: Task, model_config: Any, *, generate: bool | None = None,
                           max_new_tokens: int | None = None, num_beams: int | None = None,
                           temperature: float | None = None, top_p: float | None = None,
                           predictions: str | Path | None = None,
                           caller: tuple[str, str] = ("eval", "evaluate")) -> GenerationConfig | None:
    """The settings `tunelab eval` (`Model.evaluate`; `caller` ("predict", "predict"): `tunelab predict`) generates
    with (None: it does not generate), checked once the model is loaded and before any data is read: generation
    options on a model of another task, a beam wider than MAX_NUM_BEAMS, a max_new_tokens past the model's positions,
    a temperature or top_p out of range — one line each, the options spelled as the caller spells them
    (`--num-beams`, `num_beams=`), the message opening with `caller` (the command, the API's method)."""
    given = [name for name, v in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams),
                                  ("temperature", temperature), ("top_p", top_p), ("predictions", predictions))
             if v is not None] + (["generate"] if generate else [])
    if not task.generates_replies:
        if given:
            able = ", ".join(TASKS.names(lambda cls: cls.generates_replies))
            raise TunelabError(f"{option(*caller)}: {gen_flag(given[0])}: generation is for models of "
                               f"task {able} (this one: {task.cfg.name})")
        return None
    if generate is False:
        return None
    cfg = with_overrides(task.cfg.generation, max_new_tokens=max_new_tokens, num_beams=num_beams,
                         temperature=temperature, top_p=top_p)
    if max_new_tokens is not None:
        check_reply_room(cfg, model_config)
    return cfg


def eval_generation(task: Task, model: torch.nn.Module, tokenizer: Any, examples: Sequence[dict[str, Any]],
                    batch_size: int, cfg: GenerationConfig | None, predictions: str | Path | None = None,
                    ) -> dict[str, Any]:
    """`tunelab eval`'s (and `Model.evaluate`'s) generation step, with the settings `eval_generation_config` gave
    (None: {}, nothing generated): the generation metrics, the replies with their scores written to `predictions`
    when it names a file."""
    if cfg is None:
        return {}
    metrics, rows = evaluate_generation(task, model, tokenizer, examples, batch_size, cfg)
    if predictions is not None:
        try:
            write_jsonl_atomic(predictions, rows)
        except UnwritableError as e:  # already names the path and the reason
            raise TunelabError(f"{gen_flag('predictions')}: {e}") from None
    return metrics
