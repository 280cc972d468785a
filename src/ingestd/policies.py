"""What happens to a file that is not read: refused before reading, deleted, or forgotten.

Each is one ledger transition and, where the policy says so, one delete in the store; they
share the pipeline's store gateway, so an outage makes them wait rather than fail.
"""

from __future__ import annotations

from ingestd.ledger import Ledger, Status
from ingestd.logs import get_logger
from ingestd.metrics import Metrics
from ingestd.stages.items import Outcome, reason_label
from ingestd.store_gateway import StoreGateway

log = get_logger("ingestd.policies")


class FilePolicies:
    def __init__(
        self,
        ledger: Ledger,
        gateway: StoreGateway,
        purge_on_delete: dict[str, bool],
        metrics: Metrics,
    ) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.purge_on_delete = purge_on_delete  # by kind
        self.metrics = metrics

    def refuse(self, key: str, kind: str, reason: str) -> Outcome:
        """A path refused before reading (FIFO, outside link, …), logged once per reason."""
        if not self.ledger.refused(key, kind, reason):
            return Outcome(key, kind, "unchanged")
        self.metrics.failures.labels(reason_label(reason)).inc()
        log.warning("file.skipped", path=key, kind=kind, reason=reason, outcome="skipped")
        return Outcome(key, kind, Status.SKIPPED, reason)

    def skip(self, key: str, kind: str, reason: str, status: Status = Status.SKIPPED) -> Outcome:
        """A file that could not even be opened: counted as an attempt, retried on change."""
        self.ledger.failed(key, kind, status, reason)
        log.warning(f"file.{status}", path=key, kind=kind, reason=reason, outcome=str(status))
        return Outcome(key, kind, status, reason)

    async def remove(self, key: str) -> Outcome:
        """The file is gone: purge or keep its points according to the kind's policy."""
        record = self.ledger.get(key)
        if record is None or record.status == Status.DELETED:
            return Outcome(key, record.kind if record else "?", "unchanged")
        purge = self.purge_on_delete.get(record.kind, False)
        if purge:
            await self.gateway.delete_file(record.kind, key)
            self.ledger.removed(key)
        else:
            self.ledger.deleted(key)
        outcome = "purged" if purge else "kept"
        log.info("file.deleted", path=key, kind=record.kind, outcome=outcome, chunks=record.chunks)
        return Outcome(key, record.kind, Status.DELETED, outcome)

    async def forget(self, key: str) -> Outcome:
        record = self.ledger.get(key)
        if record is None:
            raise KeyError(key)
        await self.gateway.delete_file(record.kind, key)
        self.ledger.forgotten(key)
        log.info("file.forgotten", path=key, kind=record.kind, outcome="forgotten")
        return Outcome(key, record.kind, Status.FORGOTTEN)
