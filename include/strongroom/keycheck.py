"""``strongroom keys check``: does the keyring still hold every key a committed snapshot needs?"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from strongroom import catalog, layout
from strongroom.catalog import Manifest
from strongroom.config import Config
from strongroom.connections import Connections
from strongroom.errors import IntegrityError


@dataclass
class KeyReport:
    checked: int = 0
    missing: dict[str, list[str]] = field(default_factory=dict)  # key id -> "region/database/snapshot"
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable

    def lines(self) -> list[str]:
        out = [f"checked {self.checked} committed snapshot(s)"]
        for key_id, where in sorted(self.missing.items()):
            out.append(f"MISSING key {key_id!r} needed by {len(where)} snapshot(s), e.g. {where[0]}")
        out += [f"UNREADABLE manifest {w}" for w in self.unreadable]
        return out

    def summary(self) -> str:
        if self.missing:
            ids = ", ".join(sorted(self.missing))
            return f"the keyring lacks key id(s) {ids} needed by committed snapshots"
        return f"{len(self.unreadable)} manifest(s) could not be read"


def check_keys(config: Config, conns: Connections) -> KeyReport:
    report = KeyReport()
    for region in config.regions:
        store = conns.store(region, config.transfer)
        keyring = conns.keyring(config.keyring_conn_id(region))
        for db in config.databases:
            for snapshot_id in catalog.snapshot_ids(store, db.name):
                where = f"{region.name}/{db.name}/{snapshot_id}"
                report.checked += 1
                key = layout.manifest_key(db.name, snapshot_id)
                try:
                    raw = store.get_bytes(key)
                    doc = json.loads(raw)
                    needed = {doc["encryption"]["key_id"], doc["mac_key_id"]}
                except (ValueError, KeyError, TypeError):
                    report.unreadable.append(where)
                    continue
                for key_id in sorted(needed - set(keyring.keys)):
                    report.missing.setdefault(key_id, []).append(where)
                if needed <= set(keyring.keys):
                    try:  # a manifest that does not authenticate is junk or forged: never a snapshot
                        Manifest.from_json(raw, keyring, f"s3://{store.bucket}/{key}")
                    except IntegrityError:
                        report.unreadable.append(f"{where} (does not authenticate)")
    return report
