"""Data hygiene: `data.clean` and `data.dedup` drop rows into removed.jsonl, counted in the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_jsonl
from tunelab.config.sections import CleanConfig, DataConfig
from tunelab.data import dedup, load, row_spill
from tunelab.data.dedup import exact_key, normalised_key
from tunelab.data.feature_store import RowSequence
from tunelab.data.hygiene import clean_text
from tunelab.data.load import load_splits
from tunelab.data.report import DataReport
from tunelab.errors import DataError
from tunelab.tasks.classification import Classification, ClassificationConfig


def _load(tmp_path: Path, **data: object) -> tuple[dict, DataReport]:
    cfg = DataConfig(**data)
    task = Classification(ClassificationConfig(), cfg)
    report = DataReport()
    return load_splits(cfg, task, 0, report), report


def _texts(rows: list[dict]) -> list[str]:
    return [r["text"] for r in rows]


def test_clean_text() -> None:
    cfg = CleanConfig()
    assert clean_text("<p>Hello&nbsp;<b>World</b></p><br/>next", cfg) == "Hello World next"
    assert clean_text("<script>alert(1)</script>ok <!-- note --> fine", cfg) == "ok fine"
    assert clean_text("ｆｕｌｌ\u200bwidth\x07  cafe\u0301 ﬁne", cfg) == "fullwidth café fine"
    assert clean_text("  a\n\n\tb  ", cfg) == "a b"
    assert clean_text("1 < 2 and 3 > 2", cfg) == "1 < 2 and 3 > 2"  # not a tag
    off = CleanConfig(normalize_unicode=False, strip_html=False, collapse_whitespace=False)
    assert clean_text("<b>ｆ</b>  x ", off) == "<b>ｆ</b>  x "
    assert normalised_key({"text": "Great  MOVIE"}) == normalised_key({"text": "great movie"})
    # one exact key (the parts join with NUL) is one normalised key, even when a text holds a NUL itself
    assert exact_key({"text": "a ", "text_pair": " b"}) == exact_key({"text": "a \x00 b"})
    assert normalised_key({"text": "a ", "text_pair": " b"}) == normalised_key({"text": "a \x00 b"})


@pytest.mark.parametrize(("text", "want"), [
    ("if a<b and c>d then fail", "if a<b and c>d then fail"),  # was "if ad then fail"
    ("std::vector<int> v; List<String> s; Array<Object> o", "std::vector<int> v; List<String> s; Array<Object> o"),
    ("x<y>z and <foo>bar</foo>", "x<y>z and <foo>bar</foo>"),
    ("AT&T&not good &copy 2020", "AT&T&not good &copy 2020"),  # was "AT&T¬ good © 2020": no `;`, no entity
    ("caf&eacute; &amp; &#233;t&#xE9; &lt;b&gt;", "café & été <b>"),
    ('<P ALIGN=center>one</P><BR>two <a href="x" target=_blank>link</a>', "one two link"),
    ('<div class="a" hidden>t</div><img src=x.png alt="a > b"/>&nbsp;<input disabled>', "t"),
    ("<!DOCTYPE html><html><body><!-- note -->hi<br />there</body></html>", "hi there"),
    ("</p class=x> <b and c>", "</p class=x> <b and c>"),  # a closing tag takes no attributes; `and c` are none
    # a valueless attribute of any common name is a tag (the opening tag stayed while its closing tag went)
    ('<a href="f.pdf" download>file</a> <div contenteditable>e</div><p class>q</p>', "file e q"),
    ("impl<S> Foo<S>; Task<object> t; Func<A> f", "impl<S> Foo<S>; Task<object> t; Func<A> f"),  # generics stay
    ("very<b>good</b> line<br>end", "verygood line end"),  # after a letter: with its closing tag, or void
    # end tags HTML lets a page leave out
    ("<ul><li>one<li>two</ul> <dl><dt>term<dd>sense</dl> good<p>buy", "one two term sense good buy"),
    # a type parameter named as an element (uppercase), or closed only before it, is text
    ("Component<P> {}; Table<TR> t", "Component<P> {}; Table<TR> t"),
    ("<b>x</b> std::vector<B> v; <s>no</s> impl<S> Foo", "x std::vector<B> v; no impl<S> Foo"),
    ("<select><option>Red<option>Green</select> a<!-- c -->b<SCRIPT>x</SCRIPT>c", "Red Green a b c"),
    # a grade (one letter, uppercase, a space / mark / the text's end on each side) is text where it is the only
    # tag a text would lose (`grade <B>` was `grade `); with its closing tag, with attributes, or in a text with
    # markup, a tag as before
    ("Foo<B>; grade <B> in maths, Grade <A>; score: <B>.", "Foo<B>; grade <B> in maths, Grade <A>; score: <B>."),
    ("He got a <B>, she got <A>. 成绩：<B> 很好", "He got a <B>, she got <A>. 成绩:<B> 很好"),
    # a symbol beside it (`<A>+`, `=`, an emoji) and invisible characters passed over: still a grade
    ("I got an <A>+ in physics, grade=<A>, got <A>🎉, grade <B>\u200b in maths",
     "I got an <A>+ in physics, grade=<A>, got <A>🎉, grade <B> in maths"),
    ("x<b>y</b>", "xy"),
    ("grade <B>good</B>, Foo<B>", "grade good, Foo<B>"),
    ('see <b class="k">this', "see this"),
    ("<b>Note:</b> see <i>this", "Note: see this"),
    ("one <br>two <P>three <li>four", "one two three four"),
    # any other bare tag never closed is markup, even in a text that closes nothing (kept by the first rules 5)
    ("Click <b>here <div>Hi <span>x <strong>y <a>link <I>Note <U>title <s>old <code>z", "Click here Hi x y link "
     "Note title old z"),
    ("<b>重要通知：明天放假", "重要通知:明天放假"),
    ("<ul><li>one<li>two <table><tr><td>1<td>2 <h1>Title<p>body", "one two 1 2 Title body"),
    ("Hello<br><b>World", "Hello World"),
    ("<p>My grade is <B> <B>Bold", "My grade is Bold"),  # a grade in a text with markup: stripped
])
def test_strip_html_removes_markup_only(text: str, want: str) -> None:
    """Only tags of HTML element names (in one case, attributes well formed), comments and scripts go; entities are
    decoded only when written with their `;`."""
    assert clean_text(text, CleanConfig()) == want


def test_a_grade_is_stripped_by_the_text_rules_of_an_older_run() -> None:
    """A run trained by text rules 4 cleaned `grade <B>` to `grade`: its rows read again (resume, report, export)
    are cleaned as it cleaned them; a new run keeps the grade."""
    from tunelab.text import text_rules

    with text_rules(4):
        assert clean_text("grade <B> in maths, Foo<B>", CleanConfig()) == "grade in maths, Foo<B>"
    assert clean_text("grade <B> in maths, Foo<B>", CleanConfig()) == "grade <B> in maths, Foo<B>"


@pytest.mark.parametrize(("collide", "stream"), [(False, False), (True, False), (False, True), (True, True)])
def test_dedup_within_and_across_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collide: bool,
                                        stream: bool) -> None:
    """Also with the training file spilled as it is parsed (data/dedup._dedup_spilled), in parts of 3 rows."""
    if collide:  # every key hashes alike: the keys themselves still decide
        monkeypatch.setattr(dedup, "hash", lambda _: 0, raising=False)
    if stream:
        monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(load, "STREAM_BYTES", 0)
        monkeypatch.setattr(load, "PARSE_CHUNK", 2)
        monkeypatch.setattr(row_spill, "CHUNK", 3)
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"text": "good movie", "label": "pos"},      # 1 kept
        {"text": "Good   MOVIE", "label": "pos"},    # 2 normalised duplicate of 1
        {"text": "good movie", "label": "neg"},      # 3 exact duplicate of 1, other label
        {"text": "bad film", "label": "neg"},        # 4 kept
        {"text": "ｎｉｃｅ plot", "label": "pos"},   # 5 kept
        {"text": "nice plot", "label": "pos"},       # 6 NFKC duplicate of 5
        {"text": "awful scene", "label": "neg"},     # 7 repeats a validation row
        {"text": "great story", "label": "pos"},     # 8 repeats a test row
    ])
    val = write_jsonl(tmp_path / "val.jsonl", [
        {"text": "AWFUL scene", "label": "neg"},     # 1 kept
        {"text": "boring music", "label": "neg"},    # 2 repeats a test row
    ])
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"text": "great story", "label": "pos"},
        {"text": "boring music", "label": "neg"},
        {"text": "boring music", "label": "neg"},    # 3 duplicate within test
    ])
    splits, report = _load(tmp_path, train=str(train), validation=str(val), test=str(test), dedup=True)
    assert isinstance(splits["train"], RowSequence) == stream
    assert _texts(splits["train"]) == ["good movie", "bad film", "ｎｉｃｅ plot"]
    assert _texts(splits["validation"]) == ["AWFUL scene"]
    assert _texts(splits["test"]) == ["great story", "boring music"]

    summary = report.write(tmp_path / "run", splits)
    removed = [json.loads(x) for x in (tmp_path / "run" / "removed.jsonl").read_text().splitlines()]
    got = {(r["split"], Path(r["file"]).name, r["line"], r["reason"], r["match"]) for r in removed}
    assert got == {
        ("train", "train.jsonl", 2, "duplicate", "normalised"),
        ("train", "train.jsonl", 3, "duplicate", "exact"),
        ("train", "train.jsonl", 6, "duplicate", "normalised"),
        ("test", "test.jsonl", 3, "duplicate", "exact"),
        ("validation", "val.jsonl", 2, "in_test", "exact"),
        ("train", "train.jsonl", 7, "in_validation", "normalised"),
        ("train", "train.jsonl", 8, "in_test", "exact"),
    }
    line3 = next(r for r in removed if r["line"] == 3 and r["split"] == "train")
    assert line3["row"] == {"text": "good movie", "label": "neg"}
    assert line3["duplicate_of"].endswith("train.jsonl:1") and line3["label_differs"] is True
    assert summary["removed"] == {"train": {"duplicate": 3, "in_validation": 1, "in_test": 1},
                                  "test": {"duplicate": 1}, "validation": {"in_test": 1}}
    assert summary["removed_total"] == 7
    assert summary["rows_read"] == {"train": 8, "validation": 2, "test": 3}
    assert summary["rows_used"] == {"train": 3, "validation": 1, "test": 2}
    saved = json.loads((tmp_path / "run" / "data_summary.json").read_text())
    assert saved["removed_total"] == 7 and saved["applied"]["dedup"] is True


def test_dedup_off_keeps_everything(tmp_path: Path) -> None:
    rows = [{"text": "good movie", "label": "pos"}] * 3 + [{"text": "bad film", "label": "neg"}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    splits, report = _load(tmp_path, train=str(train), validation_split=0.0)
    assert len(splits["train"]) == 4 and report.removed == []


def test_dedup_before_validation_holdout(tmp_path: Path) -> None:
    """Duplicates inside the train file go before the hold-out: no copy can land on both sides."""
    rows = [{"text": f"text {i % 10}", "label": "ab"[i % 2]} for i in range(40)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    splits, report = _load(tmp_path, train=str(train), dedup=True, validation_split=0.2)
    assert len(splits["train"]) + len(splits["validation"]) == 10
    assert not set(_texts(splits["train"])) & set(_texts(splits["validation"]))
    assert report.removed_counts() == {"train": {"duplicate": 30}}


def test_clean_in_load_splits(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"text": "<b>good</b>   movie", "label": "pos"},
        {"text": "<br>", "label": "pos"},                          # empty after cleaning
        {"text": "ok", "label": "neg"},                            # too short
        {"text": "bad film " * 10, "label": "neg"},                # too long
        {"text": "bad &amp; boring", "label": "neg"},
    ])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "ok", "label": "neg"}, {"text": "<i>fine</i>", "label": "pos"}])
    splits, report = _load(tmp_path, train=str(train), validation=str(val),
                           clean={"min_chars": 3, "max_chars": 40})
    assert _texts(splits["train"]) == ["good movie", "bad & boring"]
    assert splits["train"][0]["row"]["text"] == "<b>good</b>   movie"  # the row as read is kept for outputs
    assert _texts(splits["validation"]) == ["ok", "fine"]  # length filters apply to training rows only
    assert report.removed_counts() == {"train": {"empty_after_cleaning": 1, "too_short": 1, "too_long": 1}}
    too_long = next(r for r in report.removed if r["reason"] == "too_long")
    assert too_long["line"] == 4 and too_long["chars"] == 89 and too_long["max_chars"] == 40
    assert report.summary()["rows_changed_by_cleaning"] == {"train": 2, "validation": 1}


def test_clean_shorthand_and_nothing_left(tmp_path: Path) -> None:
    assert DataConfig(clean=True).clean == CleanConfig() and DataConfig(clean=False).clean is None
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "good", "label": "a"}, {"text": "bad", "label": "b"}])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "GOOD", "label": "a"}, {"text": "bad", "label": "b"}])
    with pytest.raises(DataError, match=r"train\.jsonl: no rows left after data\.clean / data\.dedup "
                                        r"\(in_validation: 2\)"):
        _load(tmp_path, train=str(train), validation=str(val), dedup=True)

