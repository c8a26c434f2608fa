-- What `listener verify` looks at beyond grants on our own objects: the other ways
-- in (views, policies, SECURITY DEFINER functions), service_role's hold on the
-- ledger, and the default privileges of functions created later.
--
-- "API roles" are anon and authenticated where they exist (Supabase), else PUBLIC:
-- whoever reaches the database without being its owner.

-- name: views_exposing_our_tables
-- Views and materialized views built on our tables (directly or through other
-- views) that an API role can read. A view runs with its owner's rights and skips
-- RLS unless it is security_invoker (PostgreSQL 15+); a materialized view holds a
-- copy of the rows whatever its options.
WITH RECURSIVE api_roles AS (
    SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
    UNION ALL
    SELECT 'public' WHERE NOT EXISTS (
        SELECT 1 FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
    )
), ours AS (
    SELECT oid FROM pg_class
    WHERE oid IN (to_regclass('public.tasks'), to_regclass('public.transactions'),
                  to_regclass('public.care_plans'), to_regclass('public.payment_orders'),
                  to_regclass('listener.schema_migrations'), to_regclass('listener.workers'),
                  to_regclass('listener.schedules'))
), built_on AS (
    SELECT r.ev_class AS view_oid
    FROM pg_depend AS d JOIN pg_rewrite AS r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid IN (SELECT oid FROM ours) AND r.ev_class <> d.refobjid
    UNION
    SELECT r.ev_class
    FROM built_on AS b
    JOIN pg_depend AS d ON d.refobjid = b.view_oid
         AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
    JOIN pg_rewrite AS r ON r.oid = d.objid
    WHERE r.ev_class <> b.view_oid
)
SELECT v.oid::regclass::text AS view_name, CASE v.relkind WHEN 'm' THEN 'materialized view'
       ELSE 'view' END AS kind, string_agg(a.rolname, ', ' ORDER BY a.rolname) AS readers
FROM (SELECT DISTINCT view_oid FROM built_on) AS b
JOIN pg_class AS v ON v.oid = b.view_oid
CROSS JOIN api_roles AS a
WHERE v.relkind IN ('v', 'm')
  AND NOT (v.relkind = 'v' AND EXISTS (
      SELECT 1 FROM unnest(v.reloptions) AS o WHERE o ~* '^security_invoker=(true|on|yes|1)$'
  ))
  AND has_schema_privilege(a.rolname, v.relnamespace, 'USAGE')
  AND (has_table_privilege(a.rolname, v.oid, 'SELECT')
       OR has_any_column_privilege(a.rolname, v.oid, 'SELECT'))
GROUP BY v.oid, v.relkind
ORDER BY 1;

-- name: policies_on_our_tables
-- Our tables have RLS on and no policy: any policy is a way in someone added
-- (the old setup guide's USING (true) ones among them).
SELECT p.polrelid::regclass::text AS table_name, p.polname AS policy
FROM pg_policy AS p
WHERE p.polrelid IN (to_regclass('public.tasks'), to_regclass('public.transactions'),
                     to_regclass('public.care_plans'), to_regclass('public.payment_orders'),
                     to_regclass('listener.schema_migrations'), to_regclass('listener.workers'),
                     to_regclass('listener.schedules'))
ORDER BY 1, 2;

-- name: definer_functions_for_api_roles
-- SECURITY DEFINER functions in public that API roles may call: each runs with its
-- owner's rights (usually past RLS). Extensions' own functions are theirs to answer for.
WITH api_roles AS (
    SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
    UNION ALL
    SELECT 'public' WHERE NOT EXISTS (
        SELECT 1 FROM pg_roles WHERE rolname IN ('anon', 'authenticated')
    )
)
SELECT p.oid::regprocedure::text AS function_name, string_agg(a.rolname, ', ' ORDER BY a.rolname)
FROM pg_proc AS p CROSS JOIN api_roles AS a
WHERE p.pronamespace = 'public'::regnamespace
  AND p.prosecdef
  AND has_function_privilege(a.rolname, p.oid, 'EXECUTE')
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend AS d
      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  )
GROUP BY p.oid
ORDER BY 1;

-- name: service_role_ledger_privileges
-- What service_role (when it exists) may still do that the project never needs.
-- What PUBLIC may do too is api_role_privileges' finding, not repeated here.
SELECT 'table ' || t.name AS object, privilege
FROM (VALUES ('public.transactions', ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']),
             ('public.tasks', ARRAY['TRUNCATE']),
             ('public.care_plans', ARRAY['TRUNCATE']),
             ('public.payment_orders', ARRAY['TRUNCATE'])) AS t(name, privileges),
     unnest(t.privileges) AS privilege
WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role')
  AND to_regclass(t.name) IS NOT NULL
  AND has_table_privilege('service_role', to_regclass(t.name), privilege)
  AND NOT has_table_privilege('public', to_regclass(t.name), privilege)
UNION ALL
SELECT 'function public.record_transaction(text, text, bigint, text)', 'EXECUTE'
WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role')
  AND to_regprocedure('public.record_transaction(text, text, bigint, text)') IS NOT NULL
  AND has_function_privilege(
      'service_role', to_regprocedure('public.record_transaction(text, text, bigint, text)'),
      'EXECUTE')
  AND NOT has_function_privilege(
      'public', to_regprocedure('public.record_transaction(text, text, bigint, text)'),
      'EXECUTE')
ORDER BY 1, 2;

-- name: listener_function_default_grantees
-- Who gets EXECUTE on a function that listener's owner creates in schema listener
-- later: the global default (PUBLIC when nothing was ever set) plus listener's own
-- per-schema default. Rows: (scope, grantee, owner); grantee 'PUBLIC' is any role.
WITH owner AS (
    SELECT nspowner AS role, oid AS nsp FROM pg_namespace WHERE nspname = 'listener'
), defaults AS (
    SELECT 'global' AS scope, coalesce(
        (SELECT d.defaclacl FROM pg_default_acl AS d, owner
         WHERE d.defaclrole = owner.role AND d.defaclnamespace = 0 AND d.defaclobjtype = 'f'),
        acldefault('f', (SELECT role FROM owner))
    ) AS acl
    UNION ALL
    SELECT 'listener', d.defaclacl FROM pg_default_acl AS d, owner
    WHERE d.defaclrole = owner.role AND d.defaclnamespace = owner.nsp AND d.defaclobjtype = 'f'
)
SELECT DISTINCT defaults.scope,
       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END,
       owner.role::regrole::text
FROM defaults, aclexplode(defaults.acl) AS acl, owner
WHERE acl.privilege_type = 'EXECUTE' AND acl.grantee <> owner.role
  AND (acl.grantee = 0 OR acl.grantee IN (
      SELECT oid FROM pg_roles WHERE rolname IN ('anon', 'authenticated')))
ORDER BY 1, 2;
