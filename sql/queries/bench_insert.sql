-- bench/insert_cost.py: the insert trigger's variants, and what the workers made of
-- the tasks. Run only in databases the benchmark creates and drops itself.

-- name: bench_install_previous_notify_trigger
-- The trigger function as migration 0001 shipped it: a NOTIFY for every INSERT
-- statement that adds a due task. (The shipped one is restored by re-running 0008.)
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

-- name: bench_pickup_stats
-- Tasks, completed tasks, and from each insert's transaction start (a little before
-- its commit) to its claim: p50, p99 and max, in seconds.
SELECT count(*), count(*) FILTER (WHERE status = 'completed'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)),
       max(extract(epoch FROM started_at - created_at))
FROM public.tasks;

-- name: bench_watch
-- Hold the watch lock for a type, as a watching worker's LISTEN session would.
SELECT pg_advisory_lock(listener.wake_watch_key(%(type)s));

-- name: bench_synchronous_commit_off
SET synchronous_commit = off;

-- name: bench_install_insert_procedure
-- Single-row inserts, each committed, run inside the server: the trigger's own cost
-- without a client round trip in the measurement. (No SET search_path: a procedure
-- with a SET clause cannot commit; the names are qualified instead.)
CREATE OR REPLACE PROCEDURE listener.bench_insert_committed(n integer, task_type text)
LANGUAGE plpgsql
AS $$
BEGIN
    FOR i IN 1..n LOOP
        INSERT INTO public.tasks (type, payload) VALUES (task_type, '{}'::pg_catalog.jsonb);
        COMMIT;
    END LOOP;
END;
$$;

-- name: bench_call_insert_procedure
CALL listener.bench_insert_committed(%(n)s, %(type)s);

-- name: bench_worker_backends
-- The server processes working for the worker (its pool and its LISTEN session).
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name IN ('listener', 'listener:listen');
