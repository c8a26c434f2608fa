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
FROM unnest(%(ids)s::uuid[], %(types)s::text[], %(payloads)s::text[],
            %(run_ats)s::timestamptz[], %(priorities)s::smallint[],
            %(max_attempts)s::integer[], %(dedupe_keys)s::text[])
     AS new(id, type, payload, run_at, priority, max_attempts, dedupe_key)
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'processing')
DO NOTHING
RETURNING id;

-- name: unfinished_tasks_by_dedupe_keys
SELECT dedupe_key, id FROM public.tasks
WHERE dedupe_key = ANY (%(dedupe_keys)s::text[]) AND status IN ('pending', 'processing');

-- name: claim_tasks
SELECT id, type, payload, attempts, max_attempts, created_at, run_at, priority,
       dedupe_key, lease_expires_at, worker_id,
       extract(epoch FROM now() - greatest(run_at, created_at)) AS pickup_delay_s
FROM listener.claim_tasks(%(worker_id)s, %(limit)s, %(types)s, %(lease_s)s);

-- name: complete_tasks
UPDATE public.tasks
SET status = 'completed', completed_at = now(), lease_expires_at = NULL, error = NULL
WHERE id = ANY (%(ids)s::uuid[]) AND status = 'processing' AND worker_id = %(worker_id)s
RETURNING id;

-- name: retry_task
-- counted = false (RetryLater) gives the attempt back.
UPDATE public.tasks
SET status = 'pending',
    run_at = now() + make_interval(secs => %(delay_s)s),
    attempts = CASE WHEN %(counted)s THEN attempts ELSE greatest(attempts - 1, 0) END,
    error = %(error)s,
    worker_id = NULL,
    lease_expires_at = NULL
WHERE id = %(id)s AND status = 'processing' AND worker_id = %(worker_id)s
RETURNING id, run_at;

-- name: fail_task
UPDATE public.tasks
SET status = 'failed', completed_at = now(), error = %(error)s, lease_expires_at = NULL
WHERE id = %(id)s AND status = 'processing' AND worker_id = %(worker_id)s
RETURNING id;

-- name: release_tasks
-- Shutdown: the interrupted attempt is not counted, and the task is due at once.
UPDATE public.tasks
SET status = 'pending', attempts = greatest(attempts - 1, 0),
    worker_id = NULL, lease_expires_at = NULL, started_at = NULL
WHERE id = ANY (%(ids)s::uuid[]) AND status = 'processing' AND worker_id = %(worker_id)s
RETURNING id;

-- name: extend_leases
UPDATE public.tasks
SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY (%(ids)s::uuid[]) AND status = 'processing' AND worker_id = %(worker_id)s
RETURNING id;

-- name: rescue_expired
-- Tasks whose worker stopped renewing the lease (killed, frozen, partitioned).
-- Rows claimed by a pre-lease worker (no lease) are presumed lost after 15 minutes.
WITH expired AS (
    SELECT t.id,
           t.attempts >= coalesce(t.max_attempts, limits.max_attempts, %(default_max_attempts)s)
               AS exhausted
    FROM public.tasks AS t
    LEFT JOIN unnest(%(types)s::text[], %(max_attempts)s::integer[])
              AS limits(type, max_attempts) ON limits.type = t.type
    WHERE t.status = 'processing'
      AND coalesce(t.lease_expires_at,
                   coalesce(t.started_at, t.created_at) + interval '15 minutes') < now()
    ORDER BY t.lease_expires_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE OF t SKIP LOCKED
)
UPDATE public.tasks AS t
SET status = CASE WHEN expired.exhausted THEN 'failed' ELSE 'pending' END,
    completed_at = CASE WHEN expired.exhausted THEN now() END,
    run_at = CASE WHEN expired.exhausted THEN t.run_at ELSE now() END,
    error = 'WorkerLost: the worker running this task stopped renewing its lease'
            || CASE WHEN expired.exhausted THEN ' and no attempts are left' ELSE '' END,
    worker_id = NULL,
    lease_expires_at = NULL
FROM expired
WHERE t.id = expired.id
RETURNING t.id, t.type, t.status, t.attempts;

-- name: next_run_at
SELECT min(run_at) FROM public.tasks
WHERE status = 'pending' AND run_at > now()
  AND (%(types)s::text[] IS NULL OR type = ANY (%(types)s::text[]));

-- name: notify_workers
SELECT pg_notify('listener_tasks', '');

-- name: upsert_worker
INSERT INTO listener.workers (id, hostname, pid, types, concurrency)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(types)s, %(concurrency)s)
ON CONFLICT (id) DO UPDATE
SET types = excluded.types, concurrency = excluded.concurrency, last_seen_at = now();

-- name: delete_worker
DELETE FROM listener.workers WHERE id = %(id)s;

-- name: delete_stale_workers
DELETE FROM listener.workers WHERE last_seen_at < now() - make_interval(secs => %(stale_s)s);

-- name: live_workers
SELECT id, hostname, pid, types, concurrency, started_at, last_seen_at
FROM listener.workers
WHERE last_seen_at >= now() - make_interval(secs => %(stale_s)s)
ORDER BY started_at;

-- name: unfinished_counts
-- Exact counts from the partial indexes; finished work is counted for the last
-- day only, so this stays cheap with millions of old rows.
SELECT status, type, count(*) AS count
FROM public.tasks
WHERE status IN ('pending', 'processing')
GROUP BY status, type
UNION ALL
SELECT status, type, count(*)
FROM public.tasks
WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at >= now() - interval '1 day'
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
WHERE c.oid IN (to_regclass('public.tasks'), to_regclass('public.transactions'))
  AND NOT c.relrowsecurity
ORDER BY 1;

-- name: our_functions
SELECT p.oid::regprocedure::text AS signature, p.proconfig
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE (n.nspname = 'public' AND p.proname IN ('claim_next_task', 'record_transaction'))
   OR n.nspname = 'listener'
ORDER BY 1;

-- name: api_role_privileges
-- What anon/authenticated (when they exist) and PUBLIC can still do with our objects.
WITH api_roles AS (
    SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
), tables AS (
    SELECT oid, oid::regclass::text AS name FROM pg_class
    WHERE oid IN (to_regclass('public.tasks'), to_regclass('public.transactions'))
), functions AS (
    SELECT p.oid, p.oid::regprocedure::text AS name
    FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
    WHERE (n.nspname = 'public' AND p.proname IN ('claim_next_task', 'record_transaction'))
       OR n.nspname = 'listener'
)
SELECT r.rolname, 'table ' || t.name, privilege
FROM api_roles AS r, tables AS t,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS privilege
WHERE has_table_privilege(r.rolname, t.oid, privilege)
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
