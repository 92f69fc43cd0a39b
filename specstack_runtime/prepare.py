"""Create and migrate a distributed stack's databases, then exit: a cluster's migration job.

    python -m specstack_runtime.prepare [--config FILE]

What the supervisor does before it starts the processes (`prepare_databases`), for a
deployment with no supervisor: each project database of the spec is created on its
server if missing and migrated to the spec's schema. It reads the configuration every
process reads (file, then SPECSTACK_* variables); exit 0 when every database is ready.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy.exc import SQLAlchemyError

from specstack_runtime.config import ConfigError, load_config
from specstack_runtime.migrate import MigrationError

log = logging.getLogger("specstack.prepare")

EXIT_CONFIG = 2  # as a process: a bad configuration
EXIT_FAILED = 1  # a server refused or could not be reached


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m specstack_runtime.prepare")
    p.add_argument("--config", default=None, help="config file (default: SPECSTACK_CONFIG)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    from specstack_runtime.embedded import load_generated
    from specstack_runtime.supervisor import prepare_databases, project_databases

    try:
        config = load_config(args.config, mode="distributed")
        config.ensure_secrets()
        config.for_mode()
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    info = load_generated()[0]
    try:
        created = prepare_databases(info, config)
    except (SQLAlchemyError, MigrationError, OSError) as exc:
        # the URL's password stays out of the message: only the error's own first line
        log.error("preparing the databases failed: %s", str(exc).splitlines()[0])
        return EXIT_FAILED
    for db in project_databases(info):
        log.info("%s: %s", db, "created and migrated" if db in created else "migrated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
