"""YAML run configurations with dotted command-line overrides.

A config is a nested mapping with the sections ``task`` (recipe name), ``seed``, ``data``,
``model``, ``optim``, ``trainer`` (keyword arguments of ``lightning.Trainer``), ``checkpoint``
(``monitor``, ``mode``) and ``output`` (run directory). Named configs ship in
``aug_attn_tasks/configs/<name>.yaml``; any path to a YAML file works too.
Overrides look like ``--trainer.max_epochs 3`` or ``--model.num_heads=4``; values are parsed as YAML.
``name`` (default: the file's stem) names the run folder, ``<output.dir>/<name>/version_N``.
A shipped config opens with a comment that describes it; :func:`describe_config` reads that header
for ``aug-attn configs``.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "available_configs",
    "load_config",
    "apply_overrides",
    "check_keys",
    "check_run_name",
    "parameter_names",
    "describe_config",
    "header_comment",
    "first_sentence",
    "stated_time",
    "configs_table",
    "ConfigSummary",
    "TEST_SECTIONS",
    "ConfigError",
    "SECTIONS",
]

SECTIONS = ("task", "name", "seed", "data", "model", "optim", "loss", "trainer", "checkpoint", "output")
TEST_SECTIONS = ("seed", "data", "trainer")  # what `aug-attn test CKPT --section.key VALUE` may change


class ConfigError(ValueError):
    """A config file or override is malformed."""


def check_keys(section: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise a :class:`ConfigError` naming the first key of ``given`` not in ``allowed`` (as
    ``section.key``) and the closest allowed one: a typo in a config or an override never runs."""
    allowed = sorted(set(allowed))
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {section + '.' if section else ''}{close[0]}?" if close else f"; known keys: {', '.join(allowed)}"
            raise ConfigError(f"unknown config key {section + '.' if section else ''}{key}{hint}")


def parameter_names(function: Callable[..., Any], skip: int = 0) -> list[str]:
    """The keyword parameters of ``function`` (a class: its constructor), less the first ``skip``;
    a class whose constructor passes ``**kwargs`` on also takes its base classes' parameters."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if isinstance(function, type) and any(p.kind == p.VAR_KEYWORD for p in parameters):
        for base in function.__mro__[1:]:
            if base is not object and "__init__" in vars(base):
                names += parameter_names(base, skip)
    return names


def available_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    folder = resources.files("aug_attn_tasks") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    shipped = resources.files("aug_attn_tasks") / "configs" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"unknown config {name_or_path!r}; shipped configs: {', '.join(available_configs())}")
    return Path(str(shipped))


def apply_overrides(config: dict[str, Any], overrides: list[str], sections: Collection[str] | None = None) -> dict[str, Any]:
    """Apply ``--a.b value`` / ``--a.b=value`` overrides to a copy of ``config``.

    ``sections``: the top-level keys an override may change (e.g. :data:`TEST_SECTIONS` where the
    model comes from a checkpoint); another one is a :class:`ConfigError` naming it, never ignored."""
    config = copy.deepcopy(config)
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(overrides):
        token = overrides[i]
        if not token.startswith("--"):
            raise ConfigError(f"override {token!r} must look like --section.key VALUE")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(overrides):
                raise ConfigError(f"override {token} has no value")
            key, value = token[2:], overrides[i + 1]
            i += 2
        pairs.append((key, value))
    for key, _ in pairs:
        if sections is not None and key.split(".")[0] not in sections:
            raise ConfigError(
                f"override --{key}: a checkpoint keeps its model, loss and optimiser settings; here only "
                f"{', '.join(s + '.*' if s in ('data', 'trainer') else s for s in sections)} can change"
            )
    for key, value in pairs:
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override --{key}: {part!r} is not a section")
            node = child
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"override --{key}: {value!r} is not valid YAML ({str(error).splitlines()[0]})") from error
    return config


def check_run_name(name: Any) -> str:
    """``name`` if it can name a run folder (``<output.dir>/<name>/version_N``): a non-empty string
    that is one plain folder name; else a :class:`ConfigError` saying why."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"run name {name!r}: expected a non-empty folder name")
    if "/" in name or "\\" in name or name in (".", "..") or any(ord(c) < 32 for c in name):
        raise ConfigError(
            f"run name {name!r}: expected one folder name, without '/' or '\\' (the run goes to <output.dir>/<name>/version_N)"
        )
    return name


def load_config(name_or_path: str, overrides: list[str] | None = None, run_name: str | None = None) -> dict[str, Any]:
    """Read a shipped or user config and apply overrides. ``run_name`` (``aug-attn train --name``)
    replaces the config's ``name``, which defaults to the file's stem."""
    path = _resolve(name_or_path)
    with open(path, encoding="utf-8") as handle:
        try:
            config = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from error
    if not isinstance(config, dict) or "task" not in config:
        raise ConfigError(f"{path}: a config must be a mapping with a 'task' key")
    config = apply_overrides(config, overrides or [])
    if run_name is not None:
        config["name"] = run_name
    config.setdefault("name", path.stem)
    check_keys("", config, SECTIONS)
    check_run_name(config["name"])
    return config


@dataclass(frozen=True)
class ConfigSummary:
    """One line of ``aug-attn configs``: what the config's YAML and its header comment say."""

    name: str
    task: str
    model: str
    time: str | None
    description: str


# A full stop ends a sentence unless it ends an abbreviation ("et al.", "e.g.").
_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bcf)(?<!\bvs)\.(?=\s|$)")
# A duration as headers write it ("about 2 minutes", "79 s", "3-6 min", "330 CPU seconds") and the
# rest of its clause, which must say it is CPU or wall time ("1 s at 16 kHz" is a clip length).
_DURATION = re.compile(
    r"(?:\babout |~)?\b\d[\d,.]*(?: ?- ?\d[\d,.]*)? ?(?:CPU )?(?:s|sec|seconds?|min|minutes?|h|hours?)\b"
    r"(?:(?!; |, |: |\. |[()]).)*"
)
_TIME_WORDS = re.compile(r"\b(?:CPU|wall|cores?)\b")


def header_comment(text: str) -> str:
    """The comment lines at the top of a YAML file, without ``#``, joined into one line with single spaces."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return " ".join(" ".join(lines).split())


def first_sentence(text: str) -> str:
    """``text`` up to its first full stop that is not an abbreviation's (all of it if none)."""
    end = _SENTENCE_END.search(text)
    return text[: end.end()] if end else text


def stated_time(text: str) -> str | None:
    """The first CPU or wall-clock time ``text`` states, with its clause ("about 2 minutes of CPU
    time", "79 s wall", "3-6 min for 882 training scans on one busy core"); None if it states none."""
    for match in _DURATION.finditer(text):
        if _TIME_WORDS.search(match.group()):
            return match.group().strip()
    return None


def describe_config(name_or_path: str) -> ConfigSummary:
    """Task, model (``model.name`` or ``model.arch``, ``+attention`` when ``model.attention`` is
    set), the header's first sentence and the time it states, of a shipped or user config."""
    path = _resolve(name_or_path)
    text = path.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config must be a mapping with a 'task' key")
    model_cfg = config.get("model") or {}
    model = str(model_cfg.get("name") or model_cfg.get("arch") or "-")
    if model_cfg.get("attention"):
        model += "+attention"
    header = header_comment(text)
    return ConfigSummary(path.stem, str(config.get("task", "-")), model, stated_time(header), first_sentence(header) or "-")


def configs_table(summaries: Iterable[ConfigSummary]) -> str:
    """One line per config under a header, columns ``CONFIG TASK MODEL TIME DESCRIPTION``, each
    but the last padded to its widest entry, separated by two spaces; a missing time is ``-``."""
    rows = [("CONFIG", "TASK", "MODEL", "TIME", "DESCRIPTION")]
    rows += [(s.name, s.task, s.model, s.time or "-", s.description) for s in summaries]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows)
