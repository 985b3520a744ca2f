"""README.md and README.zh-CN.md stay counterparts: same heading structure, same commands, no dead relative links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,6})\s+\S")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
COMMENT = re.compile(r"\s+#(?:\s.*)?$")
COMMAND_PREFIXES = ("tunelab ", "make ")


def _split(text: str) -> tuple[list[str], list[str]]:
    """The lines outside fenced code blocks and the lines inside them."""
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if not fence:
            if match:
                fence = match.group(1)
            else:
                prose.append(line)
        elif match and match.group(1).startswith(fence) and not line.strip().strip(fence[0]):
            fence = ""  # a closing fence: the opening's character, at least as many, nothing else
        else:
            code.append(line)
    assert not fence, "unclosed code fence"
    return prose, code


def _levels(path: Path) -> list[int]:
    prose, _ = _split(path.read_text(encoding="utf-8"))
    return [len(m.group(1)) for line in prose if (m := HEADING.match(line))]


def _commands(path: Path) -> list[str]:
    """`tunelab ...` / `make ...` lines of the fenced code blocks, trailing `# comment` and spaces removed."""
    _, code = _split(path.read_text(encoding="utf-8"))
    stripped = (COMMENT.sub("", line.strip()).rstrip() for line in code)
    return [line for line in stripped if line.startswith(COMMAND_PREFIXES)]


def _relative_links(path: Path) -> list[str]:
    prose, _ = _split(path.read_text(encoding="utf-8"))
    targets = [m.group(1) for line in prose for m in LINK.finditer(line)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE) and not t.startswith("#")]


def test_same_heading_levels() -> None:
    english, chinese = _levels(README), _levels(README_ZH)
    assert english.count(1) == 1 and english.count(2) >= 5, english
    assert [english.count(n) for n in (1, 2, 3)] == [chinese.count(n) for n in (1, 2, 3)], (english, chinese)
    assert english == chinese


def test_commands_kept_verbatim() -> None:
    english = _commands(README)
    assert len(english) >= 10, english
    chinese = set(_commands(README_ZH))
    missing = [cmd for cmd in english if cmd not in chinese]
    assert not missing, f"commands of README.md missing from README.zh-CN.md: {missing}"


@pytest.mark.parametrize("readme", [README, README_ZH], ids=lambda p: p.name)
def test_relative_links_exist(readme: Path) -> None:
    targets = _relative_links(readme)
    assert targets, f"no relative links found in {readme.name}"
    dead = [t for t in targets if not (readme.parent / t.split("#", 1)[0]).exists()]
    assert not dead, f"{readme.name}: links to missing files: {dead}"


def _anchors(path: Path) -> set[str]:
    """The `#fragment` GitHub gives each heading of a Markdown file: its text lower-cased, links reduced to their
    text, every character but letters, digits, `_`, `-` and spaces dropped, spaces as `-`; a repeat gets `-1`, `-2`."""
    prose, _ = _split(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for line in prose:
        if not (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(f"{slug}-{n}" if n else slug)
    return anchors


MARKDOWN = [README, README_ZH, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=[p.name for p in MARKDOWN])
def test_relative_links_and_their_anchors_resolve(page: Path) -> None:
    """Every relative link of the READMEs and docs/ names a file that is there and, with `#fragment` into a Markdown
    page, a heading of it: moving a README section into docs/ must not leave a link behind (docs/data.md pointed at
    the README's `#data-and-licences`; docs/benchmarks.md's `results/gpu_check.json` was never there)."""
    dead = []
    for target in _relative_links(page):
        name, _, fragment = target.partition("#")
        file = (page.parent / name).resolve() if name else page
        if not file.exists() or (fragment and file.suffix == ".md" and fragment not in _anchors(file)):
            dead.append(target)
    assert not dead, f"{page.name}: links to missing files or headings: {dead}"


def test_readmes_are_entry_pages() -> None:
    """The project's rule: a README holds install, quickstart, a short tour and links; details live in docs/. So each
    README stays short and links every page of docs/ (the Chinese one its Chinese pages too)."""
    pages = sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
    for readme in (README, README_ZH):
        lines = readme.read_text(encoding="utf-8").splitlines()
        assert len(lines) <= 200, f"{readme.name}: {len(lines)} lines; move details into docs/"
        linked = {t.partition("#")[0] for t in _relative_links(readme)}
        assert not [p for p in pages if p not in linked], f"{readme.name} does not link {set(pages) - linked}"


def test_readmes_link_each_other() -> None:
    assert README_ZH.name in _relative_links(README)
    assert README.name in _relative_links(README_ZH)
    assert README_ZH.read_text(encoding="utf-8").splitlines()[0].endswith(f"({README.name})")


def _tunelab_lines(path: Path) -> list[str]:
    """The `tunelab ...` command lines of a Markdown file's code blocks (after a pipe too), comments cut."""
    _, code = _split(path.read_text(encoding="utf-8"))
    out = []
    for line in code:
        line = COMMENT.sub("", line).strip()
        if "tunelab " in line and (line.startswith("tunelab ") or "| tunelab " in line):
            out.append(line[line.index("tunelab "):].rstrip("\\").strip())
    return out


DOC_PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_every_documented_command_and_option_exists(page: Path) -> None:
    """Each `tunelab ...` line the docs show names a real command and only real options: the line is parsed with
    `--help` appended (click rejects an unknown command or option before it prints help)."""
    import shlex

    from typer.testing import CliRunner

    from tunelab.cli import app

    runner = CliRunner()
    for line in _tunelab_lines(page):
        args = [a for a in shlex.split(line)[1:] if a != "..."]
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, f"{page.name}: `{line}`: {res.output.strip()[-300:]}"


def test_what_make_install_is_said_to_install_with_apt_get_it_does() -> None:
    """README.zh-CN said `make install` installs `fonts-wqy-microhei` with apt-get (and that Chinese in charts shows as
    boxes without it) long after the charts became SVG drawn by the reader's browser and the Makefile stopped."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    installed = {p for call in re.findall(r"\$\(call APT_GET,([^)]*)\)", makefile) for p in call.split()}
    for page in (README, README_ZH):
        prose, _ = _split(page.read_text(encoding="utf-8"))
        for line in prose:
            if "make install" in line and "apt-get" in line:
                named = set(re.findall(r"`([a-z0-9][a-z0-9.+-]+)`", line)) - {"make", "apt-get"}
                assert named <= installed, f"{page.name}: make install is said to apt-get {sorted(named - installed)}"
