"""The resource engine: serves every operation spec/resources binds (see docs/resources.md)."""
