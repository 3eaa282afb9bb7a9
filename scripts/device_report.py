"""Write the report of ``scripts/device_check.sh``: ``report.md`` and ``report.json`` in its output folder.

Reads what the check left there: ``env.txt`` (machine and versions), ``cuda_tests.xml`` (JUnit XML
of ``tests/test_cuda.py``, with the relative errors each test recorded), ``train.log`` (the tail of
each recipe's training log) and ``bench.json`` / ``bench.log`` (``scripts/bench_attention.py
--device cuda``). A part that is missing is reported as missing, never left out silently.

Run: ``python scripts/device_report.py OUT [--skipped REASON] [--elapsed SECONDS]``.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def read_tests(path: Path) -> dict[str, Any]:
    """Counts and per-test rows (name, status, seconds, recorded properties, first failure line)."""
    if not path.is_file():
        return {"missing": f"{path.name} not written (the tests did not run or were stopped)"}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        return {"missing": f"{path.name} unreadable: {error}"}
    rows = []
    for case in root.iter("testcase"):
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        status = "failed" if failure is not None else "skipped" if skipped is not None else "passed"
        detail = (failure.get("message") or failure.text or "") if failure is not None else (skipped.get("message", "") if skipped is not None else "")
        rows.append(
            {
                "name": case.get("name"),
                "status": status,
                "seconds": float(case.get("time") or 0),
                "properties": {p.get("name"): p.get("value") for p in case.iter("property")},
                "detail": detail.strip().splitlines()[0][:300] if detail.strip() else "",
            }
        )
    counts = {status: sum(row["status"] == status for row in rows) for status in ("passed", "failed", "skipped")}
    return {"counts": counts, "tests": rows}


def read_training(path: Path) -> list[dict[str, Any]]:
    """Per recipe: its overrides, the test metric lines it printed, and whether it finished."""
    if not path.is_file():
        return []
    runs, current = [], None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("=== "):
            recipe, _, overrides = line[4:].partition(": ")
            current = {"recipe": recipe, "overrides": overrides, "metrics": [], "tested": False, "last_line": ""}
            runs.append(current)
        elif current is not None:
            # The recipes' result lines: "[name] test ROC-AUC ...", "[name] ... z/z: OA ...", "name: ... test top-1 ..."
            recipe = current["recipe"]
            if (line.startswith(f"[{recipe}]") or line.startswith(f"{recipe}:")) and "table" not in line:
                current["metrics"].append(line.strip())
            if line.startswith("tested checkpoint"):
                current["tested"] = True
            if line.strip():
                current["last_line"] = line.strip()[:300]
    return runs


def markdown(report: dict[str, Any]) -> str:
    lines = ["# aug-attn device check", ""]
    if report.get("skipped"):
        return "\n".join(lines + [f"Skipped: {report['skipped']}.", ""])
    lines += ["```", report.get("env", "").strip(), "```", ""]
    tests = report["tests"]
    lines.append("## CUDA tests (tests/test_cuda.py)")
    if "missing" in tests:
        lines.append(f"Missing: {tests['missing']}")
    else:
        c = tests["counts"]
        lines += [f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped.", ""]
        lines += ["| test | status | s | errors (relative norm) |", "|---|---|---:|---|"]
        for row in tests["tests"]:
            props = ", ".join(f"{k} {v}" for k, v in row["properties"].items())
            note = f" {row['detail']}" if row["status"] != "passed" and row["detail"] else ""
            lines.append(f"| {row['name']} | {row['status']}{note} | {row['seconds']:.1f} | {props} |")
    lines += ["", "## bf16-mixed training of the synthetic recipes (CLI, GPU)"]
    if not report["training"]:
        lines.append("Missing: train.log not written.")
    for run in report["training"]:
        result = "; ".join(run["metrics"]) if run["metrics"] else f"no test metric; last line: {run['last_line']}"
        lines.append(f"- `{run['recipe']}` ({run['overrides']}): {result}")
    lines += ["", "## Benchmark (scripts/bench_attention.py --device cuda)", "```", report.get("bench_log", "missing").strip(), "```", ""]
    lines.append(f"Elapsed: {report.get('elapsed', '?')} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--skipped", help="the check did not run: why")
    parser.add_argument("--elapsed", type=int)
    args = parser.parse_args()
    out: Path = args.out
    env = (out / "env.txt").read_text(errors="replace") if (out / "env.txt").is_file() else ""
    report: dict[str, Any] = {"env": env}
    if args.skipped:
        report["skipped"] = args.skipped
    else:
        report["tests"] = read_tests(out / "cuda_tests.xml")
        report["training"] = read_training(out / "train.log")
        bench_log = out / "bench.log"
        report["bench_log"] = bench_log.read_text(errors="replace")[-12000:] if bench_log.is_file() else "missing: bench.log not written"
        bench_json = out / "bench.json"
        report["bench"] = json.loads(bench_json.read_text()) if bench_json.is_file() else None
        report["elapsed"] = args.elapsed
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    print((out / "report.md").read_text()[:4000])


if __name__ == "__main__":
    main()
