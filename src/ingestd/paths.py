"""The names of ingestd's own files in STATE_DIR, in one place.

The CLI, the dormant image and the health server need them without loading the ledger.
"""

from __future__ import annotations

LEDGER_FILE = "ledger.db"
LOCK_FILE = "ingestd.lock"
DAEMON_FILE = "daemon.json"  # a running daemon's address, for the CLI (health.announce)
LOCK_FD_ENV = "INGESTD_LOCK_FD"  # the lock's descriptor, kept open across a re-exec
LEGACY_STATE_FILE = "state.json"  # before the ledger: migrated on first start
