"""A tuned causal LM (Llama architecture: SmolLM2, Llama, TinyLlama, ...) → one GGUF file for llama.cpp / ollama,
written with the `gguf` package (llama.cpp's own writer), weights in f16 or q8_0, the byte-level BPE tokenizer and the
chat template in its metadata; then read back by transformers (`gguf_file=`), the reference reader outside
llama.cpp, and compared with the tuned model.

What is hand-written here is what llama.cpp's `convert_hf_to_gguf.py` does for this one architecture (that script is
not a package): the tensor names (from gguf's own name map), the rotary permutation of the query and key projections
that llama.cpp's kernels expect, and the metadata keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.errors import TunelabError

QUANTS = ("f16", "q8_0")
ARCHITECTURES = ("LlamaForCausalLM",)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary layout (halves) → llama.cpp's (interleaved pairs), per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_exportable(model: torch.nn.Module, tokenizer: Any) -> None:
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    if type(model).__name__ not in ARCHITECTURES:
        raise TunelabError(f"export --format gguf: {arch} is not supported yet (GGUF export writes the Llama "
                           "architecture: SmolLM2, Llama, TinyLlama)")
    if _bpe(tokenizer) is None:
        raise TunelabError("export --format gguf: the tokenizer is not a byte-level BPE tokenizer (GGUF's gpt2 "
                           "tokenizer model); llama.cpp would tokenise differently")


def _bpe(tokenizer: Any) -> dict[str, Any] | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    return model if model.get("type") == "BPE" else None


def _tokenizer_metadata(writer: Any, tokenizer: Any) -> None:
    import gguf

    bpe = _bpe(tokenizer)
    assert bpe is not None
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    for token, i in vocab.items():
        tokens[i] = token
    special = set(tokenizer.all_special_ids)
    added = {i for i in tokenizer.added_tokens_decoder}
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in added
             else gguf.TokenType.NORMAL for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                        ("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id)):
        if value is not None:
            getattr(writer, f"add_{name}_token_id")(int(value))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(model: torch.nn.Module, tokenizer: Any, path: Path, quantize: str, name: str) -> None:
    """Write the model and tokenizer to `path` with 2-D weights in `quantize` (f16 or q8_0), norms in f32."""
    import gguf

    if quantize not in QUANTS:
        raise TunelabError(f"export --quantize: {quantize!r} is not a GGUF type ({', '.join(QUANTS)})")
    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float((getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
                                    or getattr(cfg, "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    ftype = gguf.LlamaFileType.MOSTLY_Q8_0 if quantize == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(ftype)
    _tokenizer_metadata(writer, tokenizer)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
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
        if key.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        if data.ndim == 1:
            writer.add_tensor(target, data.astype(np.float32))
        elif quantize == "q8_0" and data.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(target, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(target, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
