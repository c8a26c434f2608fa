-- `listener doctor`: read-only health checks. Loaded by listener.doctor*.

-- name: doctor_listen
-- The channel name is filled in with psycopg.sql.Identifier.
LISTEN {channel};

-- name: doctor_unlisten
UNLISTEN {channel};

-- name: doctor_notify
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: doctor_notify_queue_usage
-- Fraction of the server-wide NOTIFY queue in use (all databases share it).
SELECT pg_notification_queue_usage();

-- name: doctor_notify_lock_waiters
-- Sessions waiting for the lock a notifying commit takes (PreCommit_Notify locks the
-- pg_database class as a shared object: database 0). One lock for the whole server,
-- so waiters in other databases count too. pg_stat_activity shows them as
-- wait_event_type 'Lock', wait_event 'object'.
SELECT a.application_name
FROM pg_locks AS l
LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'object' AND l.database = 0
  AND l.classid = 'pg_catalog.pg_database'::regclass AND l.objid = 0
  AND NOT l.granted;

-- name: doctor_idle_listeners
-- Sessions idle in a transaction that look like listeners. pg_listening_channels()
-- only answers for the calling session, so another session's LISTEN is inferred:
-- its last statement was LISTEN, or it is the worker's listening connection
-- (application_name 'listener:listen').
SELECT pid, application_name, extract(epoch FROM now() - state_change) AS idle_s
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND state_change < now() - make_interval(secs => %(idle_s)s)
  AND (application_name = %(application_name)s OR query ~* '^\s*listen\s')
ORDER BY state_change;

-- name: doctor_long_transactions
-- Open transactions (sessions and prepared ones) that pin the xmin horizon, so
-- VACUUM cannot remove the dead task rows behind them.
SELECT 'pid ' || pid AS holder, application_name, extract(epoch FROM now() - xact_start) AS age_s
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
  AND xact_start < now() - make_interval(secs => %(age_s)s)
UNION ALL
SELECT 'prepared transaction ' || quote_literal(gid), owner::text,
       extract(epoch FROM now() - prepared)
FROM pg_prepared_xacts
WHERE database = current_database()
  AND prepared < now() - make_interval(secs => %(age_s)s)
ORDER BY age_s DESC;

-- name: doctor_dead_tuples
SELECT s.n_live_tup, s.n_dead_tup,
       current_setting('autovacuum')::boolean AS server_autovacuum,
       coalesce((SELECT option_value::boolean
                 FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'autovacuum_enabled'), true) AS table_autovacuum
FROM pg_stat_user_tables AS s
JOIN pg_class AS c ON c.oid = s.relid
WHERE s.relid = to_regclass('public.tasks');

-- name: doctor_stale_pending
SELECT count(*), extract(epoch FROM now() - min(run_at))
FROM public.tasks
WHERE status = 'pending' AND run_at < now() - make_interval(secs => %(age_s)s);

-- name: doctor_expired_leases
-- Same rule as the rescuer (rescue_expired), past a grace period: nobody is rescuing.
SELECT count(*),
       extract(epoch FROM now() - min(coalesce(lease_expires_at,
                                               coalesce(started_at, created_at)
                                               + interval '15 minutes')))
FROM public.tasks
WHERE status = 'processing'
  AND coalesce(lease_expires_at, coalesce(started_at, created_at) + interval '15 minutes')
      < now() - make_interval(secs => %(grace_s)s);

-- name: doctor_long_running
-- Handlers still running after a long time, their lease kept alive by a live worker.
SELECT count(*), extract(epoch FROM now() - min(started_at)),
       coalesce(array_agg(DISTINCT type ORDER BY type), '{}')
FROM public.tasks
WHERE status = 'processing' AND lease_expires_at > now()
  AND started_at < now() - make_interval(secs => %(age_s)s);

-- name: doctor_live_worker_count
SELECT count(*) FROM listener.workers
WHERE last_seen_at >= now() - make_interval(secs => %(stale_s)s);

-- name: doctor_timeouts
-- Both in milliseconds, as this role sees them (role and database settings applied).
SELECT current_user,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout');
