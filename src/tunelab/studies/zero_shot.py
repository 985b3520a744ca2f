"""Zero-shot classification without training: encoder embeddings, or an instruction LLM's likelihoods.

- Embedding: cosine between each text's mean-pooled embedding and each label text's (the label name, or
  its description); scores are softmax(cosine / 0.05) — a ranking, not calibrated probabilities.
- LLM: the prompt lists the labels (with their descriptions when given) and the text, rendered with the
  model's chat template (plain text when it has none), and each label is scored by the summed
  log-likelihood of its tokens as the assistant's answer (restricted scoring: no free generation);
  scores are the softmax over labels of those log-likelihoods.
- LLM, calibrated: contextual calibration (Zhao et al., 2021, "Calibrate before use"): the same scores for
  content-free texts (`CONTENT_FREE`) measure the model's prior for each label; every probability is
  divided by its label's mean content-free probability. It corrects a label prior (Gemma-3-270M on
  ChnSentiCorp: 40.0 -> 69.5 % accuracy), not a bias in how the texts are read (SmolLM2 on SST-2: 61 -> 62 %).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.errors import TunelabError
from tunelab.metrics.classification import softmax
from tunelab.models import resolve_model
from tunelab.models.embeddings import embed
from tunelab.progress import Steps
from tunelab.tasks.causal_loss import IGNORE, example_nll

TEMPERATURE = 0.05
MAX_TEXT_CHARS = 2000
CONTENT_FREE = ("N/A", "", "[MASK]")


def embedding_scores(texts: list[str], label_texts: list[str], model: str, batch_size: int = 64) -> np.ndarray:
    """(len(texts), len(label_texts)) softmax of cosine / TEMPERATURE."""
    vt = embed(texts, model, batch_size)
    vl = embed(label_texts, model, batch_size)
    return softmax((vt @ vl.T).astype(np.float64) / TEMPERATURE)


@lru_cache(maxsize=2)
def load_causal_lm(model: str) -> tuple[Any, Any, Any]:
    """(tokenizer, model, device) of a causal LM named as in a config; loaded once per process."""
    path = resolve_model(model)
    try:
        lm = AutoModelForCausalLM.from_pretrained(path)
    except ValueError as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TunelabError(f"zero-shot: {model!r} is not a causal language model ({why})") from None
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, lm.to(device).eval(), device


def build_prompt(tokenizer: Any, text: str, labels: list[str], descriptions: dict[str, str]) -> tuple[str, bool]:
    """(prompt, whether the chat template made it); the answer (a label) follows the prompt directly."""
    lines = [f"- {lab}: {descriptions[lab]}" if lab in descriptions else f"- {lab}" for lab in labels]
    user = ("Classify the text into exactly one of these labels:\n" + "\n".join(lines)
            + f"\n\nText: {text}\n\nAnswer with the label only.")
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), True
    return user + "\nLabel:", False


def _answer_ids(tokenizer: Any, prompt: str, answer: str, chat: bool) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer as it is tokenised after that prompt."""
    special = not chat  # a chat template writes its own special tokens
    p = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    full = tokenizer(prompt + answer, add_special_tokens=special)["input_ids"]
    if full[: len(p)] == p and len(full) > len(p):
        return p, full[len(p):]
    return p, tokenizer(answer, add_special_tokens=False)["input_ids"]


def llm_scores(texts: list[str], labels: list[str], model: str, descriptions: dict[str, str] | None = None,
               batch_size: int = 16, max_text_chars: int = MAX_TEXT_CHARS) -> np.ndarray:
    """(len(texts), len(labels)) summed log-likelihood of each label's tokens as the answer. A text longer
    than `max_text_chars` characters is cut to its first `max_text_chars`."""
    tokenizer, lm, device = load_causal_lm(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    seqs: list[tuple[int, int, list[int], int]] = []  # (text, label, ids, answer length)
    for i, text in enumerate(texts):
        prompt, chat = build_prompt(tokenizer, text[:max_text_chars], labels, descriptions or {})
        for k, lab in enumerate(labels):
            p, a = _answer_ids(tokenizer, prompt, (" " if not chat else "") + lab, chat)
            if not a:
                raise TunelabError(f"zero-shot: label {lab!r} has no tokens in {model}")
            seqs.append((i, k, p + a, len(a)))
    out = np.zeros((len(texts), len(labels)), dtype=np.float64)
    order = sorted(range(len(seqs)), key=lambda s: len(seqs[s][2]))
    with torch.inference_mode(), Steps("zero-shot", len(seqs), "scores") as progress:
        for s in range(0, len(order), batch_size):
            batch = [seqs[j] for j in order[s: s + batch_size]]
            width = max(len(b[2]) for b in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            targets = torch.full((len(batch), width), IGNORE, dtype=torch.long)  # only the answer is scored
            for r, (_, _, seq, n_ans) in enumerate(batch):  # right padding: positions stay 0..len-1
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
                targets[r, len(seq) - n_ans: len(seq)] = torch.tensor(seq[len(seq) - n_ans:])
            # the vocabulary projection runs for the answer positions only (tasks/causal_loss.py)
            nll, _ = example_nll(lm, {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                                      "labels": targets.to(device)})
            for r, (i, k, _, _) in enumerate(batch):
                out[i, k] = -float(nll[r])
            progress.advance(len(batch))
    return out


def label_prior(content_free_loglik: np.ndarray) -> np.ndarray:
    """Each label's mean probability over the content-free texts."""
    return softmax(content_free_loglik).mean(axis=0)


def calibrate(loglik: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Contextual calibration: log p(label | text) - log prior(label) (`label_prior`); a softmax over labels
    of the result gives the calibrated probabilities."""
    return np.log(softmax(loglik)) - np.log(prior)
