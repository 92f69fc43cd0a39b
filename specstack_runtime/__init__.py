"""The hand-written runtime library that generated code imports (`generated/` imports it,
never `generator`): the HTTP app, bus, stores, auth, trace, flow executor, behaviours,
hypervisor drivers, the embedded stack and the distributed supervisor, and the typed IR
(`ir.py`) that the generator builds and the runtime reads."""
