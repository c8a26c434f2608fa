-- 0002: what the bundled handlers write: AI care plans and payment-order expectations.
--
-- Idempotent like 0001: safe on an empty database, on one that already has these
-- tables, and a second time on itself.

------------------------------------------------------------------------------
-- care_plans: one plan per session. generate_care_plan upserts by session_id,
-- so a retried or repeated task overwrites the plan instead of adding another.
------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.care_plans (
    session_id   text        PRIMARY KEY,
    email        text        NOT NULL,
    blueprint_id text        NOT NULL,
    plan         text        NOT NULL,
    model        text        NOT NULL,
    task_id      uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------
-- payment_orders: what the app expects an order to be paid, written when it
-- creates the Razorpay order (listener.payments.expect_order). The webhook
-- handler refuses a payment whose amount or currency differs. Orders the app
-- never recorded here are credited as Razorpay reports them.
------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.payment_orders (
    order_id   text        PRIMARY KEY,
    email      text,
    amount     bigint      NOT NULL,
    currency   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'public.payment_orders'::regclass
          AND conname = 'payment_orders_amount_not_negative'
    ) THEN
        ALTER TABLE public.payment_orders
            ADD CONSTRAINT payment_orders_amount_not_negative CHECK (amount >= 0);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'public.payment_orders'::regclass
          AND conname = 'payment_orders_currency_code'
    ) THEN
        ALTER TABLE public.payment_orders
            ADD CONSTRAINT payment_orders_currency_code CHECK (currency ~ '^[A-Z]{3}$');
    END IF;
END
$$;

------------------------------------------------------------------------------
-- Lock out Supabase's public API roles, as 0001 does for its tables.
------------------------------------------------------------------------------
ALTER TABLE public.care_plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.payment_orders ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON public.care_plans, public.payment_orders FROM PUBLIC;

DO $$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON public.care_plans, public.payment_orders FROM %I',
                           api_role);
        END IF;
    END LOOP;
END
$$;
