"""Dotted field paths of a nested config (`train.lr`) and YAML read with each key once, with nothing heavier than
PyYAML: the web UI uses them too, and it must not import torch (tunelab.config.run does, through the registries)."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import yaml

from tunelab.errors import ConfigError, option


def twice_said(key: str) -> str:
    """What a config key given twice is told: only its last value would be read."""
    return f"duplicate key {key!r}: only its last value would be read; give each key once"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping (safe_load keeps the last silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (DuplicateKeyError), and plain values read
    as YAML 1.2 reads them (its core schema, as JSON spells them), not PyYAML's YAML 1.1: `yes` / `no` / `on` /
    `off` stay words (1.1: booleans, so `train.lr=yes` was 1.0), `2024-12-06` stays text (1.1: a date, which no
    text field took), `12:30` too (1.1: 750, base 60), `0612` is text (1.1: 394, octal; a number field still reads
    612 from it), `1_000` stays text, and `1e-5` is a number (1.1 wants `1.0e-5`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, str):
                continue  # (an unhashable key is the base loader's one-line error)
            if key in seen:
                raise DuplicateKeyError(None, None, twice_said(key), key_node.start_mark)  # YAML or JSON alike
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class YamlDumper(yaml.SafeDumper):
    """yaml.safe_dump that quotes a text wherever YAML 1.2 (UniqueKeyLoader: `'1e5'`, `'-.5'`) or 1.1 (PyYAML's
    safe_load, other tools: `'yes'`, `'0612'`, `'2024-12-06'`) would read it as something else: what tunelab
    writes reads back as it was, by either (`yaml_text`)."""


UniqueKeyLoader.yaml_implicit_resolvers = {k: [r for r in v if r[0] == "tag:yaml.org,2002:merge"]
                                           for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlDumper.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeDumper.yaml_implicit_resolvers.items()}
for _tag, _pattern, _first in (
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),  # "": an empty value
        ("int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+|"
                  r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789.")):  # a dot or an exponent
    UniqueKeyLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))
    YamlDumper.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text[:2] in ("0o", "0x") else int(text)


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    return float(text.replace(".inf", "inf").replace(".nan", "nan"))


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _int)
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _float)
_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "y": True, "n": False}


def _bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    """`true` / `false` (plain), and under an explicit `!!bool` YAML 1.1's words too: a boolean is meant there."""
    text = str(loader.construct_scalar(node)).lower()
    if text not in _BOOLS:
        raise yaml.constructor.ConstructorError(None, None, f"not a boolean: {text!r}", node.start_mark)
    return _BOOLS[text]


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:bool", _bool)


def yaml_text(data: Any) -> str:
    """`data` as YAML that `yaml_value` reads back as it is (UTF-8 kept, keys in their order)."""
    return yaml.dump(data, Dumper=YamlDumper, sort_keys=False, allow_unicode=True)


def yaml_value(text: str) -> Any:
    """The value a YAML (or JSON) text spells, as yaml.safe_load reads it; a key twice in one mapping raises
    DuplicateKeyError (a yaml.YAMLError)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader


def typed_value(text: str) -> Any:
    """A value typed on its own (`--set key=TEXT`, a web UI field) as the YAML value it spells (`3`, `[a, b]`), but
    the text as it is where YAML would drop part of it: a comment (`runs/exp #2` read `runs/exp`, `#1` read null)
    or a leading anchor (`&a b` read `b`) — a shell argument or a form field holds neither, and a path may hold both.
    That text without the spaces around it, as YAML reads a value (`output_dir= #x` trained into a folder ` #x`)."""
    try:
        tokens = [t for t in yaml.scan(text, Loader=yaml.SafeLoader)
                  if not isinstance(t, (yaml.StreamStartToken, yaml.StreamEndToken))]
    except yaml.YAMLError:
        return yaml_value(text)  # (its error, for the caller)
    end = max((t.end_mark.index for t in tokens), default=0)
    if text[end:].strip() or (tokens and isinstance(tokens[0], yaml.AnchorToken)):  # (`[&a x, *a]` is YAML's)
        return text.strip()
    return yaml_value(text)


# the keys of a config that name a file or folder
PATH_KEYS = (("model",), ("output_dir",), ("data", "train"), ("data", "validation"), ("data", "test"),
             ("data", "unlabeled"), ("data", "augment", "synonyms"), ("distill", "teacher"))


def home_expanded(tree: dict[str, Any]) -> dict[str, Any]:
    """A config's mapping with a leading `~` of each path it names (PATH_KEYS) read as your home folder, as a shell
    reads it: `data.train: ~/data/t.jsonl` was looked for in a folder named `~` (and `output_dir: ~/runs/a` made
    one), where `model: ~/m` was read from home. `tree` itself is left as it was."""
    out = dict(tree)
    for keys in PATH_KEYS:
        node = out
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                break
            node[key] = node = dict(node[key])
        else:
            if isinstance(value := node.get(keys[-1]), str) and value.startswith("~"):
                node[keys[-1]] = os.path.expanduser(value)
    return out


def within(inner: str, outer: str) -> bool:
    """Whether dotted field `inner` is `outer` or inside it (`train.lr` is within `train`)."""
    return inner == outer or inner.startswith(outer + ".")


def flat_fields(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as its leaves by dotted path: {"train": {"lr": 5e-5}} → {"train.lr": 5e-5} (an empty section
    has no leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def override_name(key: str) -> str:
    """A dotted-key override as the caller gave it, for an error's prefix: `--set train.lr` on the command line,
    `config: train.lr` in the Python API."""
    return option(f"--set {key}", f"config: {key}")


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    """tree[a][b][c] = value for the dotted path [a, b, c], sections made as needed (`--set`, the web UI's form);
    a value where a section would go is one line (ConfigError), as is `task: sft` made `{name: sft}` first."""
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if isinstance(child, str) and ".".join(path[: i + 1]) in ("task", "method"):
            child = {"name": child}  # `method: lora` then `--set method.r=8`
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{override_name('.'.join(path))}: {'.'.join(path[: i + 1])} is not a section")
        node[part] = child
        node = child
    node[path[-1]] = value


# what a Chinese input method types in place of YAML's marks: a full-width colon after a key (`epochs：1`), a
# full-width space (U+3000) in the indentation, a full-width comma in a flow list or mapping (`{a: 1， b: 2}`)
_WIDE_KEY = re.compile(r"[ \t\u3000]*(?:-[ \t]+)*([\"']?)([\w.-]+)\1[ \t\u3000]*：")
_WIDE_INDENT = re.compile(r"[ \t]*\u3000")
_IME = "(a Chinese input method's)"


def wide_key(key: str) -> str:
    """What to say of an unknown key that is a key typed with a full-width colon in a flow mapping (`{epochs： 1}`:
    YAML reads the key `epochs： 1`): that YAML wants `key: value`; of one indented with a full-width space (`　seed`:
    U+3000 is no indentation to YAML), that YAML indents with ASCII spaces; else ""."""
    if found := _WIDE_KEY.match(key):
        return (f"; a full-width colon '：' after {found[2]!r} {_IME}: YAML needs 'key: value', with an ASCII colon "
                "and a space")
    if key.startswith("\u3000"):  # `　seed: 2` under `train:` is the key `　seed`, at the top level if the line
        # starts with it
        return (f"; a full-width space '\u3000' (U+3000) before {key.lstrip(chr(0x3000))!r} {_IME}: YAML indents "
                "with ASCII spaces")
    return ""


def wide_value(got: str, fits: Callable[[str], bool] | None, mapping: bool = False) -> str:
    """What to say of a config value that failed and is written in full-width characters, ASCII ones once NFKC makes
    them so (`３`, `１e-5`): the ASCII form to type, where the config validates with it (`fits`); where a section was
    wanted (`mapping`: `train:` over `  epochs：3`, read as the text `epochs：3`), that YAML wants `key: value`; else
    the full-width characters named (`３，` is `3,`, no number either)."""
    plain = unicodedata.normalize("NFKC", got).strip()
    if plain == got.strip() or not plain.isascii():
        return ""
    if fits is not None and fits(plain):
        return f"; it is written in full-width characters {_IME}: type {plain!r}"
    if mapping and (key := _WIDE_KEY.match(got)):
        return (f"; a full-width colon '：' after {key[2]!r} {_IME}: YAML needs 'key: value', with an ASCII colon and "
                "a space")
    wide = dict.fromkeys(c for c in got if unicodedata.normalize("NFKC", c) != c)
    return f"; it is written in full-width characters {_IME}: " + ", ".join(f"{c!r} (U+{ord(c):04X})" for c in wide)
_BLOCK = re.compile(r"[^#]*:[ \t]*[|>][-+0-9]*[ \t]*(?:#.*)?$")  # `prompt: |`: a block scalar's lines follow


def _marks(text: str, until: int | None) -> list[tuple[int, str, list[str]]]:
    """Each full-width mark standing where YAML wants an ASCII one, on a line up to `until`: (line, what, the line
    as it would read with the ASCII mark, one or more ways). Comments, quoted strings and block scalars' lines
    (`prompt: |`, where `问题：` is text) are not looked in."""
    found: list[tuple[int, str, list[str]]] = []
    block = -1  # the indentation of the key a block scalar follows (-1: not in one)
    for number, line in enumerate(text.splitlines(), start=1):
        if (until is not None and number > until) or len(found) >= 50:
            break
        indent = len(line) - len(line.lstrip(" "))
        if block >= 0:
            if not line.strip() or indent > block:
                continue
            block = -1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        code = re.sub(r"\"[^\"]*\"|'[^']*'|[ \t]#.*", "", line)  # (quoted texts and a comment left out)
        if wide := _WIDE_INDENT.match(line):
            head = wide[0]
            found.append((number, "a full-width space '\u3000' (U+3000) in the indentation; YAML indents with ASCII "
                                  "spaces", [head.replace("\u3000", s) + line[len(head):] for s in (" ", "  ")]))
        elif key := _WIDE_KEY.match(line):
            found.append((number, f"a full-width colon '：' after {key[2]!r}; YAML needs ':' (and a space after it)",
                          [key[0][:-1] + ": " + line[key.end():]]))
        elif "，" in code and re.search(r"[\[{]", code):
            found.append((number, "a full-width comma '，' in a flow list or mapping; YAML needs ','",
                          [line.replace("，", ", ")]))
        if _BLOCK.match(line):
            block = indent
    return found


def _error_line(text: str) -> int | None:
    """The line YAML finds `text`'s first error on (0: none; None: one with no line)."""
    try:
        yaml_value(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            return int(mark.line) + 1
        position = getattr(exc, "position", None)
        return text.count("\n", 0, position) + 1 if isinstance(position, int) else None
    return 0


def fullwidth_mark(text: str, until: int | None = None) -> tuple[int, str] | None:
    """(line, what) of the full-width mark behind the YAML error found on line `until` (the mark is before it, or
    on it), else None. A mark is named only if writing it as the ASCII mark YAML wants (with the marks before it that do
    not make the error come sooner) makes the error go, or move past line `until`: a `：` that is text (`- 答案：`,
    a plain value's next line) is valid YAML, and the error named is then YAML's own."""
    lines = text.splitlines()

    def fixed(marks: list[tuple[int, int]]) -> str:  # (line, way) pairs written in ASCII
        out = list(lines)
        for number, way in marks:
            out[number - 1] = candidates[number][1][way]
        return "\n".join(out) + "\n"

    def cured(marks: list[tuple[int, int]]) -> bool:
        after = _error_line(fixed(marks))
        return after == 0 or (until is not None and after is not None and after > until)

    candidates = {number: (what, ways) for number, what, ways in _marks(text, until)}
    kept: list[tuple[int, int]] = []  # marks written in ASCII that did not make the error come sooner
    for number, (_, ways) in candidates.items():
        for way in range(len(ways)):
            trial = [*kept, (number, way)]
            if cured(trial):  # name the first of the last marks the cure needs
                first = next(i for i in range(len(trial) - 1, -1, -1) if cured(trial[i:]))
                return trial[first][0], candidates[trial[first][0]][0]
            after = _error_line(fixed(trial))
            if until is not None and after is not None and after >= until:
                kept = trial
                break
    return None
