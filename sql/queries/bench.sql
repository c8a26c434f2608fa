-- The benchmark's queries (bench/), loaded by name like the engine's. They run only
-- in databases the benchmark creates and drops itself.

-- name: bench_server_settings
SELECT current_setting('server_version'), current_setting('synchronous_commit'),
       current_setting('fsync'), current_setting('shared_buffers'),
       current_setting('max_connections');

-- name: bench_truncate_tasks
TRUNCATE public.tasks;

-- name: bench_seed_pending
-- Pending no-op tasks, due now, in one statement (one NOTIFY).
INSERT INTO public.tasks (type, payload)
SELECT %(type)s, '{}'::jsonb FROM generate_series(1, %(n)s);

-- name: bench_seed_finished
-- Finished history for the scale item: half completed, half failed, spread over a day.
INSERT INTO public.tasks (type, payload, status, attempts, created_at, run_at, started_at,
                          completed_at, error)
SELECT 'bench.history', '{}'::jsonb,
       CASE WHEN i %% 2 = 0 THEN 'completed' ELSE 'failed' END, 1,
       now() - make_interval(secs => i %% 86400), now() - make_interval(secs => i %% 86400),
       now() - make_interval(secs => i %% 86400), now() - make_interval(secs => i %% 86400),
       CASE WHEN i %% 2 = 0 THEN NULL ELSE 'bench: failed on purpose' END
FROM generate_series(1, %(n)s) AS i;

-- name: bench_vacuum_analyze_tasks
VACUUM (ANALYZE) public.tasks;

-- name: bench_analyze_tasks
ANALYZE public.tasks;

-- name: bench_claim_ids
-- The raw loop's claim: the engine's claim function, returning only the ids.
SELECT id FROM listener.claim_tasks(%(worker_id)s, %(limit)s, NULL, 60);

-- name: bench_drain_window
-- Completed count and the seconds from the first claim to the last completion.
SELECT count(*), extract(epoch FROM max(completed_at) - min(started_at))
FROM public.tasks
WHERE status = 'completed' AND type = %(type)s;

-- name: bench_count_by_status
SELECT count(*) FILTER (WHERE status = 'pending'),
       count(*) FILTER (WHERE status = 'processing'),
       count(*) FILTER (WHERE status = 'completed'),
       count(*) FILTER (WHERE status = 'failed')
FROM public.tasks
WHERE type = %(type)s;

-- name: bench_unfinished_count
-- Cheap from the partial indexes, for polling while a worker drains.
SELECT (SELECT count(*) FROM public.tasks WHERE status = 'pending')
     + (SELECT count(*) FROM public.tasks WHERE status = 'processing');

-- name: bench_any_unfinished
-- For polling while a worker drains: stops at the first row, where a count would
-- visit every pending row's heap tuple, 20 times a second, and slow the drain down.
SELECT EXISTS (SELECT 1 FROM public.tasks WHERE status = 'pending')
    OR EXISTS (SELECT 1 FROM public.tasks WHERE status = 'processing');

-- name: bench_insert_one
-- What a plain-SQL producer does: one row, one transaction.
INSERT INTO public.tasks (type, payload) VALUES (%(type)s, '{}'::jsonb) RETURNING id;

-- name: bench_disable_notify_trigger
ALTER TABLE public.tasks DISABLE TRIGGER tasks_notify_inserted;

-- name: bench_enable_notify_trigger
ALTER TABLE public.tasks ENABLE TRIGGER tasks_notify_inserted;

-- name: bench_claim_one
-- The scale item's probe: the engine's claim query for one task.
SELECT id FROM listener.claim_tasks(%(worker_id)s, 1, NULL, 60);

-- name: bench_complete_one
UPDATE public.tasks SET status = 'completed', completed_at = now()
WHERE id = %(id)s AND status = 'processing';

-- name: bench_completed_between
-- Tasks completed in a wall-clock window (epoch seconds, the producers' clock).
SELECT count(*) FROM public.tasks
WHERE status = 'completed' AND completed_at >= to_timestamp(%(start)s)
  AND completed_at < to_timestamp(%(end)s);

-- name: bench_live_worker_count
SELECT count(*) FROM listener.workers;

-- name: bench_add_pending
-- Like bench_seed_pending, without emptying the table first.
INSERT INTO public.tasks (type, payload)
SELECT %(type)s, '{}'::jsonb FROM generate_series(1, %(n)s);


-- name: complete_tasks
-- The raw loop's completion: the engine's own guards (status, owner), no claim token.
UPDATE public.tasks
SET status = 'completed', completed_at = now(), lease_expires_at = NULL, error = NULL
WHERE id = ANY (%(ids)b::uuid[]) AND status = 'processing' AND worker_id = %(worker_id)s
RETURNING id;

-- name: claim_tasks
-- The bare loop's claim: the shipped claim function, with nothing of the worker's around it.
SELECT id FROM listener.claim_tasks(%(worker_id)s, %(limit)s, NULL, %(lease_s)s);
