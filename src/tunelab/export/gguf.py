"""A tuned causal LM → one GGUF file for llama.cpp / ollama, written with the `gguf` package (llama.cpp's own
writer), weights in f16 or q8_0, the tokenizer and the chat template in its metadata (`gguf_tokenizer`); then read
back by transformers (`gguf_file=`), the reference reader outside llama.cpp, and compared with the tuned model.

The architectures, as llama.cpp's `convert_hf_to_gguf.py` writes them (that script is not a package): Llama
(SmolLM2, Llama, TinyLlama) and Mistral as GGUF's `llama`, with the rotary permutation of the query and key
projections its kernels expect (Mistral's sliding window is not written, as llama.cpp writes none: a window shorter
than the context is refused); Qwen2 / Qwen2.5 as `qwen2` (query / key / value biases, NEOX rope: no permutation);
Qwen3 as `qwen3` (per-head query and key RMSNorms, no biases); Gemma-3 as `gemma3`, its RMSNorm weights stored as
1 + w (its kernels multiply by the weight as stored). Tensor names come from gguf's own name map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.errors import TunelabError, flag
from tunelab.export.gguf_tokenizer import (
    bpe,
    pre_tokenizer,
    prefix_after_specials_differs,
    tokenizer_kind,
    tokenizer_metadata,
)

QUANTS = ("f16", "q8_0")
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                 "Qwen3ForCausalLM": "qwen3", "Gemma3ForCausalLM": "gemma3"}
MODEL_ARCHS = {"llama": "LLAMA", "qwen2": "QWEN2", "qwen3": "QWEN3", "gemma3": "GEMMA3"}  # gguf.MODEL_ARCH's names
SUPPORTED = "Llama (SmolLM2, Llama, TinyLlama), Mistral, Qwen2 / Qwen2.5, Qwen3 and Gemma-3"


def _refused(why: str) -> TunelabError:
    """A GGUF export refused: the option named as the caller spells it (`--format gguf`, or `format='gguf'`)."""
    return TunelabError(f"export {flag('format', 'gguf')}: {why}")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary layout (halves) → llama.cpp's (interleaved pairs), per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gemma_norm(w: np.ndarray) -> np.ndarray:
    """Gemma's RMSNorm scales by 1 + w; llama.cpp's kernel by the weight as stored."""
    return w + 1.0


def check_exportable(model: torch.nn.Module, tokenizer: Any) -> None:
    """One line (TunelabError) for what the GGUF file would not hold as llama.cpp computes it, before anything is
    written."""
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    if type(model).__name__ not in ARCHITECTURES:
        raise _refused(f"{arch} is not supported yet (GGUF export writes {SUPPORTED})")
    found = bpe(tokenizer)
    kind = tokenizer_kind(found)
    if kind is None:
        raise _refused("the tokenizer is neither a byte-level BPE (GGUF's gpt2 tokenizer "
                       "model) nor a SentencePiece-style BPE (GGUF's llama model); llama.cpp would tokenise "
                       "differently")
    if kind == "gpt2" and found is not None and pre_tokenizer(found[1]) is None:
        raise _refused("the byte-level tokenizer splits text before BPE in a way llama.cpp "
                       "has no pre-tokenizer for (it knows GPT-2's, SmolLM's, Qwen2's and Llama-3's); llama.cpp "
                       "would tokenise differently")
    if kind == "llama" and found is not None and prefix_after_specials_differs(found[1]):
        raise _refused("the tokenizer puts '▁' before the text's first word only "
                       "(Metaspace prepend_scheme 'first', legacy false); llama.cpp puts it after every special "
                       "token too, so chat-templated text (<s>[INST]…) would tokenise differently")
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope = rope.get("full_attention", rope) if isinstance(rope.get("full_attention"), dict) else rope
    if (rope.get("rope_type") or "default") != "default":
        raise _refused(f"rope scaling {rope.get('rope_type')!r} is not written yet")
    _check_architecture(cfg, ARCHITECTURES[type(model).__name__], arch)


def _check_architecture(cfg: Any, arch: str, name: str) -> None:
    """What llama.cpp's kernels for `arch` assume of the configuration (llama-model.cpp)."""
    window = getattr(cfg, "sliding_window", None)
    sliding = [t for t in getattr(cfg, "layer_types", None) or [] if t != "full_attention"]
    if arch == "llama" and window is not None and window < cfg.max_position_embeddings:
        raise _refused(f"{name} attends over a sliding window of {window} tokens within "
                       f"its context of {cfg.max_position_embeddings}; llama.cpp's llama architecture attends "
                       "over the whole context (convert_hf_to_gguf.py writes no window), so longer inputs would "
                       "be computed otherwise")
    if arch in ("qwen2", "qwen3") and (sliding or getattr(cfg, "use_sliding_window", False)):
        raise _refused(f"{name} has sliding-window layers (use_sliding_window); llama.cpp's "
                       f"{arch} attends over the whole context in every layer")
    if arch == "qwen3" and getattr(cfg, "attention_bias", False):
        raise _refused(f"{name} has attention biases (attention_bias), which llama.cpp's "
                       "qwen3 does not add")
    if arch == "llama" and (getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False)):
        raise _refused(f"{name} has attention / MLP biases (attention_bias, mlp_bias), "
                       "which are not written yet")
    if arch == "gemma3":  # llama.cpp's gemma3 assumes these (llama-model.cpp)
        local = [t == "sliding_attention" for t in cfg.layer_types]
        if local != [(i + 1) % 6 != 0 for i in range(len(local))] or _rope_theta(cfg, "sliding_attention") != 1e4 \
                or cfg.query_pre_attn_scalar != cfg.head_dim:
            raise _refused("this Gemma-3 configuration differs from what llama.cpp assumes "
                           "for gemma3 (every 6th layer global, local rope base 10,000, query scale 1/√head_dim)")


def _rope_theta(cfg: Any, kind: str = "full_attention") -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    params = params.get(kind, params) if isinstance(params.get(kind), dict) else params
    return float(params.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0))


def write_gguf(model: torch.nn.Module, tokenizer: Any, path: Path, quantize: str, name: str) -> None:
    """Write the model and tokenizer to `path` with 2-D weights in `quantize` (f16 or q8_0), norms in f32."""
    import gguf

    if quantize not in QUANTS:
        raise TunelabError(f"export {flag('quantize')}: {quantize!r} is not a GGUF type ({', '.join(QUANTS)})")
    cfg = model.config
    arch = ARCHITECTURES[type(model).__name__]
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    if arch == "gemma3" or getattr(cfg, "head_dim", None):  # as convert_hf_to_gguf.py: a head_dim in the config
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma3":  # llama.cpp's gemma3: every 6th layer global, local rope base 10,000, scale 1/√head_dim
        writer.add_sliding_window(cfg.sliding_window)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(cfg))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    ftype = gguf.LlamaFileType.MOSTLY_Q8_0 if quantize == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(ftype)
    tokenizer_metadata(writer, tokenizer)
    _tensors(writer, model, arch, quantize, n_head, n_kv)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensors(writer: Any, model: torch.nn.Module, arch: str, quantize: str, n_head: int, n_kv: int) -> None:
    """Every weight under its GGUF name, in llama.cpp's layout: 1-D in f32, 2-D in f16 or q8_0."""
    import gguf

    cfg = model.config
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, MODEL_ARCHS[arch]), cfg.num_hidden_layers)
    state = model.state_dict()
    head, embed = state.get("lm_head.weight"), model.get_input_embeddings().weight
    tied = head is None or torch.equal(head, embed)  # tied: llama.cpp reads the output from token_embd (no output)
    for key, tensor in state.items():
        if tied and key == "lm_head.weight":
            continue
        if key.endswith("rotary_emb.inv_freq"):
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise _refused(f"no GGUF name for tensor {key}")
        data = tensor.detach().float().cpu().numpy()
        if arch == "llama" and key.endswith("q_proj.weight"):  # qwen2 / qwen3: NEOX rope, as HF's (no permutation)
            data = _permute(data, n_head)
        elif arch == "llama" and key.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        elif arch == "gemma3" and data.ndim == 1 and "norm" in target:
            data = _gemma_norm(data)
        if data.ndim == 1:
            writer.add_tensor(target, data.astype(np.float32))
        elif quantize == "q8_0" and data.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(target, data.astype(np.float16))


def read_back_config(folder: Path, file: str) -> Any | None:
    """transformers' GGUF reader takes a qwen3 file's head size from Qwen3Config's default (128), not from the file's
    `qwen3.attention.key_length`, which llama.cpp reads: for a Qwen3 of another head size, the configuration
    transformers reads from the file with that key's value; None otherwise (the file's own reading stands)."""
    import gguf
    import transformers

    meta = folder / "config.json"  # the tuned model's, beside the export: whether the file need be read twice
    cfg = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
    if cfg.get("model_type") != "qwen3" or cfg.get("head_dim") in (None, transformers.Qwen3Config().head_dim):
        return None
    field = gguf.GGUFReader(str(folder / file)).fields.get("qwen3.attention.key_length")
    if field is None:
        return None
    config = transformers.AutoConfig.from_pretrained(str(folder), gguf_file=file)
    config.head_dim = int(field.parts[field.data[0]][0])
    return config
