-- Operator commands: retry, cancel, prune, list. Loaded by listener.admin.
-- A selection is exactly one of: ids, types, or all (listener.admin.Selection
-- refuses anything else), so the OR below never mixes two kinds.

-- name: admin_retry_preview
-- Failed tasks a retry would move, per type. A failed task whose dedupe key is
-- now held by an unfinished task (or by a newer failed twin) is blocked: moving
-- it back to pending would break the one-unfinished-task-per-key rule.
WITH matched AS (
    SELECT t.id, t.type,
           t.dedupe_key IS NOT NULL AND (
               row_number() OVER (PARTITION BY t.dedupe_key
                                  ORDER BY t.completed_at DESC NULLS LAST, t.id) > 1
               OR EXISTS (SELECT 1 FROM public.tasks AS o
                          WHERE o.dedupe_key = t.dedupe_key
                            AND o.status IN ('pending', 'processing'))
           ) AS blocked
    FROM public.tasks AS t
    WHERE t.status = 'failed'
      AND (%(all)s OR t.id = ANY (%(ids)s::uuid[]) OR t.type = ANY (%(types)s::text[]))
)
SELECT type,
       count(*) FILTER (WHERE NOT blocked) AS movable,
       coalesce(array_agg(id) FILTER (WHERE NOT blocked AND id = ANY (%(ids)s::uuid[])), '{}')
           AS named,
       count(*) FILTER (WHERE blocked) AS blocked
FROM matched
GROUP BY type
ORDER BY type;

-- name: admin_retry_apply
-- Back to pending with a fresh set of attempts, due now. The final
-- `t.status = 'failed'` is re-checked after a concurrent writer commits.
WITH matched AS (
    SELECT t.id,
           t.dedupe_key IS NOT NULL AND (
               row_number() OVER (PARTITION BY t.dedupe_key
                                  ORDER BY t.completed_at DESC NULLS LAST, t.id) > 1
               OR EXISTS (SELECT 1 FROM public.tasks AS o
                          WHERE o.dedupe_key = t.dedupe_key
                            AND o.status IN ('pending', 'processing'))
           ) AS blocked
    FROM public.tasks AS t
    WHERE t.status = 'failed'
      AND (%(all)s OR t.id = ANY (%(ids)s::uuid[]) OR t.type = ANY (%(types)s::text[]))
), retried AS (
    UPDATE public.tasks AS t
    SET status = 'pending', attempts = 0, error = NULL, completed_at = NULL,
        started_at = NULL, run_at = now(), worker_id = NULL, lease_expires_at = NULL
    FROM matched
    WHERE t.id = matched.id AND NOT matched.blocked AND t.status = 'failed'
    RETURNING t.id, t.type
)
SELECT type, count(*) AS count,
       coalesce(array_agg(id) FILTER (WHERE id = ANY (%(ids)s::uuid[])), '{}') AS named
FROM retried
GROUP BY type
ORDER BY type;

-- name: admin_cancel_preview
SELECT type, count(*) AS count,
       coalesce(array_agg(id) FILTER (WHERE id = ANY (%(ids)s::uuid[])), '{}') AS named
FROM public.tasks
WHERE status = 'pending'
  AND (%(all)s OR id = ANY (%(ids)s::uuid[]) OR type = ANY (%(types)s::text[]))
GROUP BY type
ORDER BY type;

-- name: admin_cancel_apply
-- A worker's claim locks with SKIP LOCKED: a row it holds is re-checked here
-- (status = 'pending' fails) and left alone; a row we hold is skipped by it.
WITH cancelled AS (
    UPDATE public.tasks
    SET status = 'cancelled', completed_at = now(), error = 'cancelled by an operator'
    WHERE status = 'pending'
      AND (%(all)s OR id = ANY (%(ids)s::uuid[]) OR type = ANY (%(types)s::text[]))
    RETURNING id, type
)
SELECT type, count(*) AS count,
       coalesce(array_agg(id) FILTER (WHERE id = ANY (%(ids)s::uuid[])), '{}') AS named
FROM cancelled
GROUP BY type
ORDER BY type;

-- name: admin_task_statuses
SELECT id, status FROM public.tasks WHERE id = ANY (%(ids)s::uuid[]);

-- name: admin_cutoff
SELECT now() - %(older_than)s::interval;

-- name: admin_prune_preview
SELECT status, count(*) AS count
FROM public.tasks
WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < %(cutoff)s
GROUP BY status
ORDER BY status;

-- name: admin_prune_batch
-- One short transaction per batch, found through tasks_finished_idx; rows a
-- concurrent writer holds are skipped, not waited for.
WITH doomed AS (
    SELECT id
    FROM public.tasks
    WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < %(cutoff)s
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM public.tasks AS t
    USING doomed
    WHERE t.id = doomed.id
    RETURNING t.status
)
SELECT status, count(*) AS count FROM deleted GROUP BY status ORDER BY status;

-- name: admin_list_tasks
-- The payload leaves the database only when asked for (it may hold personal data).
SELECT id, type, status, attempts, max_attempts, priority, created_at, run_at,
       started_at, completed_at, worker_id, lease_expires_at, dedupe_key, error,
       CASE WHEN %(with_payload)s THEN payload END AS payload
FROM public.tasks
WHERE (%(statuses)s::text[] IS NULL OR status = ANY (%(statuses)s::text[]))
  AND (%(types)s::text[] IS NULL OR type = ANY (%(types)s::text[]))
  AND (%(older_than)s::interval IS NULL OR created_at < now() - %(older_than)s::interval)
  AND (%(newer_than)s::interval IS NULL OR created_at >= now() - %(newer_than)s::interval)
ORDER BY created_at DESC, id
LIMIT %(limit)s;
