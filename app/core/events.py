"""Changes announced across every process on one PostgreSQL: LISTEN/NOTIFY.

A write that makes another process's memory stale announces it in its own transaction
(:func:`announce`: PostgreSQL delivers a notification when, and only if, the transaction
commits): a task deleted or adapted again (``task``), a client revoked, given a new key or new
limits (``client``), the meta-models to be scanned again (``meta_models``). Every API process
listens on one connection of its own (:class:`Listener`) and drops what the announcement names
from its caches, typically within milliseconds.

While its connection is up, a process trusts its caches without re-checking them
(CACHE_TTL_SECONDS and AUTH_CACHE_SECONDS are lifted); when it drops, the caches are emptied
(announcements may have been missed) and the TTLs apply again until it is back. SQLite has no
NOTIFY: a single process needs none (its own writes drop its own entries), several re-check
after the TTLs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
CHANNEL = "maml_service"
Kind = Literal["task", "client", "meta_models"]


def announce(session: Session, kind: Kind, key: str | int = "") -> None:
    """Tell every process on this database, when (if) the session's transaction commits."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        payload = json.dumps({"kind": kind, "key": str(key)})
        session.execute(select(func.pg_notify(CHANNEL, payload)))


def libpq_url(database_url: str) -> str | None:
    """The database URL as psycopg takes it, or None where there is no NOTIFY (SQLite)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """One thread per process: LISTEN on a connection of its own, call ``handle(kind, key)``
    for each announcement, ``on_state(live)`` when the connection comes up or goes down
    (reconnecting with a back-off). ``live`` says whether announcements are arriving."""

    def __init__(
        self,
        conninfo: str,
        handle: Callable[[Kind, str], None],
        on_state: Callable[[bool], None],
        retry_seconds: float = 1.0,
    ) -> None:
        self.conninfo, self.handle, self.on_state = conninfo, handle, on_state
        self.retry_seconds = retry_seconds
        self.live = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def wait_live(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.live and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.live

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._set_live(True)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._dispatch(note.payload)
            except psycopg.Error as exc:
                if self.live:
                    log.warning("change announcements lost (%s); reconnecting", exc)
            finally:
                self._set_live(False)
            self._stop.wait(self.retry_seconds)

    def _set_live(self, live: bool) -> None:
        if live != self.live:
            self.live = live
            self.on_state(live)

    def _dispatch(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            self.handle(message["kind"], message["key"])
        except Exception:  # one bad message must not end the listening
            log.exception("could not apply the announcement %r", payload)
