"""Benchmarks of the harness itself, run with ``make benchmark``.

Each section is a module with a ``run(args) -> str`` function that measures
something and returns a Markdown section. The dispatcher writes each section
into BENCHMARKS.md between its markers, so sections can be rerun one by one.
"""
