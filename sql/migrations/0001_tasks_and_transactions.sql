-- 0001: the tasks queue, the transactions ledger and the claim functions.
--
-- Compatible with the tables and claim_next_task() that apps created from the
-- original Supabase setup guide: every statement is idempotent, so this runs on
-- an empty database, on a database that already has the old tables (it adds
-- what is missing), and a second time on itself without an error.

CREATE SCHEMA IF NOT EXISTS listener;
REVOKE ALL ON SCHEMA listener FROM PUBLIC;

-- Applied migrations, written by `listener migrate` and by the pasted script.
CREATE TABLE IF NOT EXISTS listener.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------
-- tasks
--
-- State machine (who moves a task, and where):
--   pending    -> processing  a worker claims it (claim_tasks / claim_next_task)
--   processing -> completed   its handler returned
--   processing -> pending     retry scheduled (run_at in the future), released on
--                             shutdown, or rescued after its lease expired
--   processing -> failed      permanent error, or attempts exhausted
--   pending    -> cancelled   an operator cancelled it before it ran
------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.tasks (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    type         text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status       text        NOT NULL DEFAULT 'pending',
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    completed_at timestamptz,
    error        text
);

-- run_at of tasks that predate it is their created_at, so an upgraded queue
-- keeps claiming its backlog oldest first (a plain DEFAULT now() would give
-- every old row the same run_at and order them by random id).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'public.tasks'::regclass AND attname = 'run_at' AND NOT attisdropped
    ) THEN
        ALTER TABLE public.tasks ADD COLUMN run_at timestamptz;
        UPDATE public.tasks SET run_at = coalesce(created_at, now());
        ALTER TABLE public.tasks
            ALTER COLUMN run_at SET DEFAULT now(),
            ALTER COLUMN run_at SET NOT NULL;
    END IF;
END
$$;

-- Columns a production queue needs; ADD ... IF NOT EXISTS upgrades old tables.
ALTER TABLE public.tasks
    ADD COLUMN IF NOT EXISTS attempts         integer     NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS max_attempts     integer,
    ADD COLUMN IF NOT EXISTS priority         smallint    NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS worker_id        text,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS dedupe_key       text;

-- Old tables may lack defaults or NOT NULL on the original columns.
ALTER TABLE public.tasks
    ALTER COLUMN id SET DEFAULT gen_random_uuid(),
    ALTER COLUMN payload SET DEFAULT '{}'::jsonb,
    ALTER COLUMN status SET DEFAULT 'pending',
    ALTER COLUMN created_at SET DEFAULT now();

-- Old tables may hold a NULL payload (handlers get {} instead) and may lack
-- NOT NULL on the columns every task has. Checked first, so a re-run is free.
DO $$
DECLARE
    col text;
    has_nulls boolean;
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'public.tasks'::regclass AND attname = 'payload' AND NOT attnotnull
    ) THEN
        UPDATE public.tasks SET payload = '{}'::jsonb WHERE payload IS NULL;
    END IF;
    FOREACH col IN ARRAY ARRAY['type', 'payload', 'status', 'created_at'] LOOP
        IF EXISTS (
            SELECT 1 FROM pg_attribute
            WHERE attrelid = 'public.tasks'::regclass AND attname = col AND NOT attnotnull
        ) THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM public.tasks WHERE %I IS NULL)', col)
                INTO has_nulls;
            IF has_nulls THEN  -- leave legacy rows alone; a human decides what they mean
                RAISE WARNING 'public.tasks.% has NULLs in old rows; left nullable', col;
            ELSE
                EXECUTE format('ALTER TABLE public.tasks ALTER COLUMN %I SET NOT NULL', col);
            END IF;
        END IF;
    END LOOP;
END
$$;

-- Constraints are added once (a re-run must not rescan a large table).
DO $$
DECLARE
    wanted constant text[][] := ARRAY[
        ['tasks_status_valid',
         $c$CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled'))$c$],
        ['tasks_type_valid',
         $c$CHECK (type ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND char_length(type) <= 128)$c$],
        ['tasks_payload_object',
         $c$CHECK (jsonb_typeof(payload) = 'object')$c$],
        ['tasks_payload_size',
         $c$CHECK (pg_column_size(payload) <= 1048576)$c$],
        ['tasks_attempts_valid',
         $c$CHECK (attempts BETWEEN 0 AND 1000)$c$],
        ['tasks_max_attempts_valid',
         $c$CHECK (max_attempts IS NULL OR max_attempts BETWEEN 1 AND 1000)$c$],
        ['tasks_dedupe_key_valid',
         $c$CHECK (dedupe_key IS NULL OR char_length(dedupe_key) BETWEEN 1 AND 256)$c$]
    ];
    i integer;
BEGIN
    FOR i IN 1 .. array_length(wanted, 1) LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
            WHERE conrelid = 'public.tasks'::regclass AND conname = wanted[i][1]
        ) THEN
            EXECUTE format('ALTER TABLE public.tasks ADD CONSTRAINT %I %s',
                           wanted[i][1], wanted[i][2]);
        END IF;
    END LOOP;
END
$$;

-- Due pending rows in claim order: claims stay O(log n) however many finished
-- rows the table holds.
CREATE INDEX IF NOT EXISTS tasks_claim_idx
    ON public.tasks (priority DESC, run_at, id)
    WHERE status = 'pending';

-- The rescuer's scan for expired leases.
CREATE INDEX IF NOT EXISTS tasks_lease_idx
    ON public.tasks (lease_expires_at)
    WHERE status = 'processing';

-- One unfinished task per de-duplication key.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_dedupe_key_idx
    ON public.tasks (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'processing');

-- Retention (prune) and listings of finished work.
CREATE INDEX IF NOT EXISTS tasks_finished_idx
    ON public.tasks (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- A queue table churns: vacuum it early so dead tuples don't slow the claim.
ALTER TABLE public.tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    fillfactor = 90
);

------------------------------------------------------------------------------
-- Live workers, so `listener status` can name pending types nobody handles.
------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS listener.workers (
    id           text        PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    types        text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------
-- transactions: a replayed payment webhook is a no-op because order_id is unique.
------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.transactions (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id   text        NOT NULL UNIQUE,
    email      text,
    amount     bigint      NOT NULL,
    status     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- record_transaction() relies on order_id being unique; an old table made
-- without the UNIQUE constraint gets the index the constraint would have made.
CREATE UNIQUE INDEX IF NOT EXISTS transactions_order_id_key
    ON public.transactions (order_id);

-- The original guide used integer paise; bigint holds any real amount.
DO $$
BEGIN
    IF (SELECT atttypid FROM pg_attribute
        WHERE attrelid = 'public.transactions'::regclass AND attname = 'amount')
       = 'integer'::regtype THEN
        ALTER TABLE public.transactions ALTER COLUMN amount TYPE bigint;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'public.transactions'::regclass
          AND conname = 'transactions_amount_not_negative'
    ) THEN
        ALTER TABLE public.transactions
            ADD CONSTRAINT transactions_amount_not_negative CHECK (amount >= 0);
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Functions. Every one pins search_path, so a user-created object in another
-- schema can never stand in for ours.
------------------------------------------------------------------------------

-- Records an order once; returns true only for the first recording.
CREATE OR REPLACE FUNCTION public.record_transaction(
    p_order_id text, p_email text, p_amount bigint, p_status text
) RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, public
AS $$
    WITH inserted AS (
        INSERT INTO public.transactions (order_id, email, amount, status)
        VALUES (p_order_id, p_email, p_amount, p_status)
        ON CONFLICT (order_id) DO NOTHING
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM inserted);
$$;

-- Claims up to p_limit due tasks for one worker, in one statement.
-- FOR NO KEY UPDATE (not FOR UPDATE): a row held only by a foreign-key check
-- (KEY SHARE) is not skipped.
CREATE OR REPLACE FUNCTION listener.claim_tasks(
    p_worker_id text,
    p_limit integer,
    p_types text[] DEFAULT NULL,
    p_lease_s double precision DEFAULT 60
) RETURNS SETOF public.tasks
LANGUAGE sql
SET search_path = pg_catalog, public
AS $$
    WITH due AS MATERIALIZED (
        SELECT id
        FROM public.tasks
        WHERE status = 'pending'
          AND run_at <= now()
          AND (p_types IS NULL OR type = ANY (p_types))
        ORDER BY priority DESC, run_at, id
        LIMIT greatest(p_limit, 0)  -- NULL or negative claims nothing, never everything
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE public.tasks AS t
    SET status = 'processing',
        started_at = now(),
        attempts = t.attempts + 1,
        worker_id = p_worker_id,
        lease_expires_at = now() + make_interval(secs => coalesce(p_lease_s, 60)),
        error = NULL
    FROM due
    WHERE t.id = due.id
    RETURNING t.*;
$$;

-- The original no-argument claim, kept for apps that call it directly. The
-- 15-minute lease lets a worker of ours rescue the task if that app dies.
CREATE OR REPLACE FUNCTION public.claim_next_task()
RETURNS SETOF public.tasks
LANGUAGE sql
SET search_path = pg_catalog, public
AS $$
    SELECT * FROM listener.claim_tasks(NULL, 1, NULL, 900);
$$;

-- Statement-level wake-up: one constant, data-free NOTIFY per INSERT statement
-- that adds a row due now (notifications are visible to every database user).
CREATE OR REPLACE FUNCTION listener.notify_tasks_inserted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'pending' AND run_at <= now()) THEN
        PERFORM pg_notify('listener_tasks', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER tasks_notify_inserted
    AFTER INSERT ON public.tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION listener.notify_tasks_inserted();

------------------------------------------------------------------------------
-- Lock out Supabase's public API roles (anon, authenticated): RLS with no
-- policies, no table privileges, no EXECUTE. On plain PostgreSQL those roles
-- don't exist and only the PUBLIC revokes apply.
------------------------------------------------------------------------------
ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.transactions ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON public.tasks, public.transactions FROM PUBLIC;
REVOKE ALL ON FUNCTION public.record_transaction(text, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.claim_next_task() FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.claim_tasks(text, integer, text[], double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.notify_tasks_inserted() FROM PUBLIC;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON public.tasks, public.transactions FROM %I', api_role);
            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA listener FROM %I', api_role);
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA listener FROM %I', api_role);
            EXECUTE format('REVOKE ALL ON SCHEMA listener FROM %I', api_role);
            EXECUTE format(
                'REVOKE ALL ON FUNCTION public.record_transaction(text, text, bigint, text), '
                'public.claim_next_task() FROM %I', api_role);
        END IF;
    END LOOP;
    -- Supabase's backend role keeps working with claim_next_task(), which calls
    -- listener.claim_tasks().
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT USAGE ON SCHEMA listener TO service_role;
        GRANT EXECUTE ON FUNCTION listener.claim_tasks(text, integer, text[], double precision)
            TO service_role;
    END IF;
END
$$;
