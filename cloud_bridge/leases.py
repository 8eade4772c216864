"""A named lease in the database: one holder at a time, across hosts.

    lease = Lease(db, "lifelong", holder="trainer@host-b:4711", ttl_s=60)
    if lease.acquire():          # False: someone else holds it (lease.current() says who)
        try: ...                 # a thread renews it every ttl/3
        finally: lease.release()

A lease, not a session lock: it survives a database restart (it is a row), and a holder
that dies stops renewing, so the lease expires after ttl_s and the next one takes it
without anyone cleaning up. Whoever acts on the lease checks it in the same transaction
as the act (`held_in`), so a holder whose lease lapsed (paused, cut off) cannot publish.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from .pg_db import PgDatabase
from .sample_store import SampleStoreError

log = logging.getLogger(__name__)


def default_holder(role: str) -> str:
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class LeaseState:
    holder: str
    expires_in_s: float


class Lease:
    def __init__(self, db: PgDatabase, name: str, holder: str, ttl_s: float = 60.0):
        if ttl_s < 3:
            raise ValueError(f"lease ttl_s={ttl_s}: use 3 s or more")
        self.db, self.name, self.holder, self.ttl_s = db, name, holder, ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False   # a renewal found the lease taken or gone

    def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; start renewing it."""
        with self.db.cursor() as cur:
            cur.execute(
                "INSERT INTO leases (name, holder, acquired_at, expires_at) "
                "VALUES (%(name)s, %(holder)s, now(), now() + make_interval(secs => %(ttl)s)) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, acquired_at = excluded.acquired_at, "
                "expires_at = excluded.expires_at "
                "WHERE leases.expires_at < now() OR leases.holder = excluded.holder RETURNING holder",
                {"name": self.name, "holder": self.holder, "ttl": self.ttl_s})
            got = cur.fetchone() is not None
        if got:
            self.lost = False
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
            self._thread.start()
            log.info("lease %r taken by %s for %gs (renewed every %gs)", self.name, self.holder, self.ttl_s,
                     self.ttl_s / 3)
        return got

    def current(self) -> LeaseState | None:
        """Who holds the lease now (None: nobody, or it expired)."""
        with self.db.cursor() as cur:
            cur.execute("SELECT holder, extract(epoch FROM expires_at - now()) FROM leases "
                        "WHERE name = %s AND expires_at > now()", (self.name,))
            row = cur.fetchone()
        return None if row is None else LeaseState(row[0], float(row[1]))

    def held_in(self, cur) -> bool:
        """Inside the caller's transaction: whether we still hold the lease (row locked
        until the caller commits, so it cannot change hands meanwhile)."""
        cur.execute("SELECT 1 FROM leases WHERE name = %s AND holder = %s AND expires_at > now() FOR UPDATE",
                    (self.name, self.holder))
        return cur.fetchone() is not None

    def renew(self) -> bool:
        with self.db.cursor() as cur:
            cur.execute("UPDATE leases SET expires_at = now() + make_interval(secs => %s) "
                        "WHERE name = %s AND holder = %s AND expires_at > now()",
                        (self.ttl_s, self.name, self.holder))
            return cur.rowcount == 1

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            with self.db.cursor() as cur:
                cur.execute("DELETE FROM leases WHERE name = %s AND holder = %s", (self.name, self.holder))
        except SampleStoreError as e:   # it expires by itself
            log.warning("lease %r: could not release it (%s); it expires in at most %gs", self.name, e, self.ttl_s)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.renew():
                    self.lost = True
                    log.error("lease %r: lost (expired or taken by another holder); this run will not publish",
                              self.name)
                    return
            except SampleStoreError as e:   # the database is away: try again, the lease may still hold
                log.warning("lease %r: renewal failed: %s", self.name, e)
