"""``.ci/run`` runs the README's two commands in a clean environment, and fails when the main job does."""

from __future__ import annotations

import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
readme_commands = runpy.run_path(str(ROOT / ".ci" / "readme_commands.py"))["readme_commands"]


def test_the_readme_gives_the_main_job_and_the_test_command():
    main_job, tests = readme_commands(ROOT / "README.md")
    assert main_job.startswith("pip install -e . && aug-attn train ")
    assert tests.startswith('pip install -e ".[test]" && python -m pytest')


def fake_checkout(tmp_path: Path, main_job: str, tests: str) -> Path:
    """A folder with the real ``.ci`` and a README whose two commands are ``main_job`` and ``tests``."""
    shutil.copytree(ROOT / ".ci", tmp_path / ".ci")
    (tmp_path / "README.md").write_text(f"# x\n\n## The two commands\n\n```bash\n{main_job}\n{tests}\n```\n")
    return tmp_path


def run_ci(checkout: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(checkout / ".ci" / "run")], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "main_job, status",
    [("echo '[job] training'; exit 3", 3), ("echo '[job] trained, no metrics'", 1)],
    ids=["main job fails", "main job prints no test metric"],
)
def test_ci_fails_with_the_main_job_even_when_the_tests_would_pass(tmp_path, main_job, status):
    result = run_ci(fake_checkout(tmp_path, main_job, "echo TESTS-RAN"))
    assert result.returncode == status, result.stdout + result.stderr
    assert "TESTS-RAN" not in result.stdout


def test_ci_runs_both_commands_in_a_new_venv(tmp_path):
    # The main job reports the interpreter it got: the temporary venv's, not this one's.
    checkout = fake_checkout(
        tmp_path,
        "python -c 'import sys; print(sys.prefix)' && echo '[job] test ROC-AUC: 0.5'",
        "python -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)' && echo TESTS-RAN",
    )
    result = run_ci(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = [line for line in result.stdout.splitlines() if not line.startswith("ci:")]
    assert "aug-attn-ci." in printed[0] and "TESTS-RAN" in printed


def test_ci_refuses_a_readme_without_two_commands(tmp_path):
    checkout = fake_checkout(tmp_path, "echo one", "")
    result = run_ci(checkout)
    assert result.returncode == 1 and "must hold two commands, found 1" in result.stderr
