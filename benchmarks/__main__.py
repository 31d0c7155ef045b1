"""Run benchmark sections and record them in BENCHMARKS.md.

Usage: ``python -m benchmarks [SECTION ...]``; no argument runs them all.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

# Section name -> module under benchmarks/. Each module's run() returns Markdown.
SECTIONS = {
    "overhead": "benchmarks.overhead",
    "robustness": "benchmarks.robustness",
    "scale": "benchmarks.scale",
    "statistics": "benchmarks.statistics",
}

BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = """\
# Benchmarks

Measured figures for the harness itself. Each section names the command that
produced it and the machine it ran on; `make benchmark` reruns every section,
and `python -m benchmarks SECTION` reruns one.
"""


def record_section(name: str, markdown: str, path: Path = BENCHMARKS_FILE) -> None:
    """Replace section ``name`` in ``path`` with ``markdown``, or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    begin, end = f"<!-- section: {name} -->", f"<!-- end: {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("sections", nargs="*", help=", ".join(SECTIONS))
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    for name in args.sections or list(SECTIONS):
        module = importlib.import_module(SECTIONS[name])
        print(f"benchmark section {name}: running", file=sys.stderr)
        markdown = module.run()
        record_section(name, markdown)
        print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
