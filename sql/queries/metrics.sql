-- Scrape-time queue gauges, run by listener.store.gauges for the Prometheus
-- collector in listener.metrics. Each must stay cheap however many finished rows
-- the table holds (see docs/monitoring.md, "Queue gauges"):
--   pending / processing: exact counts over the partial indexes tasks_claim_idx
--   and tasks_lease_idx; finished statuses: planner statistics, never a count.

-- name: queue_depth_unfinished
SELECT
    (SELECT count(*) FROM public.tasks WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM public.tasks WHERE status = 'processing') AS processing,
    (SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)
     FROM public.tasks
     WHERE status = 'pending' AND run_at <= now()) AS oldest_pending_age_s,
    pg_notification_queue_usage() AS notification_queue_usage;

-- name: queue_depth_finished_estimate
-- Rows per finished status from the last ANALYZE: the table's row estimate
-- (pg_class.reltuples) times each status's share in pg_stats. No rows before the
-- table was first analysed (reltuples = -1); autovacuum keeps it fresh.
SELECT mcv.status, round(c.reltuples * mcv.share) AS estimate
FROM pg_class AS c
JOIN pg_stats AS s
  ON s.schemaname = 'public' AND s.tablename = 'tasks' AND s.attname = 'status'
CROSS JOIN LATERAL unnest(s.most_common_vals::text::text[], s.most_common_freqs)
     AS mcv(status, share)
WHERE c.oid = 'public.tasks'::regclass
  AND c.reltuples >= 0
  AND mcv.status IN ('completed', 'failed', 'cancelled')
ORDER BY mcv.status;

-- name: set_statement_timeout
-- A scrape must never hang on a locked or overloaded database.
SELECT set_config('statement_timeout', %(timeout_ms)s, false);
