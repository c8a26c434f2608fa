-- `listener demo`: progress of one demo run, told apart by its payload marker.

-- name: demo_counts
SELECT status, count(*) AS count
FROM public.tasks
WHERE type LIKE 'demo.%%' AND payload ->> 'demo_run' = %(run)s
GROUP BY status;
