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
    # GPT-2's split (ByteLevel alone, as SmolLM2's tokenizer): llama.cpp split by "default" punctuation runs first
    field = pytest.importorskip("gguf").GGUFReader(str(out / "model.gguf")).fields["tokenizer.ggml.pre"]
    assert bytes(field.parts[field.data[0]]).decode() == "gpt-2"
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
    return _trained(tmp, model_dir, "train.epochs=10")


def _trained(tmp: Path, model_dir: Path, length: str) -> Path:
    """TMP/run: the model in `model_dir` tuned as sft on "say WORD" rows for `length` (fp32, no checkpoints)."""
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:12] * 2))
    val = write_jsonl(tmp / "val.jsonl", say_rows(WORDS[:6]))
    sets = ["task=sft", f"model={model_dir}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp / 'run'}", length, "train.lr=5e-3", "train.batch_size=8",
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


# Qwen2 / Qwen2.5 / Qwen3 (byte-level BPE split by Qwen2's regex: GGUF's gpt2 model, pre-tokenizer qwen2) and Mistral
# (SentencePiece-style BPE, `▁` before the first word: GGUF's llama model) with each family's chat template
QWEN3_TEMPLATE = (  # Qwen3's, cut to what matters here: the reply after the last user turn opens with a think block
    "{%- set ns = namespace(last=0) %}{%- for m in messages %}{%- if m.role == 'user' %}"
    "{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}{%- if m.role == 'assistant' and loop.index0 > ns.last %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m.content + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
                    "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}"
                    "{% endfor %}")
# text whose splitting tells the pre-tokenizers apart: Qwen2's regex keeps "(good" and "'S" whole, splits digits
SPLIT_TEXT = "say (good) movie, the ACTOR'S 2024 line\n\n  was (awful)"
FAMILIES = {"qwen2": ("Qwen2", "qwen2"), "qwen3": ("Qwen3", "qwen3"), "mistral": ("Mistral", "llama")}


def _family_tokenizer(family: str, first_only: bool = False):
    """The family's tokenizer; `first_only`: Mistral's with Metaspace `prepend_scheme` first (`legacy` false)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    from conftest import TOOL_TEMPLATE
    from tunelab.export.gguf_tokenizer import QWEN2_SPLIT

    corpus = [" ".join(WORDS)] * 20 + [f"say {w}" for w in WORDS] + [f"say ({w}) it's {w}'S" for w in WORDS] * 5
    if family == "mistral":  # Llama-2 / Mistral (legacy): ▁ before each piece of text, byte fallback
        specials = ["<unk>", "<s>", "</s>"]
        tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)],
                                      initial_alphabet=["▁"], show_progress=False)
        tk.train_from_iterator(corpus, trainer)
        if not first_only:  # ▁ before each piece of text, also after <s>, as sentencepiece and llama.cpp
            tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(" ", 1, 0)])
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                      pad_token="</s>")
        tok.chat_template = MISTRAL_TEMPLATE
        return tok
    tk = Tokenizer(models.BPE())  # Qwen's: NFC, Qwen2's split, then bytes
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if family == "qwen3":  # Qwen3's think tags: added tokens, not special
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tok.chat_template = QWEN3_TEMPLATE if family == "qwen3" else TOOL_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def family_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """An SFT run (CLI, 2 steps) of a tiny random model of the family built from its transformers config: Qwen2 and
    Qwen3 tie their embeddings (as the 0.5B / 0.6B ones), Mistral does not; Qwen3's head size is not 128 (transformers'
    reader took 128 whatever the file said)."""
    import torch
    import transformers

    family = request.param
    tok = _family_tokenizer(family)
    prefix, _ = FAMILIES[family]
    size = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 128, "vocab_size": len(tok),
            "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    extra = {"mistral": {"tie_word_embeddings": False, "sliding_window": None},
             "qwen3": {"tie_word_embeddings": True, "head_dim": 16}}.get(family, {"tie_word_embeddings": True})
    torch.manual_seed(0)
    cfg = getattr(transformers, f"{prefix}Config")(**size, **extra)
    tmp = tmp_path_factory.mktemp(f"gguf-{family}")
    model = getattr(transformers, f"{prefix}ForCausalLM")(cfg)
    with torch.no_grad():  # biases start at 0, norms at 1, attention near uniform after 2 steps: random here, so a
        for name, param in model.named_parameters():  # file without them, or with q / k laid out otherwise, reads back
            if name.endswith(".bias") or "norm" in name:  # otherwise
                param.normal_(1.0 if "norm" in name else 0.0, 0.5)
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                param.normal_(0.0, 0.3)
    model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    return family, _trained(tmp, tmp / "model", f"train.max_steps={6 if family == 'mistral' else 2}")


@pytest.mark.parametrize("family_run", list(FAMILIES), indirect=True)
def test_each_family_goes_to_gguf_as_llama_cpp_writes_it(family_run: tuple[str, Path]) -> None:
    """Qwen2 / Qwen2.5 (qwen2: q/k/v biases, no rotary permutation), Qwen3 (qwen3: q/k norms) and Mistral (llama:
    permuted q/k) in f16 and q8_0: read back by transformers each scores like the tuned model; the file holds the
    architecture, the tensors, the tokenizer with the pre-tokenizer llama.cpp splits it with, and the chat template
    (were refused: "not supported yet")."""
    from transformers import AutoTokenizer

    gguf = pytest.importorskip("gguf")
    family, run = family_run
    arch = FAMILIES[family][1]
    original = AutoTokenizer.from_pretrained(str(run / "model"))
    for quantize, most in (("f16", 0.01), ("q8_0", 0.1)):
        res = CliRunner().invoke(app, ["export", str(run), "--format", "gguf", "--quantize", quantize])
        assert res.exit_code == 0, res.output
        out = run / "exports" / f"gguf-{quantize}"
        torch_row, gguf_row = json.loads((out / "report.json").read_text())["rows"]
        assert gguf_row["agreement"] >= 0.99 and gguf_row["positions"] >= 12, gguf_row
        assert 0 < gguf_row["max_abs_logit_diff"] < most and abs(gguf_row["metric"] - torch_row["metric"]) < 0.01
    reader = gguf.GGUFReader(str(out / "model.gguf"))

    def text(key: str) -> str:
        return bytes(reader.fields[key].parts[-1]).decode()

    assert text("general.architecture") == arch
    assert text("tokenizer.ggml.model") == ("llama" if family == "mistral" else "gpt2")
    assert text("tokenizer.ggml.pre") == ("default" if family == "mistral" else "qwen2")  # what llama.cpp splits by
    assert text("tokenizer.chat_template") == original.chat_template
    names = {t.name for t in reader.tensors}
    assert ("blk.0.attn_q.bias" in names) == (family == "qwen2")
    assert ("blk.1.attn_k_norm.weight" in names) == (family == "qwen3")
    assert ("output.weight" in names) == (family == "mistral")  # Qwen's tied embeddings: llama.cpp reads token_embd
    back = AutoTokenizer.from_pretrained(str(out), gguf_file="model.gguf")
    chat = original.apply_chat_template(say_rows(["good"])[0]["messages"], tokenize=False)
    for sample in (SPLIT_TEXT, chat):
        assert back(sample)["input_ids"] == original(sample)["input_ids"], sample


@pytest.mark.parametrize(("family", "setting", "said"), [
    ("mistral", {"sliding_window": 64}, "sliding window of 64 tokens within its context of 128"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 0}, "sliding-window layers"),
    ("qwen3", {"attention_bias": True}, "attention biases"),
    ("qwen2", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                   "original_max_position_embeddings": 32}}, "rope scaling 'yarn'"),
    ("qwen2", {"pre": "ByteLevel"}, "no pre-tokenizer for"),
    ("mistral", {"pre": "first"}, "prepend_scheme 'first'"),
])
def test_what_llama_cpp_would_compute_otherwise_is_refused(family: str, setting: dict, said: str) -> None:
    """What llama.cpp would run otherwise than transformers is one line before anything is written: Mistral's window
    shorter than its context (llama.cpp's llama attends over all of it), Qwen's sliding-window layers, Qwen3 with
    biases, rope scaling, a byte-level tokenizer split before BPE in a way llama.cpp has no pre-tokenizer for, a
    SentencePiece-style one that puts ▁ before the first word only (llama.cpp also puts it after <s>: found running
    the Mistral file in llama.cpp, 2026-12-07)."""
    import transformers
    from tokenizers import pre_tokenizers

    from tunelab.errors import TunelabError
    from tunelab.export.gguf import check_exportable

    pre = setting.pop("pre", None)
    tok = _family_tokenizer(family, first_only=pre == "first")  # ▁ before the first word only, not after <s>
    if pre == "ByteLevel":  # GPT-2's regex, then a space before the text: llama.cpp adds none
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    prefix, _ = FAMILIES[family]
    cfg = getattr(transformers, f"{prefix}Config")(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=4, num_key_value_heads=2,
                                                   max_position_embeddings=128, vocab_size=len(tok), **setting)
    with pytest.raises(TunelabError, match=said):
        check_exportable(getattr(transformers, f"{prefix}ForCausalLM")(cfg), tok)


# What llama.cpp itself reads from each family's files (llama-cpp-python, not a tunelab dependency)
LLAMA_CPP_TEXTS = (SPLIT_TEXT, "你好，世界！今天天气很好。", "call 0123456789 or 3.14159 at 10:30",
                   "a   b\n\n\n  c \n d    e\n", "great movie 🎬🙂 👍🏽")
# against transformers fp32, (greedy agreement, max |Δlogit|): seen 2026-12-07 with llama-cpp-python 0.3.36, f16
# 100 % and 0.0003–0.0018, q8_0 99.29–100 % and 0.007–0.037 (its matrix products round activations to 8 bits too)
LLAMA_CPP_MOST = {"f16": (0.99, 0.02), "q8_0": (0.97, 0.2)}


def _read_by_llama_cpp(run: Path) -> None:
    """Both files of `run` (f16, q8_0) in llama.cpp: it tokenises the texts and the chat-templated rows as the tuned
    model's tokenizer does (BOS as the tokenizer adds it), its logits over those rows follow transformers' fp32
    ones (greedy agreement and max |Δlogit| as LLAMA_CPP_MOST) and it reads the chat template."""
    import numpy as np
    import torch

    llama_cpp = pytest.importorskip("llama_cpp")
    from tunelab.export.save import load_model

    _, model, tok = load_model(run / "model")
    model = model.float().eval()
    chats = [tok.apply_chat_template(r["messages"], tokenize=False) for r in say_rows(WORDS[:6])]
    rows = [tok(c, add_special_tokens=False)["input_ids"] for c in chats]
    with torch.inference_mode():
        reference = [model(input_ids=torch.tensor([ids])).logits[0].float().numpy() for ids in rows]
    for quantize in ("f16", "q8_0"):
        out = run / "exports" / f"llama-cpp-{quantize}"
        res = CliRunner().invoke(app, ["export", str(run), "--format", "gguf", "--quantize", quantize, "--output",
                                       str(out)])
        assert res.exit_code == 0, res.output
        llm = llama_cpp.Llama(model_path=str(out / "model.gguf"), n_ctx=128, n_threads=2, n_threads_batch=2,
                              logits_all=True, verbose=False)
        try:
            assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
            for text in LLAMA_CPP_TEXTS:
                assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"], text
            for chat, ids in zip(chats, rows, strict=True):
                assert llm.tokenize(chat.encode(), add_bos=False, special=True) == ids, chat
            same = total = 0
            worst = 0.0
            for ids, want in zip(rows, reference, strict=True):
                llm.reset()
                llm.eval(ids)
                got = np.array(llm.scores[: len(ids)], dtype=np.float32)
                same += int((got.argmax(-1) == want.argmax(-1)).sum())
                total += len(ids)
                worst = max(worst, float(np.abs(got - want).max()))
            print(f"{run.parent.name} {quantize}: agreement {same / total:.4f} of {total}, max |dlogit| {worst:.4f}")
            least, most = LLAMA_CPP_MOST[quantize]
            assert same / total >= least and worst < most, (quantize, same / total, worst)
        finally:
            llm.close()


@pytest.fixture(scope="session")  # (pytest builds wider-scoped fixtures first: a module's run would come before it)
def llama_cpp_installed() -> None:
    """Skip before the runs a test takes are trained (for nothing) where llama_cpp is missing: list it first."""
    pytest.importorskip("llama_cpp")


@pytest.mark.parametrize("family_run", list(FAMILIES), indirect=True)
def test_each_family_reads_in_llama_cpp_as_tuned(llama_cpp_installed: None, family_run: tuple[str, Path]) -> None:
    """Qwen2, Qwen3 and Mistral files (f16, q8_0) loaded in llama.cpp (llama-cpp-python): its tokenisation, logits
    and chat template are the tuned model's. Skipped where llama_cpp is not installed (CI: PyPI has its source only;
    docs/compress.md says how it was built and what it gave)."""
    _read_by_llama_cpp(family_run[1])


@pytest.mark.parametrize("fixture", ["sft_run", "gemma_run"])
def test_llama_and_gemma3_read_in_llama_cpp_as_tuned(llama_cpp_installed: None, fixture: str,
                                                     request: pytest.FixtureRequest) -> None:
    """The same for a Llama / SmolLM2-style run (byte-level BPE, pre-tokenizer gpt-2) and Gemma-3 (SentencePiece-style
    BPE, <bos> added). Skipped where llama_cpp is not installed (CI)."""
    _read_by_llama_cpp(request.getfixturevalue(fixture))


@pytest.fixture(scope="module")
def llama_legacy_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose tokenizer is a Llama-2 one as transformers 5 reads it (`LlamaTokenizer`, `legacy: true`: ▁
    before each piece of text, also after <s>; tokenizer.json's Prepend + Replace normaliser, no pre-tokenizer)."""
    import torch
    from tokenizers import normalizers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = tmp_path_factory.mktemp("gguf-llama-legacy") / "model"
    tok = _family_tokenizer("mistral")
    tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.backend_tokenizer.pre_tokenizer = None
    tok.save_pretrained(base)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.update({"tokenizer_class": "LlamaTokenizer", "legacy": True})
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(base)
    assert type(tok).__name__ == "LlamaTokenizer"
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, vocab_size=len(tok),
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(base)
    return base


@pytest.fixture(scope="module")
def llama_legacy_run(llama_legacy_base: Path) -> tuple[Path, Path]:
    """(base, run): that Llama tuned as sft for 2 steps through the CLI."""
    return llama_legacy_base, _trained(llama_legacy_base.parent, llama_legacy_base, "train.max_steps=2")


def test_a_tokenizer_saved_otherwise_than_in_use_is_caught(llama_legacy_base: Path, tmp_path: Path) -> None:
    """The round-trip guard every tokenizer tunelab writes goes through: a LlamaTokenizer saved as transformers writes
    it (no `legacy`) reads `<s>[INST]` otherwise on reload, an error naming the text; save_tokenizer's copy does not."""
    from transformers import AutoTokenizer

    from tunelab.models.tokenizer_save import TokenizerRoundTripError, check_round_trip, save_tokenizer

    tok = AutoTokenizer.from_pretrained(llama_legacy_base)
    tok.save_pretrained(tmp_path / "plain")
    with pytest.raises(TokenizerRoundTripError, match=r"reads '<s>say good'"):
        check_round_trip(tok, tmp_path / "plain")
    save_tokenizer(tok, tmp_path / "carried")
    assert json.loads((tmp_path / "carried" / "tokenizer_config.json").read_text())["legacy"] is True


def test_a_tokenizer_that_reloads_otherwise_is_saved_with_a_warning(llama_legacy_base: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Where the round trip still differs (here: the kwarg carry switched off), the save is not refused — the model
    beside it is the user's trained work — but said on stderr, naming the text."""
    from transformers import AutoTokenizer

    from tunelab.models import tokenizer_save

    monkeypatch.setattr(tokenizer_save, "REBUILT_FROM", ())
    tokenizer_save.save_tokenizer(AutoTokenizer.from_pretrained(llama_legacy_base), tmp_path / "kept")
    assert (tmp_path / "kept" / "tokenizer_config.json").is_file()
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "reads '<s>say good'" in err and "a tunelab bug" in err


def test_a_legacy_llama_tokenizer_reloads_from_the_run_as_trained(llama_legacy_run: tuple[Path, Path]) -> None:
    """RUN/model's tokenizer (what predict, chat, serve and export load) tokenises as the one the run trained with:
    transformers 5 rebuilds a LlamaTokenizer from `legacy` (default false: ▁ before the first word only) and did not
    save it, so RUN/model read `<s>[INST]` without the ▁ training saw. It then goes to GGUF (was refused)."""
    from transformers import AutoTokenizer

    base, run = llama_legacy_run
    trained, saved = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(run / "model")
    chat = trained.apply_chat_template(say_rows(["good"])[0]["messages"], tokenize=False)
    for text, special in ((chat, False), (SPLIT_TEXT, True), ("  two leading spaces", True)):
        want = trained(text, add_special_tokens=special)["input_ids"]
        assert saved(text, add_special_tokens=special)["input_ids"] == want, text
    assert trained.convert_ids_to_tokens(trained(chat, add_special_tokens=False)["input_ids"])[:2] == ["<s>", "▁"]
    res = CliRunner().invoke(app, ["export", str(run), "--format", "gguf"])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr, res.stderr
    exported = AutoTokenizer.from_pretrained(run / "exports" / "gguf-f16")  # what predict on the export reads
    assert exported(chat, add_special_tokens=False)["input_ids"] == trained(chat, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("make", ["make_tiny_bert", "make_tiny_llama", "make_tiny_gemma3", "make_tiny_qwen3"])
def test_the_tokenizers_tunelab_builds_on_save_without_a_warning(make: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Every tokenizer kind of the suite, plain and with tokens added (as SFT adds a pad token, think tags), is saved
    by save_tokenizer with no round-trip warning and reloads to the same tokens (the guard must not cry wolf)."""
    from transformers import AddedToken, AutoTokenizer

    import conftest
    from tunelab.models.tokenizer_save import probes, save_tokenizer

    base = getattr(conftest, make)(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    for added in ([], [AddedToken("<pad2>", special=True), AddedToken("<think>", special=False)]):
        tok.add_tokens(added)
        out = tmp_path / f"saved-{len(added)}"
        save_tokenizer(tok, out)
        assert capsys.readouterr().err == "", make
        back = AutoTokenizer.from_pretrained(out)
        for text, special in probes(tok):
            assert back(text, add_special_tokens=special)["input_ids"] == tok(text, add_special_tokens=special)[
                "input_ids"], (make, text)


def test_a_legacy_llama_run_reads_in_llama_cpp_as_tuned(llama_cpp_installed: None,
                                                        llama_legacy_run: tuple[Path, Path]) -> None:
    """The same run's GGUF files in llama.cpp: its tokens, logits and chat template. Skipped without llama_cpp."""
    _read_by_llama_cpp(llama_legacy_run[1])
