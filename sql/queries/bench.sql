-- The benchmark's queries (bench/), loaded by name like the engine's. They run only
-- in databases the benchmark creates and drops itself.

-- name: bench_server_settings
SELECT current_setting('server_version'), current_setting('synchronous_commit'),
       current_setting('fsync'), current_setting('shared_buffers'),
       current_setting('max_connections'), current_setting('autovacuum');

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
SELECT /* bench harness */ EXISTS (SELECT 1 FROM public.tasks WHERE status = 'pending')
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

-- name: bench_drain_halves
-- A drain read from the database: completed count, seconds from the first claim to
-- the last completion, and seconds from the median completion to the last (the
-- second half of a burn-down).
SELECT count(*), extract(epoch FROM max(completed_at) - min(started_at)),
       extract(epoch FROM max(completed_at)
                          - percentile_disc(0.5) WITHIN GROUP (ORDER BY completed_at))
FROM public.tasks
WHERE status = 'completed' AND type = %(type)s;

-- name: bench_fewer_completed_than
-- Not yet n tasks finished? Walks the finished-tasks index, n rows at most.
SELECT /* bench harness */ NOT EXISTS (
    SELECT 1 FROM public.tasks
    WHERE status IN ('completed', 'failed', 'cancelled')
    ORDER BY completed_at
    OFFSET (%(n)s - 1) LIMIT 1
);

-- name: bench_first_completions
-- Seconds from the first claim to the n-th completion (the head of a large backlog).
SELECT extract(epoch FROM
    (SELECT completed_at FROM public.tasks
     WHERE status = 'completed' AND type = %(type)s
     ORDER BY completed_at OFFSET (%(n)s - 1) LIMIT 1)
  - (SELECT min(started_at) FROM public.tasks WHERE type = %(type)s));

-- name: bench_backends
-- Sessions connected to one database (read from another one).
SELECT count(*) FROM pg_stat_activity WHERE datname = %(dbname)s;

-- name: bench_database_commits
SELECT xact_commit FROM pg_stat_database WHERE datname = %(dbname)s;

-- name: bench_statements_preloaded
SELECT 'pg_stat_statements' = ANY (
    string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','));

-- name: bench_create_pg_stat_statements
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- name: bench_reset_statements
-- This database's entries only: other databases on the server keep theirs.
SELECT pg_stat_statements_reset(
    0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0);

-- name: bench_statement_calls
-- Top-level statements run in this database since the reset, the harness's own left out.
SELECT query, calls, total_exec_time FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%%pg_stat_statements_reset%%'
  AND query NOT LIKE '%%bench harness%%'
ORDER BY calls DESC, query;

-- name: bench_load_auto_explain
-- Session-local: loads the module into this backend only, no server setting changes.
LOAD 'auto_explain';

-- name: bench_auto_explain_on
-- The plans of statements run inside functions (the claim is PL/pgSQL), sent to
-- this client as NOTICEs, for this session only.
SELECT set_config('auto_explain.log_min_duration', '0', false),
       set_config('auto_explain.log_analyze', 'on', false),
       set_config('auto_explain.log_buffers', 'on', false),
       set_config('auto_explain.log_timing', 'on', false),
       set_config('auto_explain.log_nested_statements', 'on', false),
       set_config('auto_explain.log_level', 'notice', false);

-- name: bench_auto_explain_off
SELECT set_config('auto_explain.log_min_duration', '-1', false);

-- name: bench_add_pending_typed
-- Pending tasks of one type, added after whatever is already pending (claimed later).
INSERT INTO public.tasks (type, payload)
SELECT %(type)s, '{}'::jsonb FROM generate_series(1, %(n)s);

-- Peers' tables, filled and read with plain SQL: a row inserted here is the row
-- their own enqueue would insert (the columns left out take their defaults).

-- name: bench_analyze_pgqueuer
ANALYZE public.pgqueuer;

-- name: bench_analyze_procrastinate
ANALYZE public.procrastinate_jobs;

-- name: bench_analyze_oban
ANALYZE public.oban_jobs;

-- name: bench_pgqueuer_insert_one
-- One PgQueuer job, one transaction; its statement trigger sends the NOTIFY.
INSERT INTO public.pgqueuer (priority, entrypoint, status)
VALUES (0, %(type)s, 'queued')
RETURNING id;

-- name: bench_oban_fill
-- Available Oban jobs in one statement; the stager (every second) wakes the queue.
INSERT INTO public.oban_jobs (worker, queue, args)
SELECT %(worker)s, 'default', '{}'::jsonb FROM generate_series(1, %(n)s);

-- name: bench_oban_insert_one
-- One Oban job, one transaction, and the notification Oban's own insert sends
-- (channel "<prefix>.oban_insert", payload naming the queue).
WITH inserted AS (
    INSERT INTO public.oban_jobs (worker, queue, args)
    VALUES (%(type)s, 'default', '{}'::jsonb)
    RETURNING id, queue
)
SELECT id, pg_notify('public.oban_insert', json_build_object('queue', queue)::text)
FROM inserted;

-- name: bench_oban_any_unfinished
SELECT /* bench harness */ EXISTS (
    SELECT 1 FROM public.oban_jobs WHERE state IN ('available', 'executing'));

-- name: bench_oban_drain_halves
-- Like bench_drain_halves, for Oban's table (attempted_at is its claim time).
SELECT count(*), extract(epoch FROM max(completed_at) - min(attempted_at)),
       extract(epoch FROM max(completed_at)
                          - percentile_disc(0.5) WITHIN GROUP (ORDER BY completed_at))
FROM public.oban_jobs
WHERE state = 'completed';

-- name: bench_truncate_pgqueuer
TRUNCATE public.pgqueuer;

-- name: bench_truncate_oban
TRUNCATE public.oban_jobs;

-- name: bench_tasks_tuples
-- The tasks table as the planner and the statistics see it.
SELECT s.n_live_tup, s.n_dead_tup, s.last_analyze, c.reltuples
FROM pg_stat_user_tables AS s
JOIN pg_class AS c ON c.oid = s.relid
WHERE s.relid = 'public.tasks'::regclass;

-- name: bench_add_rate_starts
-- A busy rate window: n recent starts of the benchmark's type.
INSERT INTO listener.rate_starts (type, started_at)
SELECT 'bench.noop', now() - make_interval(secs => i / 100.0)
FROM generate_series(1, %(n)s) AS i;
