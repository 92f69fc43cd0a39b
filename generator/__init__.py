"""specstack: a declarative spec-and-codegen toolkit for an OpenStack-style stack.

This package is the toolkit only: the pipeline (`pipeline/`: load -> validate -> IR ->
render -> write), the CLI (`cli.py`, `commands/`), benchmarks (`bench/`) and tools
(`tools/`). Generated code imports `specstack_runtime` and `specstack_conformance`,
never this package.
"""

__version__ = "0.1.0"
