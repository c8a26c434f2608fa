-- 0005: the claim as PL/pgSQL, so that its plan is cached per session.
--
-- A LANGUAGE sql function that cannot be inlined (it updates, and it pins
-- search_path) is parsed and planned again on every call. For a worker that
-- claims on every notification that was a third of a one-task claim's round
-- trip (p50 2.3 ms -> 1.5 ms here; docs/benchmarks.md, pickup latency).
-- PL/pgSQL keeps the prepared plan for the session. Same signature, body and
-- rows as 0003, so grants are kept and callers see no difference; idempotent.

CREATE OR REPLACE FUNCTION listener.claim_tasks(
    p_worker_id text,
    p_limit integer,
    p_types text[] DEFAULT NULL,
    p_lease_s double precision DEFAULT 60
) RETURNS SETOF public.tasks
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    RETURN QUERY
    UPDATE public.tasks AS t
    SET status = 'processing',
        started_at = now(),
        attempts = t.attempts + 1,
        worker_id = p_worker_id,
        lease_expires_at = now() + make_interval(secs => coalesce(p_lease_s, 60)),
        error = NULL
    WHERE t.id = ANY (ARRAY(
        SELECT tasks.id
        FROM public.tasks
        WHERE tasks.status = 'pending'
          AND tasks.run_at <= now()
          AND (p_types IS NULL OR tasks.type = ANY (p_types))
        ORDER BY tasks.priority DESC, tasks.run_at, tasks.id
        LIMIT greatest(p_limit, 0)  -- NULL or negative claims nothing, never everything
        FOR NO KEY UPDATE SKIP LOCKED
    ))
    RETURNING t.*;
END;
$$;
