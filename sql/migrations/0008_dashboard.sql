-- 0008: indexes for the dashboard (`listener ui`), so its pages stay fast on a
-- table of millions of finished rows (tests/integration/test_ui_performance.py).
--
-- Both are partial indexes over rows the engine writes rarely or never on its hot
-- path: a claim and a completion of a task without a dedupe key touch neither.
-- Building them reads the whole table once while holding a lock that blocks
-- writes (about a second per million rows): run `listener migrate` at a quiet
-- moment, or prune first. Idempotent.

-- Failed and cancelled tasks, newest first: the tasks page's failed and cancelled
-- lists, and `listener retry --type` (failures are few, completions are many, so
-- tasks_finished_idx would walk every completion to find them).
CREATE INDEX IF NOT EXISTS tasks_failed_cancelled_idx
    ON public.tasks (status, completed_at, id)
    WHERE status IN ('failed', 'cancelled');

-- Finished tasks by dedupe key ("what happened to webhook event evt_123?").
-- Unfinished ones are found through tasks_dedupe_key_idx.
CREATE INDEX IF NOT EXISTS tasks_finished_dedupe_key_idx
    ON public.tasks (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('completed', 'failed', 'cancelled');
