"""`make demo`: the main job end to end on local services it starts and stops itself.

1. a local PostgreSQL "production" server with a realistic multi-table database, and a local S3 server
   (moto, HTTP on loopback) with one bucket per configured EU region;
2. the `snapshot_databases` DAG run through Airflow (`airflow dags test`, real task execution);
3. the newest snapshot restored into a scratch database with the `strongroom` CLI;
4. the scratch database proved equal to the source, table by table; a short report.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from devstack import LocalPostgres, MotoServer  # noqa: E402
from sample_data import create_sample  # noqa: E402
from strongroom.config import load_config  # noqa: E402
from strongroom.postgres import PgSettings, table_fingerprints  # noqa: E402

EXAMPLE = ROOT / "include" / "config" / "strongroom.example.yaml"
WORK = ROOT / ".demo"
CONFIG = WORK / "strongroom.yaml"


def write_demo_config(path: Path = CONFIG, *, deadline: bool = False) -> None:
    """The example configuration, without the DeadlineAlert unless ``deadline``: Airflow 3.3.2's `airflow
    dags test` (the demo's runner) fails at the end of a successful run of a DAG with a deadline (its
    in-memory copy of the DAG has no deadline ids). The scheduler (`make up`) handles deadlines fine."""
    import yaml

    doc = yaml.safe_load(EXAMPLE.read_text())
    if not deadline:
        doc.setdefault("snapshot", {})["deadline"] = "off"
    doc["restore_test"]["expectations_dir"] = str((EXAMPLE.parent / doc["restore_test"]["expectations_dir"]).resolve())
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def stack_env(pg: LocalPostgres, s3: MotoServer, airflow_home: Path, config_path: Path = CONFIG) -> dict[str, str]:
    """Connections and settings for Airflow and the CLI: credentials only in AIRFLOW_CONN_* variables."""
    config = load_config(config_path)
    env = {
        "STRONGROOM_CONFIG": str(config_path),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES": "keys",  # mask the keyring extra in the UI and logs
        "AIRFLOW_CONN_PG_SHOP": pg.airflow_uri("shop"),
        "AIRFLOW_CONN_PG_SANDBOX": pg.airflow_uri("postgres"),  # restore_database's default target server
        "AIRFLOW_CONN_STRONGROOM_KEYRING": json.dumps({
            "conn_type": "generic",
            "extra": {"active": "demo-k1", "keys": {"demo-k1": base64.b64encode(os.urandom(32)).decode()}},
        }),
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
    }
    for region in config.regions:
        env[f"AIRFLOW_CONN_{region.aws_conn_id.upper()}"] = s3.airflow_conn(region.name)
    for source in config.object_storage:
        env[f"AIRFLOW_CONN_{source.aws_conn_id.upper()}"] = s3.airflow_conn(source.region or "eu-central-1")
    return env


def start_stack(scale: int, config_path: Path = CONFIG) -> tuple[LocalPostgres, MotoServer]:
    pg = LocalPostgres().start()
    s3 = MotoServer().start()
    try:
        config = load_config(config_path)
        for region in config.regions:
            s3.create_bucket(region.bucket, region.name)
        for source in config.object_storage:  # a versioned uploads bucket with a few files
            s3.create_bucket(source.bucket, source.region or "eu-central-1")
            client = s3.client(source.region or "eu-central-1")
            for i in range(20):
                client.put_object(Bucket=source.bucket, Key=f"attachments/{i:03d}.txt", Body=f"invoice {i}".encode())
        pg.execute("CREATE DATABASE shop")
        create_sample(pg.connect_kwargs("shop"), scale=scale)
    except BaseException:
        s3.stop()
        pg.stop()
        raise
    return pg, s3


def run(argv: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, cwd=ROOT, check=False)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise SystemExit(f"demo: {' '.join(argv[:3])} failed (log: {log}):\n{tail}")
    return result


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    write_demo_config()
    started = time.monotonic()
    print("demo: starting PostgreSQL and the S3 server, creating the sample database ...", flush=True)
    pg, s3 = start_stack(scale=int(os.environ.get("DEMO_SCALE", "5")))
    try:
        env = stack_env(pg, s3, WORK / "airflow")
        airflow = str(ROOT / ".venv" / "bin" / "airflow")
        strongroom = str(ROOT / ".venv" / "bin" / "strongroom")
        print("demo: migrating Airflow's metadata database ...", flush=True)
        run([airflow, "db", "migrate"], env, WORK / "airflow-db-migrate.log")
        print("demo: running DAG snapshot_databases through Airflow ...", flush=True)
        t0 = time.monotonic()
        run([airflow, "dags", "test", "snapshot_databases"], env, WORK / "dag-run.log")
        dag_seconds = time.monotonic() - t0

        listed = json.loads(run([strongroom, "list", "--database", "shop", "--json"], env, WORK / "list.log").stdout)
        newest = listed[-1]
        status = json.loads(run([strongroom, "status", "--json"], env, WORK / "status.log").stdout)
        shop = next(db for db in status["databases"] if db["name"] == "shop")
        in_regions = [row["region"] for row in shop["regions"] if row["newest"] == newest["snapshot_id"]]
        scratch = "shop_restored_" + newest["snapshot_id"].split("-")[0].lower()
        print(f"demo: restoring snapshot {newest['snapshot_id']} into scratch database {scratch} ...", flush=True)
        dsn = f"host=127.0.0.1 port={pg.port} user=postgres dbname={scratch}"
        restored = json.loads(run(
            [strongroom, "restore", "--database", "shop", "--target-dsn", dsn, "--json"],
            {**env, "PGPASSWORD": pg.password}, WORK / "restore.log",
        ).stdout)

        print("demo: restore test: isolated throwaway server + Great Expectations ...", flush=True)
        tested = json.loads(run(
            [strongroom, "restore-test", "--database", "shop", "--snapshot", newest["snapshot_id"],
             "--region", newest["region"], "--json"], env, WORK / "restore-test.log",
        ).stdout)[0]

        source = table_fingerprints(PgSettings(**pg.connect_kwargs("shop")))
        copy = table_fingerprints(PgSettings(**pg.connect_kwargs(scratch)))
        equal = source == copy and len(in_regions) == len(shop["regions"])
        print()
        print("Strongroom demo report")
        print(f"  source     shop on 127.0.0.1:{pg.port}: {len(source)} tables, "
              f"{sum(r for r, _ in source.values())} rows")
        print(f"  snapshot   {newest['snapshot_id']} taken {newest['taken_at']} (server clock) "
              f"by Airflow DAG snapshot_databases in {dag_seconds:.1f}s")
        print(f"  stored     {newest['stored_bytes']:,} bytes encrypted (AES-256-GCM, key id {newest['key_id']}) "
              f"from {newest['plain_bytes']:,} bytes of pg_dump output")
        print(f"  regions    committed and verified in {len(in_regions)} of {len(shop['regions'])}: "
              f"{', '.join(in_regions)}")
        print(f"  restored   into {scratch}: download+decrypt {restored['download_seconds']}s, "
              f"pg_restore {restored['restore_seconds']}s")
        print(f"  {'table':<22} {'rows':>9}  {'source md5':<12} {'restored md5':<12} equal")
        for table, (rows, digest) in sorted(source.items()):
            other = copy.get(table, (None, "missing"))
            same = "yes" if other == (rows, digest) else "NO"
            print(f"  {table:<22} {rows:>9}  {digest[:12]:<12} {other[1][:12]:<12} {same}")
        passed = sum(1 for e in tested["expectations"] if e["success"])
        phases = ", ".join(f"{k} {v}s" for k, v in tested["phases"].items())
        print(f"  validated  {passed}/{len(tested['expectations'])} expectations passed in a throwaway server "
              f"({phases}); Data Docs at s3://.../{tested['docs_key']}")
        equal = equal and tested["success"]
        verdict = "PASS: the restored database equals the source, table by table" if equal else "FAIL: they differ"
        print(f"  result     {verdict} ({time.monotonic() - started:.0f}s in all; logs in {WORK})")
        return 0 if equal else 1
    finally:
        s3.stop()
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
