"""Shared fixtures: offline guard, tiny random models built from configs, tiny data files."""

from __future__ import annotations

import gc
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TUNELAB_NO_PROGRESS"] = "1"
# `precision: auto` means fp32 in tests on every CPU (bf16 where native would make exact comparisons
# machine-dependent); tests of bf16 ask for it explicitly
os.environ.setdefault("TUNELAB_PRECISION", "fp32")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on a 2-core machine: a thread each, and
    os.environ["OMP_NUM_THREADS"] = "1"  # the processes a test starts inherit it (tiny models gain nothing from two)

# The longest tests (seconds each in `pytest -n 2 --durations=40` on the 2-core CI machine, 2026-12-05) start first.
# `make test` runs `-n 2 --dist worksteal`: each worker starts on half of this order and an idle one takes half of the
# other's queue, so neither runs a long test alone at the end while the other waits. Measured on a fresh clone of the
# same commit, 2-core Intel Xeon: 4:09 (default `--dist load`, which hands out fixed chunks: 5:18).
LONGEST = {
    "test_distributed.py::test_ddp_killed_and_resumed": 48, "test_ui.py::test_launch_watch_restart": 42,
    "test_newcomer.py::test_readme_path_from_a_checkout": 41, "test_distributed.py::test_fsdp_lora_sft_killed": 40,
    "test_embedded.py::test_smollm2_gguf_materialises": 29, "test_resume.py::test_sigkill_then_resume": 7,
    "test_ui_safety.py::test_resume_runs_in_the_folder": 21,
    "test_export_onnx.py::test_ner_and_qa_export": 15, "test_export_onnx.py::test_the_gate_refuses": 11,
    "test_resume.py::test_ctrl_c_says": 10, "test_search.py::test_tune_four_trials": 10,
    # (2026-12-07, AMD EPYC: 5:24 for the suite) the next longest, which ran where their file's place put them
    "test_distributed.py::test_a_user_error_under_the_launcher": 18, "test_ui.py::test_the_playground_page_shows": 2,
    # (2026-12-07, twenty-seventh session, AMD EPYC: 5:09)
    "test_export_onnx.py::test_a_rotary_decoder": 8, "test_serve.py::test_the_api_fuzzed": 8,
    "test_embedded.py::test_minilm_train_predict": 8, "test_export_output.py::test_a_terminated_export": 8,
    "test_compress.py::test_a_terminated_recovery": 8,
    # (2026-12-07, twenty-ninth session)
    "test_hub_offline.py::test_a_cached_hub_model": 9, "test_api_stages.py::test_export_model_writes_an_onnx": 7,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def seconds(item: pytest.Item) -> int:
        return next((v for k, v in LONGEST.items() if k in item.nodeid), 0)

    items.sort(key=lambda item: -seconds(item))  # stable: the rest keep their order


WORDS = [
    "good",
    "great",
    "fine",
    "nice",
    "happy",
    "love",
    "excellent",
    "bad",
    "awful",
    "poor",
    "sad",
    "hate",
    "terrible",
    "boring",
    "movie",
    "film",
    "plot",
    "actor",
    "story",
    "scene",
    "music",
    "the",
    "a",
    "is",
    "was",
    "very",
    "not",
    "really",
    "quite",
    "it",
    "this",
    "that",
    "and",
    "but",
]
POS, NEG = WORDS[:7], WORDS[7:14]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to a non-loopback address fails the test."""
    real = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else str(address)
        if (
            isinstance(host, str)
            and not (host.startswith("127.") or host in ("localhost", "::1"))
            and self.family in (socket.AF_INET, socket.AF_INET6)
        ):
            raise OSError(f"network access blocked in tests: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _tokenizer(vocab_words: list[str], bert: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if bert else ["<pad>", "<unk>", "<s>", "</s>"]
    chars = sorted({c for w in vocab_words for c in w})
    vocab = {t: i for i, t in enumerate(specials + vocab_words + [c for c in chars if c not in vocab_words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[1]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_input_names=["input_ids", "attention_mask"],
    )


def make_tiny_bert(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)  # the same tiny model in every session

    tok = _tokenizer(WORDS, bert=True)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_llama(path: Path, positions: int = 128) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)

    tok = _tokenizer(WORDS, bert=False)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


ZH = "张三李四王五在北京上海南京大学公司工作是的了和人中国"  # the Chinese characters of tiny_gemma3's vocabulary


def make_tiny_gemma3(path: Path) -> Path:
    """A 2-layer Gemma-3 text model (one sliding-window layer, window 4; one full-attention layer) with a
    Gemma-like tokenizer trained here: BPE over words that carry their leading space as `▁`, `<bos>` before
    each sequence (and before the second of a pair, as Gemma-3's own), Chinese characters in the vocabulary."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    torch.manual_seed(0)
    rng = random.Random(0)
    corpus = [" ".join(rng.choices(WORDS, k=8)) for _ in range(200)]
    corpus += ["".join(rng.choices(ZH, k=10)) for _ in range(50)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=160, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=["▁", *ZH]))
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos>:1 $B:1",
                                                       special_tokens=[("<bos>", bos)])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", model_input_names=["input_ids", "attention_mask"])
    cfg = Gemma3TextConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256, pad_token_id=fast.pad_token_id, bos_token_id=bos, eos_token_id=fast.eos_token_id,
    )
    Gemma3ForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"))


def sentiment_rows(n: int, seed: int = 0, labels: tuple[str, ...] = ("negative", "positive")) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lab = labels[i % len(labels)]
        pool = POS if lab == "positive" else NEG if lab == "negative" else WORDS[14:20]
        words = [rng.choice(pool) for _ in range(rng.randint(2, 6))] + rng.sample(WORDS[14:], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": lab})
    return rows


def read_error(path: Path) -> str:
    """The one line `read_table(path)` refuses the file with (a DataError)."""
    from tunelab.data.readers import read_table
    from tunelab.errors import DataError

    with pytest.raises(DataError) as info:
        read_table(path)
    return str(info.value)


def modes(folder: Path) -> set[str]:
    """The permission bits of `folder` and everything under it, as octal strings ({"644", "755"}: as training
    writes RUN/model, readable by anyone)."""
    return {oct(p.stat().st_mode & 0o777)[2:] for p in [folder, *folder.rglob("*")]}


def umask_modes() -> set[str]:
    """What `modes` is for a folder written as this process's umask makes files and folders ({"644", "755"} under
    the usual 022): training writes RUN/model so, and its checkpoints, exports and compressed models."""
    mask = os.umask(0o022)
    os.umask(mask)
    return {oct(0o666 & ~mask)[2:], oct(0o777 & ~mask)[2:]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_files(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_jsonl(tmp_path / "train.jsonl", sentiment_rows(48, 0)),
        write_jsonl(tmp_path / "validation.jsonl", sentiment_rows(16, 1)),
    )


TOOL_TEMPLATE = (  # ChatML with tools as Qwen2.5's template writes them: the tools in the system turn, calls in tags
    "{% if tools %}{{ '<|im_start|>system\\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ '# Tools\\n<tools>' }}{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools><|im_end|>\\n' }}"
    "{% elif messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{% endif %}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' + m['content'] }}"
    "{% for call in m['tool_calls'] or [] %}{{ '<tool_call>\\n' + ({'name': call['function']['name'], "
    "'arguments': call['function']['arguments']} | tojson) + '\\n</tool_call>' }}{% endfor %}{{ '<|im_end|>\\n' }}"
    "{% elif m['role'] == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + m['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{% elif m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
WEATHER = {"name": "get_weather", "description": "the weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CALL = '{"name": "get_weather", "arguments": {"city": "a"}}'


def say_rows(words: list[str]) -> list[dict]:
    """Chat rows `say W` → `W` (a task a tiny model learns in a few seconds)."""
    return [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": w}]}
            for w in words]


@pytest.fixture(scope="session")
def tiny_chat_run(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of tiny_llama fully fine-tuned (fp32) with task sft to answer `say W` with `W` (ChatML added),
    its final evaluation generating the first 4 validation replies (task.generation.eval_generate), the
    untrained model scored and generating first (train.baseline_eval)."""
    from typer.testing import CliRunner

    from tunelab.cli import app

    tmp = tmp_path_factory.mktemp("tiny-chat")
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:10] * 3))
    val = write_jsonl(tmp / "val.jsonl", say_rows(WORDS[:6]))
    sets = ["task=sft", f"model={tiny_llama}", f"data.train={train}", f"data.validation={val}",
            f"output_dir={tmp / 'run'}", "train.epochs=25", "train.lr=5e-3", "train.batch_size=8",
            "train.save_steps=0", "train.precision=fp32", "task.generation.eval_generate=true",
            "task.generation.eval_limit=4", "train.baseline_eval=true"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return tmp / "run"


def train_sentiment(model: Path, out: Path, validation: bool = True, sets: tuple[str, ...] = (),
                    labels: tuple[str, ...] = ("negative", "positive")) -> Path:
    """A tiny classification run (64 rows, 6 epochs: > 0.9 validation accuracy) at `out`; its data beside it.
    `sets`: more overrides (`method=lora`); `labels` reversed: the opposite labelling of the same texts."""
    from typer.testing import CliRunner

    from tunelab.cli import app

    train = write_jsonl(out.parent / "train.jsonl", sentiment_rows(64, 0, labels))
    val = write_jsonl(out.parent / "val.jsonl", sentiment_rows(40, 1, labels))
    args = ["task=classification", f"model={model}", f"data.train={train}", f"output_dir={out}", "train.epochs=6",
            "train.lr=5e-3", "train.batch_size=8", "train.save_steps=0", "train.precision=fp32",
            f"data.validation={val}" if validation else "data.validation_split=0.25", *sets]
    res = CliRunner().invoke(app, ["train", *[a for s in args for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_on_loopback(application: object) -> Iterator[str]:
    """An ASGI app on uvicorn on a free loopback port, in a thread of this process: yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def serve_on_loopback(paths: list[Path], **settings: object) -> Iterator[tuple[str, object]]:
    """`tunelab serve PATHS` as uvicorn on a free loopback port in a thread: yields (base URL, the Server)."""
    from tunelab.serve.app import create_app
    from tunelab.serve.models import served_models
    from tunelab.serve.schemas import Settings

    application = create_app(served_models(paths), Settings(**settings))
    with app_on_loopback(application) as url:
        yield url, application.state.server


def example_data_builder():
    """`examples/get_data.py` as a module (it is a script, not part of the package)."""
    import importlib.util
    import sys

    if "tunelab_get_data" not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "examples" / "get_data.py"
        spec = importlib.util.spec_from_file_location("tunelab_get_data", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["tunelab_get_data"] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["tunelab_get_data"]


def terminated_at(args: list[str], ready: Callable[[], bool], **env: str) -> None:
    """`python -m tunelab ARGS` (env: these on top) sent SIGTERM half a second after `ready()` first holds (its
    temp folder made): it must end with exit status 143 (128 + SIGTERM), through its clean-up."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNELAB_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **env}
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


# Qwen3's chat template as it writes conversations without tools: an assistant turn's reasoning is its
# `reasoning_content` or, without one, what its content writes before `</think>`; the reply after the last user turn
# (and a later one with reasoning) opens with a `<think>` block, empty where there is none; earlier replies drop it
QWEN3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if ns.multi_step_tool and message.role == 'user' %}"
    "{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}{%- set content = message.content %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}")


def make_tiny_qwen3(path: Path, script: list[str] | None = None) -> Path:
    """A 2-layer Qwen3 model (q_norm / k_norm) with Qwen3's chat template and turn markers (`<|im_start|>`,
    `<|im_end|>`: special) and its `<think>` / `</think>` (added tokens that are not special: decoding keeps them).
    `script`: tokens it writes one after another whatever the prompt — the first after a prompt that ends
    `assistant` (the generation prompt), each later one after the one before (its layers add nothing to a token's
    embedding, and the output layer maps each scripted token to the next), e.g. `["<think>", "hmm", "</think>",
    "good", "<|im_end|>"]`; None: random weights."""
    import torch
    from tokenizers import AddedToken
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tok = _tokenizer(WORDS + ["assistant", "user", "system", "hmm"], bert=False)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|im_start|>", "<|im_end|>")],
                   special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tok.chat_template = QWEN3_TEMPLATE
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                      tie_word_embeddings=False, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    model = Qwen3ForCausalLM(cfg)
    if script:
        chain = tok.convert_tokens_to_ids(["assistant", *script])
        with torch.no_grad():
            for layer in model.model.layers:  # the residual stream is the token's embedding
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.model.embed_tokens.weight.zero_()
            model.lm_head.weight.zero_()
            for k, (now, after) in enumerate(zip(chain, chain[1:], strict=False)):
                model.model.embed_tokens.weight[now, k] = 1.0
                model.lm_head.weight[after, k] = 10.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


THINKS = ["<think>", "hmm", "</think>", "good", "<|im_end|>"]  # what qwen3_think_run writes: reasoning, then `good`


@pytest.fixture(scope="session")
def qwen3_think_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sft run of a tiny Qwen3 (`make_tiny_qwen3`) that writes `THINKS` whatever it is asked: a think block with
    `hmm` in it, then `good` (one step at lr 1e-9: the run as `tunelab train` writes it, the script kept)."""
    from typer.testing import CliRunner

    from tunelab.cli import app

    tmp = tmp_path_factory.mktemp("qwen3-think")
    base = make_tiny_qwen3(tmp / "base", THINKS)
    train = write_jsonl(tmp / "train.jsonl", say_rows(WORDS[:4]))
    sets = ["task=sft", f"model={base}", f"data.train={train}", f"output_dir={tmp / 'run'}", "train.max_steps=1",
            "train.lr=1e-9", "train.save_steps=0", "train.precision=fp32"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return tmp / "run"


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> object:
    """Collection without the cyclic garbage collector, and what it imported frozen out of its reach after: the library
    and the test modules are millions of long-lived objects that each full collection scanned again — 22 times while
    collecting (6 s of a worker's 19 s), and again whenever the tests' own objects piled up (test_search: 30-39 s of
    CPU -> 24 s; test_matrix: 22 s -> 16-19 s; the 2-core AMD EPYC, OMP_NUM_THREADS=1 as under `make test`)."""
    gc.disable()
    try:
        return (yield)
    finally:
        gc.freeze()  # (kept for the process's life, as imported modules are anyway)
        gc.enable()
