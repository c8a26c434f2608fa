-- 0007: schedules (cron= / every=) and what each worker publishes about its types.
--
-- listener.schedules holds one row per scheduled task type. A worker enqueues an
-- instant's task only by moving last_enqueued_for forward to that instant, in the
-- statement that inserts the task (sql/queries/schedules.sql, schedule_enqueue):
-- the row lock makes the fleet enqueue each instant once, however many workers
-- wake for it. Workers publish their effective limits and schedules in
-- listener.workers, so `listener status` (which loads no handlers) can show them
-- and tell a schedule that no live worker runs any more.
-- Only adds a table and two columns with constant defaults (no table rewrite);
-- idempotent.

CREATE TABLE IF NOT EXISTS listener.schedules (
    type              text        PRIMARY KEY,
    schedule          text        NOT NULL,  -- "cron 0 8 * * * (UTC)", "every 15s"
    registered_at     timestamptz NOT NULL DEFAULT now(),  -- instants before it never ran
    last_enqueued_for timestamptz,  -- the newest instant enqueued; only moves forward
    last_task_id      uuid,
    next_run_at       timestamptz,  -- as computed by the worker that last looked
    updated_at        timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE listener.workers
    ADD COLUMN IF NOT EXISTS limits    jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS schedules jsonb NOT NULL DEFAULT '{}'::jsonb;

REVOKE ALL ON listener.schedules FROM PUBLIC;
