"""read-only views for BI tools (sessions, turns, events, latency) and a role that reads only them

Postgres: schema ``bi`` with views ``bi.sessions``, ``bi.turns``, ``bi.events``, ``bi.latency``,
and a NOLOGIN role ``roomwarden_bi`` with USAGE on the schema and SELECT on those views only
(the views run with their owner's rights, so the role reads the tables through them and no
other way). Give a BI tool a LOGIN role that is a member: ``CREATE ROLE metabase LOGIN
PASSWORD '...' IN ROLE roomwarden_bi``. SQLite: the same views named ``bi_sessions``, ... (no
roles there). The columns are documented in docs/bi.md; none holds a secret (no spec,
join_info, inbox payloads, policy inputs/results).

Roles belong to the cluster, not the database: several databases on one server (production and
staging, a test database and a scratch one) share ``roomwarden_bi``. So the upgrade creates it
only when missing (and only if it may: without CREATEROLE it says so and skips the grants), and
the downgrade drops it only when no other database still grants it anything.

On SQLite a later migration that rebuilds one of the tables these views read (alembic's batch
mode: copy, drop, rename) must drop the views first and create them again afterwards: SQLite
checks every view when a table is renamed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 09:00:01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "roomwarden_bi"
VIEWS = ("sessions", "turns", "events", "latency")

# --------------------------------------------------------------------------- Postgres

PG_NUMBER = "CASE WHEN jsonb_typeof(i.latency -> '{key}') = 'number' THEN (i.latency ->> '{key}')::double precision END"

PG_VIEWS = {
    "sessions": """
SELECT s.id AS session_id,
       s.app_id,
       s.origin,
       COALESCE(s.provider, 'zego') AS provider,
       s.template,
       s.agent_id,
       s.agent_name,
       s.room_id,
       s.user_id,
       s.state,
       s.end_reason,
       s.end_code,
       s.flag,
       s.created_at,
       COALESCE(s.started_at, s.created_at) AS started_at,
       s.ended_at,
       EXTRACT(EPOCH FROM s.ended_at - s.started_at)::double precision
           AS duration_seconds,
       (SELECT count(*) FROM turns t WHERE t.session_id = s.id) AS turns,
       (SELECT count(*) FROM turns t WHERE t.session_id = s.id AND t.speaker = 'user') AS user_turns,
       (SELECT count(*) FROM turns t WHERE t.session_id = s.id AND t.speaker = 'agent') AS agent_turns,
       (SELECT count(*) FROM turns t
         WHERE t.session_id = s.id AND t.speaker = 'agent' AND t.interrupted) AS interruptions,
       (SELECT count(*) FROM agent_exceptions e WHERE e.session_id = s.id) AS exceptions,
       (SELECT count(*) FROM agent_instances i WHERE i.session_id = s.id) AS instances
  FROM sessions s
""",
    "turns": """
SELECT t.id AS turn_id,
       t.session_id,
       i.app_id,
       i.agent_instance_id,
       t.round,
       t.speaker,
       t.text,
       t.user_id,
       t.spoken_at,
       t.interrupted,
       t.interrupt_reason,
       t.played_text
  FROM turns t
  JOIN agent_instances i ON i.id = t.instance_id
""",
    "events": """
SELECT e.session_id, i.app_id, i.agent_instance_id, e.at, 'timeline'::text AS source,
       e.event::text AS event, e.round, NULL::integer AS code, NULL::text AS reason,
       COALESCE(e.detail ->> 'Status', e.detail ->> 'Action') AS status, e.detail::text AS detail
  FROM timeline_events e
  JOIN agent_instances i ON i.id = e.instance_id
UNION ALL
SELECT x.session_id, i.app_id, i.agent_instance_id, x.at, 'exception', 'Exception', x.round,
       x.code, x.family::text, NULL, x.message
  FROM agent_exceptions x
  JOIN agent_instances i ON i.id = x.instance_id
UNION ALL
SELECT i.session_id, i.app_id, i.agent_instance_id, i.created_at, 'instance', 'AgentInstanceCreated',
       NULL, NULL, NULL, NULL, NULL
  FROM agent_instances i
 WHERE i.created_at IS NOT NULL
UNION ALL
SELECT i.session_id, i.app_id, i.agent_instance_id, i.deleted_at, 'instance', 'AgentInstanceDeleted',
       NULL, i.delete_code, NULL, NULL, NULL
  FROM agent_instances i
 WHERE i.deleted_at IS NOT NULL
UNION ALL
SELECT a.session_id, a.app_id, a.agent_instance_id, a.created_at, 'policy_action', a.kind::text,
       NULL, NULL, a.reason::text, a.state::text, a.policy::text
  FROM policy_actions a
""",
    "latency": f"""
WITH speak_end AS (
    SELECT instance_id, round, max(at) AS at
      FROM timeline_events
     WHERE event = 'UserSpeakAction' AND detail ->> 'Action' = 'SPEAK_END' AND round IS NOT NULL
     GROUP BY instance_id, round
), first_llm AS (
    SELECT instance_id, round, to_timestamp(min(callback_ts) / 1000.0) AS at
      FROM agent_sentences
     GROUP BY instance_id, round
), speaking AS (
    SELECT instance_id, round, min(at) AS at
      FROM timeline_events
     WHERE event = 'AgentInstanceStatus' AND detail ->> 'Status' = 'SPEAKING' AND round IS NOT NULL
     GROUP BY instance_id, round
), rounds AS (
    SELECT instance_id, round FROM speak_end
    UNION SELECT instance_id, round FROM first_llm
    UNION SELECT instance_id, round FROM speaking
), per_round AS (
    SELECT r.instance_id, r.round, se.at AS user_speak_end_at, LEAST(fl.at, sp.at) AS first_output_at
      FROM rounds r
      LEFT JOIN speak_end se ON se.instance_id = r.instance_id AND se.round = r.round
      LEFT JOIN first_llm fl ON fl.instance_id = r.instance_id AND fl.round = r.round
      LEFT JOIN speaking sp ON sp.instance_id = r.instance_id AND sp.round = r.round
)
SELECT 'instance'::text AS kind, i.session_id, i.app_id, i.agent_instance_id, NULL::bigint AS round,
       {PG_NUMBER.format(key="LLMTTFT")} AS llm_ttft_ms,
       {PG_NUMBER.format(key="LLMTPS")} AS llm_tps,
       {PG_NUMBER.format(key="TTSAudioFirstFrameTime")} AS tts_first_frame_ms,
       {PG_NUMBER.format(key="TotalCost")} AS total_cost_ms,
       NULL::timestamptz AS user_speak_end_at, NULL::timestamptz AS first_output_at,
       NULL::double precision AS response_ms
  FROM agent_instances i
 WHERE jsonb_typeof(i.latency) = 'object'
UNION ALL
SELECT 'round', i.session_id, i.app_id, i.agent_instance_id, p.round, NULL, NULL, NULL, NULL,
       p.user_speak_end_at, p.first_output_at,
       (EXTRACT(EPOCH FROM p.first_output_at - p.user_speak_end_at) * 1000)::double precision
  FROM per_round p
  JOIN agent_instances i ON i.id = p.instance_id
""",
}

PG_CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        CREATE ROLE {ROLE} NOLOGIN;
    END IF;
EXCEPTION
    -- Another database's migration created it at the same moment.
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot create role {ROLE} (no CREATEROLE): ask a superuser for '
            '"CREATE ROLE {ROLE} NOLOGIN" and then run the GRANTs in docs/bi.md';
END
$$
"""

PG_GRANT = f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        GRANT USAGE ON SCHEMA bi TO {ROLE};
        GRANT SELECT ON {", ".join(f"bi.{v}" for v in VIEWS)} TO {ROLE};
    END IF;
END
$$
"""

PG_REVOKE = f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')
        AND EXISTS (SELECT FROM pg_namespace WHERE nspname = 'bi') THEN
        REVOKE ALL ON SCHEMA bi FROM {ROLE};
        REVOKE ALL ON {", ".join(f"bi.{v}" for v in VIEWS)} FROM {ROLE};
    END IF;
END
$$
"""

PG_DROP_ROLE = f"""
DO $$
BEGIN
    DROP ROLE IF EXISTS {ROLE};
EXCEPTION
    -- Another database on this server still grants it something: it stays for that one.
    WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role {ROLE} kept: other databases still use it';
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'role {ROLE} kept: no CREATEROLE to drop it';
END
$$
"""

# --------------------------------------------------------------------------- SQLite

# SQLite stores these timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC; julianday() reads
# them to the millisecond, which is all the precision the arithmetic below keeps.
SQLITE_MS = "((julianday({x}) - 2440587.5) * 86400000.0)"
SQLITE_NUMBER = (
    "CASE WHEN json_type(i.latency, '$.{key}') IN ('integer', 'real') "
    "THEN CAST(json_extract(i.latency, '$.{key}') AS REAL) END"
)

SQLITE_VIEWS = {
    "sessions": """
SELECT s.id AS session_id,
       s.app_id,
       s.origin,
       COALESCE(s.provider, 'zego') AS provider,
       s.template,
       s.agent_id,
       s.agent_name,
       s.room_id,
       s.user_id,
       s.state,
       s.end_reason,
       s.end_code,
       s.flag,
       s.created_at,
       COALESCE(s.started_at, s.created_at) AS started_at,
       s.ended_at,
       round((julianday(s.ended_at) - julianday(s.started_at)) * 86400.0, 3)
           AS duration_seconds,
       (SELECT count(*) FROM turns t WHERE t.session_id = s.id) AS turns,
       (SELECT count(*) FROM turns t WHERE t.session_id = s.id AND t.speaker = 'user') AS user_turns,
       (SELECT count(*) FROM turns t WHERE t.session_id = s.id AND t.speaker = 'agent') AS agent_turns,
       (SELECT count(*) FROM turns t
         WHERE t.session_id = s.id AND t.speaker = 'agent' AND t.interrupted) AS interruptions,
       (SELECT count(*) FROM agent_exceptions e WHERE e.session_id = s.id) AS exceptions,
       (SELECT count(*) FROM agent_instances i WHERE i.session_id = s.id) AS instances
  FROM sessions s
""",
    "turns": PG_VIEWS["turns"],
    "events": """
SELECT e.session_id, i.app_id, i.agent_instance_id, e.at, 'timeline' AS source,
       e.event AS event, e.round, NULL AS code, NULL AS reason,
       COALESCE(json_extract(e.detail, '$.Status'), json_extract(e.detail, '$.Action')) AS status,
       e.detail AS detail
  FROM timeline_events e
  JOIN agent_instances i ON i.id = e.instance_id
UNION ALL
SELECT x.session_id, i.app_id, i.agent_instance_id, x.at, 'exception', 'Exception', x.round,
       x.code, x.family, NULL, x.message
  FROM agent_exceptions x
  JOIN agent_instances i ON i.id = x.instance_id
UNION ALL
SELECT i.session_id, i.app_id, i.agent_instance_id, i.created_at, 'instance', 'AgentInstanceCreated',
       NULL, NULL, NULL, NULL, NULL
  FROM agent_instances i
 WHERE i.created_at IS NOT NULL
UNION ALL
SELECT i.session_id, i.app_id, i.agent_instance_id, i.deleted_at, 'instance', 'AgentInstanceDeleted',
       NULL, i.delete_code, NULL, NULL, NULL
  FROM agent_instances i
 WHERE i.deleted_at IS NOT NULL
UNION ALL
SELECT a.session_id, a.app_id, a.agent_instance_id, a.created_at, 'policy_action', a.kind,
       NULL, NULL, a.reason, a.state, a.policy
  FROM policy_actions a
""",
    "latency": f"""
WITH speak_end AS (
    SELECT instance_id, round, max(at) AS at
      FROM timeline_events
     WHERE event = 'UserSpeakAction' AND json_extract(detail, '$.Action') = 'SPEAK_END'
       AND round IS NOT NULL
     GROUP BY instance_id, round
), first_llm AS (
    SELECT instance_id, round, min(callback_ts) * 1.0 AS ms
      FROM agent_sentences
     GROUP BY instance_id, round
), speaking AS (
    SELECT instance_id, round, min(at) AS at
      FROM timeline_events
     WHERE event = 'AgentInstanceStatus' AND json_extract(detail, '$.Status') = 'SPEAKING'
       AND round IS NOT NULL
     GROUP BY instance_id, round
), rounds AS (
    SELECT instance_id, round FROM speak_end
    UNION SELECT instance_id, round FROM first_llm
    UNION SELECT instance_id, round FROM speaking
), per_round AS (
    SELECT r.instance_id, r.round, se.at AS user_speak_end_at,
           round({SQLITE_MS.format(x="se.at")}) AS speak_end_ms,
           min(COALESCE(fl.ms, round({SQLITE_MS.format(x="sp.at")})),
               COALESCE(round({SQLITE_MS.format(x="sp.at")}), fl.ms)) AS first_output_ms
      FROM rounds r
      LEFT JOIN speak_end se ON se.instance_id = r.instance_id AND se.round = r.round
      LEFT JOIN first_llm fl ON fl.instance_id = r.instance_id AND fl.round = r.round
      LEFT JOIN speaking sp ON sp.instance_id = r.instance_id AND sp.round = r.round
)
SELECT 'instance' AS kind, i.session_id, i.app_id, i.agent_instance_id, NULL AS round,
       {SQLITE_NUMBER.format(key="LLMTTFT")} AS llm_ttft_ms,
       {SQLITE_NUMBER.format(key="LLMTPS")} AS llm_tps,
       {SQLITE_NUMBER.format(key="TTSAudioFirstFrameTime")} AS tts_first_frame_ms,
       {SQLITE_NUMBER.format(key="TotalCost")} AS total_cost_ms,
       NULL AS user_speak_end_at, NULL AS first_output_at, NULL AS response_ms
  FROM agent_instances i
 WHERE json_type(i.latency) = 'object'
UNION ALL
SELECT 'round', i.session_id, i.app_id, i.agent_instance_id, p.round, NULL, NULL, NULL, NULL,
       p.user_speak_end_at,
       strftime('%Y-%m-%d %H:%M:%f', p.first_output_ms / 1000.0, 'unixepoch'),
       p.first_output_ms - p.speak_end_ms
  FROM per_round p
  JOIN agent_instances i ON i.id = p.instance_id
""",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SCHEMA bi")
        for name in VIEWS:
            op.execute(f"CREATE VIEW bi.{name} AS {PG_VIEWS[name]}")
        op.execute(PG_CREATE_ROLE)
        op.execute(PG_GRANT)
    else:
        for name in VIEWS:
            op.execute(f"CREATE VIEW bi_{name} AS {SQLITE_VIEWS[name]}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_REVOKE)
        for name in reversed(VIEWS):
            op.execute(f"DROP VIEW IF EXISTS bi.{name}")
        op.execute("DROP SCHEMA IF EXISTS bi")
        op.execute(PG_DROP_ROLE)
    else:
        for name in reversed(VIEWS):
            op.execute(f"DROP VIEW IF EXISTS bi_{name}")
