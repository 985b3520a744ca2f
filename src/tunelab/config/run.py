"""The one configuration object, `RunConfig`, and how YAML + `--set` overrides become one.

    YAML file ──┐
                ├─► dict ─► RunConfig (pydantic, frozen, extra=forbid) ─► saved as config.yaml
    --set k=v ──┘

Task and method options are nested sub-configs owned by their registry entries
(`method: {name: lora, r: 16}`); a bare string is shorthand for `{name: ...}` with defaults.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, create_model, model_validator

from tunelab.config.base import Section
from tunelab.config.fields import (
    DuplicateKeyError,
    apply_override,
    fullwidth_mark,
    home_expanded,
    twice_said,
    typed_value,
    wide_key,
    wide_value,
    yaml_text,
    yaml_value,
)
from tunelab.config.located import located
from tunelab.config.search import SearchConfig
from tunelab.config.sections import DataConfig, DistillConfig, MethodConfig, TaskConfig, TrainConfig
from tunelab.config.suggest import unknown_key_hint
from tunelab.errors import ConfigError
from tunelab.models.aliases import ALIASES, check_model_name
from tunelab.models.student import STUDENT_LAYERS, parse_layers
from tunelab.registry import METHODS, TASKS
from tunelab.text.full_width import equals_mark, json_mark

_MODEL_HELP = "Alias (see `tunelab models`), a local model directory (e.g. a previous run's model/), or a hub id."


def _union(configs: list[type[BaseModel]]) -> Any:
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[tuple(configs)], Field(discriminator="name")]  # noqa: UP007


class RunConfig(Section):
    """One run, every section typed. `task` and `method` hold the registered entry's own sub-config (`LoraConfig`,
    `NerConfig`, ...): `run_config_class()` narrows them to the union of what `TASKS` / `METHODS` hold, and every
    config that `load_config` / `build_config` return is an instance of that subclass."""

    task: TaskConfig = Field(description="What to train.")
    model: str = Field(description=_MODEL_HELP)
    method: MethodConfig = Field(description="How to train.")
    output_dir: str = Field("", description="Run directory; default runs/<task>-<time>.")
    data: DataConfig = Field(default_factory=DataConfig, description="Input files and columns.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation settings.")
    search: SearchConfig | None = Field(None, description="Hyperparameter search space for `tunelab tune`.")
    distill: DistillConfig | None = Field(None, description="Knowledge distillation from a tuned teacher "
                                          "(`tunelab distill`).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, values: Any) -> Any:
        if isinstance(values, dict):
            values = home_expanded(values)  # (a copy)
            for key in ("task", "method"):
                if isinstance(values.get(key), str):
                    values[key] = {"name": values[key]}
            if not values.get("output_dir"):
                task = values.get("task", {}).get("name", "run") if isinstance(values.get("task"), dict) else "run"
                values["output_dir"] = f"runs/{task}-{time.strftime('%Y%m%d-%H%M%S')}"
        return values

    @model_validator(mode="after")
    def _check_model(self, info: ValidationInfo) -> RunConfig:
        if not self.model.strip():
            # Path("") is the current directory, which check_model_name would accept
            raise ConfigError(f"config: model: is empty; give an alias ({', '.join(ALIASES)}), "
                              "a local model directory or a hub id")
        if self.model.startswith(STUDENT_LAYERS):
            if self.distill is None:
                raise ConfigError(f"config: model: {self.model!r}: a layer subset of the teacher needs a distill "
                                  "section (distill.teacher)")
            parse_layers(self.model)
        elif not (info.context or {}).get("saved"):  # a finished run's config: its model/ is what is read, the base
            check_model_name(self.model)  # it was tuned from may be gone (a run copied to another machine)
        if self.data.unlabeled is not None and (self.distill is None or self.distill.alpha == 0):
            why = "add a distill section (tunelab distill)" if self.distill is None else "distill.alpha is 0"
            raise ConfigError(f"config: data.unlabeled: unlabelled rows train only the soft-target part of "
                              f"distillation; {why}")
        if self.train.gradient_checkpointing and self.method.name == "prefix":  # (training/recompute.py)
            raise ConfigError("config: train.gradient_checkpointing: method prefix gives every layer its learnt keys "
                              "and values as a cache, which a recomputed layer is not given (peft refuses the pair "
                              "too); use method prompt or lora, or set it to false")
        return self


def check_label_field(task: TaskConfig, data: DataConfig) -> None:
    """Data settings a task does not read, for a new run (pipeline.run, data check), not the config's: a run's
    config.yaml of an older tunelab that set one still reads (report, export, resume). `data.label_field` for a task
    whose labels have a field of its own (NER's `task.tags_field`), and `data.truncation` other than head for a task
    that always cuts a long row at its end (NER, its `cuts_at_end`: what it does, in the task's words, `{truncation}`
    the setting): refused, naming the field (they were silently not read, and `data check` said a NER row past
    max_length was split into windows, nothing cut)."""
    own = getattr(type(task), "label_setting", None)
    if own is not None and data.label_field != "label":
        default = type(task).model_fields[own.split(".")[-1]].default
        raise ConfigError(f"config: data.label_field: task {task.name} does not read it (its labels are in {own}, "
                          f"default {default!r}); leave data.label_field out and set {own}={data.label_field}")
    cuts = getattr(type(task), "cuts_at_end", None)
    if cuts is not None and data.truncation != "head":
        raise ConfigError(f"config: data.truncation: task {task.name} {cuts.format(truncation=data.truncation)}; "
                          "leave data.truncation out")


@functools.cache
def run_config_class() -> type[RunConfig]:
    """`RunConfig` with `task` / `method` narrowed to the registered entries' configs (built once)."""
    task_t = _union([cls.Config for _, cls in TASKS.items()])
    method_t = _union([cls.Config for _, cls in METHODS.items()])
    return create_model(
        "RunConfig",
        __base__=RunConfig,
        task=(task_t, Field(description="What to train: " + ", ".join(TASKS.names()) + ".")),
        method=(method_t, Field(default_factory=lambda: METHODS.get("full").Config(name="full"),
                                description="How to train: " + ", ".join(METHODS.names()) + ".")),
    )


# ---------------------------------------------------------------------------- loading & overrides
def parse_overrides(pairs: list[str]) -> list[tuple[list[str], Any]]:
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value (e.g. train.lr=1e-4){equals_mark(pair)}")
        key, raw = pair.split("=", 1)
        if not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"--set {pair!r}: expected key=value with a dotted key (e.g. train.lr=1e-4)")
        try:
            value = typed_value(raw) if raw.strip() else ""
        except DuplicateKeyError as exc:  # `--set 'data={train: a, train: b}'`: not the text of the value either
            raise ConfigError(f"--set {pair!r}: {exc.problem}") from None
        except yaml.YAMLError:
            value = raw
        out.append((key.strip().split("."), value))
    return out


Fits = Callable[[tuple[Any, ...], list[Any], Any], bool]  # (pydantic's loc, the keys to it in the config, a value)


def fitting(validate: Callable[[dict[str, Any]], object], data: dict[str, Any]) -> Fits:
    """Whether `data` (a config, a section) validates, by `validate`, with a value put in place of one (its keys; a
    text as YAML reads it): no error left at that place (pydantic's `loc`)."""
    def fits(loc: tuple[Any, ...], keys: list[Any], value: Any) -> bool:
        tree = node = copy.deepcopy(data)
        try:
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = _typed(value)
            validate(tree)
        except ValidationError as again:
            return all(tuple(e["loc"]) != loc for e in again.errors())
        except (KeyError, IndexError, TypeError, ValueError, ConfigError):
            return False
        return True

    return fits


def _typed(value: Any) -> Any:
    """A value as typed in YAML (a config, --set) reads (`3`: the number 3)."""
    try:
        return yaml_value(value) if isinstance(value, str) else value
    except yaml.YAMLError:
        return value


def format_validation_error(err: ValidationError, names: set[str] | dict[str, set[str]], fits: Fits | None = None,
                            root: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line naming the full dotted path of the first problem. `names`: the union tags pydantic
    inserts into paths, per section (`{"method": {...}}`) or one set for both task and method; `fits`: whether the
    config validates with another value there (`fitting`), asked of a value written in full-width characters;
    `root`: the config class validated (`prefix`: its path in the whole config), whose keys an unknown key is
    compared with (`suggest.unknown_key_hint`)."""
    errors = err.errors()  # a key indented with a full-width space first: it left its section empty (`train:` null)
    e = next((x for x in errors if x["type"] == "extra_forbidden" and str(x["loc"][-1]).startswith("\u3000")),
             errors[0])
    keys = list(e["loc"])
    loc = [str(p) for p in keys]
    tags = names.get(loc[0], set()) if isinstance(names, dict) and loc else names
    if len(loc) >= 2 and loc[0] in ("task", "method") and loc[1] in tags:
        loc.pop(1)  # drop the union tag pydantic inserts: method.lora.r -> method.r
        keys.pop(1)
    if e["type"] == "number_not_bool" and e.get("ctx"):  # base.Section's own check: the field it names
        return f"config: {'.'.join([*loc, e['ctx']['name']])}: expected a number, got {e['ctx']['value']}"
    path = ".".join(loc)
    if not path:  # the config as a whole (not a mapping): no key to name
        return f"config: {e['msg'].replace('Value error, ', '')}"
    if e["type"] == "extra_forbidden":
        hint = wide_key(loc[-1]) or (root and unknown_key_hint(root, e["loc"], ".".join(filter(None, [prefix, path])),
                                                               prefix))
        return f"config: {path}: unknown key{hint or ''}"
    if e["type"] == "missing":
        return f"config: {path}: required key is missing"
    msg = e["msg"].replace("Value error, ", "")
    got = e.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    if isinstance(got, str) and "(a Chinese input method's" not in msg:  # (not said twice)
        shown += wide_value(got, fits and (lambda plain: fits(tuple(e["loc"]), keys, plain)),
                            e["type"] in ("model_type", "dict_type"))
    return f"config: {path}: {msg}{shown}"


def _check_names(data: dict, registries: dict[str, Any]) -> None:
    """Unknown or missing task / method names, said plainly (pydantic's union errors are not)."""
    for key, reg in registries.items():
        value = data.get(key)
        if isinstance(value, dict) and "name" not in value and len(reg.names()) > 1:
            raise ConfigError(f"config: {key}.name: required key is missing; choose one of {', '.join(reg.names())}")
        name = value.get("name") if isinstance(value, dict) else value
        if isinstance(name, str) and name not in reg.names():
            raise ConfigError(f"config: {key}: unknown {key} {name!r}; choose one of {', '.join(reg.names())}")


def build_config(data: dict, saved: bool = False, here: bool = True) -> RunConfig:
    """`data` validated; `saved`: a finished run's config.yaml read again (report, export, compress), whose base
    model need not be there any more; `here=False`: a config for another machine (`config import`), whose hardware
    (qlora's CUDA GPU) is not looked for here."""
    cls = run_config_class()
    registries = {"task": TASKS, "method": METHODS}
    _check_names(data, registries)
    # a section with one entry is a plain model, not a union: pydantic inserts no tag into its paths
    tags = {key: set(reg.names()) if len(reg.names()) > 1 else set() for key, reg in registries.items()}
    try:
        return cls.model_validate(data, context={"saved": saved, "here": here})
    except ValidationError as err:
        fits = fitting(lambda tree: cls.model_validate(tree, context={"saved": saved, "here": here}), data)
        raise ConfigError(format_validation_error(err, tags, fits, cls)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a config file; one-line ConfigError (file:line) for a missing file, bad UTF-8 or YAML."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a config file (a YAML file such as run.yaml)")
    if not p.exists():  # (a pipe, `<(...)`, is no regular file but reads as one)
        raise ConfigError(f"{p}: config file not found")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        from tunelab.text.encodings import UTF16_BOMS, bad_line, encoding_hint, utf16_hint

        line, col, bad, whole, more = bad_line(raw, exc.start)  # a Chinese Windows editor's GBK / Big5
        hint = utf16_hint(p) if raw[:2] in UTF16_BOMS else encoding_hint(bad, p, False, whole, more, col - 1)
        raise ConfigError(f"{p}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}){hint}") from None
    if p.suffix.lower() == ".json":
        loaded = _json_config(p, text)
    else:
        try:
            loaded = yaml_value(text)
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(p, text, exc)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the config must be a mapping of keys to values")
    return loaded


def _json_config(path: Path, text: str) -> Any:
    """A .json config read as JSON (tabs, escaped surrogate pairs and 1e-5 as JSON means them, which a YAML reading
    of it does not), a key given twice refused with its line (found again by the YAML reading, which knows lines)."""
    twice: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        twice.extend(k for k in keys if keys.count(k) > 1)
        return dict(items)

    try:
        loaded = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
                          f"{json_mark(exc.doc, exc.pos, exc.msg)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid JSON: nested too deeply") from None
    if twice:
        try:
            yaml_value(text)
        except DuplicateKeyError as exc:
            raise ConfigError(_yaml_error(path, text, exc)) from None
        except yaml.YAMLError:
            pass
        raise ConfigError(f"{path}: invalid JSON: {twice_said(twice[0])}")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (optional) + `key=value` overrides (`--set`) → validated, frozen RunConfig (`configured`)."""
    return configured(read_config_file(path) if path is not None else {}, parse_overrides(overrides or []), path)


def configured(data: dict[str, Any], overrides: list[tuple[list[str], Any]], path: str | Path | None = None,
               ) -> RunConfig:
    """A config's mapping (read from `path`, or given) with the dotted-key overrides applied → validated, frozen
    RunConfig. An error names where its key came from: an override as the caller spells it (`--set train.lr: ...`
    on the command line, `config: train.lr: ...` in the API), a key the file sets by the file and the key's line
    (`cfg.yaml:7: data.max_lenght: unknown key`), anything else `config: key: ...`."""
    overridden = []
    for keys, value in overrides:
        apply_override(data, keys, value)
        overridden.append(".".join(keys))
    try:
        return build_config(data)
    except ConfigError as exc:
        raise located(exc, path, overridden) from None


@contextmanager
def errors_located(path: str | Path | None, overrides: list[str]) -> Iterator[None]:
    """Checks made once a config is read (a metric the task never gives, a model that does not load) name their key
    as reading it does: the file and the key's line, or the `--set` (they said `config: key: ...`, no file, no line)."""
    try:
        yield
    except ConfigError as exc:
        where = located(exc, path, [".".join(keys) for keys, _ in parse_overrides(overrides)])
        if where is exc:
            raise
        raise where from None


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> str:
    """`file:line: invalid YAML: problem`, on one line (a ReaderError's own text spans two); `invalid JSON` for a
    `.json` file (read as YAML, which JSON is, but written as JSON). A full-width colon, indenting space or comma
    (`fullwidth_mark`) is named on its own line: YAML finds the error a line later, or past the file's end."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line: int | None = mark.line + 1
    elif isinstance(getattr(exc, "position", None), int):  # yaml.reader.ReaderError: bad character
        line = text.count("\n", 0, exc.position) + 1  # type: ignore[attr-defined]
    else:
        line = None
    problem = getattr(exc, "problem", None)
    if problem is None and isinstance(exc, yaml.reader.ReaderError):
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    if (wide := fullwidth_mark(text, line)) is not None:  # a Chinese input method's '：' or '　': its own line
        return f"{path}:{wide[0]}: {wide[1]}"
    where = f"{path}:{line}" if line is not None else str(path)
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    return f"{where}: invalid {kind}: {' '.join(str(problem or exc).split())}"


def config_to_yaml(cfg: RunConfig) -> str:
    data = cfg.model_dump(mode="json")
    if "search" in data and data["search"] is None:  # only `tunelab tune` configs carry a search section
        del data["search"]
    return yaml_text(data)  # reads back as it was, as YAML 1.2 (tunelab) and 1.1 (safe_load) alike
