"""Write a seed case instance as JSON: `python -m optimizer.cases NAME [FILE]`."""

from __future__ import annotations

import sys
from pathlib import Path

from optimizer.cases import CASES


def main(argv: list[str]) -> int:
    """Entry point; returns the exit code."""
    if not argv or argv[0] not in CASES:
        print(f"usage: python -m optimizer.cases {{{','.join(CASES)}}} [FILE]", file=sys.stderr)
        return 2
    text = CASES[argv[0]]().model_dump_json(indent=1, exclude_defaults=True)
    if len(argv) > 1:
        Path(argv[1]).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
