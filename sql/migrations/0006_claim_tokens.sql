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
-- Idempotent; adds nullable columns (no table rewrite) and replaces nothing old.

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
-- The worker's claim: as listener.claim_tasks, plus the claim token, the attempt
-- limit per type, attempts capped at the schema's 1000 (a task at the cap would
-- otherwise make every claim statement fail), and rows in the order they are due.
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION listener.claim_batch(
    p_worker_id text,
    p_token uuid,
    p_limit integer,
    p_types text[],
    p_attempt_limits integer[],
    p_lease_s double precision
) RETURNS SETOF public.tasks
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
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
            SELECT tasks.id
            FROM public.tasks
            WHERE tasks.status = 'pending'
              AND tasks.run_at <= now()
              AND tasks.type = ANY (p_types)
            ORDER BY tasks.priority DESC, tasks.run_at, tasks.id
            LIMIT greatest(p_limit, 0)
            FOR NO KEY UPDATE SKIP LOCKED
        ))
        RETURNING t.*
    )
    SELECT * FROM claimed
    ORDER BY claimed.priority DESC, claimed.run_at, claimed.id;
END;
$$;

REVOKE ALL ON FUNCTION listener.check_task_payload() FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.claim_batch(text, uuid, integer, text[], integer[],
                                            double precision) FROM PUBLIC;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA listener FROM %I', api_role);
        END IF;
    END LOOP;
END
$$;
