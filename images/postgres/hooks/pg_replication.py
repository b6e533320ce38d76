"""Replication between members: whom to follow, the password, WAL positions.

What the role, start and status hooks need about the other members: which
one to follow, whether another took writes under a newer epoch, the
superuser password (as a pass file line and as a SCRAM verifier), and where
the local server stands in the WAL.
"""

from __future__ import annotations

import os
from typing import Any

# Both sit beside this module in the image; in the source tree the type
# checker sees neither as a top-level module.
import pg_hooklib as lib  # type: ignore[import-not-found]
import rolecall_hook  # type: ignore[import-not-found]

# -- members ------------------------------------------------------------------


def find_primary(ctx: rolecall_hook.Context, primary: object) -> str:
    """The address of member ``primary`` from the payload's member list.

    Raises:
        rolecall_hook.BadPayload: When no other member has that id.
    """
    if not isinstance(primary, str) or not primary:
        raise rolecall_hook.BadPayload(
            f"a replica needs the id of its primary, got {primary!r}"
        )

    if primary == ctx.member.get("id"):
        raise rolecall_hook.BadPayload(
            f"member {primary!r} cannot replicate from itself"
        )

    for member in ctx.members:
        if member.get("id") == primary and member.get("address"):
            return str(member["address"])

    known = sorted(str(m.get("id")) for m in ctx.members)
    raise rolecall_hook.BadPayload(
        f"primary {primary!r} is not among the members {known}"
    )


def newer_writer(ctx: rolecall_hook.Context, state: dict[str, Any]) -> str | None:
    """Another member holding writes under a newer epoch than ours, if any.

    A writer that comes back after a failover learns from the payload that
    it has been replaced: it must not take writes again.
    """
    mine = int(state.get("epoch", 0))
    for member in ctx.members:
        epoch = member.get("epoch")
        if (
            member.get("id") != ctx.member.get("id")
            and member.get("role") in lib.WRITER_ROLES
            and isinstance(epoch, int)
            and epoch > mine
        ):
            return str(member["id"])

    return None


# -- secrets ------------------------------------------------------------------


def password(ctx: rolecall_hook.Context) -> str | None:
    """The superuser password from the spec's env, if one is set."""
    return ctx.env.get("POSTGRES_PASSWORD") or None


def passfile_text(secret: str) -> str:
    """A libpq pass file line that matches every host for the superuser."""
    escaped = secret.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:{lib.SUPERUSER}:{escaped}\n"


def set_password(secret: str | None) -> None:
    """Give the superuser ``secret`` as a SCRAM verifier, on a writer.

    Only the verifier reaches the server; the session commits locally, so
    a primary waiting for a synchronous replica does not hold the hook.
    """
    value = "NULL" if secret is None else sql_literal(scram_verifier(secret))
    lib.query(
        "SET synchronous_commit TO local;\n"
        f"ALTER ROLE {lib.SUPERUSER} PASSWORD {value};\n"
    )


def scram_verifier(secret: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``secret``."""
    import base64
    import hashlib
    import hmac

    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def sql_literal(value: str) -> str:
    """Quote a string as an SQL literal."""
    return "'" + value.replace("'", "''") + "'"


# -- positions ----------------------------------------------------------------

TIMELINE_SQL = (
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)
"""The timeline a primary writes on (its WAL file names start with it)."""

POSITIONS_SQL = """
WITH me AS (SELECT pg_is_in_recovery() AS standby)
SELECT jsonb_build_object(
  'standby', me.standby,
  'current_lsn', CASE WHEN me.standby THEN NULL
    ELSE pg_current_wal_lsn()::text END,
  'current_bytes', CASE WHEN me.standby THEN NULL
    ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END,
  'replay_lsn', pg_last_wal_replay_lsn()::text,
  'replay_bytes', pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint,
  'receive_lsn', pg_last_wal_receive_lsn()::text,
  'timeline', CASE WHEN me.standby THEN coalesce(
      (SELECT received_tli FROM pg_stat_wal_receiver),
      (SELECT timeline_id FROM pg_control_checkpoint()))
    ELSE $timeline END,
  'receiver', (SELECT jsonb_build_object(
      'status', status, 'sender', sender_host, 'timeline', received_tli)
    FROM pg_stat_wal_receiver),
  'replicas', (SELECT coalesce(jsonb_agg(r), '[]'::jsonb) FROM (
      SELECT application_name AS name, host(client_addr) AS address,
        state, sync_state, replay_lsn::text AS replay_lsn
      FROM pg_stat_replication ORDER BY client_addr LIMIT 16) r),
  'synchronous_standby_names', current_setting('synchronous_standby_names'),
  'synchronous_commit', current_setting('synchronous_commit'),
  'system', (SELECT system_identifier::text FROM pg_control_system())
) FROM me;
""".replace("$timeline", TIMELINE_SQL)
"""Where the local server stands: role in recovery, WAL positions (text and
bytes since 0/0), timeline, its upstream and its replicas (at most 16)."""


def positions(*, timeout: float = 5.0) -> dict[str, Any]:
    """The local server's WAL positions and replication state.

    Raises:
        lib.PgUnreachableError: The server does not answer.
        lib.PgQueryError: It refused the query.
    """
    return dict(lib.query_json(POSITIONS_SQL, timeout=timeout))


def offset_of(facts: dict[str, Any], *, role: object, synced: bool) -> int:
    """How far this member's data has come, in bytes of WAL.

    A writer counts what it wrote; a follower what it replayed, and 0
    until its copy is complete (or while its server is not a standby), so
    that failover never picks a member without the service's data.
    """
    if role in lib.FOLLOWER_ROLES:
        if not (synced and facts.get("standby")):
            return 0

        return int(facts.get("replay_bytes") or 0)

    return int(facts.get("current_bytes") or 0)


def is_streaming(facts: dict[str, Any]) -> bool:
    """Whether ``positions()`` shows a standby receiving from its primary."""
    receiver = facts.get("receiver") or {}
    return bool(facts.get("standby")) and receiver.get("status") == "streaming"
