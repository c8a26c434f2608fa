-- Core named queries, loaded by listener.sqlfiles.query(NAME). Only listener.store
-- and listener.migrations run them. Every state change after the claim names the
-- state and owner it expects; zero rows back means someone else got there first.

-- name: insert_task
INSERT INTO public.tasks (type, payload, run_at, priority, max_attempts, dedupe_key)
VALUES (%(type)s, %(payload)s::jsonb, coalesce(%(run_at)s, now()), %(priority)s,
        %(max_attempts)s, %(dedupe_key)s)
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'processing')
DO NOTHING
RETURNING id;

-- name: unfinished_task_by_dedupe_key
SELECT id FROM public.tasks
WHERE dedupe_key = %(dedupe_key)s AND status IN ('pending', 'processing');

-- name: insert_tasks
INSERT INTO public.tasks (id, type, payload, run_at, priority, max_attempts, dedupe_key)
SELECT id, type, payload::jsonb, coalesce(run_at, now()), priority, max_attempts, dedupe_key
FROM unnest(%(ids)b::uuid[], %(types)s::text[], %(payloads)s::text[],
            %(run_ats)s::timestamptz[], %(priorities)s::smallint[],
            %(max_attempts)s::integer[], %(dedupe_keys)s::text[])
     AS new(id, type, payload, run_at, priority, max_attempts, dedupe_key)
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'processing')
DO NOTHING
RETURNING id;

-- name: unfinished_tasks_by_dedupe_keys
SELECT dedupe_key, id FROM public.tasks
WHERE dedupe_key = ANY (%(dedupe_keys)s::text[]) AND status IN ('pending', 'processing');

-- name: live_workers
SELECT id, hostname, pid, types, concurrency, started_at, last_seen_at
FROM listener.workers
WHERE last_seen_at >= now() - make_interval(secs => %(stale_s)s)
ORDER BY started_at;

-- name: unfinished_counts
-- Exact counts from the partial indexes; finished work is counted over a recent
-- window only (an hour, listener.store.status), so the cost follows an hour's
-- volume, not the table's: a day of finished work at 3.3 tasks/s is 285,000 rows
-- and took 100-300 ms to count, mostly hashing them. Pending and processing
-- are counted apart: `status IN ('pending', 'processing')` matches neither partial
-- index, and was a sequential scan of the whole table (130 ms at 2,000,000 rows).
SELECT status, type, count(*) AS count
FROM public.tasks
WHERE status = 'pending'
GROUP BY status, type
UNION ALL
SELECT status, type, count(*)
FROM public.tasks
WHERE status = 'processing'
GROUP BY status, type
UNION ALL
SELECT status, type, count(*)
FROM public.tasks
WHERE status IN ('completed', 'failed', 'cancelled')
  AND completed_at >= now() - make_interval(secs => %(finished_window_s)s)
GROUP BY status, type
ORDER BY 1, 2;

-- name: oldest_pending_age
SELECT extract(epoch FROM now() - min(run_at)) AS age_s
FROM public.tasks
WHERE status = 'pending' AND run_at <= now();

-- name: pending_types_without_worker
SELECT type, count(*) AS count
FROM public.tasks
WHERE status = 'pending'
  AND NOT EXISTS (
      SELECT 1 FROM listener.workers AS w
      WHERE w.last_seen_at >= now() - make_interval(secs => %(stale_s)s)
        AND tasks.type = ANY (w.types)
  )
GROUP BY type
ORDER BY type;

-- name: applied_migrations
SELECT version, name, checksum FROM listener.schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO listener.schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)
ON CONFLICT (version) DO NOTHING;

-- name: migrations_table_exists
SELECT to_regclass('listener.schema_migrations') IS NOT NULL;

-- name: advisory_lock
SELECT pg_advisory_lock(%(key)s);

-- name: advisory_unlock
SELECT pg_advisory_unlock(%(key)s);

-- name: check_tables_exist
SELECT to_regclass('public.tasks') IS NOT NULL AND to_regclass('public.transactions') IS NOT NULL;

-- name: check_claim_function
SELECT EXISTS (
    SELECT 1 FROM pg_proc
    WHERE oid = to_regprocedure('public.claim_next_task()')
      AND proretset AND prorettype = 'public.tasks'::regtype
);

-- name: check_notify_trigger
-- tgenabled 'D' means disabled; 'O', 'A' and 'R' all fire in a normal session.
SELECT coalesce(bool_or(tgenabled <> 'D'), false), count(*) > 0
FROM pg_trigger
WHERE tgrelid = to_regclass('public.tasks') AND tgname = 'tasks_notify_inserted';

-- name: check_claim_index
SELECT to_regclass('public.tasks_claim_idx') IS NOT NULL;

-- name: tables_without_rls
SELECT c.relname
FROM pg_class AS c
WHERE c.oid IN (to_regclass('public.tasks'), to_regclass('public.transactions'),
                to_regclass('public.care_plans'), to_regclass('public.payment_orders'))
  AND NOT c.relrowsecurity
ORDER BY 1;

-- name: our_functions
SELECT p.oid::regprocedure::text AS signature, p.proconfig
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE (n.nspname = 'public' AND p.proname IN ('claim_next_task', 'record_transaction', 'enqueue_task'))
   OR n.nspname = 'listener'
ORDER BY 1;

-- name: api_role_privileges
-- What anon/authenticated (when they exist) and PUBLIC can still do with our objects.
WITH api_roles AS (
    SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
), tables AS (
    SELECT oid, oid::regclass::text AS name FROM pg_class
    WHERE oid IN (to_regclass('public.tasks'), to_regclass('public.transactions'),
                  to_regclass('public.care_plans'), to_regclass('public.payment_orders'))
), functions AS (
    SELECT p.oid, p.oid::regprocedure::text AS name
    FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
    WHERE (n.nspname = 'public' AND p.proname IN ('claim_next_task', 'record_transaction', 'enqueue_task'))
       OR n.nspname = 'listener'
)
SELECT r.rolname, 'table ' || t.name, privilege
FROM api_roles AS r, tables AS t,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS privilege
WHERE has_table_privilege(r.rolname, t.oid, privilege)
   -- a grant on one column (GRANT SELECT (payload) ...) is a way in too
   OR (privilege IN ('SELECT', 'INSERT', 'UPDATE')
       AND has_any_column_privilege(r.rolname, t.oid, privilege))
UNION ALL
SELECT r.rolname, 'schema listener', 'USAGE'
FROM api_roles AS r
WHERE to_regnamespace('listener') IS NOT NULL
  AND has_schema_privilege(r.rolname, 'listener', 'USAGE')
UNION ALL
SELECT r.rolname, 'function ' || f.name, 'EXECUTE'
FROM api_roles AS r, functions AS f
WHERE has_function_privilege(r.rolname, f.oid, 'EXECUTE')
UNION ALL
SELECT 'PUBLIC', 'function ' || f.name, 'EXECUTE'
FROM functions AS f, pg_proc AS p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS acl
WHERE p.oid = f.oid AND acl.grantee = 0 AND acl.privilege_type = 'EXECUTE'
ORDER BY 1, 2, 3;

-- name: api_roles_present
SELECT coalesce(array_agg(rolname ORDER BY rolname), '{}')
FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
