-- 0003: claim by primary key.
--
-- Inside a SQL function the claim is planned generically: LIMIT p_limit is
-- unknown, so the planner expected 10% of the table and joined the locked ids
-- back with a hash join over a sequential scan of all of tasks, on every claim
-- (44 ms for 100 of 50,000 pending rows; docs/benchmarks.md). Passing the
-- locked ids as an array makes the UPDATE look each one up by primary key
-- (2 ms for the same claim). Same signature, so grants are kept; idempotent.

CREATE OR REPLACE FUNCTION listener.claim_tasks(
    p_worker_id text,
    p_limit integer,
    p_types text[] DEFAULT NULL,
    p_lease_s double precision DEFAULT 60
) RETURNS SETOF public.tasks
LANGUAGE sql
SET search_path = pg_catalog, public
AS $$
    UPDATE public.tasks AS t
    SET status = 'processing',
        started_at = now(),
        attempts = t.attempts + 1,
        worker_id = p_worker_id,
        lease_expires_at = now() + make_interval(secs => coalesce(p_lease_s, 60)),
        error = NULL
    WHERE t.id = ANY (ARRAY(
        SELECT id
        FROM public.tasks
        WHERE status = 'pending'
          AND run_at <= now()
          AND (p_types IS NULL OR type = ANY (p_types))
        ORDER BY priority DESC, run_at, id
        LIMIT greatest(p_limit, 0)  -- NULL or negative claims nothing, never everything
        FOR NO KEY UPDATE SKIP LOCKED
    ))
    RETURNING t.*;
$$;
