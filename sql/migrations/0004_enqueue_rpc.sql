-- 0004: public.enqueue_task(), for producers that reach the database over HTTP.
--
-- Supabase exposes functions in `public` through PostgREST (/rest/v1/rpc/NAME).
-- This one is executable by the backend role `service_role` only: never by
-- PUBLIC, `anon` or `authenticated`, so a browser holding the anon key cannot
-- enqueue work. It validates like the table does (the same constraints apply)
-- and honours de-duplication keys like listener.create_task(). Idempotent.

CREATE OR REPLACE FUNCTION public.enqueue_task(
    p_type text,
    p_payload jsonb DEFAULT '{}'::jsonb,
    p_run_at timestamptz DEFAULT NULL,
    p_priority integer DEFAULT 0,
    p_dedupe_key text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    new_id uuid;
BEGIN
    INSERT INTO public.tasks (type, payload, run_at, priority, dedupe_key)
    VALUES (p_type, coalesce(p_payload, '{}'::jsonb), coalesce(p_run_at, now()),
            coalesce(p_priority, 0)::smallint, p_dedupe_key)
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'processing')
    DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN  -- the key is held by an unfinished task: return that one
        SELECT id INTO new_id FROM public.tasks
        WHERE dedupe_key = p_dedupe_key AND status IN ('pending', 'processing');
    END IF;
    RETURN new_id;
END;
$$;

REVOKE ALL ON FUNCTION public.enqueue_task(text, jsonb, timestamptz, integer, text) FROM PUBLIC;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format(
                'REVOKE ALL ON FUNCTION public.enqueue_task(text, jsonb, timestamptz, integer, text) '
                'FROM %I', api_role);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION public.enqueue_task(text, jsonb, timestamptz, integer, text)
            TO service_role;
    END IF;
END
$$;
