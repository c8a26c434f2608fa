-- The engine's queries: claim, acknowledge, lease, rescue, worker registry.
-- Every state change after the claim names the state and owner it expects;
-- zero rows back means someone else (the rescuer, another worker) got there first.

-- name: claim_tasks
-- payload as text: json.loads on a str costs half of psycopg's jsonb loader.
SELECT id, type, payload::text, attempts, max_attempts, created_at, run_at, priority,
       dedupe_key, lease_expires_at, worker_id,
       extract(epoch FROM now() - greatest(run_at, created_at))::float8 AS pickup_delay_s
FROM listener.claim_tasks(%(worker_id)s, %(limit)s, %(types)s, %(lease_s)s);

-- name: complete_tasks
UPDATE public.tasks
SET status = 'completed', completed_at = now(), lease_expires_at = NULL, error = NULL
WHERE id = ANY (%(ids)b::uuid[]) AND status = 'processing' AND worker_id = %(worker_id)s
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
WHERE id = ANY (%(ids)b::uuid[]) AND status = 'processing' AND worker_id = %(worker_id)s
RETURNING id;

-- name: extend_leases
UPDATE public.tasks
SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY (%(ids)b::uuid[]) AND status = 'processing' AND worker_id = %(worker_id)s
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


-- name: probe
SELECT 1;
