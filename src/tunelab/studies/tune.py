"""Hyperparameter search (`tunelab tune`): an Optuna study over runs (the `search` section: config/search.py).

    run.yaml (+ search.space) ─► trial k: the same config with the sampled dotted keys overridden,
                                 output_dir OUTPUT_DIR/tune/trial-NNN (a study named by --study: under
                                 OUTPUT_DIR/tune/<name>/), no checkpoints ─► pipeline.run
                                 every evaluation → trial.report → median pruner (optuna.TrialPruned; a
                                 pruned trial has finished: the run its directory held before is deleted)
    OUTPUT_DIR/tune/study.db     Optuna's SQLite storage: rerunning continues the study
    OUTPUT_DIR/tune/results.*    one row per trial (json, csv); best.yaml: the best trial's config.yaml to train

`--trials N` is the study's total: finished trials (complete or pruned) count, failed or interrupted ones do
not, so rerunning the same command runs only the missing trials; with other settings (but the searched keys) it is
refused. Optuna is an optional extra (`tune`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import sys
from pathlib import Path
from typing import Any

from rich.table import Table as RichTable

from tunelab.config.fields import yaml_text
from tunelab.config.run import RunConfig
from tunelab.config.search import SearchConfig
from tunelab.data.report import read_summary, summary_rules
from tunelab.errors import ConfigError, StudyInterrupted, TunelabError, first_line, require
from tunelab.io import make_dirs, read_json, write_json_atomic, write_text_atomic
from tunelab.metrics import scalars
from tunelab.pipeline import run
from tunelab.progress import table_console
from tunelab.registry import TASKS
from tunelab.studies.cv import STUDY_MAY_CHANGE
from tunelab.studies.trials import base_tree, check_metrics, check_space, metric_value, trial_config
from tunelab.text import TEXT_RULES, text_rules
from tunelab.training.layout import STUDY_LOCK
from tunelab.training.run_checks import config_changes, resolved, run_config
from tunelab.training.run_dir import RunDirLock, finish_run_dir


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the study
def import_optuna() -> Any:
    return require("optuna", "tune: optuna is not installed; pip install tunelab[tune]")


def storage_url(storage: str | Path) -> str:
    text = str(storage)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    make_dirs(path.parent, "--storage")
    return f"sqlite:///{path}"


DEFAULT_STUDY = "tunelab"  # the study without --study: its files straight in OUTPUT_DIR/tune


def run_search(cfg: RunConfig, trials: int, storage: str | Path | None = None, study_name: str | None = None,
               ) -> dict[str, Any]:
    """Run (or continue) the study until it holds `trials` finished trials; write results and best.yaml.
    Returns the results (as written to OUTPUT_DIR/tune/results.json)."""
    search: SearchConfig | None = cfg.search
    if search is None:
        raise ConfigError("config: search: required for tunelab tune (search: {metric, direction, space: "
                          "{train.lr: {type: float, low: 1.0e-5, high: 1.0e-4, log: true}}})")
    if trials < 1:
        raise TunelabError("tune: --trials must be at least 1")
    if not cfg.data.validation and cfg.data.validation_split <= 0:
        raise ConfigError("config: data.validation: tune scores trials on validation data; give "
                          "data.validation or keep data.validation_split > 0")
    check_space(cfg, search)
    check_metrics(cfg, search)
    optuna = import_optuna()
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say it
    name = study_name or DEFAULT_STUDY
    root = Path(cfg.output_dir) / "tune"
    home = study_home(root, name)  # (a name the study layout takes is refused before anything is made)
    make_dirs(root, "output_dir")
    url = storage_url(storage if storage is not None else root / "study.db")
    home.mkdir(exist_ok=True)
    with RunDirLock(home, STUDY_LOCK):  # one process per study: a second `tune` of it is refused with the pid
        return _search(cfg, search, trials, url, name, home, optuna, TrialState)


def _search(cfg: RunConfig, search: SearchConfig, trials: int, url: str, name: str, home: Path, optuna: Any,
            TrialState: Any) -> dict[str, Any]:  # noqa: N803 - optuna's class
    saved = read_json(home / "results.json") if (home / "results.json").is_file() else None
    if isinstance(saved, dict) and isinstance(saved.get("storage"), str) and _other_storage(saved["storage"], url):
        raise TunelabError(f"tune: {home} holds the trials of study {name!r} in {saved['storage']}, not {url}; "
                           "use another --study or output_dir for this storage")
    direction = search.study_direction(TASKS.get(cfg.task.name).headline)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=search.pruner.startup_trials,
                                          n_warmup_steps=search.pruner.warmup_steps)
              if search.pruner is not None else optuna.pruners.NopPruner())
    try:
        rdb = optuna.storages.RDBStorage(url)
    except Exception as exc:  # sqlalchemy's errors (a folder, no permission), an unknown database scheme, ...
        raise TunelabError(f"--storage: cannot open {url}: {first_line(exc)}") from None
    study = optuna.create_study(storage=rdb, study_name=name, direction=direction, pruner=pruner,
                                load_if_exists=True)
    given = search
    if search.metric is None and isinstance(study.user_attrs.get("metric"), str):  # its trials' metric, not a headline
        search = search.model_copy(update={"metric": study.user_attrs["metric"]})
        direction = search.study_direction(TASKS.get(cfg.task.name).headline)
    rules = _check_same_config(cfg, search, study, home, url, TrialState)  # before anything of the study changes
    _check_resumed(study, rdb, given, direction, url, TrialState)  # (its hints read what the config says)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    missing = trials - len(finished)
    if study.trials:
        _say(f"tune: study {name!r} in {url} has {len(finished)} finished trials; running {max(missing, 0)} "
             f"more (--trials {trials} is the total)")
    # seeded by train.seed; offset by the trials already there so a resumed study draws new points
    study.sampler = optuna.samplers.TPESampler(seed=cfg.train.seed + len(study.trials))
    if missing > 0:
        objective = _objective(cfg, search, home, optuna)
        try:
            with text_rules(rules):  # new trials read rows as the study's first did (rules of an older tunelab)
                study.optimize(objective, n_trials=missing, gc_after_trial=True)
        except KeyboardInterrupt:  # (optuna has marked the running trial FAIL: it does not count)
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            raise StudyInterrupted(f"its finished trials ({len(done)}) are kept in {url}") from None
    return _report(cfg, study, search, home, url)


def _other_storage(saved: str, url: str) -> bool:
    """Whether the study a folder's results.json names (`saved`) is in another database than `url`: SQLite files by
    identity (a folder moved with its study.db, or a URL spelled otherwise, is the same study; a file that no longer
    exists where it was is taken to have moved with it), other databases by URL."""
    if saved == url:
        return False
    if not (saved.startswith("sqlite:///") and url.startswith("sqlite:///")):
        return True
    old, new = Path(saved.removeprefix("sqlite:///")), Path(url.removeprefix("sqlite:///"))
    try:
        return old.exists() and not (new.exists() and old.samefile(new))
    except OSError:
        return True


# what the default study keeps in OUTPUT_DIR/tune beside the named studies' folders: no study may be named so
# the default study's trial folders (trial-005, trial-1000), its SQLite file with its journals, its results
STUDY_NAMES_TAKEN = re.compile(r"trial-(\d{3}|[1-9]\d{3,})|study\.db.*|results\.(json|csv)|best\.yaml", re.IGNORECASE)


def study_home(root: Path, name: str) -> Path:
    """Where a study's trials and results go: OUTPUT_DIR/tune for the default study, OUTPUT_DIR/tune/<name> for one
    named by --study, so that two studies in one output_dir never replace each other's trial directories. A name
    that is the default study's trial folder (`trial-005`: its trial 5 trains there) or one of its files is refused
    (a case-insensitive file system takes `Trial-005` for it too)."""
    if name == DEFAULT_STUDY:
        return root
    safe = re.sub(r"[^\w.-]", "_", name).lstrip(".") or "_"
    if safe != name:  # two names that read alike here stay apart
        safe += "-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    if STUDY_NAMES_TAKEN.fullmatch(safe):
        raise TunelabError(f"tune: --study {name}: {root / safe} is where the default study keeps its "
                           f"{'trial' if safe.lower().startswith('trial-') else 'file'} of that name; choose another "
                           "study name")
    return root / safe




def _trial_dir(trial: Any, home: Path) -> Path:
    """A trial's run directory: home/trial-NNN (a study folder moved with its study.db too), else where it ran."""
    here = home / f"trial-{trial.number:03d}"
    return here if here.is_dir() or "output_dir" not in trial.user_attrs else Path(trial.user_attrs["output_dir"])


def _check_same_config(cfg: RunConfig, search: SearchConfig, study: Any, home: Path, url: str, states: Any) -> int:
    """A continued study trains its new trials with the settings it started with (its first finished trial's
    config.yaml), but for the keys searched (its trials' and this space's) and STUDY_MAY_CHANGE: another setting is
    refused in one line naming each changed field (the trials would not compare, nor best.yaml say what ran).
    Returns the text rules that trial read its rows by (`text.TEXT_RULES` for a new study)."""
    for trial in sorted(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)),
                        key=lambda t: t.number):
        out = _trial_dir(trial, home)
        # (with its own params: what they imply — a method's defaults, its lr — is not a change either)
        expected = resolved(trial_config(cfg, trial.params, out, **{"train.save_steps": 0}))
        changes = config_changes(out, expected, (*STUDY_MAY_CHANGE, *search.space, *trial.params))
        if changes is None:  # no readable config.yaml (its folder deleted): the next trial's
            continue
        if changes:
            keys = ", ".join(f"{k} ({new!r}; the study's: {old!r})" for k, new, old in changes)
            raise ConfigError(f"config: {keys}: study {study.study_name!r} in {url} ran its trials with other "
                              f"settings ({out / 'config.yaml'}); continue it with those, or start another --study "
                              "or output_dir")
        return summary_rules(read_summary(out))
    return TEXT_RULES


def _check_resumed(study: Any, storage: Any, search: SearchConfig, direction: str, url: str, states: Any,
                   ) -> None:
    """A continued study must optimise the same thing; trials left RUNNING by a killed process are failed."""
    if study.direction.name.lower() != direction:
        made = (" (made when tunelab maximised the loss of an sft / pretrain run whose search.metric was unset: set "
                "search.direction: maximize to go on with it, or start another study)"
                if search.direction == "auto" and search.metric is None and direction == "minimize" else "")
        raise ConfigError(f"config: search.direction: study {study.study_name!r} in {url} is "
                          f"{study.direction.name.lower()}{made}; use another --study or --storage")
    saved = study.user_attrs.get("metric")
    if saved is not None and search.metric is not None and saved != search.metric:
        raise ConfigError(f"config: search.metric: study {study.study_name!r} in {url} optimises {saved!r}, "
                          f"not {search.metric!r}; use another --study or --storage")
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(states.RUNNING,)):  # one process per study
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_state_values(trial_id, states.FAIL)
        _say(f"tune: trial {t.number} was interrupted (still RUNNING in the storage); marked FAIL")


def _objective(cfg: RunConfig, search: SearchConfig, root: Path, optuna: Any) -> Any:
    def objective(trial: Any) -> float:
        params = {key: spec.suggest(trial, key) for key, spec in search.space.items()}
        out = root / f"trial-{trial.number:03d}"
        trial.set_user_attr("output_dir", str(out))
        tcfg = trial_config(cfg, params, out, **{"train.save_steps": 0})
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        _say(f"tune: trial {trial.number}: {shown} → {out}")

        def on_eval(step: int, result: dict[str, Any]) -> None:
            metric, value = metric_value(result, search.metric, "eval/")
            trial.set_user_attr("metric", metric)
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                _say(f"tune: trial {trial.number} pruned at step {step} ({metric}={value:.4g})")
                # pruned is how this trial finishes (never resumed: it has no checkpoints): the run its directory
                # held before (a trial of a study whose storage was deleted) is no longer needed, as after a
                # completed trial; deleted
                # here, still under the run's lock. A failed or interrupted trial keeps it in .replaced.
                finish_run_dir(out)
                raise optuna.TrialPruned(f"step {step}: {metric}={value:.4g}")

        try:
            metrics = run(tcfg, on_eval=on_eval, overwrite=True)  # the study owns its trial directories
        except FloatingPointError as exc:  # a diverging trial fails (state FAIL, NaN); the search goes on
            trial.set_user_attr("error", str(exc))
            _say(f"tune: trial {trial.number} failed: {exc}")
            return math.nan
        metric, value = metric_value(metrics["validation"], search.metric)
        if "metric" not in trial.study.user_attrs:
            trial.study.set_user_attr("metric", metric)
        trial.set_user_attr("metric", metric)
        trial.set_user_attr("steps", metrics["train"]["steps"])
        trial.set_user_attr("validation", scalars(metrics["validation"]))
        _say(f"tune: trial {trial.number}: {metric}={value:.4g}")
        return value

    return objective


# ---------------------------------------------------------------------------- results
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        rows.append({
            "trial": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "steps": t.user_attrs.get("steps"), "pruned_at_step": t.user_attrs.get("pruned_at_step"),
            "wall_s": round(t.duration.total_seconds(), 2) if t.duration else None,
            "output_dir": t.user_attrs.get("output_dir"),
        })
    return rows


def _report(cfg: RunConfig, study: Any, search: SearchConfig, root: Path, url: str) -> dict[str, Any]:
    """The table (stderr), results.json / results.csv, and best.yaml when a trial completed."""
    rows = _rows(study)
    best = study.best_trial if any(r["state"] == "COMPLETE" for r in rows) else None
    metric = study.user_attrs.get("metric") or search.metric or "value"
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    _print_table(study, rows, keys, metric, best.number if best else None)
    results = {"study": study.study_name, "storage": url, "metric": metric,
               "direction": study.direction.name.lower(), "best": None, "trials": rows}
    if best is not None:
        results["best"] = {"trial": best.number, "value": best.value, "params": best.params,
                           "config": str(root / "best.yaml")}
        prefix = "" if study.study_name == DEFAULT_STUDY else f"{root.name}-"  # a named study's folder name
        tree = _best_tree(cfg, best, root, Path(cfg.output_dir) / f"best-{prefix}trial-{best.number:03d}")
        header = (f"# the best trial ({best.number}) of study {study.study_name!r}: {metric}={best.value:.6g}\n"
                  f"# train it with: tunelab train {root / 'best.yaml'}\n")
        write_text_atomic(root / "best.yaml", header + yaml_text(tree))
    write_json_atomic(root / "results.json", results)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["trial", "state", metric, *keys, "steps", "pruned_at_step", "wall_s", "output_dir"])
    for r in rows:
        writer.writerow([r["trial"], r["state"], r["value"], *[r["params"].get(k) for k in keys],
                         r["steps"], r["pruned_at_step"], r["wall_s"], r["output_dir"]])
    write_text_atomic(root / "results.csv", buf.getvalue())
    if best is None:
        raise TunelabError(f"tune: no trial of study {study.study_name!r} completed; see {root / 'results.json'}")
    _say(f"tune: best trial {best.number}: {metric}={best.value:.4g}; config: {root / 'best.yaml'} "
         f"(results: {root / 'results.json'})")
    return results


def _best_tree(cfg: RunConfig, best: Any, home: Path, output_dir: Path) -> dict[str, Any]:
    """best.yaml: the config the best trial trained with (its config.yaml; its data files and model as it read them),
    with this config's checkpointing (a trial saves none) and `output_dir`; from this config and the trial's values
    only where the trial's folder no longer holds a readable one."""
    ran = run_config(_trial_dir(best, home)) or trial_config(cfg, best.params, output_dir)
    tree = base_tree(ran)
    tree["output_dir"] = str(output_dir)
    tree["train"]["save_steps"] = cfg.train.save_steps
    return tree


def _print_table(study: Any, rows: list[dict[str, Any]], keys: list[str], metric: str, best: int | None) -> None:
    title = f"tune: {study.study_name} — {metric} ({study.direction.name.lower()})"
    table = RichTable(title=title + (f"; best: trial {best}" if best is not None else ""))
    for col in ("trial", "state", metric, *keys, "steps", "wall s"):
        table.add_column(col, justify="left" if col == "state" else "right")
    for r in rows:
        pruned = r["pruned_at_step"] is not None and r["state"] == "PRUNED"
        steps = f"{r['pruned_at_step']} (pruned)" if pruned else r["steps"]
        table.add_row(str(r["trial"]) + (" *" if r["trial"] == best else ""), r["state"], _fmt(r["value"]),
                      *[_fmt(r["params"].get(k)) for k in keys], _fmt(steps), _fmt(r["wall_s"]))
    table_console(width=max(120, 24 + 12 * len(keys))).print(table)
