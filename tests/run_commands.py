"""Run command lines one after another in one process, each as ``python -m aug_attn_tasks.cli ARGS``
(or ``python SCRIPT ARGS``) would run it, and write each one's exit status and output.

Usage: ``python tests/run_commands.py STEPS.json RESULTS.json``, in the working directory of the
commands. ``STEPS.json`` is a list of ``{"key": str, "argv": [...], "script": path or null}``;
``RESULTS.json`` maps every key run to ``{"status": int, "output": str}`` (the last 4,000
characters of stdout and stderr together) and is rewritten after each command, so a crash leaves
the results before it. One process pays torch's and Lightning's import once instead of per command:
`tests/test_docs_snippets.py` runs the docs' commands in seconds.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
import traceback
import warnings
from pathlib import Path


def run(argv: list[str], script: str | None) -> int:
    """``python -m aug_attn_tasks.cli *argv`` (or ``python script *argv``) in this process: its exit status."""
    sys.argv = [script or "aug-attn", *argv]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning)
            if script:
                runpy.run_path(script, run_name="__main__")
            else:
                runpy.run_module("aug_attn_tasks.cli", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def captured(argv: list[str], script: str | None) -> tuple[int, str]:
    """:func:`run` with file descriptors 1 and 2 (Python's and native code's output) sent to a file."""
    with tempfile.TemporaryFile("w+") as output:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(output.fileno(), 1), os.dup2(output.fileno(), 2)
        try:
            status = run(argv, script)
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
        output.seek(0)
        return status, output.read()[-4000:]


def main() -> None:
    steps = json.loads(Path(sys.argv[1]).read_text())
    results_path = Path(sys.argv[2])
    results = {}
    for step in steps:
        status, output = captured(step["argv"], step["script"])
        results[step["key"]] = {"status": status, "output": output}
        results_path.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
