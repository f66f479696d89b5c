"""Pure parts of issue 14: reading pg_dumpall's globals, ACL role names, the roles a restore needs, and the
inventory comparison (its sequence rule included)."""

from __future__ import annotations

from strongroom.inventory import compare
from strongroom.roles import acl_roles, needed_roles, parse_globals

GLOBALS = '''--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEDB LOGIN NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi';
CREATE ROLE "Odd ""Role""";
ALTER ROLE "Odd ""Role""" WITH NOSUPERUSER NOINHERIT NOCREATEROLE CREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;

--
-- Role memberships
--

GRANT app_owner TO "Odd ""Role""" GRANTED BY postgres;
GRANT pg_write_server_files TO app_owner WITH INHERIT TRUE GRANTED BY postgres;

CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';
'''


def test_globals_are_read_with_attributes_passwords_memberships_and_tablespaces() -> None:
    found = parse_globals(GLOBALS)
    assert set(found.roles) == {"app_owner", 'Odd "Role"', "postgres"}
    owner = found.roles["app_owner"]
    assert "LOGIN" in owner.attributes and "SUPERUSER" not in owner.attributes
    assert owner.password == "SCRAM-SHA-256$4096:abc$def:ghi"
    assert owner.member_of == ("pg_write_server_files",)
    assert found.roles['Odd "Role"'].member_of == ("app_owner",)
    assert "CREATEDB" in found.roles['Odd "Role"'].attributes
    assert found.roles["postgres"].superuser and not owner.superuser
    assert found.tablespaces == ("fast",)
    assert "PASSWORD" not in repr(owner) and "SCRAM" not in repr(owner)


def test_acl_roles_name_grantees_and_grantors_not_public() -> None:
    assert acl_roles('{app_owner=arwdDxt/app_owner,"Odd ""Role"""=r/app_owner,=U/app_owner}') == {
        "app_owner", 'Odd "Role"'}
    assert acl_roles("") == set()


def test_needed_roles_are_owners_and_acl_roles_without_predefined_ones() -> None:
    inventory = {"roles": ["app_owner", "reader", "pg_database_owner"],
                 "relations": {"app.t": {"acl": "{app_owner=arwdDxt/app_owner,auditor=r/app_owner}"}}}
    toc = ["215; 1259 16388 TABLE app t app_owner", "3357; 0 0 COMMENT app TABLE t postgres", ";comment"]
    assert needed_roles(inventory, toc) == ["app_owner", "postgres", "reader"]
    assert needed_roles(inventory, toc[:1], ["app.t"]) == ["app_owner", "auditor"]


def test_compare_names_each_difference_and_applies_the_sequence_rule() -> None:
    recorded = {
        "relations": {"app.t": {"kind": "r", "owner": "a", "acl": "", "partition_of": None},
                      "app.gone": {"kind": "r", "owner": "a", "acl": "", "partition_of": None}},
        "types": {"app.mood": {"kind": "e", "owner": "a", "acl": "", "base": None, "labels": "x,y"}},
        "sequences": {"app.s": 10, "app.low": 10, "app.dumped": 10, "app.never": None},
    }
    restored = {
        "relations": {"app.t": {"kind": "r", "owner": "b", "acl": "", "partition_of": None},
                      "app.extra": {"kind": "v", "owner": "a", "acl": "", "partition_of": None}},
        "types": {"app.mood": {"kind": "e", "owner": "a", "acl": "", "base": None, "labels": "x,y"}},
        "sequences": {"app.s": 15, "app.low": 9, "app.dumped": 12, "app.never": None},
    }
    dumped = {"app.s": 15, "app.low": None, "app.dumped": 13}
    assert compare(recorded, restored, dumped) == [
        "relation app.gone is missing",
        "relation app.extra is not in the snapshot",
        "relation app.t: owner is 'b', the snapshot recorded 'a'",
        "sequence app.dumped is at 12, the dump sets 13",
        "sequence app.low is at 9, below the 10 recorded in the snapshot",
    ]
    assert compare(recorded, recorded, {}) == []
