-- The worker's side of the wake-up protocol (listener/watcher.py, docs/notify.md).
-- The watch statements run on the LISTEN session, whose backend pid the worker
-- learned when it connected: the CASE makes sure a lock is taken or given back only
-- on that backend, so a transaction-mode pooler (which may run each statement on
-- another server connection) can never leave a watch lock behind on a stray one.

-- name: listen_session_setup
-- The server drops this session (and any watch lock it holds) within ~11 s of its
-- client vanishing, instead of after the kernel's two-hour keepalive default.
SELECT pg_backend_pid(),
       set_config('tcp_keepalives_idle', '5', false),
       set_config('tcp_keepalives_interval', '2', false),
       set_config('tcp_keepalives_count', '3', false);

-- name: watch_acquire
-- The types this session now watches (exclusive W(t), session level); a type
-- another worker watches is not granted. Never a type twice: session locks stack.
SELECT t
FROM unnest(%(types)s::text[]) AS t
WHERE CASE WHEN pg_backend_pid() = %(pid)s
           THEN pg_try_advisory_lock(listener.wake_watch_key(t))
           ELSE false END
ORDER BY t;

-- name: watch_release
-- The types this session gave up (false for a type it did not hold).
SELECT t
FROM unnest(%(types)s::text[]) AS t
WHERE CASE WHEN pg_backend_pid() = %(pid)s
           THEN pg_advisory_unlock(listener.wake_watch_key(t))
           ELSE false END
ORDER BY t;

-- name: wake_gate_pass
-- Waits for every producer of these types that may have skipped its NOTIFY.
SELECT listener.wake_gate_pass(%(types)s::text[], %(notify)s);

-- name: wake_hand_off
-- A watcher whose slots stay full wakes the workers that have room.
SELECT pg_notify('listener_tasks', '');
