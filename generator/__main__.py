"""`python -m generator` is the `specstack` command."""

from generator.cli import run

run()
