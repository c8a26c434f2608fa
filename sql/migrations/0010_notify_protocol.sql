-- 0010: NOTIFY that scales (docs/notify.md).
--
-- A committing transaction that has sent a NOTIFY takes a database-wide lock and
-- keeps it through its WAL flush, so notifying producers commit one at a time.
-- Producers now skip the NOTIFY while a worker watches their task type, and a
-- worker that stops watching cannot miss a row whose producer skipped:
--
--   watch lock W(t): held exclusively (session level) by the one worker watching
--     type t, on its LISTEN session. A watcher claims at least every few
--     milliseconds, so it needs no notification.
--   gate lock G(t): every producer of t holds it shared from its INSERT to the end
--     of its transaction. A watcher that stops releases W(t), then takes G(t)
--     exclusively for a moment (waiting for every producer that may have skipped
--     to commit or roll back), then claims once more.
--
-- Keys are 64-bit hashes of the type (hashtextextended, stable across versions and
-- platforms, as hash partitioning relies on it), with two seeds of this project's
-- advisory-lock series (1920462051 is `listener migrate`): a collision between two
-- types, which would let one type's watcher silence the other's producers, is as
-- unlikely as a UUID collision. Same signatures as before and idempotent: the
-- trigger keeps its name and function, which is replaced in place, so a producer
-- runs either the old body (always notify) or the new one, never neither.

CREATE OR REPLACE FUNCTION listener.wake_watch_key(p_type text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$ SELECT hashtextextended(p_type, 1920462053) $$;

CREATE OR REPLACE FUNCTION listener.wake_gate_key(p_type text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$ SELECT hashtextextended(p_type, 1920462054) $$;

-- The keys are spelled out here rather than calling the two functions above, so
-- that a producer needs no privilege on schema listener (the trigger runs as the
-- inserting role); tests check that both spellings agree.
CREATE OR REPLACE FUNCTION listener.notify_tasks_inserted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    task_type text;
BEGIN
    FOR task_type IN
        SELECT DISTINCT type FROM inserted WHERE status = 'pending' AND run_at <= now()
    LOOP
        -- Shared until our commit: a watcher cannot finish stopping before it.
        -- Refused while a watcher is stopping (it waits for the gate): notify.
        IF NOT pg_try_advisory_xact_lock_shared(hashtextextended(task_type, 1920462054)) THEN
            PERFORM pg_notify('listener_tasks', '');
            RETURN NULL;
        END IF;
        -- Granted (and given back at once) only if no worker watches this type.
        IF pg_try_advisory_lock_shared(hashtextextended(task_type, 1920462053)) THEN
            PERFORM pg_advisory_unlock_shared(hashtextextended(task_type, 1920462053));
            PERFORM pg_notify('listener_tasks', '');
            RETURN NULL;
        END IF;
        -- A watcher holds W(type): it claims our row within its poll, or after the
        -- gate, i.e. after our commit. No NOTIFY for this type.
    END LOOP;
    RETURN NULL;
END;
$$;

-- The stopping watcher's gate: wait until no producer of these types holds the gate
-- shared, then let go (transaction-level: released when the calling statement ends).
-- Keys in order, so that two stopping watchers never deadlock. With p_notify, a
-- NOTIFY goes out at the same commit, for workers that can claim what we can't.
CREATE OR REPLACE FUNCTION listener.wake_gate_pass(p_types text[], p_notify boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    gate bigint;
BEGIN
    FOR gate IN
        SELECT DISTINCT listener.wake_gate_key(t) FROM unnest(p_types) AS t ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(gate);
    END LOOP;
    IF p_notify THEN
        PERFORM pg_notify('listener_tasks', '');
    END IF;
END;
$$;

REVOKE ALL ON FUNCTION listener.wake_watch_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.wake_gate_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.wake_gate_pass(text[], boolean) FROM PUBLIC;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION listener.wake_watch_key(text), '
                           'listener.wake_gate_key(text), '
                           'listener.wake_gate_pass(text[], boolean) FROM %I', api_role);
        END IF;
    END LOOP;
END
$$;
