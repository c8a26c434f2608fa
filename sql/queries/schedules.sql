-- Schedules and published limits: the scheduler's queries and `listener status`'s.
-- Run only by listener.store.schedules.

-- name: database_now
-- The scheduler's clock: worker clocks may be skewed, the database's is shared.
SELECT clock_timestamp();

-- name: schedules_register
-- One row per scheduled type; an existing row keeps its history (last run).
INSERT INTO listener.schedules (type, schedule, next_run_at)
SELECT type, schedule, next_run_at
FROM unnest(%(types)s::text[], %(schedules)s::text[], %(next_run_ats)s::timestamptz[])
     AS new(type, schedule, next_run_at)
ON CONFLICT (type) DO UPDATE
SET schedule = excluded.schedule, next_run_at = excluded.next_run_at, updated_at = now();

-- name: schedules_publish_worker
-- What this worker's types are configured with, for `listener status`. A no-op
-- when nothing changed (it runs on every scheduler wake-up, and after the presence
-- loop re-creates a swept row the columns start again from their defaults).
UPDATE listener.workers
SET limits = %(limits)s::jsonb, schedules = %(schedules)s::jsonb
WHERE id = %(worker_id)s
  AND (limits IS DISTINCT FROM %(limits)s::jsonb OR schedules IS DISTINCT FROM %(schedules)s::jsonb);

-- name: schedule_enqueue
-- Enqueue one instant's task, once fleet-wide: the row lock serialises workers
-- that wake for the same instant, and the loser re-reads the row (READ COMMITTED)
-- and finds the instant taken. Returns the task's id and the previous baseline
-- (the last instant enqueued, else when the schedule was first registered), or
-- no row when the instant was already enqueued (or is older than the last one).
WITH previous AS (
    SELECT type, coalesce(last_enqueued_for, registered_at) AS baseline
    FROM listener.schedules
    WHERE type = %(type)s
    FOR NO KEY UPDATE
), advanced AS (
    UPDATE listener.schedules AS s
    SET last_enqueued_for = %(instant)s, last_task_id = %(task_id)s,
        next_run_at = %(next_run_at)s, updated_at = now()
    FROM previous
    WHERE s.type = previous.type AND previous.baseline < %(instant)s
    RETURNING s.type, previous.baseline
), inserted AS (
    INSERT INTO public.tasks (id, type, payload, run_at)
    SELECT %(task_id)s, type, jsonb_build_object('scheduled_for', %(scheduled_for)s::text),
           %(instant)s
    FROM advanced
    RETURNING id
)
SELECT inserted.id, advanced.baseline FROM inserted, advanced;

-- name: schedule_baselines
-- The newest instant each schedule has had (or when it was registered).
SELECT type, coalesce(last_enqueued_for, registered_at)
FROM listener.schedules
WHERE type = ANY (%(types)s::text[]);

-- name: status_schedules
-- Every schedule, with whether a live worker still runs it.
SELECT s.type, s.schedule, s.last_enqueued_for, s.last_task_id, s.next_run_at,
       EXISTS (
           SELECT 1 FROM listener.workers AS w
           WHERE w.last_seen_at >= now() - make_interval(secs => %(stale_s)s)
             AND w.schedules ? s.type
       ) AS active
FROM listener.schedules AS s
ORDER BY s.type;

-- name: status_limits
-- Each limited type (as live workers publish it), how many run now (processing
-- with a live lease: tasks_lease_idx) and how many started in the current rate
-- window (the last window_s seconds; a task counts once, at its latest start).
WITH published AS (
    SELECT l.key AS type, l.value AS limits
    FROM listener.workers AS w, jsonb_each(w.limits) AS l
    WHERE w.last_seen_at >= now() - make_interval(secs => %(stale_s)s)
), merged AS (
    SELECT type,
           min((limits ->> 'global_concurrency')::integer) AS global_concurrency,
           count(DISTINCT limits ->> 'global_concurrency') AS global_variants,
           array_agg(DISTINCT limits -> 'rate_limit') FILTER (
               WHERE jsonb_typeof(limits -> 'rate_limit') = 'object'
           ) AS rate_limits
    FROM published
    GROUP BY type
)
SELECT m.type, m.global_concurrency, m.global_variants, m.rate_limits,
       (SELECT count(*) FROM public.tasks AS t
        WHERE t.status = 'processing' AND t.type = m.type AND t.lease_expires_at > now())
           AS running
FROM merged AS m
ORDER BY m.type;

-- name: status_rate_window_starts
-- Tasks of a type started in the last window_s seconds, in any state: running,
-- finished since (tasks_finished_idx), or back to pending for a retry.
SELECT (SELECT count(*) FROM public.tasks
        WHERE status = 'processing' AND type = %(type)s
          AND started_at >= now() - make_interval(secs => %(window_s)s))
     + (SELECT count(*) FROM public.tasks
        WHERE status IN ('completed', 'failed', 'cancelled') AND type = %(type)s
          AND completed_at >= now() - make_interval(secs => %(window_s)s)
          AND started_at >= now() - make_interval(secs => %(window_s)s))
     + (SELECT count(*) FROM public.tasks
        WHERE status = 'pending' AND type = %(type)s AND started_at IS NOT NULL
          AND started_at >= now() - make_interval(secs => %(window_s)s));
