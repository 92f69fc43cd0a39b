"""Reusable behaviours that generated services call by the names the spec gives."""
