"""Target `migrations`: alembic migration scripts for every database the spec declares.

Each database component gets its own alembic script directory,
`migrations/<module>/versions/`, whose revisions create the resource tables and
indexes of its `tables` (the same shape `specstack_runtime.store` expects).
`specstack_runtime.migrate.upgrade(url, database)` runs them; no alembic.ini needed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from generator.pipeline.render.base import OutputFile, RenderContext, py_header

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


def revision_id(module: str, number: int, body: str) -> str:
    """One chain per database, numbered from 1, with a hash of what the revision does:
    a database made from another spec (or template) is then refused with a clear error
    instead of being taken for up to date."""
    digest = hashlib.sha256(body.encode()).hexdigest()[:10]
    return f"{module}_{number:04d}_{digest}"


class MigrationsTarget:
    name = "migrations"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        header = py_header(ctx.source("components.yaml"))
        databases = [c for c in ir.components if c.kind == "database" and c.tables]
        out = []
        for db in databases:
            template = ctx.templates.get_template("migrations/initial.py.j2")
            body = template.render(db=db, revision="", header=header)
            text = template.render(db=db, revision=revision_id(db.module, 1, body), header=header)
            out.append(OutputFile(f"migrations/{db.module}/versions/{db.module}_0001.py", text))
        index = ctx.templates.get_template("migrations/__init__.py.j2").render(
            databases=databases, header=header
        )
        out.append(OutputFile("migrations/__init__.py", index))
        return out
