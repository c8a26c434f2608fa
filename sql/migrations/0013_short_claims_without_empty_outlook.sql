-- 0013: a short claim with nothing to tell sends no outlook row.
--
-- A trickle's claim (one task, no limits, nothing scheduled) ended with an outlook row
-- that said nothing: {"next_due_in_s": null, "throttled": null}. Building it cost the
-- server ~25 us and the worker as much to decode, on the path from a NOTIFY to a
-- handler's start (pickup latency, docs/benchmarks.md). Now a claim that took tasks
-- ends with the outlook only when it has something in it: a type with pending tasks
-- (when the next one is due) or a limited type; the worker knows a claim came back
-- short from its size. A claim that took nothing still ends with the outlook, so
-- workers from before this migration, which take a claim without one as full, claim
-- once more and stop there. Same signature, grants kept; idempotent.

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
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    caps integer[] := array_fill(greatest(p_limit, 0), ARRAY[cardinality(p_types)]);
    claimed_count integer;
    i integer;
    limited boolean := false;  -- some type has a limit: report what they hold back
    pending_types text[];
BEGIN
    FOR i IN 1 .. cardinality(p_types) LOOP
        CONTINUE WHEN p_concurrency[i] IS NULL AND p_rate_counts[i] IS NULL;
        limited := true;
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
        -- next_due_in plans each call: asked only about types with pending tasks.
        -- With nothing to tell (no pending task, no limit) a claim that took tasks
        -- ends without the outlook row: the worker knows it came back short.
        pending_types := ARRAY(
            SELECT w.type FROM unnest(p_types) AS w(type)
            WHERE EXISTS (SELECT 1 FROM public.tasks
                          WHERE status = 'pending'
                            AND type >= w.type AND type <= w.type
                          ORDER BY type, priority DESC, run_at, id
                          LIMIT 1));
        IF claimed_count > 0 AND NOT limited AND cardinality(pending_types) = 0 THEN
            RETURN;
        END IF;
        RETURN QUERY SELECT NULL::public.tasks, jsonb_build_object(
            'next_due_in_s', CASE WHEN cardinality(pending_types) > 0
                                  THEN listener.next_due_in(pending_types) END,
            'throttled', CASE WHEN limited THEN (
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
                WHERE held.why IS NOT NULL) END);
    END IF;
END;
$$;

REVOKE ALL ON FUNCTION listener.claim_batch(text, uuid, integer, text[], integer[],
                                            double precision, integer[], integer[],
                                            integer[]) FROM PUBLIC;
