"""The README and ``docs/*.md`` run as written: every Python block, the quick shell commands, every link.

- Every ```python block runs in a fresh namespace with a temporary folder as working directory. A
  block that cannot run here says so in its first line, ``# doc-test: skip (REASON)``; nothing else
  skips it.
- Shell blocks (```bash) are read as bash reads them (``\\`` joins lines, ``#`` starts a comment,
  ``&&`` separates commands). The quick commands run as ``python -m aug_attn_tasks.cli ...``, in doc
  order, in one temporary folder: ``aug-attn configs``, ``aug-attn ... --help``, ``aug-attn train``
  of a config whose data is synthetic (``TINY`` overrides of its task appended: one epoch on a few
  samples), ``python scripts/demo_inputs.py DIR``, and ``aug-attn tag|classify|explain|plot|test``
  whose inputs are ``demo/`` files or a run of a synthetic config (written first, tiny, when no
  earlier command wrote it). They share one process (``tests/run_commands.py``), which pays the
  imports once.
- Every ``aug-attn train`` line, run or not, names a shipped config and known keys.
- Every relative link and picture points to a file, and an ``#anchor`` to a heading of it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import lightning as L
import pytest

from aug_attn_tasks.audio.data import DATA_KEYS as AUDIO_KEYS
from aug_attn_tasks.config import available_configs, check_keys, load_config, parameter_names
from aug_attn_tasks.images.data import DATA_KEYS as IMAGE_KEYS
from aug_attn_tasks.optim import OPTIM_KEYS
from aug_attn_tasks.points.data import DATA_KEYS as POINT_KEYS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"#\s*doc-test:\s*skip\s*\((.+)\)")
DATA_KEYS = {"tagging": AUDIO_KEYS, "points": POINT_KEYS, "images": IMAGE_KEYS}
# Appended to a synthetic recipe's own overrides (the later value wins).
TINY = {
    "tagging": "--trainer.max_epochs 1 --data.num_train 32 --data.num_valid 8 --data.num_test 8 --data.val_chunks 1 --data.eval_chunks 2",
    "points": "--trainer.max_epochs 1 --data.num_train 56 --data.num_test 28 --data.batch_size 16 --data.eval_batch_size 28",
    "images": "--trainer.max_epochs 1 --data.num_train 64 --data.num_test 32 --data.batch_size 16 --data.eval_batch_size 32",
}
# Overrides that take a synthetic recipe off its embedded data or onto other machines.
NOT_QUICK = ("--data.root", "--data.csv", "--data.layout", "--data.dataset", "--trainer.devices", "--trainer.strategy", "--resume")
DEMO_INPUTS = ["python", "scripts/demo_inputs.py", "demo/"]


def fenced_blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of every ```language block of ``path``."""
    blocks, start, body = [], None, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if start is None and line.strip() == f"```{language}":
            start, body = number + 1, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, textwrap.dedent("\n".join(body)) + "\n"))  # a block inside a list item is indented
            start = None
        elif start is not None:
            body.append(line)
    return blocks


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell block as token lists: bash's line joins and comments, split at ``&&``;
    ``[--key VALUE]`` (optional arguments in the docs' notation) loses its brackets."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        command: list[str] = []
        optional = False
        for token in shlex.split(line, comments=True) + ["&&"]:
            if token == "&&":
                if command:
                    commands.append(command)
                command = []
                continue
            if token.startswith("[--"):
                token, optional = token[1:], True
            elif optional and token.endswith("]"):
                token, optional = token[:-1], False
            command.append(token)
    return commands


def cli_arguments(command: list[str]) -> list[str] | None:
    """The arguments of ``aug-attn`` in ``command`` (also behind ``srun`` or as ``-m aug_attn_tasks.cli``), else None."""
    for i, token in enumerate(command):
        if token == "aug-attn" or (token == "aug_attn_tasks.cli" and i > 0 and command[i - 1] == "-m"):
            return command[i + 1 :]
    return None


@cache
def synthetic_task(name: str) -> str | None:
    """The task of shipped config ``name`` when its data is synthetic, else None."""
    if name not in available_configs():
        return None
    config = load_config(name)
    data = config.get("data", {})
    return config["task"] if "synthetic" in (data.get("layout"), data.get("dataset")) else None


def positionals(arguments: list[str]) -> list[str]:
    """The arguments that are neither an option nor an option's value."""
    out, i = [], 0
    while i < len(arguments):
        if arguments[i].startswith("-"):
            takes_value = "=" not in arguments[i] and i + 1 < len(arguments) and not arguments[i + 1].startswith("-")
            i += 2 if takes_value else 1
        else:
            out.append(arguments[i])
            i += 1
    return out


def run_of(path: str) -> str | None:
    """The synthetic config of ``runs/<config>/version_0[/...]``, else None."""
    match = re.match(r"runs/(\w+)/version_0(/|$)", path)
    return match.group(1) if match and synthetic_task(match.group(1)) else None


def quick(command: list[str]) -> bool:
    """Whether the test runs ``command`` (see the module docstring)."""
    if command == DEMO_INPUTS:
        return True
    arguments = cli_arguments(command)
    if command[0] != "aug-attn" or not arguments:
        return False
    if arguments == ["configs"] or "--help" in arguments or "-h" in arguments:
        return True
    if arguments[0] == "train":
        return len(arguments) > 1 and synthetic_task(arguments[1]) is not None and not any(a.split("=")[0] in NOT_QUICK for a in arguments)
    if arguments[0] in ("tag", "classify", "explain", "plot", "test"):
        paths = positionals(arguments[1:]) + [a for a in arguments if a.startswith("runs/")]
        runs = [p for p in paths if p.startswith("runs/")]
        return bool(runs) and all(run_of(p) for p in runs) and all(p.startswith(("demo/", "runs/")) for p in paths)
    return False


def collect() -> tuple[list, list, list]:
    """The Python blocks, the quick commands (once each, where they first appear) and the ``train`` commands' arguments."""
    python, commands, trains = [], {}, []
    for path in DOCS:
        name = path.relative_to(ROOT).as_posix()
        python += [pytest.param(text, id=f"{name}:{line}") for line, text in fenced_blocks(path, "python")]
        for line, text in fenced_blocks(path, "bash"):
            for command in shell_commands(text):
                arguments = cli_arguments(command)
                if arguments and arguments[0] == "train" and len(arguments) > 1 and not arguments[1].startswith("-"):
                    trains.append(pytest.param(arguments[1:], id=f"{name}:{line}:{arguments[1]}"))
                if quick(command):
                    commands.setdefault(shlex.join(command), (f"{name}:{line}", command))
    quick_commands = [pytest.param(command, id=f"{where} {text}"[:100]) for text, (where, command) in commands.items()]
    return python, quick_commands, trains


PYTHON_BLOCKS, QUICK_COMMANDS, TRAIN_COMMANDS = collect()


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_python_block_runs(code, tmp_path, monkeypatch):
    skip = SKIP.match(code.lstrip().splitlines()[0])
    if skip:
        pytest.skip(skip.group(1))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc block>", "exec"), {"__name__": "__doc_block__"})


def step(command: list[str]) -> dict:
    """A step of ``tests/run_commands.py``: ``command`` as ``python -m aug_attn_tasks.cli`` (a synthetic
    training with its task's ``TINY`` overrides) or as ``python scripts/...``."""
    if command[0] == "python":
        return {"key": shlex.join(command), "argv": command[2:], "script": str(ROOT / command[1])}
    arguments = command[1:]
    if arguments[0] == "train" and "--help" not in arguments:
        arguments = arguments + TINY[synthetic_task(arguments[1])].split()
    return {"key": shlex.join(command), "argv": arguments, "script": None}


def plan(commands: list[list[str]]) -> list[dict]:
    """The steps that run ``commands`` in order, each preceded by the demo inputs and tiny runs it
    reads when no earlier step wrote them."""
    steps, written = [], set()
    for command in commands:
        arguments = cli_arguments(command) or []
        needs = [DEMO_INPUTS] if any(a.startswith("demo/") for a in arguments) and "demo" not in written else []
        needs += [["aug-attn", "train", name] for name in dict.fromkeys(filter(None, map(run_of, arguments))) if name not in written]
        for need in [*needs, command]:
            steps.append(step(need))
            written.add("demo" if need == DEMO_INPUTS else need[2] if need[1:2] == ["train"] and len(need) > 2 else None)
    return steps


@pytest.fixture(scope="module")
def command_results(tmp_path_factory) -> dict:
    """Every quick command run in one temporary folder: ``{key: {"status", "output"}}``."""
    work = tmp_path_factory.mktemp("doc_commands")
    steps = plan([param.values[0] for param in QUICK_COMMANDS])
    (work / "steps.json").write_text(json.dumps(steps))
    # One thread: the commands are small, and two threads contend on a machine busy with other work.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    runner = [sys.executable, str(ROOT / "tests" / "run_commands.py"), "steps.json", "results.json"]
    done = subprocess.run(runner, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
    missing = {s["key"]: {"status": None, "output": f"not run: the runner exited {done.returncode}\n{done.stderr[-3000:]}"} for s in steps}
    return {**missing, **results, "steps": [s["key"] for s in steps]}


@pytest.mark.parametrize("command", QUICK_COMMANDS)
def test_quick_command_runs(command, command_results):
    key = shlex.join(command)
    result = command_results[key]
    if result["status"] != 0:
        earlier = command_results["steps"][: command_results["steps"].index(key)]
        failed = [f"{k} (exit {command_results[k]['status']})" for k in earlier if command_results[k]["status"] != 0]
        pytest.fail(f"{key} exited {result['status']}; failed before it: {failed or 'none'}\n{result['output']}")


@pytest.mark.parametrize("arguments", TRAIN_COMMANDS)
def test_train_command_names_a_config_and_known_keys(arguments):
    overrides = list(arguments[1:])
    if "--resume" in overrides:
        del overrides[overrides.index("--resume") : overrides.index("--resume") + 2]
    config = load_config(arguments[0], overrides)
    check_keys("data", config.get("data", {}), DATA_KEYS[config["task"]])
    check_keys("optim", config.get("optim", {}), OPTIM_KEYS)
    check_keys("trainer", config.get("trainer", {}), parameter_names(L.Trainer))


def test_the_docs_run_the_main_job():
    assert ["aug-attn", "train", "muslcat_synthetic"] in [param.values[0] for param in QUICK_COMMANDS]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of ``path``."""
    headings = [line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines() if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("path", [*DOCS, ROOT / "CHANGELOG.md"], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_files_and_headings(path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: link to {target}: no file {linked}"
        if anchor:
            assert anchor in anchors(linked), f"{path.name}: link to {target}: no heading with that anchor in {linked.name}"
