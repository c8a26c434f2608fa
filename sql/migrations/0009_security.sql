-- 0009: security.
--
-- * tasks.error is bounded, so a handler (or an app) cannot bloat a row with it;
-- * the payment ledger's text columns are bounded and its status is a short word;
-- * Supabase's service_role can no longer TRUNCATE our tables or write the ledger
--   (only the worker records payments: a row written ahead of the webhook would
--   make the real payment "already recorded" and never credited);
-- * functions created later in schema listener are not executable by PUBLIC.
-- Idempotent, like every migration: constraints are added once, grants re-applied.

------------------------------------------------------------------------------
-- tasks.error: at most 4000 characters. The worker writes at most 2000
-- (listener.policy.MAX_ERROR_CHARS); longer old values, from an app or an older
-- release, are shortened first, so the constraint is validated and no later
-- UPDATE of an old row (claim, retry, fail, release, rescue) can trip over it.
------------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'public.tasks'::regclass AND conname = 'tasks_error_length'
    ) THEN
        UPDATE public.tasks SET error = left(error, 3999) || '…'
        WHERE char_length(error) > 4000;
        ALTER TABLE public.tasks
            ADD CONSTRAINT tasks_error_length CHECK (char_length(error) <= 4000);
    END IF;
END
$$;

------------------------------------------------------------------------------
-- The ledger and the order expectations. Nothing of ours ever UPDATEs these
-- rows, so old rows that break a rule don't block anything: the constraint is
-- added NOT VALID (new rows are checked at once), then validated when the old
-- rows allow it, else left with a warning for a human to look at.
------------------------------------------------------------------------------
DO $$
DECLARE
    wanted constant text[][] := ARRAY[
        ['public.transactions', 'transactions_status_valid',
         $c$CHECK (status ~ '^[A-Za-z][A-Za-z0-9_-]{0,31}$')$c$],
        ['public.transactions', 'transactions_order_id_length',
         $c$CHECK (char_length(order_id) BETWEEN 1 AND 128)$c$],
        ['public.transactions', 'transactions_email_length',
         $c$CHECK (char_length(email) <= 320)$c$],
        ['public.payment_orders', 'payment_orders_order_id_length',
         $c$CHECK (char_length(order_id) BETWEEN 1 AND 128)$c$],
        ['public.payment_orders', 'payment_orders_email_length',
         $c$CHECK (char_length(email) <= 320)$c$]
    ];
    i integer;
BEGIN
    FOR i IN 1 .. array_length(wanted, 1) LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
            WHERE conrelid = wanted[i][1]::regclass AND conname = wanted[i][2]
        ) THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID',
                           wanted[i][1], wanted[i][2], wanted[i][3]);
            BEGIN
                EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I',
                               wanted[i][1], wanted[i][2]);
            EXCEPTION WHEN check_violation THEN
                RAISE WARNING '% has old rows that break %; new rows are checked, old ones left',
                    wanted[i][1], wanted[i][2];
            END;
        END IF;
    END LOOP;
END
$$;

------------------------------------------------------------------------------
-- service_role (Supabase's backend key) bypasses RLS and is granted everything
-- on new tables by default. It keeps what producers and apps use (reading the
-- ledger, enqueueing and reading tasks, writing care plans and order
-- expectations) and loses what the project never needs: TRUNCATE, TRIGGER and
-- REFERENCES everywhere, and any write to the ledger.
------------------------------------------------------------------------------
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        REVOKE TRUNCATE, TRIGGER, REFERENCES
            ON public.tasks, public.transactions, public.care_plans, public.payment_orders
            FROM service_role;
        REVOKE INSERT, UPDATE, DELETE ON public.transactions FROM service_role;
        REVOKE EXECUTE ON FUNCTION public.record_transaction(text, text, bigint, text)
            FROM service_role;
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Functions created later by this role are not executable by PUBLIC. Default
-- privileges cannot be revoked for one schema alone (per-schema defaults only add
-- to the global ones, see ALTER DEFAULT PRIVILEGES), so the revoke is global for
-- this role and schema public gets PUBLIC back, as before: what changes is every
-- other schema, listener's first. Every migration still revokes explicitly.
------------------------------------------------------------------------------
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
