"""The schema inventory: what a database holds besides rows, recorded at snapshot time, compared after restore.

Read in the snapshot's own transaction (beside the row counts), it names every user relation with its kind,
owner and ACL (partitions with their parent), sequences with their values, functions, triggers, indexes,
constraints, types and domains, extensions with versions, schemas, default privileges, and the roles the
database refers to. Definitions are kept as md5 digests: the manifest says *that* something changed, the
dump says what it was.

Sequences are not transactional: their inventory value is a lower bound. A restored sequence must equal
the value the dump itself sets (``SEQUENCE SET``) and be at least the inventory's.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from typing import Any

import psycopg

from strongroom import postgres
from strongroom.errors import SourceError

_USER = "n.nspname <> ALL(ARRAY['pg_catalog','information_schema']) AND n.nspname NOT LIKE 'pg\\_%%'"
# objects an extension created come back with CREATE EXTENSION: their own entries would only repeat it
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{cat}'::regclass AND d.objid = {oid}"
            " AND d.deptype = 'e')")

QUERIES: dict[str, str] = {
    "schemas": f"""SELECT n.nspname, json_build_object('owner', pg_get_userbyid(n.nspowner),
                      'acl', coalesce(n.nspacl::text, ''))
                   FROM pg_namespace n WHERE {_USER} AND {_NOT_EXT.format(cat='pg_namespace', oid='n.oid')}""",
    "relations": f"""SELECT n.nspname || '.' || c.relname, json_build_object(
                        'kind', c.relkind, 'owner', pg_get_userbyid(c.relowner), 'acl', coalesce(c.relacl::text, ''),
                        'partition_of', (SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
                                         JOIN pg_class p ON p.oid = i.inhparent
                                         JOIN pg_namespace pn ON pn.oid = p.relnamespace
                                         WHERE i.inhrelid = c.oid AND c.relispartition))
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE {_USER} AND c.relkind IN ('r','p','v','m','S','f','i','I')
                       AND {_NOT_EXT.format(cat='pg_class', oid='c.oid')}""",
    "indexes": f"""SELECT n.nspname || '.' || c.relname, md5(pg_get_indexdef(c.oid))
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE {_USER} AND c.relkind IN ('i','I') AND {_NOT_EXT.format(cat='pg_class', oid='c.oid')}""",
    "functions": f"""SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                        json_build_object('kind', p.prokind, 'owner', pg_get_userbyid(p.proowner),
                                          'acl', coalesce(p.proacl::text, ''), 'security_definer', p.prosecdef,
                                          'body', md5(coalesce(p.prosrc, '') || coalesce(p.probin, '')))
                     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE {_USER} AND {_NOT_EXT.format(cat='pg_proc', oid='p.oid')}""",
    "triggers": f"""SELECT n.nspname || '.' || c.relname || '.' || t.tgname,
                       json_build_object('enabled', t.tgenabled, 'definition', md5(pg_get_triggerdef(t.oid)))
                    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE {_USER} AND NOT t.tgisinternal""",
    "constraints": f"""SELECT n.nspname || '.' || coalesce(c.relname, ty.typname) || '.' || k.conname,
                          json_build_object('type', k.contype, 'definition', md5(pg_get_constraintdef(k.oid)))
                       FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
                       LEFT JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_type ty ON ty.oid = k.contypid
                       WHERE {_USER} AND {_NOT_EXT.format(cat='pg_constraint', oid='k.oid')}""",
    "types": f"""SELECT n.nspname || '.' || t.typname, json_build_object(
                    'kind', t.typtype, 'owner', pg_get_userbyid(t.typowner), 'acl', coalesce(t.typacl::text, ''),
                    'base', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
                    'labels', (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                               FROM pg_enum e WHERE e.enumtypid = t.oid))
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE {_USER} AND t.typtype IN ('b','c','d','e','m','r')
                   AND NOT EXISTS (SELECT 1 FROM pg_type a WHERE a.typarray = t.oid)
                   AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
                   AND {_NOT_EXT.format(cat='pg_type', oid='t.oid')}""",
    "extensions": """SELECT e.extname, json_build_object('version', e.extversion, 'schema', n.nspname)
                     FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace""",
    "default_privileges": """SELECT pg_get_userbyid(d.defaclrole) || ':' || coalesce(n.nspname, '*') || ':'
                                || d.defaclobjtype::text, d.defaclacl::text
                             FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace""",
    "sequences": """SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences
                    WHERE has_sequence_privilege(quote_ident(schemaname) || '.' || quote_ident(sequencename),
                                                 'SELECT')""",
}
# every role an object of this database refers to (owner, ACL, policy): pg_shdepend, plus owners of the
# inventoried objects (the bootstrap superuser's objects have no pg_shdepend rows)
_ROLES = """SELECT DISTINCT pg_get_userbyid(refobjid) FROM pg_shdepend
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND refclassid = 'pg_authid'::regclass"""
# sections whose entries name an owner, and the key to it
_OWNED = ("schemas", "relations", "functions", "types")
_DIFFERS_IN = ("kind", "owner", "acl", "partition_of", "security_definer", "body", "enabled", "definition",
               "type", "base", "labels", "version", "schema")


def read_inventory(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The inventory of the database ``conn`` is connected to, read in its current transaction."""
    out: dict[str, Any] = {}
    for section, query in QUERIES.items():
        rows = conn.execute(query).fetchall()  # type: ignore[call-overload]
        out[section] = {str(name): value for name, value in sorted(rows, key=lambda r: str(r[0]))}
    roles = {str(r[0]) for r in conn.execute(_ROLES).fetchall()}
    for section in _OWNED:
        roles |= {str(v["owner"]) for v in out[section].values()}
    out["roles"] = sorted(roles)
    return out


def inventory_of(settings: postgres.PgSettings) -> dict[str, Any]:
    """The inventory of a database (outside a snapshot: for checking a restored copy)."""
    with postgres.connect(settings) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            return read_inventory(conn)
        except psycopg.Error as exc:
            raise SourceError(f"cannot read the schema of {settings.describe()}: {exc}".splitlines()[0]) from None


def compare(
    recorded: Mapping[str, Any], restored: Mapping[str, Any], dump_sequences: Mapping[str, int | None]
) -> list[str]:
    """Every difference between the inventory a snapshot recorded and a restored database, one line each,
    naming the object. Empty: identical."""
    out: list[str] = []
    for section in QUERIES:
        if section == "sequences" or section not in recorded:
            continue
        want: Mapping[str, Any] = recorded[section]
        got: Mapping[str, Any] = restored.get(section, {})
        label = section.rstrip("s") if section != "default_privileges" else "default privileges"
        for name in sorted(set(want) - set(got)):
            out.append(f"{label} {name} is missing")
        for name in sorted(set(got) - set(want)):
            out.append(f"{label} {name} is not in the snapshot")
        for name in sorted(set(want) & set(got)):
            a, b = want[name], got[name]
            if isinstance(a, dict) and isinstance(b, dict):
                for key in _DIFFERS_IN:
                    if a.get(key) != b.get(key):
                        out.append(f"{label} {name}: {key} is {_show(b.get(key))}, the snapshot recorded "
                                   f"{_show(a.get(key))}")
            elif a != b:
                out.append(f"{label} {name} differs from the snapshot ({_show(b)} vs {_show(a)})")
    for name, floor in sorted((recorded.get("sequences") or {}).items()):
        value = (restored.get("sequences") or {}).get(name)
        dumped = dump_sequences.get(name)
        if name not in (restored.get("sequences") or {}):
            out.append(f"sequence {name} is missing")
        elif dumped is not None and value != dumped:
            out.append(f"sequence {name} is at {value}, the dump sets {dumped}")
        elif floor is not None and (value is None or value < floor):
            out.append(f"sequence {name} is at {value}, below the {floor} recorded in the snapshot")
    return out


def _show(value: Any) -> str:
    return "(none)" if value in (None, "") else repr(value)


_SETVAL = re.compile(r"^SELECT pg_catalog\.setval\('((?:[^']|'')+)', (\d+), (true|false)\);$", re.M)
_SEQ_SET = re.compile(r"^\d+; \d+ \d+ SEQUENCE SET ")


def dump_sequence_values(path: str, bin_dir: str | None = None) -> dict[str, int | None]:
    """The values the dump's own ``SEQUENCE SET`` entries give, by ``schema.sequence`` (None: never called)."""
    pg_restore = postgres.tool("pg_restore", bin_dir)
    env = postgres.minimal_env()
    listed = subprocess.run([pg_restore, "--list", path], capture_output=True, check=False, env=env)
    if listed.returncode != 0:
        raise SourceError(f"pg_restore --list failed: {listed.stderr.decode(errors='replace').strip()[:200]}")
    entries = [line for line in listed.stdout.decode().splitlines() if _SEQ_SET.match(line)]
    if not entries:
        return {}
    script = subprocess.run([pg_restore, "--use-list=/dev/stdin", "--file=-", path], input="\n".join(entries).encode(),
                            capture_output=True, check=False, env=env)
    if script.returncode != 0:
        raise SourceError(f"pg_restore of the sequence values failed: {script.stderr.decode(errors='replace')[:200]}")
    out: dict[str, int | None] = {}
    for match in _SETVAL.finditer(script.stdout.decode()):
        name = match.group(1).replace("''", "'").replace('"', "")
        out[name] = int(match.group(2)) if match.group(3) == "true" else None
    return out
