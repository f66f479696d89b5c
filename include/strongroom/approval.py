"""A second person's approval of a restore that overwrites production, proven from Airflow's own record.

The approval task (Airflow's human-in-the-loop ``ApprovalOperator``, its ``assigned_users`` being
``restore.approvers``) receives the response on completion from Airflow itself: who answered and what.
:func:`grant` checks that response there (an approver, not the user who triggered the run) and returns a
clearance sealed with a MAC under a key derived from the keyring. The tasks that later touch production
accept only a clearance that authenticates for their own run (:func:`verify`): an XCom written through the
REST API, or a task marked successful by hand, carries no valid MAC.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from strongroom import envelope
from strongroom.errors import KeyringError, RefusedError
from strongroom.keyring import Keyring

APPROVE = "Approve"
_INFO = b"strongroom approval-clearance v1"


@dataclass(frozen=True)
class Run:
    """The run an approval belongs to: a clearance is valid for this run only."""

    dag_id: str
    run_id: str
    triggered_by: str | None


def _mac(key: bytes, run: Run, approver: str, subject: str) -> str:
    payload = "\x00".join(("approval", run.dag_id, run.run_id, run.triggered_by or "", approver, subject))
    return hmac.new(envelope.hkdf(key, _INFO), payload.encode("utf-8"), sha256).hexdigest()


def grant(
    response: Mapping[str, Any], run: Run, approvers: Sequence[str], keyring: Keyring, subject: str
) -> dict[str, str]:
    """Check the response Airflow delivered to the approval task; return the sealed clearance or refuse.

    ``subject`` names what is approved (e.g. ``database ledger``); a clearance for one subject is not
    valid for another.
    """
    if list(response.get("chosen_options") or []) != [APPROVE]:
        raise RefusedError("the restore was not approved")
    user = response.get("responded_by_user") or {}
    approver = str(user.get("id") or "") if isinstance(user, Mapping) else ""
    if not approver:
        raise RefusedError("the approval does not say who approved")
    if not approvers:
        raise RefusedError("no approvers are configured (restore.approvers): nobody may approve this restore")
    if approver not in approvers:
        raise RefusedError(f"{approver} is not an approver (restore.approvers: {', '.join(approvers)})")
    if not run.triggered_by:
        raise RefusedError("the run does not say who triggered it, so a second person's approval cannot be proven")
    names = {approver, str(user.get("name") or "")} - {""}
    if run.triggered_by in names:
        raise RefusedError(f"{run.triggered_by} triggered this restore and cannot approve it: a second person must")
    return {"approved_by": approver, "subject": subject, "key_id": keyring.active_id,
            "mac": _mac(keyring.active_key, run, approver, subject)}


def verify(clearance: Any, run: Run, keyring: Keyring, subject: str) -> str:
    """The approver named by a clearance :func:`grant` sealed for this run and subject; refuses anything else."""
    if not isinstance(clearance, Mapping) or not clearance.get("mac"):
        raise RefusedError(f"no approval on record for {subject} in run {run.run_id}")
    approver, mac, key_id = (str(clearance.get(k) or "") for k in ("approved_by", "mac", "key_id"))
    try:
        key = keyring.key(key_id)
    except KeyringError:
        key = b""
    if not key or clearance.get("subject") != subject or not hmac.compare_digest(
        _mac(key, run, approver, subject), mac
    ):
        raise RefusedError(
            f"the approval record for {subject} does not authenticate (not written by the approval task of "
            f"run {run.run_id})"
        )
    return approver
