"""The tokenizer of a GGUF export, written as llama.cpp's `convert_hf_to_gguf.py` writes it: a byte-level BPE
(SmolLM2, Llama-3, Qwen2/2.5/3) as GGUF's `gpt2` model with its merges and the pre-tokenizer llama.cpp splits text
with (`tokenizer.ggml.pre`: a wrong name makes llama.cpp split text otherwise than the tokenizer the model was tuned
with); a SentencePiece-style BPE (`▁` for spaces, byte fallback: Gemma, Mistral, Llama-2) as GGUF's `llama` model,
whose merge order is the tokens' scores."""

from __future__ import annotations

import json
import re
from typing import Any

BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
# The regexes llama.cpp's byte-level pre-tokenizers split text with (src/llama-vocab.cpp), as tokenizer.json spells
# them: the `Split` before a ByteLevel that no longer splits (use_regex false)
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLITS = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}


def bpe(tokenizer: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the BPE model, the whole tokenizer spec) of a fast tokenizer with a BPE model, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    return (model, spec) if model.get("type") == "BPE" else None


def tokenizer_kind(found: tuple[dict[str, Any], dict[str, Any]] | None) -> str | None:
    """GGUF's tokenizer model for a tokenizer (`bpe`'s answer): gpt2 (byte-level BPE), llama (SentencePiece BPE),
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


def pre_tokenizer(spec: dict[str, Any]) -> str | None:
    """llama.cpp's name (`tokenizer.ggml.pre`) for a byte-level BPE's pre-tokenizer, None for one it does not have:
    GPT-2's regex (ByteLevel alone: SmolLM2 as tunelab materialises it) → gpt-2, digits first → smollm, Qwen2's
    regex (Qwen2, Qwen2.5, Qwen3) → qwen2, Llama-3's → llama-bpe."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    last = steps[-1] if steps else {}
    if kinds[-1:] != ["ByteLevel"] or last.get("add_prefix_space"):  # llama.cpp adds no space before the text
        return None
    if last.get("use_regex", True):  # GPT-2's regex, after what comes first
        if kinds == ["ByteLevel"]:
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
            return "smollm"
        return None
    if kinds == ["Split", "ByteLevel"] and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert"):
        return SPLITS.get((steps[0].get("pattern") or {}).get("Regex"))
    return None


def prefix_after_specials_differs(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts `▁` before the text's first word only (Metaspace `prepend_scheme` first: a Llama-2 /
    Mistral tokenizer converted with `legacy` false), not before text that follows a special token; llama.cpp's
    SentencePiece tokenizer puts it there too (`add_space_prefix` holds for every piece of text, as sentencepiece's
    own and the legacy tokenizers' Prepend normaliser do), so a chat-templated row would tokenise otherwise."""
    return '"prepend_scheme": "first"' in json.dumps(spec.get("pre_tokenizer"), ensure_ascii=False)


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


def tokenizer_metadata(writer: Any, tokenizer: Any) -> None:
    """The tokenizer and the chat template into the writer's metadata (`check_exportable` has passed)."""
    import gguf

    found = bpe(tokenizer)  # the spec serialised once (Gemma's is 33 MB)
    kind = tokenizer_kind(found)
    assert kind is not None and found is not None
    tokens, types = _tokens(tokenizer, bool(found[0].get("byte_fallback")))
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre_tokenizer(found[1]) if kind == "gpt2" else "default")
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
