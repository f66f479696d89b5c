"""Prove a restored database intact and usable with Great Expectations 1.x.

Two kinds of suites run against the restored copy:

* a **baseline** generated from the snapshot's manifest, never from the restored copy: every table
  present with exactly the row count recorded in the snapshot's own transaction, and, for tables small
  enough, the content checksum computed in that same transaction;
* **user suites**: GX suite JSON files in ``<expectations_dir>/<database>/``. The table a suite checks is
  its ``meta.table`` (``schema.table`` or ``table``), else its file name. Suites may use the
  ``$PARAMETER``s ``snapshot_taken_at`` and ``freshness_cutoff``.

Results use GX's ``BOOLEAN_ONLY`` format, so neither the JSON result nor the Data Docs hold row values.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from strongroom.catalog import Manifest
from strongroom.errors import ConfigError
from strongroom.postgres import CHECKSUM_SQL, PgSettings

log = logging.getLogger(__name__)

_URL_VAR = "STRONGROOM_GX_CONNECTION"


@dataclass(frozen=True)
class UserSuite:
    name: str
    table: str
    document: dict[str, Any]


@dataclass
class ValidationReport:
    success: bool
    expectations: list[dict[str, Any]] = field(default_factory=list)
    docs: dict[str, bytes] = field(default_factory=dict)  # Data Docs site: relative path -> bytes

    @property
    def failures(self) -> list[str]:
        return [f"{e['suite']}: {e['expectation']}" + (f"({e['column']})" if e.get("column") else "")
                + f" on {e['table']}" for e in self.expectations if not e["success"]]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or "public", name


def load_user_suites(directory: Path, database: str) -> list[UserSuite]:
    """The GX suite files for ``database``; a malformed one is a configuration error naming the file."""
    folder = directory / database
    suites = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            document = json.loads(path.read_text())
            table = str((document.get("meta") or {}).get("table") or path.stem)
            if not isinstance(document.get("expectations"), list):
                raise ValueError("no 'expectations' list")
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"expectation suite {path}: {exc}") from None
        suites.append(UserSuite(str(document.get("name") or path.stem), table, document))
    return suites


def _url(target: PgSettings) -> str:
    user = quote(target.user or "postgres", safe="")
    password = f":{quote(target.password, safe='')}" if target.password else ""
    query = {"host": target.host or "/var/run/postgresql"}
    if target.port:
        query["port"] = str(target.port)
    if target.options.get("options"):
        query["options"] = target.options["options"]
    params = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return f"postgresql+psycopg://{user}{password}@/{quote(target.dbname, safe='')}?{params}"


def validate(
    target: PgSettings,
    manifest: Manifest,
    user_suites: list[UserSuite],
    parameters: Mapping[str, Any],
    run_name: str,
) -> ValidationReport:
    """Run the baseline and user suites against the restored ``target``; build Data Docs."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    chatter = io.StringIO()  # GX prints hints on stdout; stdout belongs to the CLI's output (--json)
    with tempfile.TemporaryDirectory(prefix="strongroom-gx-") as workdir, contextlib.redirect_stdout(chatter):
        os.environ[_URL_VAR] = _url(target)  # GX stores "${VAR}" in its files, never the URL itself
        try:
            context = gx.get_context(mode="file", project_root_dir=workdir)
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            source = context.data_sources.add_or_update_sql(name="restored", connection_string="${" + _URL_VAR + "}")
            plan: list[tuple[str, str, Any]] = []
            for table, rows in sorted(manifest.tables.items()):
                expectations: list[Any] = [gxe.ExpectTableRowCountToEqual(value=rows)]
                if table in manifest.checksums:
                    schema, name = _split(table)
                    # the checksum query names the table itself: GX's {batch} is a derived table whose row text
                    # differs from the table's; GX then prints a hint on stdout, which is kept off our output
                    query = CHECKSUM_SQL.format(_quote(schema), _quote(name))
                    expectations.append(gxe.UnexpectedRowsExpectation(
                        unexpected_rows_query=f"SELECT 1 AS mismatch WHERE ({query}) <> "
                                              f"'{manifest.checksums[table]}'",
                        description=f"content checksum of {table} equals the one taken in the snapshot",
                    ))
                plan.append((f"baseline.{table}", table, gx.ExpectationSuite(name=f"baseline.{table}",
                                                                             expectations=expectations)))
            for suite in user_suites:
                doc = {k: v for k, v in suite.document.items() if k in ("expectations", "meta", "notes")}
                plan.append((f"user.{suite.name}", suite.table, gx.ExpectationSuite(name=f"user.{suite.name}", **doc)))

            definitions = []
            for index, (_, table, suite) in enumerate(plan):
                schema, name = _split(table)
                asset_name = f"t{index}_{schema}.{name}"
                asset = source.add_table_asset(name=asset_name, table_name=name, schema_name=schema)
                batch = asset.add_batch_definition_whole_table(name="whole")
                stored = context.suites.add_or_update(suite)
                definitions.append(context.validation_definitions.add_or_update(
                    gx.ValidationDefinition(name=f"v{index}", data=batch, suite=stored)))
            checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
                name=f"restore-test-{secrets.token_hex(3)}", validation_definitions=definitions,
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")],
                result_format={"result_format": "BOOLEAN_ONLY"},
            ))
            result = checkpoint.run(run_id=gx.RunIdentifier(run_name=run_name),
                                    expectation_parameters=dict(parameters))
            report = ValidationReport(success=bool(result.success))
            tables = {suite_name: table for suite_name, table, _ in plan}
            for suite_result in result.run_results.values():
                for r in suite_result.results:
                    cfg = r.expectation_config
                    report.expectations.append({
                        "suite": suite_result.suite_name, "table": tables.get(suite_result.suite_name, ""),
                        "expectation": cfg.type if cfg else "?", "column": cfg.kwargs.get("column") if cfg else None,
                        "success": bool(r.success),
                        "error": (r.exception_info or {}).get("exception_message") if not r.success else None,
                    })
            site = Path(workdir) / "gx" / "uncommitted" / "data_docs" / "local_site"
            for path in site.rglob("*") if site.exists() else []:
                if path.is_file():
                    report.docs[str(path.relative_to(site))] = path.read_bytes()
            return report
        finally:
            os.environ.pop(_URL_VAR, None)


def parameters_for(manifest: Manifest, freshness_lag: Any) -> dict[str, Any]:
    taken: datetime = manifest.taken_at
    return {"snapshot_taken_at": taken.isoformat(), "freshness_cutoff": (taken - freshness_lag).isoformat()}
