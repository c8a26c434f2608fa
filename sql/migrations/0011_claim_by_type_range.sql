-- 0011: the worker's claim walks tasks_claim_type_idx whatever the statistics say.
--
-- 0006 looked each type up with `type = wanted.type`. The planner plans that lookup
-- once for any type (a parameter: 1 / n_distinct of the rows), and once the table was
-- analyzed with a single type pending, both partial indexes promised the claim order
-- equally cheaply: it took tasks_claim_idx and filtered on the type. A type with no
-- due task of its own (a worker runs several) then walked every pending row of the
-- others: a claim of 10 with 1,000,000 pending took 0.8 s (100,000: 50 ms), and the
-- first 5,000 of an analyzed 200,000-task backlog drained at ~700 tasks/s.
-- listener.next_due_in() is rewritten too (below).
--
-- Written as a range on the type, with the type leading the ORDER BY, the lookup's
-- order is one only tasks_claim_type_idx gives (an equality would make the planner
-- drop the type from the ordering as a constant); with sorts disabled for this
-- function every other path costs more than any index walk. Same signature, grants
-- kept (CREATE OR REPLACE); idempotent.

CREATE OR REPLACE FUNCTION listener.claim_batch(
    p_worker_id text,
    p_token uuid,
    p_limit integer,
    p_types text[],
    p_attempt_limits integer[],
    p_lease_s double precision,
    p_concurrency integer[] DEFAULT NULL,  -- per type: at most this many processing
    p_rate_counts integer[] DEFAULT NULL,  -- per type: at most this many starts ...
    p_rate_windows_s integer[] DEFAULT NULL  -- ... in any window of this many seconds
) RETURNS TABLE (task public.tasks, outlook jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    caps integer[] := array_fill(greatest(p_limit, 0), ARRAY[cardinality(p_types)]);
    claimed_count integer;
    i integer;
BEGIN
    FOR i IN 1 .. cardinality(p_types) LOOP
        CONTINUE WHEN p_concurrency[i] IS NULL AND p_rate_counts[i] IS NULL;
        PERFORM pg_advisory_xact_lock(1920462052, hashtext(p_types[i]));
        IF p_rate_counts[i] IS NOT NULL THEN
            DELETE FROM listener.rate_starts
            WHERE type = p_types[i]
              AND started_at <= now() - make_interval(secs => p_rate_windows_s[i]);
        END IF;
        caps[i] := least(caps[i], listener.limit_room(p_types[i], p_concurrency[i],
                                                      p_rate_counts[i], p_rate_windows_s[i]));
    END LOOP;

    RETURN QUERY
    WITH claimed AS (
        UPDATE public.tasks AS t
        SET status = 'processing',
            started_at = now(),
            attempts = least(t.attempts + 1, 1000),
            worker_id = p_worker_id,
            claim_token = p_token,
            attempt_limit = coalesce(t.max_attempts,
                                     p_attempt_limits[array_position(p_types, t.type)]),
            lease_expires_at = now() + make_interval(secs => p_lease_s),
            error = NULL
        WHERE t.id = ANY (ARRAY(
            SELECT due.id
            FROM unnest(p_types, caps) AS wanted(type, cap)
            CROSS JOIN LATERAL (
                SELECT tasks.id, tasks.priority, tasks.run_at
                FROM public.tasks
                WHERE tasks.status = 'pending'
                  AND tasks.type >= wanted.type AND tasks.type <= wanted.type
                  AND tasks.run_at <= now()
                ORDER BY tasks.type, tasks.priority DESC, tasks.run_at, tasks.id
                LIMIT wanted.cap
                FOR NO KEY UPDATE SKIP LOCKED
            ) AS due
            ORDER BY due.priority DESC, due.run_at, due.id
            LIMIT greatest(p_limit, 0)
        ))
        RETURNING t AS row
    ), started AS (
        INSERT INTO listener.rate_starts (type, started_at)
        SELECT (claimed.row).type, now() FROM claimed
        WHERE p_rate_counts[array_position(p_types, (claimed.row).type)] IS NOT NULL
    )
    SELECT claimed.row, NULL::jsonb FROM claimed
    ORDER BY (claimed.row).priority DESC, (claimed.row).run_at, (claimed.row).id;

    GET DIAGNOSTICS claimed_count = ROW_COUNT;
    IF claimed_count < p_limit THEN
        -- Short: tell the worker when to look again (database clock), and which types
        -- the limits hold back now (with due tasks waiting), counting this claim's own.
        RETURN QUERY SELECT NULL::public.tasks, jsonb_build_object(
            'next_due_in_s', listener.next_due_in(p_types),
            'throttled', (
                SELECT coalesce(jsonb_object_agg(held.type, held.why), '{}')
                FROM (
                    SELECT l.type, CASE
                        WHEN l.concurrency IS NOT NULL
                             AND listener.limit_room(l.type, l.concurrency, NULL, NULL) = 0
                        THEN jsonb_build_object('reason', 'global_concurrency')
                        WHEN l.rate_count IS NOT NULL
                             AND listener.limit_room(l.type, NULL, l.rate_count, l.window_s) = 0
                        THEN jsonb_build_object(
                            'reason', 'rate_limit',
                            -- the next start is allowed when the oldest leaves the window
                            'reopens_in_s', (
                                SELECT extract(epoch FROM min(r.started_at)
                                               + make_interval(secs => l.window_s) - now())
                                FROM listener.rate_starts AS r
                                WHERE r.type = l.type
                                  AND r.started_at > now() - make_interval(secs => l.window_s)))
                        END AS why
                    FROM unnest(p_types, p_concurrency, p_rate_counts, p_rate_windows_s)
                         AS l(type, concurrency, rate_count, window_s)
                    WHERE (l.concurrency IS NOT NULL OR l.rate_count IS NOT NULL)
                      AND EXISTS (SELECT 1 FROM public.tasks
                                  WHERE status = 'pending'
                                    AND type >= l.type AND type <= l.type
                                    AND run_at <= now())
                ) AS held
                WHERE held.why IS NOT NULL));
    END IF;
END;
$$;

-- When the next task is due, asked whenever a claim comes back short. It walks each
-- type's priority levels with an equality on the type (a range would make every step
-- read the whole type), so its plans are made for each call's own types
-- (force_custom_plan: the statistics then know an absent type is absent), and each
-- step below the first level is its own statement so that `priority < level` bounds
-- the index scan instead of filtering it (0006's `level IS NULL OR ...` read every
-- row of a type whose tasks share one priority: 0.9 s with 1,000,000 pending).
CREATE OR REPLACE FUNCTION listener.next_due_in(p_types text[])
RETURNS double precision
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public
SET enable_seqscan = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
DECLARE
    task_type text;
    level smallint;
    due timestamptz;
    soonest timestamptz;
BEGIN
    FOREACH task_type IN ARRAY p_types LOOP
        SELECT priority INTO level FROM public.tasks
        WHERE status = 'pending' AND type = task_type
        ORDER BY priority DESC
        LIMIT 1;
        WHILE FOUND LOOP
            SELECT run_at INTO due FROM public.tasks
            WHERE status = 'pending' AND type = task_type AND priority = level
              AND run_at > now()
            ORDER BY priority DESC, run_at
            LIMIT 1;
            IF FOUND AND (soonest IS NULL OR due < soonest) THEN
                soonest := due;
            END IF;
            SELECT priority INTO level FROM public.tasks
            WHERE status = 'pending' AND type = task_type AND priority < level
            ORDER BY priority DESC
            LIMIT 1;
        END LOOP;
    END LOOP;
    RETURN extract(epoch FROM soonest - now());
END;
$$;

REVOKE ALL ON FUNCTION listener.next_due_in(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.claim_batch(text, uuid, integer, text[], integer[],
                                            double precision, integer[], integer[],
                                            integer[]) FROM PUBLIC;
