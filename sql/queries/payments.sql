-- Payments: named queries run by listener.payments (a library module of its own,
-- so apps and handlers can record payments without reaching into the store).

-- name: payments_record_transaction
-- True only for the first recording of an order (public.record_transaction, 0001).
SELECT public.record_transaction(%(order_id)s, %(email)s, %(amount)s, %(status)s);

-- name: payments_expect_order
-- The app states what an order must be paid with; restating it replaces it.
INSERT INTO public.payment_orders (order_id, email, amount, currency)
VALUES (%(order_id)s, %(email)s, %(amount)s, %(currency)s)
ON CONFLICT (order_id) DO UPDATE
SET email = excluded.email, amount = excluded.amount, currency = excluded.currency;

-- name: payments_expected_order
SELECT order_id, email, amount, currency
FROM public.payment_orders
WHERE order_id = %(order_id)s;
