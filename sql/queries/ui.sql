-- The dashboard's queries (`listener ui`), run by listener.store.ui only.
-- Each is one short statement on an autocommit connection, over an index, and
-- bounded however many rows the table holds (tests/integration/test_ui_performance.py).
-- Listings walk an index in the page's order from a keyset cursor and look at no
-- more than %(budget)s rows per page: a filter that matches few rows yields a
-- short page that says where to continue, never a scan of the whole table.

-- name: ui_session_settings
-- Every pooled connection: short statements, no lock waits, no idle
-- transactions, UTC, no JIT, and read-only when the dashboard has no actions.
SELECT set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, false),
       set_config('default_transaction_read_only', %(read_only)s, false),
       set_config('TimeZone', 'UTC', false),
       -- JIT compiles a plan whose estimated cost is high, which on a table never
       -- analysed can be any of these short queries: ~100 ms spent compiling.
       set_config('jit', 'off', false);

-- name: ui_throughput
-- Tasks finished per minute over the last hour, with the 95th percentile of their
-- pickup delay (due -> claimed), from tasks_finished_idx.
SELECT date_trunc('minute', completed_at) AS minute,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       percentile_cont(0.95) WITHIN GROUP (
           ORDER BY greatest(extract(epoch FROM started_at - run_at), 0)::float8
       ) AS pickup_p95_s
FROM public.tasks
WHERE status IN ('completed', 'failed')
  AND completed_at >= date_trunc('minute', now()) - interval '59 minutes'
GROUP BY 1
ORDER BY 1;

-- name: ui_pickup_delay
-- Due -> claimed for the tasks finished in the last five minutes and those
-- running now (tasks_finished_idx, tasks_lease_idx), and the database's clock.
WITH recent AS (
    SELECT started_at - run_at AS delay
    FROM public.tasks
    WHERE status IN ('completed', 'failed')
      AND completed_at >= now() - interval '5 minutes'
      AND started_at IS NOT NULL
    UNION ALL
    SELECT started_at - run_at
    FROM public.tasks
    WHERE status = 'processing' AND started_at IS NOT NULL
), seconds AS (
    SELECT greatest(extract(epoch FROM delay), 0)::float8 AS s FROM recent
)
SELECT now() AS now,
       count(*) AS sampled,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s) AS p95_s,
       max(s) AS max_s
FROM seconds;

-- name: ui_oldest_due_pending
SELECT id, type, run_at, extract(epoch FROM now() - run_at)::float8 AS age_s
FROM public.tasks
WHERE status = 'pending' AND run_at <= now()
ORDER BY run_at, id
LIMIT 1;

-- name: ui_worker_types
-- Types the workers seen in the last day handle: suggestions for the type filter.
SELECT DISTINCT unnest(types) AS type
FROM listener.workers
WHERE last_seen_at >= now() - interval '1 day'
ORDER BY 1;

-- name: ui_tasks_pending
-- Pending tasks in claim order (tasks_claim_idx). The cursor is the last row
-- seen (priority, run_at, id); "after it" in an order that mixes DESC and ASC is
-- the rest of its priority, then every lower priority. A first page starts at
-- priority 32767 (the smallint maximum). `n` counts the rows looked at: the row
-- at n = budget comes back whatever the filter says, to continue from.
SELECT *
FROM (
    SELECT s.*, row_number() OVER (ORDER BY s.priority DESC, s.run_at, s.id) AS n,
           (%(type)s::text IS NULL OR s.type = %(type)s)
           AND s.run_at >= %(since)s AND s.run_at < %(until)s AS match
    FROM (
        (SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
                started_at, completed_at, worker_id, dedupe_key, error
         FROM public.tasks
         WHERE status = 'pending' AND priority = %(priority)s
           AND (run_at, id) > (%(run_at)s, %(id)s)
         ORDER BY priority DESC, run_at, id
         LIMIT %(budget)s)
        UNION ALL
        (SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
                started_at, completed_at, worker_id, dedupe_key, error
         FROM public.tasks
         WHERE status = 'pending' AND priority < %(priority)s
         ORDER BY priority DESC, run_at, id
         LIMIT %(budget)s)
        ORDER BY priority DESC, run_at, id
        LIMIT %(budget)s
    ) AS s
) AS w
WHERE match OR n = %(budget)s
LIMIT %(limit)s + 1;

-- name: ui_tasks_processing
-- Running tasks, longest running first (tasks_lease_idx: at most the workers'
-- total concurrency, so sorting them is cheap). A claim always sets started_at;
-- created_at stands in for it on rows claimed by something else.
SELECT *
FROM (
    SELECT s.*, row_number() OVER (ORDER BY s.started_at, s.id) AS n,
           (%(type)s::text IS NULL OR s.type = %(type)s)
           AND s.started_at >= %(since)s AND s.started_at < %(until)s AS match
    FROM (
        SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
               coalesce(started_at, created_at) AS started_at, completed_at, worker_id,
               dedupe_key, error
        FROM public.tasks
        WHERE status = 'processing'
          AND (coalesce(started_at, created_at), id) > (%(started_at)s, %(id)s)
        ORDER BY coalesce(started_at, created_at), id
        LIMIT %(budget)s
    ) AS s
) AS w
WHERE match OR n = %(budget)s
LIMIT %(limit)s + 1;

-- name: ui_tasks_finished
-- Completed, failed or cancelled tasks, newest first: tasks_finished_idx for
-- completed, tasks_failed_cancelled_idx for the other two. The cursor is the last
-- row seen (completed_at, id); a first page starts at ('infinity', max uuid).
SELECT *
FROM (
    SELECT s.*, row_number() OVER (ORDER BY s.completed_at DESC, s.id DESC) AS n,
           (%(type)s::text IS NULL OR s.type = %(type)s) AS match
    FROM (
        SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
               started_at, completed_at, worker_id, dedupe_key, error
        FROM public.tasks
        WHERE status = %(status)s
          AND status IN ('completed', 'failed', 'cancelled')
          AND (completed_at, id) < (%(completed_at)s, %(id)s)
          AND completed_at >= %(since)s AND completed_at < %(until)s
        ORDER BY completed_at DESC, id DESC
        LIMIT %(budget)s
    ) AS s
) AS w
WHERE match OR n = %(budget)s
LIMIT %(limit)s + 1;

-- name: ui_tasks_by_dedupe_key
-- Every task that holds or held a dedupe key: the unfinished one through
-- tasks_dedupe_key_idx, finished ones through tasks_finished_dedupe_key_idx.
(SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
        started_at, completed_at, worker_id, dedupe_key, error
 FROM public.tasks
 WHERE dedupe_key = %(dedupe_key)s AND status IN ('pending', 'processing'))
UNION ALL
(SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
        started_at, completed_at, worker_id, dedupe_key, error
 FROM public.tasks
 WHERE dedupe_key = %(dedupe_key)s AND status IN ('completed', 'failed', 'cancelled')
 ORDER BY completed_at DESC, id DESC
 LIMIT %(limit)s);

-- name: ui_task
-- One task by id. The payload leaves the database only when asked for; otherwise
-- only its keys, each with its JSON type and size, and its size in bytes.
SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
       started_at, completed_at, worker_id, lease_expires_at, dedupe_key, error,
       now() AS now,
       pg_column_size(payload) AS payload_bytes,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(
                    key, jsonb_typeof(value),
                    CASE jsonb_typeof(value)
                        WHEN 'object' THEN (SELECT count(*) FROM jsonb_object_keys(value))
                        WHEN 'array' THEN jsonb_array_length(value)
                        WHEN 'string' THEN char_length(value #>> '{}')
                    END) ORDER BY key), '[]'::jsonb)
        FROM jsonb_each(payload)) AS payload_keys,
       CASE WHEN %(with_payload)s THEN payload END AS payload
FROM public.tasks
WHERE id = %(id)s;

-- name: ui_prefer_index_order
-- For the one statement after it, in its transaction: on a table never analysed
-- the planner guesses a status holds a few thousand rows and plans to read and
-- sort all of them (750 ms at 2,000,000 finished rows) instead of walking
-- tasks_finished_idx in order and stopping at the page's end (1 ms).
SELECT set_config('enable_sort', 'off', true);

-- name: ui_now
SELECT now();
