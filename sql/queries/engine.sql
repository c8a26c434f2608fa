-- The engine's queries: claim, write outcomes, heartbeat, rescue, reconcile, workers.
-- Every write after the claim names the claim it belongs to, (id, claim_token), and
-- the state it expects; a task that is not that claim's any more is left alone.
--
-- A lookup by id tests the state it expects as `t.status || '' = ...`: the same test,
-- but one that no partial index of that state (tasks_lease_idx of processing rows,
-- tasks_finished_idx of finished ones) can serve, so the primary key is the only path.
-- With `t.status = 'processing'`, a table analyzed while nothing was processing (a
-- backlog analyzed before its workers came) makes tasks_lease_idx look empty, as cheap
-- as the primary key, and the planner took it: each lookup then read every processing
-- row (500 outcomes: 150,000 buffers, 45 ms; a default worker drained 5,700 tasks/s
-- instead of 11,000 at 10x its claim-ahead).

-- name: claim_batch
-- payload as text: the worker bounds and decodes it itself (json.loads on a str costs
-- half of psycopg's jsonb loader). Rows come back in the order they were due; a claim
-- that comes back short ends with one row whose only column is the outlook: when the
-- next scheduled task is due, and which limited types the limits held back.
SELECT (c.task).id, (c.task).type, (c.task).payload::text, (c.task).attempts,
       (c.task).max_attempts, (c.task).created_at, (c.task).run_at, (c.task).priority,
       (c.task).dedupe_key, (c.task).lease_expires_at, (c.task).worker_id,
       extract(epoch FROM now() - greatest((c.task).run_at, (c.task).created_at))::float8,
       (c.task).attempt_limit, c.outlook
FROM listener.claim_batch(%(worker_id)s, %(token)s, %(limit)s, %(types)s,
                          %(attempt_limits)s, %(lease_s)s, %(concurrency)s,
                          %(rate_counts)s, %(rate_windows_s)s) AS c;

-- name: finish_tasks
-- Every outcome of the engine, many tasks per statement. A row locked by another
-- transaction is skipped, not waited for (written = false, ours = true: try again
-- later); a row that is not ours any more (ours = false) is left alone.
-- Actions: complete; fail; retry (counted) / retry_uncounted (the attempt is given
-- back) after delay_s; release (never started: attempt given back, due at once).
-- Every row is reached by primary key, whatever the statistics (the heartbeat's
-- renewal likewise). Each outcome locks its row in a lateral lookup: a join of the
-- table to the outcomes was planned as a bitmap scan of tasks_lease_idx, which the
-- planner takes for small, but which keeps an entry for every task claimed since the
-- last vacuum (mid-drain, 5,000 entries read to lock 100 rows: 3 of 4.4 ms). The
-- UPDATE finds the locked ids through the primary key (`= ANY (ARRAY(...))`: no
-- sequential scan can cost less), then joins them: joined alone, 500 locked rows on a
-- never-analyzed table made a hash join over a sequential scan; with `ANY (ids)` beside
-- a join of 1 estimated row, a sequential scan per row (0.5 s for 500 outcomes).
WITH outcome AS (
    SELECT *
    FROM unnest(%(ids)b::uuid[], %(tokens)b::uuid[], %(actions)s::text[],
                %(delays_s)s::float8[], %(errors)s::text[])
         AS o(id, token, action, delay_s, error)
), locked AS (
    SELECT t.id, o.token, o.action, o.delay_s, o.error
    FROM outcome AS o
    CROSS JOIN LATERAL (
        SELECT t.id
        FROM public.tasks AS t
        WHERE t.id = o.id AND t.claim_token = o.token AND t.status || '' = 'processing'
        FOR NO KEY UPDATE OF t SKIP LOCKED
    ) AS t
), written AS (
    UPDATE public.tasks AS t
    SET status = CASE l.action WHEN 'complete' THEN 'completed'
                               WHEN 'fail' THEN 'failed'
                               ELSE 'pending' END,
        completed_at = CASE WHEN l.action IN ('complete', 'fail') THEN now() END,
        run_at = CASE WHEN l.action IN ('retry', 'retry_uncounted')
                      THEN now() + make_interval(secs => l.delay_s)
                      ELSE t.run_at END,
        attempts = CASE WHEN l.action IN ('retry_uncounted', 'release')
                        THEN greatest(t.attempts - 1, 0)
                        ELSE t.attempts END,
        started_at = CASE WHEN l.action = 'release' THEN NULL ELSE t.started_at END,
        error = l.error,
        worker_id = CASE WHEN l.action IN ('complete', 'fail') THEN t.worker_id END,
        claim_token = CASE WHEN l.action IN ('complete', 'fail') THEN t.claim_token END,
        lease_expires_at = NULL
    FROM locked AS l
    WHERE t.id = ANY (ARRAY(SELECT id FROM locked)) AND t.id = l.id
    RETURNING t.id, l.token, extract(epoch FROM t.run_at - now())::float8 AS due_in_s
)
-- ours: looked up only for what was not written (the snapshot is the statement's); a
-- row this claim already finished (a commit whose reply was lost) counts as written.
-- `w.id IS NULL` inside each lookup keeps it a lookup by primary key per row: as a
-- bare correlated EXISTS the planner hashes it, one scan of the table per statement.
SELECT o.id, o.token, w.id IS NOT NULL OR EXISTS (
           SELECT 1 FROM public.tasks AS t
           WHERE w.id IS NULL AND t.id = o.id AND t.claim_token = o.token
             AND t.status || '' IN ('completed', 'failed')
       ) AS written,
       w.due_in_s,
       w.id IS NOT NULL OR EXISTS (
           SELECT 1 FROM public.tasks AS t
           WHERE w.id IS NULL AND t.id = o.id AND t.claim_token = o.token
             AND t.status || '' = 'processing'
       ) AS ours
FROM outcome AS o
LEFT JOIN written AS w ON w.id = o.id AND w.token = o.token;

-- name: complete_claim
-- A transactional handler's completion, inside the handler's own transaction.
UPDATE public.tasks
SET status = 'completed', completed_at = now(), lease_expires_at = NULL, error = NULL
WHERE id = %(id)s AND claim_token = %(token)s AND status || '' = 'processing'
RETURNING id;

-- name: heartbeat
-- This worker is alive (its row in listener.workers) and keeps its leases, in one
-- round trip (a data-modifying WITH always runs). Locked rows are skipped, not
-- waited for: renewed = false, ours = true.
WITH presence AS (
    INSERT INTO listener.workers (id, hostname, pid, types, concurrency)
    VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(types)s, %(concurrency)s)
    ON CONFLICT (id) DO UPDATE
    SET types = excluded.types, concurrency = excluded.concurrency, last_seen_at = now()
    RETURNING id
), claims AS (
    SELECT * FROM unnest(%(ids)b::uuid[], %(tokens)b::uuid[]) AS c(id, token)
), locked AS (
    SELECT t.id
    FROM claims AS c
    CROSS JOIN LATERAL (
        SELECT t.id
        FROM public.tasks AS t
        WHERE t.id = c.id AND t.claim_token = c.token AND t.status || '' = 'processing'
        FOR NO KEY UPDATE OF t SKIP LOCKED
    ) AS t
), renewed AS (
    UPDATE public.tasks AS t
    SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
    FROM locked AS l
    WHERE t.id = ANY (ARRAY(SELECT id FROM locked)) AND t.id = l.id
    RETURNING t.id, t.claim_token
)
SELECT c.id, c.token, r.id IS NOT NULL AS renewed,
       r.id IS NOT NULL OR EXISTS (
           SELECT 1 FROM public.tasks AS t
           WHERE r.id IS NULL AND t.id = c.id AND t.claim_token = c.token
             AND t.status || '' = 'processing'
       ) AS ours
FROM claims AS c
LEFT JOIN renewed AS r ON r.id = c.id AND r.claim_token = c.token;

-- name: reconcile_claims
-- Rows processing under this worker that it does not hold: a claim committed but its
-- reply never arrived (the connection dropped). Put back at once, attempt given back.
UPDATE public.tasks AS t
SET status = 'pending', attempts = greatest(t.attempts - 1, 0), worker_id = NULL,
    claim_token = NULL, lease_expires_at = NULL, started_at = NULL
WHERE t.status = 'processing' AND t.worker_id = %(worker_id)s
  AND NOT EXISTS (
      SELECT 1 FROM unnest(%(ids)b::uuid[], %(tokens)b::uuid[]) AS k(id, token)
      WHERE k.id = t.id AND k.token = t.claim_token
  )
RETURNING t.id, t.type;

-- name: rescue_expired
-- Tasks whose worker stopped renewing the lease (killed, frozen, partitioned), a
-- margin after the lease ran out, so that an owner back from an outage renews first.
-- The attempt limit is the one fixed when the task was claimed; rows claimed
-- without one (older workers, claim_next_task()) use the handler's or the default.
-- Rows claimed without a lease are presumed lost after 15 minutes.
WITH expired AS (
    SELECT t.id,
           t.attempts >= coalesce(t.attempt_limit, t.max_attempts, limits.max_attempts,
                                  %(default_max_attempts)s)
               AS exhausted
    FROM public.tasks AS t
    LEFT JOIN unnest(%(types)s::text[], %(max_attempts)s::integer[])
              AS limits(type, max_attempts) ON limits.type = t.type
    WHERE t.status = 'processing'
      AND coalesce(t.lease_expires_at,
                   coalesce(t.started_at, t.created_at) + interval '15 minutes')
          < now() - make_interval(secs => %(margin_s)s)
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
    claim_token = NULL,
    lease_expires_at = NULL
FROM expired
WHERE t.id = expired.id
RETURNING t.id, t.type, t.status, t.attempts;

-- name: notify_workers
SELECT pg_notify('listener_tasks', '');

-- name: delete_worker
DELETE FROM listener.workers WHERE id = %(id)s;

-- name: delete_stale_workers
DELETE FROM listener.workers WHERE last_seen_at < now() - make_interval(secs => %(stale_s)s);


-- name: probe
SELECT 1;
