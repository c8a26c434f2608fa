-- Queries the bundled handlers (handlers/) run on the connection the engine hands
-- a transactional handler, inside the transaction that completes the task.

-- name: handlers_upsert_care_plan
-- Keyed by session: a retried or repeated task overwrites, never duplicates.
INSERT INTO public.care_plans (session_id, email, blueprint_id, plan, model, task_id)
VALUES (%(session_id)s, %(email)s, %(blueprint_id)s, %(plan)s, %(model)s, %(task_id)s)
ON CONFLICT (session_id) DO UPDATE
SET email = excluded.email,
    blueprint_id = excluded.blueprint_id,
    plan = excluded.plan,
    model = excluded.model,
    task_id = excluded.task_id,
    updated_at = now();
