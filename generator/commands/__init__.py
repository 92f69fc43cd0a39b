"""The `specstack` commands beyond `validate` and `generate`, one module each: `run`,
`trace`, `diagram`, `conform` (`bench` is `generator.bench`). `flow_events` and
`flow_diagrams` are what `trace`, `diagram` and `conform` share."""
