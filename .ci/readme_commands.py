"""Print the two set-up commands of README.md, one a line: the main job, then the test command.

They are the lines of the first ``bash`` block under the heading "## The two commands", run by
``.ci/run`` exactly as written (comments included: bash drops them), so README and CI cannot drift
apart. Exits 1, naming the problem, when the block is missing or does not hold exactly two commands.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADING = "## The two commands"


def readme_commands(readme: Path) -> list[str]:
    """``[main_job, test_command]`` from ``readme``; raises ``ValueError`` naming what is wrong."""
    text = readme.read_text(encoding="utf-8")
    if f"\n{HEADING}\n" not in text:
        raise ValueError(f"{readme}: no heading '{HEADING}'")
    block = re.search(r"```bash\n(.*?)```", text.split(f"\n{HEADING}\n", 1)[1], re.S)
    if block is None:
        raise ValueError(f"{readme}: no ```bash block under '{HEADING}'")
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(commands) != 2:
        raise ValueError(f"{readme}: the block under '{HEADING}' must hold two commands, found {len(commands)}")
    return commands


if __name__ == "__main__":
    try:
        print("\n".join(readme_commands(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("README.md"))))
    except ValueError as error:
        print(f"readme_commands: {error}", file=sys.stderr)
        sys.exit(1)
