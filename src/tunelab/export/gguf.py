"""A tuned causal LM (Llama architecture: SmolLM2, Llama, TinyLlama; Gemma-3) → one GGUF file for llama.cpp /
ollama, written with the `gguf` package (llama.cpp's own writer), weights in f16 or q8_0, the tokenizer and the chat
template in its metadata; then read back by transformers (`gguf_file=`), the reference reader outside llama.cpp, and
compared with the tuned model.

What is hand-written here is what llama.cpp's `convert_hf_to_gguf.py` does for these architectures (that script is
not a package): the tensor names (from gguf's own name map), the rotary permutation of Llama's query and key
projections that llama.cpp's kernels expect, Gemma's RMSNorm weights stored as 1 + w (its kernels multiply by the
weight as stored), the metadata keys, and the tokenizer: a byte-level BPE (SmolLM2) as GGUF's `gpt2` model with its
merges; a SentencePiece-style BPE (`▁` for spaces, byte fallback: Gemma) as GGUF's `llama` model, whose merge
order is the tokens' scores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.errors import TunelabError

QUANTS = ("f16", "q8_0")
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Gemma3ForCausalLM": "gemma3"}
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary layout (halves) → llama.cpp's (interleaved pairs), per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gemma_norm(w: np.ndarray) -> np.ndarray:
    """Gemma's RMSNorm scales by 1 + w; llama.cpp's kernel by the weight as stored."""
    return w + 1.0


def check_exportable(model: torch.nn.Module, tokenizer: Any) -> None:
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    if type(model).__name__ not in ARCHITECTURES:
        raise TunelabError(f"export --format gguf: {arch} is not supported yet (GGUF export writes the Llama "
                           "architecture: SmolLM2, Llama, TinyLlama; and Gemma-3)")
    if _tokenizer_kind(_bpe(tokenizer)) is None:
        raise TunelabError("export --format gguf: the tokenizer is neither a byte-level BPE (GGUF's gpt2 tokenizer "
                           "model) nor a SentencePiece-style BPE (GGUF's llama model); llama.cpp would tokenise "
                           "differently")
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope = rope.get("full_attention", rope) if isinstance(rope.get("full_attention"), dict) else rope
    if (rope.get("rope_type") or "default") != "default":
        raise TunelabError(f"export --format gguf: rope scaling {rope.get('rope_type')!r} is not written yet")
    if ARCHITECTURES[type(model).__name__] == "gemma3":  # llama.cpp's gemma3 assumes these (llama-model.cpp)
        local = [t == "sliding_attention" for t in cfg.layer_types]
        if local != [(i + 1) % 6 != 0 for i in range(len(local))] or _rope_theta(cfg, "sliding_attention") != 1e4 \
                or cfg.query_pre_attn_scalar != cfg.head_dim:
            raise TunelabError("export --format gguf: this Gemma-3 configuration differs from what llama.cpp assumes "
                               "for gemma3 (every 6th layer global, local rope base 10,000, query scale 1/√head_dim)")


def _bpe(tokenizer: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the BPE model, the whole tokenizer spec) of a fast tokenizer with a BPE model, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    return (model, spec) if model.get("type") == "BPE" else None


def _tokenizer_kind(found: tuple[dict[str, Any], dict[str, Any]] | None) -> str | None:
    """GGUF's tokenizer model for a tokenizer (`_bpe`'s answer): gpt2 (byte-level BPE), llama (SentencePiece BPE),
    or None."""
    if found is None:
        return None
    model, spec = found
    text = json.dumps({k: spec.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")}, ensure_ascii=False)
    if "ByteLevel" in text:
        return "gpt2"
    if "▁" in text or model.get("byte_fallback"):  # SentencePiece's space mark
        return "llama"
    return None


def _space_prefix(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts `▁` before the text's first word (Llama-2's Metaspace `prepend_scheme` first /
    always, or a Prepend normaliser); Gemma's does not."""
    text = json.dumps({k: spec.get(k) for k in ("normalizer", "pre_tokenizer")}, ensure_ascii=False)
    return any(mark in text for mark in ('"prepend_scheme": "first"', '"prepend_scheme": "always"', '"Prepend"'))


def _tokens(tokenizer: Any, byte_fallback: bool) -> tuple[list[str], list[Any]]:
    import gguf

    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    for token, i in vocab.items():
        tokens[i] = token
    special = set(tokenizer.all_special_ids)
    added = tokenizer.added_tokens_decoder
    types = []
    for i, token in enumerate(tokens):
        if i in special or (i in added and added[i].special):
            types.append(gguf.TokenType.CONTROL)
        elif i in added:
            types.append(gguf.TokenType.USER_DEFINED)
        elif byte_fallback and BYTE_TOKEN.fullmatch(token):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _tokenizer_metadata(writer: Any, tokenizer: Any) -> None:
    import gguf

    found = _bpe(tokenizer)  # the spec serialised once (Gemma's is 33 MB)
    kind = _tokenizer_kind(found)
    assert kind is not None and found is not None
    tokens, types = _tokens(tokenizer, bool(found[0].get("byte_fallback")))
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "gpt2":
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in found[0].get("merges", [])])
    else:  # llama.cpp merges the pair whose joined token scores highest: HF's merge order, rank r → score -r
        rank = {}
        for r, m in enumerate(found[0].get("merges", [])):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            rank.setdefault(a + b, r)
        writer.add_token_scores([-1000.0 if t in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED) else
                                 0.0 if t == gguf.TokenType.BYTE else -float(rank.get(tok, i))
                                 for i, (tok, t) in enumerate(zip(tokens, types, strict=True))])
        ids = tokenizer("a")["input_ids"]  # the post-processor may add <bos> where `add_bos_token` says False
        writer.add_add_bos_token(bool(ids) and ids[0] == tokenizer.bos_token_id)
        writer.add_add_space_prefix(_space_prefix(found[1]))
    for name, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                        ("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id)):
        if value is not None:
            getattr(writer, f"add_{name}_token_id")(int(value))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _rope_theta(cfg: Any, kind: str = "full_attention") -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    params = params.get(kind, params) if isinstance(params.get(kind), dict) else params
    return float(params.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0))


def write_gguf(model: torch.nn.Module, tokenizer: Any, path: Path, quantize: str, name: str) -> None:
    """Write the model and tokenizer to `path` with 2-D weights in `quantize` (f16 or q8_0), norms in f32."""
    import gguf

    if quantize not in QUANTS:
        raise TunelabError(f"export --quantize: {quantize!r} is not a GGUF type ({', '.join(QUANTS)})")
    cfg = model.config
    arch = ARCHITECTURES[type(model).__name__]
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    if arch == "gemma3":  # llama.cpp's gemma3: every 6th layer global, local rope base 10,000, scale 1/√head_dim
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
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
    _tokenizer_metadata(writer, tokenizer)
    _tensors(writer, model, arch, quantize, n_head, n_kv)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensors(writer: Any, model: torch.nn.Module, arch: str, quantize: str, n_head: int, n_kv: int) -> None:
    """Every weight under its GGUF name, in llama.cpp's layout: 1-D in f32, 2-D in f16 or q8_0."""
    import gguf

    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3 if arch == "gemma3" else gguf.MODEL_ARCH.LLAMA,
                                     cfg.num_hidden_layers)
    state = model.state_dict()
    tied = getattr(cfg, "tie_word_embeddings", False)
    for key, tensor in state.items():
        if tied and key == "lm_head.weight":
            continue
        if key.endswith("rotary_emb.inv_freq"):
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise TunelabError(f"export --format gguf: no GGUF name for tensor {key}")
        data = tensor.detach().float().cpu().numpy()
        if arch == "llama" and key.endswith("q_proj.weight"):
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
