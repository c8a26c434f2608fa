-- 0006: claim identity, attempt limits fixed at claim time, payloads a worker can decode.
--
-- * Every claim writes a token (claim_token). Every later write of the engine -- the
--   outcome, a lease renewal, a release -- names (id, claim_token), so a late write of
--   attempt N can never touch attempt N+1, even inside one worker process.
-- * attempt_limit: the task's effective max attempts (its own, else its handler's,
--   else the worker's default), fixed by the worker that claims it. Every rescuer
--   applies that limit, not its own --max-attempts.
-- * Payloads are refused at insert (and on a change of payload) when they are nested
--   deeper than 64 levels or larger than 1 MiB as JSON text. The old size CHECK
--   measures the stored, possibly compressed, size: a value copied from a compressed
--   one passed it at 100 MB. A trigger, not a CHECK: a CHECK is re-evaluated on every
--   UPDATE of the row (claim, outcome, lease renewal), this runs only when the payload
--   is written. Rows stored before this migration are left alone; the worker refuses
--   to decode an oversized or too deeply nested payload and fails that task alone.
--
-- Idempotent; adds nullable columns (no table rewrite), an index (tasks_claim_type_idx,
-- built once: it reads tasks and blocks writes meanwhile, about a second per million
-- rows), a table, and functions; replaces nothing old.

ALTER TABLE public.tasks
    ADD COLUMN IF NOT EXISTS claim_token uuid,
    ADD COLUMN IF NOT EXISTS attempt_limit integer;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'public.tasks'::regclass AND conname = 'tasks_attempt_limit_valid'
    ) THEN
        ALTER TABLE public.tasks ADD CONSTRAINT tasks_attempt_limit_valid
            CHECK (attempt_limit IS NULL OR attempt_limit BETWEEN 1 AND 1000);
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Payload limits, for every producer: plain SQL, create_task, enqueue_task.
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION listener.check_task_payload()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    size_bytes integer;
BEGIN
    IF NEW.payload IS NULL THEN
        RETURN NEW;
    END IF;
    -- A value 65 levels down means more nesting than any task needs, and more than a
    -- worker should have to decode recursively.
    IF jsonb_path_exists(NEW.payload, 'strict $.**{65}') THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint '
                        '"tasks_payload_depth": the payload is nested deeper than 64 levels'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_payload_depth',
                  TABLE = 'tasks', SCHEMA = 'public';
    END IF;
    size_bytes := octet_length(NEW.payload::text);
    IF size_bytes > 1048576 THEN
        RAISE EXCEPTION 'new row for relation "tasks" violates check constraint '
                        '"tasks_payload_logical_size": the payload is % bytes as JSON text, '
                        'over the 1048576-byte limit', size_bytes
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_payload_logical_size',
                  TABLE = 'tasks', SCHEMA = 'public';
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER tasks_check_payload
    BEFORE INSERT OR UPDATE OF payload ON public.tasks
    FOR EACH ROW
    EXECUTE FUNCTION listener.check_task_payload();

------------------------------------------------------------------------------
-- The worker's claim.
--
-- Per type, through an index on (type, priority, run_at): a worker that runs some
-- types never walks past the backlog of others, and a claim costs the same with a
-- thousand or a million tasks pending. The planner is told to use that index (no
-- bitmap scan and sort of every pending row, which it picks on a table whose
-- statistics are stale, as a queue table's are after a burst: a claim of 10 with 1M
-- pending took 3 s that way) and not to JIT-compile a statement that runs in a
-- fraction of a millisecond.
--
-- Fleet-wide limits (global_concurrency, rate_limit) are enforced here, under a
-- transaction-level advisory lock per limited type: claims of one limited type take
-- turns, each counting what runs (processing) and what started in the window
-- (listener.rate_starts) after the one before it committed.
------------------------------------------------------------------------------
CREATE INDEX IF NOT EXISTS tasks_claim_type_idx
    ON public.tasks (type, priority DESC, run_at, id)
    WHERE status = 'pending';

-- Starts of rate-limited types, kept for one window (the claim prunes them).
CREATE TABLE IF NOT EXISTS listener.rate_starts (
    type       text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rate_starts_type_idx ON listener.rate_starts (type, started_at);
REVOKE ALL ON listener.rate_starts FROM PUBLIC;

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
                  AND tasks.type = wanted.type
                  AND tasks.run_at <= now()
                ORDER BY tasks.priority DESC, tasks.run_at, tasks.id
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
                                  WHERE status = 'pending' AND type = l.type
                                    AND run_at <= now())
                ) AS held
                WHERE held.why IS NOT NULL));
    END IF;
END;
$$;

-- How many more tasks of a type may start now under its limits (the smaller room of
-- the two; unbounded when neither is given): what is processing against
-- global_concurrency, the starts of the last window against the rate limit.
CREATE OR REPLACE FUNCTION listener.limit_room(
    p_type text, p_concurrency integer, p_rate_count integer, p_window_s integer
) RETURNS integer
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public
AS $$
    SELECT least(
        CASE WHEN p_concurrency IS NULL THEN 2147483647
             ELSE greatest(p_concurrency - (SELECT count(*) FROM public.tasks
                                            WHERE status = 'processing' AND type = p_type), 0)
        END,
        CASE WHEN p_rate_count IS NULL THEN 2147483647
             ELSE greatest(p_rate_count - (SELECT count(*) FROM listener.rate_starts
                                           WHERE type = p_type
                                             AND started_at > now()
                                                 - make_interval(secs => p_window_s)), 0)
        END
    )::integer;
$$;

-- Seconds until the next scheduled (future) task of these types is due, on the
-- database's clock; NULL if none. One index probe per type and priority level present
-- (a loose scan of tasks_claim_type_idx), never a scan of the scheduled tasks.
CREATE OR REPLACE FUNCTION listener.next_due_in(p_types text[])
RETURNS double precision
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $$
DECLARE
    task_type text;
    level smallint;
    due timestamptz;
    soonest timestamptz;
BEGIN
    FOREACH task_type IN ARRAY p_types LOOP
        level := NULL;
        LOOP
            SELECT priority INTO level FROM public.tasks
            WHERE status = 'pending' AND type = task_type
              AND (level IS NULL OR priority < level)
            ORDER BY priority DESC
            LIMIT 1;
            EXIT WHEN NOT FOUND;
            SELECT run_at INTO due FROM public.tasks
            WHERE status = 'pending' AND type = task_type AND priority = level
              AND run_at > now()
            ORDER BY priority DESC, run_at
            LIMIT 1;
            IF FOUND AND (soonest IS NULL OR due < soonest) THEN
                soonest := due;
            END IF;
        END LOOP;
    END LOOP;
    RETURN extract(epoch FROM soonest - now());
END;
$$;

REVOKE ALL ON FUNCTION listener.check_task_payload() FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.claim_batch(text, uuid, integer, text[], integer[],
                                            double precision, integer[], integer[],
                                            integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.next_due_in(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.limit_room(text, integer, integer, integer) FROM PUBLIC;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA listener FROM %I', api_role);
            EXECUTE format('REVOKE ALL ON listener.rate_starts FROM %I', api_role);
        END IF;
    END LOOP;
END
$$;
