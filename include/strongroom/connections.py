"""What the library needs from the outside world, as plain objects.

The Airflow adapter (``strongroom.airflow_adapter``) implements this protocol from Airflow connections; the
library itself never imports Airflow and never sees where a credential came from.
"""

from __future__ import annotations

from typing import Protocol

from strongroom.config import Config, ObjectSourceConfig, RegionConfig, TransferConfig
from strongroom.keyring import Keyring
from strongroom.postgres import PgSettings
from strongroom.storage import ObjectStore


class Connections(Protocol):
    def postgres(self, conn_id: str) -> PgSettings: ...

    def keyring(self, conn_id: str) -> Keyring: ...

    def store(self, region: RegionConfig, transfer: TransferConfig) -> ObjectStore: ...

    def source_store(self, source: ObjectSourceConfig, transfer: TransferConfig) -> ObjectStore: ...

    def bucket_store(self, aws_conn_id: str, bucket: str, region: str | None, transfer: TransferConfig) -> ObjectStore:
        """Any bucket reachable through an Airflow AWS connection (a restore target)."""
        ...

    def transport_warnings(self, config: Config) -> list[str]:
        """Insecure transport that the configuration allows (see :mod:`strongroom.transport`)."""
        ...
