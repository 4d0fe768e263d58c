"""Optuna storages: a local SQLite file by default, any database URL, or a journal file for NFS.

Workers that start together on a new SQLite database retry while another creates its tables. On SQLite,
each transaction takes the write lock when it begins (``BEGIN IMMEDIATE``): SQLite ignores ``SELECT ... FOR
UPDATE``, so without it two workers could both read one queued trial as waiting and both run it (optuna#4621).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from ad_core.errors import TuneError


# -- storage -------------------------------------------------------------------------------------
def hide_password(url: str) -> str:
    """The storage URL with its password masked, for messages and files."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is another process creating the same Optuna tables at the same moment."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    return isinstance(exc, IntegrityError) or (isinstance(exc, OperationalError) and "already exists" in str(exc))


def _rdb_storage(url: str, engine_kwargs: dict):
    """``RDBStorage(url)``, retried while another worker is creating the same new database's tables."""
    import optuna
    from optuna.storages import RDBStorage

    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120)
            if url.startswith("sqlite"):
                _lock_on_begin(storage.engine)
            return storage
        except Exception as exc:
            if attempt == 5 or not _schema_race(exc):
                raise
            time.sleep(0.2 * (attempt + 1))  # the other worker has made the tables a moment later
    raise AssertionError("unreachable")


def _lock_on_begin(engine) -> None:
    """Make every transaction on this SQLite engine ``BEGIN IMMEDIATE``, so a read-then-write is atomic.

    Python's sqlite3 opens a transaction only at the first write, so Optuna's "is this trial still waiting?
    then mark it running" would run its read outside any lock. The SQLAlchemy recipe for pysqlite: let the
    driver autocommit and emit the BEGIN ourselves. Pooled connections made before are dropped.
    """
    from sqlalchemy import event

    def connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    def begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", connect)
    event.listen(engine, "begin", begin)
    engine.dispose()


def open_storage(url: str | Path):
    """An Optuna storage for ``url``: an RDB URL, ``journal:PATH`` / ``*.log`` (journal file) or a path (SQLite)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    url = str(url)
    journal = url.removeprefix("journal:") if url.startswith("journal:") else None
    if journal is None and "://" not in url:
        if url.endswith((".log", ".journal", ".jsonl")):
            journal = url
        else:
            url = f"sqlite:///{Path(url).resolve()}"
    try:
        if journal is not None:
            parent = Path(journal).resolve().parent
            if not parent.is_dir():
                raise TuneError(f"journal storage {journal}: folder {parent} does not exist")
            return JournalStorage(JournalFileBackend(str(journal)))
        if url.startswith("sqlite:///"):
            db = Path(url.removeprefix("sqlite:///"))
            if not db.parent.is_dir():
                raise TuneError(f"Optuna storage {url}: folder {db.parent} does not exist")
        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        return _rdb_storage(url, kwargs)
    except TuneError:
        raise
    except (ImportError, ModuleNotFoundError) as exc:
        raise TuneError(
            f"Optuna storage {hide_password(url)}: the database driver is not installed ({exc}); "
            "install it (e.g. psycopg2-binary for PostgreSQL, PyMySQL for MySQL)"
        ) from exc
    except (optuna.exceptions.OptunaError, Exception) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneError(f"cannot open Optuna storage {hide_password(url)}: {text}") from exc
