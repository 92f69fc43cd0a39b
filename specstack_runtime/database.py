"""What the store and the migrations both use: a table's spec, and the SQLAlchemy URL
with the database drivers this project installs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class TableSpec:
    name: str
    indexes: tuple[str, ...] = ()


def engine_url(url: str) -> str:
    """The URL with the driver this project installs, when the URL names none.

    postgresql:// -> postgresql+psycopg:// (psycopg 3); mysql:// and mariadb:// ->
    +pymysql with utf8mb4. Explicit drivers are kept.
    """
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername in ("mysql", "mariadb"):
        u = u.set(drivername=f"{u.drivername}+pymysql")
    if u.get_backend_name() in ("mysql", "mariadb") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u.render_as_string(hide_password=False)
