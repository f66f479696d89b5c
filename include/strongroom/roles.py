"""The roles a snapshot needs, read from its globals, and created on a target without ever widening power.

The globals object is ``pg_dumpall --globals-only`` (roles, their attributes and memberships, and
tablespaces). Strongroom never replays it as SQL: it parses the roles and creates only the missing ones,
``NOLOGIN`` and without a password unless asked, and never with SUPERUSER, CREATEROLE, REPLICATION or
BYPASSRLS, nor as a member of ``pg_execute_server_program``, ``pg_read_server_files`` or
``pg_write_server_files`` (each such attribute or membership left out is named in the report). An
existing role is never altered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import sql

from strongroom import postgres
from strongroom.errors import RestoreError

if TYPE_CHECKING:
    from strongroom.catalog import Manifest
    from strongroom.storage import ObjectStore

log = logging.getLogger(__name__)

WIDENING = ("SUPERUSER", "CREATEROLE", "REPLICATION", "BYPASSRLS")
SERVER_ACCESS = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
_KEPT = ("INHERIT", "NOINHERIT", "CREATEDB", "NOCREATEDB")
_IDENT = r'(?:"(?:[^"]|"")+"|[^\s;",]+)'
_CREATE = re.compile(rf"^CREATE ROLE ({_IDENT});$")
_ALTER = re.compile(rf"^ALTER ROLE ({_IDENT}) WITH (.*);$")
_GRANT = re.compile(rf"^GRANT ({_IDENT}) TO ({_IDENT})(?: WITH [^;]*?)?(?: GRANTED BY {_IDENT})?;$")
_TABLESPACE = re.compile(rf"^CREATE TABLESPACE ({_IDENT}) ")
_PASSWORD = re.compile(r"\bPASSWORD '((?:[^']|'')*)'")


def _name(token: str) -> str:
    return token[1:-1].replace('""', '"') if token.startswith('"') else token


@dataclass(frozen=True)
class RoleSpec:
    """One role as the snapshot's globals describe it."""

    name: str
    attributes: tuple[str, ...] = ()
    password: str | None = field(default=None, repr=False)
    member_of: tuple[str, ...] = ()

    @property
    def superuser(self) -> bool:
        return "SUPERUSER" in self.attributes


@dataclass(frozen=True)
class Globals:
    roles: Mapping[str, RoleSpec]
    tablespaces: tuple[str, ...] = ()


def parse_globals(text: str) -> Globals:
    """Roles, attributes, passwords, memberships and tablespace names from ``pg_dumpall --globals-only``."""
    attrs: dict[str, list[str]] = {}
    passwords: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    tablespaces: list[str] = []
    for line in text.splitlines():
        if m := _CREATE.match(line):
            attrs.setdefault(_name(m.group(1)), [])
        elif m := _ALTER.match(line):
            name, rest = _name(m.group(1)), m.group(2)
            if pw := _PASSWORD.search(rest):
                passwords[name] = pw.group(1).replace("''", "'")
                rest = rest[: pw.start()] + rest[pw.end():]
            attrs.setdefault(name, []).extend(w for w in rest.split() if w.isalpha() and w.isupper())
        elif m := _GRANT.match(line):
            members.setdefault(_name(m.group(2)), []).append(_name(m.group(1)))
        elif m := _TABLESPACE.match(line):
            tablespaces.append(_name(m.group(1)))
    roles = {name: RoleSpec(name, tuple(a), passwords.get(name), tuple(members.get(name, ())))
             for name, a in attrs.items()}
    return Globals(roles, tuple(tablespaces))


@dataclass
class RoleReport:
    """What was done to the target's roles; said in the restore's report."""

    created: list[str] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)  # of those created, the ones given LOGIN and their password
    existing: list[str] = field(default_factory=list)
    stand_ins: list[str] = field(default_factory=list)  # superusers in production, ordinary roles here
    left_out: list[str] = field(default_factory=list)  # attributes and memberships not given, and why
    tablespaces: list[str] = field(default_factory=list)  # in the globals: reported, never created

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        out = []
        nologin = [name for name in self.created if name not in self.logins]
        if nologin:
            out.append("roles created (NOLOGIN, no passwords): " + ", ".join(nologin))
        if self.logins:
            out.append("roles created with LOGIN and their password from the snapshot: " + ", ".join(self.logins))
        if self.stand_ins:
            out.append("stand-in owners (superusers in production, ordinary roles here): " + ", ".join(self.stand_ins))
        out += [f"left out: {item}" for item in self.left_out]
        if self.tablespaces:
            out.append("tablespaces in the globals (not created; create them by hand where needed): "
                       + ", ".join(self.tablespaces))
        return out


def existing_roles(server: postgres.PgSettings) -> dict[str, bool]:
    """Roles of the target's server: name -> is a superuser."""
    with postgres.connect(server.with_dbname("postgres")) as conn:
        return {str(n): bool(s) for n, s in conn.execute("SELECT rolname, rolsuper FROM pg_roles").fetchall()}


def missing_roles(server: postgres.PgSettings, needed: Iterable[str]) -> list[str]:
    have = existing_roles(server)
    return sorted(set(needed) - set(have))


def refusal(target: str, missing: Sequence[str]) -> RestoreError:
    return RestoreError(
        f"{target} lacks the role(s) the snapshot needs: {', '.join(missing)}; restore with `missing_roles=create` "
        "to create them from the snapshot's globals (NOLOGIN, no passwords), or with `missing_roles=no_owner` to "
        "restore without owners and privileges"
    )


def create_roles(
    server: postgres.PgSettings, specs: Globals | None, names: Iterable[str], *, with_passwords: bool = False,
    stand_in_superusers: bool = False,
) -> RoleReport:
    """Create every role of ``names`` the server lacks, from ``specs``; never alter an existing role.

    With ``stand_in_superusers`` (the restore test), a role that is a superuser in production is created
    as an ordinary NOLOGIN role, its stand-in; otherwise it is created without SUPERUSER all the same, and
    the report says so.
    """
    report = RoleReport(tablespaces=list(specs.tablespaces) if specs else [])
    have = existing_roles(server)
    wanted = sorted(set(names))
    for name in wanted:
        if name in have:
            report.existing.append(name)
    todo = [n for n in wanted if n not in have]
    if todo and specs is None:
        raise RestoreError(f"the snapshot holds no globals, so role(s) {', '.join(todo)} cannot be created: "
                           "create them by hand, or restore with `missing_roles=no_owner`")
    with postgres.connect(server.with_dbname("postgres"), autocommit=True) as conn:
        for name in todo:
            spec = specs.roles.get(name) if specs else None
            spec = spec or RoleSpec(name)
            options = [a for a in spec.attributes if a in _KEPT]
            dropped = [a for a in spec.attributes if a in WIDENING]
            if spec.superuser and stand_in_superusers:
                report.stand_ins.append(name)
            elif dropped:
                report.left_out.append(f"{name}: {' '.join(dropped)} (strongroom never grants it)")
            query = sql.SQL("CREATE ROLE {} WITH NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS ").format(
                sql.Identifier(name))
            login = with_passwords and "LOGIN" in spec.attributes and spec.password is not None
            if login:
                query += sql.SQL("LOGIN PASSWORD {} ").format(sql.Literal(spec.password))
            else:
                query += sql.SQL("NOLOGIN ")
            query += sql.SQL(" ".join(options))
            conn.execute(query)
            report.created.append(name)
            if login:
                report.logins.append(name)
        created = set(report.created)
        superusers = {n for n, s in existing_roles(server).items() if s}
        for name in report.created:
            spec = specs.roles.get(name) if specs else None
            for group in spec.member_of if spec else ():
                if group in SERVER_ACCESS or group in superusers:
                    report.left_out.append(f"{name}: membership in {group} (strongroom never grants it)")
                elif group in created or group in have:
                    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)))
        for name, spec in (specs.roles.items() if specs else ()):
            if name in have and any(g in created for g in spec.member_of):
                report.left_out.append(f"{name}: membership in {', '.join(g for g in spec.member_of if g in created)}"
                                       " (an existing role is never altered)")
    return report


def fetch_globals(store: ObjectStore, manifest: Manifest, data_key: bytes) -> Globals | None:
    """The snapshot's globals, verified and decrypted; None when the snapshot holds none."""
    import hashlib

    from strongroom import envelope
    from strongroom.errors import IntegrityError

    obj = manifest.globals
    if obj is None:
        return None
    where = f"s3://{store.bucket}/{obj.key}"
    sealed = store.get_bytes(obj.key)
    if hashlib.sha256(sealed).hexdigest() != obj.sha256:
        raise IntegrityError(f"{where} does not match the SHA-256 in its manifest")
    return parse_globals(envelope.unseal_blob(data_key, manifest.object_identity("globals"), sealed, where).decode())


_ACL_ITEM = re.compile(r'(?:^|[{,])("(?:[^"]|"")*"|[^=,{}"]*)=[^/]*/("(?:[^"]|"")*"|[^,}"]*)')


def acl_roles(acl: str) -> set[str]:
    """Grantees and grantors named in an ACL's text (``{a=r/b,=U/b}``); PUBLIC is no role."""
    out: set[str] = set()
    for grantee, grantor in _ACL_ITEM.findall(acl or ""):
        out |= {_name(n) for n in (grantee, grantor) if n}
    return out


def toc_owners(toc_lines: Iterable[str]) -> set[str]:
    """The owners named by ``pg_restore --list`` lines (the last field)."""
    out = set()
    for line in toc_lines:
        if line and not line.startswith(";") and line.split()[-1] != "-":
            out.add(line.split()[-1])
    return out


def needed_roles(inventory: Mapping[str, Any], toc_lines: Iterable[str], tables: Sequence[str] = ()) -> list[str]:
    """Every role a restore of these TOC entries needs: their owners, and, from the inventory, the roles the
    database's ACLs name (only the chosen tables' ACLs for a partial restore)."""
    needed = toc_owners(toc_lines)
    if not tables:
        needed |= set(inventory.get("roles", ()))
    for name in tables:
        needed |= acl_roles(str((inventory.get("relations") or {}).get(name, {}).get("acl", "")))
    # predefined roles (pg_database_owner owns public) exist on every server of the same major version
    return sorted(n for n in needed if not n.startswith("pg_"))


RESTORER_PREFIX = "strongroom_restorer_"


def prepare_restorer(
    admin: postgres.PgSettings, specs: Globals | None, needed: Iterable[str]
) -> tuple[postgres.PgSettings, RoleReport]:
    """For the restore test: give the server every role the snapshot needs (NOLOGIN, never a superuser:
    production's superusers get ordinary stand-ins) and a new LOGIN role, not a superuser, that is a member
    of exactly those roles. Returns the settings to restore as (``admin``'s server and database, that role).

    Refuses when a needed role already exists on the server as a superuser (a sandbox server shared with
    other uses): its objects could only be restored by a superuser.
    """
    import secrets

    needed = sorted(set(needed))
    have = existing_roles(admin)
    if supers := [n for n in needed if have.get(n)]:
        raise RestoreError(
            f"role(s) {', '.join(supers)} are superusers on {admin.describe()}: the restore test would run their "
            "objects as a superuser; use the throwaway server (no restore_test.sandbox_conn_id)"
        )
    report = create_roles(admin, specs or Globals({}), [n for n in needed if n not in have],
                          stand_in_superusers=True)
    report.existing = [n for n in needed if n in have]
    name, password = RESTORER_PREFIX + secrets.token_hex(4), secrets.token_urlsafe(24)
    with postgres.connect(admin.with_dbname("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION "
                             "NOBYPASSRLS INHERIT PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        for role in needed:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(name)))
        # belt and braces: whatever memberships the roles brought, the restoring role reaches no superuser
        # and none of the roles that run programs or read and write the server's files
        row = conn.execute(
            """SELECT string_agg(r.rolname, ', ') FROM pg_roles r
               WHERE (r.rolsuper OR r.rolname = ANY(%s) OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls)
                 AND pg_has_role(%s, r.oid, 'MEMBER')""",
            (list(SERVER_ACCESS), name),
        ).fetchone()
        if row and row[0]:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
            raise RestoreError(f"the restoring role would be a member of {row[0]}: refusing to restore")
    from dataclasses import replace

    return replace(admin, user=name, password=password), report


def drop_restorer(admin: postgres.PgSettings, restorer: postgres.PgSettings) -> None:
    if restorer.user and restorer.user.startswith(RESTORER_PREFIX):
        with postgres.connect(admin.with_dbname("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(restorer.user)))
