"""`tunelab export RUN --format gguf [--quantize f16|q8_0]`: an SFT run of a tiny Llama with a byte-level BPE tokenizer
(built here) written as one GGUF file, read back by transformers (`gguf_file=`): logits, greedy tokens, tokenizer
and chat template match; eval takes the export; a model GGUF cannot hold is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import WORDS, say_rows, write_jsonl
from tunelab.cli import app


@pytest.fixture(scope="module")
def bpe_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([" ".join(WORDS)] * 20 + [f"say {w}" for w in WORDS], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("bpe-llama") / "model"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sft_run(bpe_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gguf-sft")
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:12] * 2))
    val = write_jsonl(tmp / "val.jsonl", say_rows(WORDS[:6]))
    sets = ["task=sft", f"model={bpe_llama}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp / 'run'}", "train.epochs=20", "train.lr=5e-3", "train.batch_size=8", "train.save_steps=0",
            "train.precision=fp32"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return tmp / "run"


@pytest.mark.parametrize("quantize", [None, "q8_0"])
def test_gguf_reads_back_like_the_tuned_model(sft_run: Path, quantize: str | None) -> None:
    from transformers import AutoTokenizer

    res = CliRunner().invoke(app, ["export", str(sft_run), "--format", "gguf", *(["--quantize", quantize] if quantize
                                                                                 else [])])
    quantize = quantize or "f16"  # the default
    assert res.exit_code == 0, res.output
    out = sft_run / "exports" / f"gguf-{quantize}"
    assert res.stderr.strip().splitlines()[-1] == f"export: wrote {out}"
    assert "GGUF tensors" not in res.stderr  # transformers' own tqdm bar, while the file was read back
    report = json.loads((out / "report.json").read_text())
    torch_row, gguf_row = report["rows"]
    assert report["refused"] is None and gguf_row["precision"] == quantize
    assert gguf_row["agreement"] >= 0.99 and gguf_row["positions"] >= 12  # the reply tokens of 6 rows
    assert 0 < gguf_row["max_abs_logit_diff"] < (0.01 if quantize == "f16" else 0.1)
    assert gguf_row["metric_name"] == "loss" and abs(gguf_row["metric"] - torch_row["metric"]) < 0.01
    model_bytes = (sft_run / "model" / "model.safetensors").stat().st_size
    assert gguf_row["size_bytes"] < model_bytes * (0.6 if quantize == "f16" else 0.4)
    # the tokenizer and chat template travel inside the file
    original = AutoTokenizer.from_pretrained(str(sft_run / "model"))
    back = AutoTokenizer.from_pretrained(str(out), gguf_file="model.gguf")
    text = "say good movie, the actor was awful"
    assert back(text)["input_ids"] == original(text)["input_ids"]
    field = pytest.importorskip("gguf").GGUFReader(str(out / "model.gguf")).fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == original.chat_template  # what llama.cpp / ollama read
    # eval loads the export (transformers dequantises the file)
    res = CliRunner().invoke(app, ["eval", str(out), "--data", report["data"], "--no-generate"])
    assert res.exit_code == 0 and "GGUF tensors" not in res.stderr, res.output
    assert json.loads(res.stdout.splitlines()[-1])["loss"] == pytest.approx(gguf_row["metric"], abs=1e-6)
    # generating, the export's replies go to its run's predictions/, named for the export, and are replaced the next
    # time (they went to RUN/exports/predictions/, shared by every export, and a second eval was refused)
    for _ in range(2):
        res = CliRunner().invoke(app, ["eval", str(out), "--data", report["data"], "--limit", "2", "--max-new-tokens",
                                       "2"])
        assert res.exit_code == 0, res.output
    replies = sft_run / "predictions" / f"eval-{Path(report['data']).stem}.gguf-{quantize}.generations.jsonl"
    assert f"replies with their scores in {replies}" in res.stderr and replies.is_file()
    assert not (sft_run / "exports" / "predictions").exists()


def test_gguf_refuses_what_it_cannot_hold(tiny_chat_run: Path) -> None:
    """tiny_chat_run's tokenizer is word-level: llama.cpp could not tokenise like it, so nothing is written."""
    res = CliRunner().invoke(app, ["export", str(tiny_chat_run), "--format", "gguf"])
    assert res.exit_code == 2 and "neither a byte-level BPE" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tiny_chat_run / "exports" / "gguf-f16").exists()


def test_a_wrong_gguf_is_refused(sft_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without llama.cpp's rotary permutation of q and k the file is wrong for every reader: transformers un-permutes
    what was never permuted, the loss rises and the gate refuses it (exit 1, nothing written)."""
    import tunelab.export.gguf as gguf_export

    monkeypatch.setattr(gguf_export, "_permute", lambda w, n_head: w)
    out = sft_run / "exports" / "wrong"
    res = CliRunner().invoke(app, ["export", str(sft_run), "--format", "gguf", "--output", str(out)])
    assert res.exit_code == 1, res.output
    assert "error: export: refused, nothing written: loss " in res.stderr and "% over the original's" in res.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def gemma_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SFT run of a tiny 6-layer Gemma-3 (five sliding-window layers, then a global one, as llama.cpp's gemma3
    assumes) with a SentencePiece-style BPE tokenizer built here: `▁` for spaces, byte fallback."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    tmp = tmp_path_factory.mktemp("gguf-gemma")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tk.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)],
                                  initial_alphabet=["▁"], show_progress=False)
    tk.train_from_iterator([" ".join(WORDS)] * 20 + [f"say {w}" for w in WORDS], trainer)
    bos = tk.token_to_id("<bos>")
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<start_of_turn>"
                         "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
                         "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    torch.manual_seed(0)  # head_dim = query_pre_attn_scalar = 256, as Gemma-3's: GGUF has no key for the scale
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=256, query_pre_attn_scalar=256,
                           sliding_window=4, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                           bos_token_id=bos, eos_token_id=tok.eos_token_id)
    model_dir = tmp / "model"
    Gemma3ForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:12] * 2))
    val = write_jsonl(tmp / "val.jsonl", say_rows(WORDS[:6]))
    sets = ["task=sft", f"model={model_dir}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp / 'run'}", "train.epochs=10", "train.lr=5e-3", "train.batch_size=8",
            "train.save_steps=0", "train.precision=fp32"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return tmp / "run"


def test_a_gemma3_run_goes_to_gguf(gemma_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemma-3 as GGUF's gemma3 architecture with a llama (SentencePiece) tokenizer: read back by transformers it
    scores like the tuned model and tokenises alike; written without Gemma's 1 + w norms it is refused."""
    from transformers import AutoTokenizer

    res = CliRunner().invoke(app, ["export", str(gemma_run), "--format", "gguf"])
    assert res.exit_code == 0, res.output
    out = gemma_run / "exports" / "gguf-f16"
    report = json.loads((out / "report.json").read_text())
    torch_row, gguf_row = report["rows"]
    assert report["refused"] is None and gguf_row["agreement"] >= 0.99, report
    assert abs(gguf_row["metric"] - torch_row["metric"]) < 0.01 and gguf_row["max_abs_logit_diff"] < 0.05
    fields = pytest.importorskip("gguf").GGUFReader(str(out / "model.gguf")).fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "gemma3"
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "llama"
    assert bool(fields["tokenizer.ggml.add_bos_token"].parts[-1][0])
    assert not bool(fields["tokenizer.ggml.add_space_prefix"].parts[-1][0])  # no Metaspace prefix, as Gemma's
    original = AutoTokenizer.from_pretrained(str(gemma_run / "model"))
    back = AutoTokenizer.from_pretrained(str(out), gguf_file="model.gguf")
    text = "say good movie, the actor was awful"
    assert back(text)["input_ids"] == original(text)["input_ids"]
    import tunelab.export.gguf as gguf_export

    monkeypatch.setattr(gguf_export, "_gemma_norm", lambda w: w)
    res = CliRunner().invoke(app, ["export", str(gemma_run), "--format", "gguf", "--quantize", "q8_0"])
    assert res.exit_code == 1 and "refused" in res.stderr.lower(), res.output
    assert not (gemma_run / "exports" / "gguf-q8_0").exists()



def test_a_gemma3_llama_cpp_would_run_otherwise_is_refused(tiny_gemma3: Path) -> None:
    """The session's tiny Gemma-3 alternates sliding and global layers every other layer; llama.cpp's gemma3 takes
    every 6th as global, so the file would compute another model: refused before anything is written."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    from tunelab.errors import TunelabError
    from tunelab.export.gguf import check_exportable

    model, tok = Gemma3ForCausalLM.from_pretrained(str(tiny_gemma3)), AutoTokenizer.from_pretrained(str(tiny_gemma3))
    with pytest.raises(TunelabError, match="differs from what llama.cpp assumes for gemma3"):
        check_exportable(model, tok)
