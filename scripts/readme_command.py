#!/usr/bin/env python3
"""Print the shell block of README.md marked ``<!-- ci: NAME ... -->`` (the next ```bash fence).

`.ci/run` runs the `tests` block and tests/test_demo.py the `demo` block through this, so the
README's two commands are what CI executes, exactly as written.  Standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def readme_block(name: str, readme: Path = Path(__file__).resolve().parent.parent / "README.md") -> str:
    text = readme.read_text(encoding="utf-8")
    m = re.search(r"<!--\s*ci:\s*" + re.escape(name) + r"\b[^>]*-->\s*```(?:bash|sh)\n(.*?)```", text, re.S)
    if m is None:
        raise SystemExit(f"{readme}: no ```bash block marked <!-- ci: {name} -->")
    return m.group(1).strip()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: readme_command.py NAME")
    print(readme_block(sys.argv[1]))
