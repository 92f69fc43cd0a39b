"""specstack: a declarative spec-and-codegen toolkit for an OpenStack-style stack."""

__version__ = "0.1.0"
