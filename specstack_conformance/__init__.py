"""The conformance library: what the generated conformance suite calls, and the HTML
report of a run (`report_plugin` collects, `report` renders). It imports the runtime,
never `generator`.

A *target* is a running stack: one this library starts in-process (embedded, on
free ports, in a temporary data directory), or one named by its identity URL.
The suite drives each sequence through the generated client flow, reads back the
trace the stack recorded, and checks it against what the spec declares.
"""
