"""`tunelab export RUN --merge`: LoRA / DoRA adapter + base weights → one plain transformers model,
checked against the adapter before it is written.

What a LoRA / DoRA run holds: `RUN/adapter/` is the peft adapter (adapter_config.json naming the base model,
the low-rank — and DoRA magnitude — weights, trained heads, and the embeddings when the vocabulary grew);
`RUN/model/` was already merged at the end of training. `--merge` re-derives the merged model from the base
and the adapter alone: load the base (head sized from RUN/model's config, vocabulary resized to the
adapter's), apply the adapter, merge, save to OUTPUT (default RUN/merged; written to a temp dir and renamed
only after the check passes). The check runs fixed sample inputs (in float64) through the unmerged adapter model and
through the merged model reloaded from disk, and, when RUN/model exists, through it too; the largest
absolute logit difference of each pair must be within the tolerance, else nothing is written and the
command fails (exit code 1).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import PeftModel
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig

from tunelab.config.run import read_config_file
from tunelab.data.load import from_run_folder, run_model
from tunelab.data.report import DATA_FOLDER, read_summary
from tunelab.errors import ConfigError, TunelabError, first_line, flag
from tunelab.export.output import claim, commit, run_reads, staged, terminated
from tunelab.export.parity import ParityError
from tunelab.export.save import META_FILE, load_task, load_tokenizer, saved_rules
from tunelab.io import Read, read_json
from tunelab.models import resolve_model
from tunelab.models.aliases import check_model_name, model_dir_of
from tunelab.models.segments import reseed_as_trained
from tunelab.models.student import STUDENT_LAYERS
from tunelab.models.tokenizer_save import save_tokenizer
from tunelab.training.distill import student_from_teacher

SAMPLE_TEXTS = ("The quick brown fox jumps over the lazy dog.", "Fine-tuning changes a few weights; merging keeps "
                "the outputs.", "一只敏捷的狐狸跳过了懒狗。", "1 2 3 4 5")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # what peft writes / reads
HEAD_KEYS = ("id2label", "label2id", "problem_type", "pad_token_id")  # head / padding settings set by the task


@dataclass
class MergeReport:
    output: Path
    adapter: Path
    base: str
    max_diff_adapter: float
    max_diff_saved: float | None  # vs RUN/model, when it exists
    samples: int
    tolerance: float  # the most either may be


def locate(path: Path) -> tuple[Path, Path]:
    """(adapter dir, model dir) for a run dir, its model/ or its adapter/."""
    path = Path(path)
    if not path.exists():
        raise TunelabError(f"{path}: no such directory")
    if not path.is_dir():
        raise TunelabError(f"{path}: a file, not a directory; pass the run directory (or its adapter/)")
    run = path.parent if (path / META_FILE).is_file() or (path / "adapter_config.json").is_file() else path
    adapter, model = run / "adapter", run / "model"
    if not (adapter / "adapter_config.json").is_file():
        raise TunelabError(f"{path}: no adapter ({adapter}/adapter_config.json); export {flag('merge', True)} needs "
                           "the run of a LoRA or DoRA model (method full / freeze: RUN/model already holds plain "
                           "weights)")
    if not (model / META_FILE).is_file():
        raise TunelabError(f"{path}: no tunelab model next to the adapter ({model}/{META_FILE})")
    return adapter, model


def _base_path(adapter_cfg: dict[str, Any], meta: dict[str, Any], adapter: Path) -> str:
    """The base model's directory as adapter_config.json records it, else the run's base_model (an alias, a hub id or
    a directory); one line when neither names a model there is (never a hub lookup of a path). A relative folder is
    read from the folder training ran in (the run's data_summary.json), as the run's config spelled it."""
    summary = read_summary(adapter.parent)
    recorded = run_model(summary, str(adapter_cfg.get("base_model_name_or_path") or ""))
    if recorded and Path(recorded).expanduser().is_dir():
        return str(Path(recorded).expanduser())
    name = run_model(summary, str(meta.get("base_model") or recorded))
    try:
        check_model_name(name)  # an alias, an existing directory or a hub id
    except ConfigError:
        pass
    else:
        return resolve_model(name)  # its own line where an alias's package is not installed
    raise TunelabError(f"{adapter / 'adapter_config.json'}: the base model it names ({recorded or name}, "
                       "base_model_name_or_path) does not exist; restore that folder or point the setting at the base")


def sample_inputs(tokenizer: Any, n_random: int = 2, length: int = 24,
                  pair: bool = False) -> list[dict[str, torch.Tensor]]:
    """Fixed texts (rendered as a chat when the tokenizer has a template; `pair`: also one text pair, whose second
    segment reads the token-type row a single text never does) and seeded random token ids that reach every part
    of the vocabulary, added tokens included; one input per sample (no padding)."""
    out = []
    for text in SAMPLE_TEXTS:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        out.append(tokenizer(text, return_tensors="pt"))
    if pair:  # a text pair: the second segment's token-type row is compared too
        out.append(tokenizer(SAMPLE_TEXTS[0], SAMPLE_TEXTS[-1], return_tensors="pt"))
    out = [{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")} for enc in out]
    gen = torch.Generator().manual_seed(0)
    for _ in range(n_random):
        ids = torch.randint(0, len(tokenizer), (1, length), generator=gen)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return out


def logits_of(model: torch.nn.Module, inputs: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Every `*logits` output (start/end logits for QA) of every sample, computed in float64 so that the
    comparison measures the weights, not float32 rounding in 30 layers (≈2e-4 on SmolLM2-135M); the model
    goes back to its own dtype afterwards (the round trip is exact)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    model.to(torch.float64)
    out = []
    try:
        with torch.no_grad():
            for x in inputs:
                res = model(**x)
                out += [v for k, v in res.items() if k.endswith("logits") and isinstance(v, torch.Tensor)]
    finally:
        model.to(dtype)
    return out


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ParityError("export --merge: the merged model's outputs do not have the adapter model's shapes")
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _auto_class(model_dir: Path) -> Any:
    """The model's transformers class as its task built it (the instance's: pretrain's depends on its objective)."""
    return getattr(transformers, load_task(model_dir).auto_model_class)


@dataclass(frozen=True)
class Adapter:
    """A LoRA / DoRA adapter checked before peft reads it (`check_adapter`)."""

    path: Path
    settings: dict[str, Any]  # adapter_config.json
    weights: Path
    base: str  # the base model's path
    base_config: Any  # its transformers config, as it is there


def check_adapter(adapter: Path, model_dir: Path, needs: str = "export --merge", base: str | None = None) -> Adapter:
    """What peft will read of a LoRA / DoRA adapter (RUN/adapter beside RUN/model), each part missing or damaged one
    line naming it (TunelabError; `needs`: the command that needs it): adapter_config.json not JSON or not an
    object, another kind of adapter, no weights file, the base model it names gone or not loadable. `tunelab serve`
    checks the adapters it shares a base between with it too (serve/adapters.py); cut weights are said as peft reads
    them (`reading_weights`). `base`: the base model's folder where the caller built it (a student's)."""
    adapter_cfg = read_json(adapter / "adapter_config.json")  # not JSON: BrokenFileError, one line
    if not isinstance(adapter_cfg, dict):
        raise TunelabError(f"{adapter / 'adapter_config.json'}: not a JSON object (a peft adapter's settings)")
    if adapter_cfg.get("peft_type") != "LORA":
        raise TunelabError(f"{adapter}: a {adapter_cfg.get('peft_type')} adapter cannot be merged into the weights "
                           "(only LoRA and DoRA)")
    weights = next((adapter / name for name in ADAPTER_WEIGHTS if (adapter / name).is_file()), None)
    if weights is None:
        raise TunelabError(f"{adapter}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}); {needs} needs the "
                           "adapter as training wrote it")
    meta = read_json(model_dir / META_FILE)
    base = base or _base_path(adapter_cfg, meta, adapter)
    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as e:  # no config.json there, a hub id not in the cache offline
        raise base_error(base, adapter, e) from None
    return Adapter(adapter, adapter_cfg, weights, base, config)


def base_error(base: str, adapter: Path, error: BaseException) -> TunelabError:
    return TunelabError(f"base model {base} (of {adapter}): cannot load it: {first_line(error)}")


@contextmanager
def reading_weights(weights: Path) -> Iterator[None]:
    """peft reading an adapter's weights file: one that is cut or damaged as one line naming it."""
    try:
        yield
    except (SafetensorError, OSError, ValueError, EOFError) as e:  # weights truncated or damaged
        raise TunelabError(f"{weights}: cannot read the adapter weights (truncated or damaged?): "
                           f"{first_line(e)}") from None


def load_adapter_model(adapter: Path, model_dir: Path, base: str | None = None) -> tuple[torch.nn.Module, Any, str]:
    """(peft model, its auto class, base path): the base as trained (head labels from RUN/model's config,
    vocabulary resized to RUN/model's) with the adapter applied, unmerged, in eval mode. `base`: the base model's
    folder where the caller built it (`student_base`)."""
    checked = check_adapter(adapter, model_dir, base=base)
    base, auto, config = checked.base, _auto_class(model_dir), checked.base_config
    saved = AutoConfig.from_pretrained(str(model_dir))
    for key in HEAD_KEYS:
        if getattr(saved, key, None) is not None:
            setattr(config, key, getattr(saved, key))
    # a head grown for labels the run added (continued from a tuned model) is of another size in the base: loaded
    # anew, to take the adapter's (modules_to_save): which must hold it
    model, info = auto.from_pretrained(base, config=config, ignore_mismatched_sizes=True, output_loading_info=True)
    with reading_weights(checked.weights):
        held = _weight_names(checked.weights)
    lost = sorted(key for key, *_ in info.get("mismatched_keys") or () if not any(h.endswith(f".{key}") for h in held))
    if lost:  # neither the base nor the adapter holds it as trained
        raise TunelabError(f"{adapter}: {lost[0]} has another shape in the base model {base} than in {model_dir} and "
                           "the adapter does not hold it (the base since replaced?)")
    reseed_as_trained(model, saved)  # the token-type rows training seeded (the adapter does not hold them)
    vocab = getattr(saved, "vocab_size", None)
    if vocab and vocab != model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab, mean_resizing=False)  # the adapter holds the resized embeddings
    # the task's switches as training set them (a bidirectional NER / QA decoder's attention: a base rebuilt causal
    # differed from RUN/model and the merged model was saved causal)
    model = load_task(model_dir).optimize(model)
    with warnings.catch_warnings(), reading_weights(checked.weights):  # peft calls a transformers method
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for v6
        try:
            return PeftModel.from_pretrained(model, str(adapter)).eval(), auto, base
        except RuntimeError as e:  # torch: "Error(s) in loading state_dict ... size mismatch for ..."
            if "size mismatch" not in str(e):
                raise
            raise TunelabError(f"{adapter}: its weights do not fit the base model {base} (size mismatch: the base, or "
                               "the teacher it was cut from, since replaced by another shape?)") from None


def _weight_names(weights: Path) -> list[str]:
    """The tensor names of an adapter's weights file."""
    if weights.suffix == ".safetensors":
        with safe_open(str(weights), "pt") as f:
            return list(f.keys())  # noqa: SIM118
    return list(torch.load(weights, map_location="cpu", weights_only=True))


def student_teacher(run: Path | None, spec: str, adapter: Path) -> Path:
    """The teacher model a `layers:...` student (`spec`) was cut from: its run's `distill.teacher`, a relative path
    from the folder it trained in (else from here); one line where it is gone."""
    tree = read_config_file(run / "config.yaml") if run is not None else {}
    teacher = str((tree.get("distill") or {}).get("teacher") or "") if isinstance(tree, dict) else ""
    if not teacher:
        raise TunelabError(f"{adapter}: the adapter of a student cut from its teacher ({spec}), but no run config "
                           "names the teacher (distill.teacher); merge it in its run directory")
    folder = read_summary(run).get(DATA_FOLDER) if run is not None else None
    found = model_dir_of(from_run_folder(folder if isinstance(folder, str) else None, teacher))
    if not (found / META_FILE).is_file():
        raise TunelabError(f"{adapter}: its base is {spec} of the teacher {teacher} (distill.teacher), which is gone; "
                           f"restore the teacher run to merge (RUN/model holds the merged student already)")
    return found


def merge_run(path: Path, output: Path | None = None, tolerance: float = 1e-4,
              overwrite: bool = False) -> MergeReport:
    """Merge RUN/adapter into its base, check it, and write a plain transformers model to `output` (`overwrite`: also
    over a folder that holds other files, or a link; said first). A student cut from its teacher (`model:
    layers:...`, recorded as its adapter's base) has its base cut again from the teacher, as training cut it."""
    adapter, model_dir = locate(path)
    output = Path(output) if output is not None else adapter.parent / "merged"
    run = adapter.parent if (adapter.parent / "config.yaml").is_file() else None
    meta = read_json(model_dir / META_FILE)
    spec = str(meta.get("base_model") or "") if isinstance(meta, dict) else ""
    teacher = student_teacher(run, spec, adapter) if spec.startswith(STUDENT_LAYERS) else None
    replaced = claim("export", output, [Read("the run it merges", adapter), Read("the run it merges", model_dir),
                                        *([Read("the teacher", teacher)] if teacher is not None else []),
                                        *run_reads(run)], overwrite)
    tokenizer = load_tokenizer(model_dir)
    with ExitStack() as stack:
        cut = None
        if teacher is not None:  # the student's base: the teacher's layers, in a temp folder for the merge
            stack.enter_context(terminated())  # SIGTERM: through the way out, which removes that folder
            cut = stack.enter_context(student_from_teacher(spec, teacher, load_task(model_dir).auto_model_class))
        peft_model, auto, base = load_adapter_model(adapter, model_dir, cut)
        if teacher is not None:
            base = f"{spec} of {teacher}"
        return _merge(peft_model, auto, base, tokenizer, adapter, model_dir, output, tolerance, replaced)


def _merge(peft_model: Any, auto: Any, base: str, tokenizer: Any, adapter: Path, model_dir: Path, output: Path,
           tolerance: float, replaced: list[str] | None) -> MergeReport:
    two_segments = getattr(peft_model.get_base_model().config, "type_vocab_size", 0) >= 2
    inputs = sample_inputs(tokenizer, pair=two_segments)
    want = logits_of(peft_model, inputs)
    merged = peft_model.merge_and_unload()
    with staged(output) as tmp:
        merged.save_pretrained(tmp)
        del merged, peft_model
        save_tokenizer(tokenizer, tmp, output)
        meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
        meta.setdefault("text_rules", saved_rules(model_dir, meta))  # (a model saved before they were recorded)
        meta["merged_from"] = {"adapter": str(adapter.resolve()), "base": base}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        diff = max_diff(want, logits_of(auto.from_pretrained(str(tmp)), inputs))
        saved = max_diff(want, logits_of(auto.from_pretrained(str(model_dir)), inputs))
        if diff > tolerance:
            raise ParityError(f"export {flag('merge', True)}: merged model differs from the adapter model by "
                              f"{diff:.3g} (max |Δlogit|) > tolerance {tolerance:g}; nothing written")
        if saved > tolerance:
            raise ParityError(f"export {flag('merge', True)}: {model_dir} differs from base + adapter by "
                              f"{saved:.3g} (max |Δlogit|) > tolerance {tolerance:g} (base {base} changed?); nothing "
                              "written")
        commit(tmp, output, replaced)
    return MergeReport(output, adapter, base, diff, saved, len(inputs), tolerance)
