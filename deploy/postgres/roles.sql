-- The roles of a t2c-monitor database. Run once by a superuser, connected to the t2c database, with psql:
--   psql -v ON_ERROR_STOP=1 -v app_password=... -v reader_password=... -f roles.sql
-- (docker-compose's db service runs it on first start through 10-roles.sh, passwords from .env).
-- Safe to run again: it creates what is missing and sets the passwords and grants.
--
--   t2c_app     the application (migrations, ingest, audits): owns the schema; not a superuser
--   t2c_reader  dashboards (Grafana): reads every table, now and after later migrations; cannot write

CREATE EXTENSION IF NOT EXISTS vector;  -- needs a superuser; the application then only uses it

SELECT 'CREATE ROLE t2c_app' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 't2c_app') \gexec
SELECT 'CREATE ROLE t2c_reader' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 't2c_reader') \gexec
ALTER ROLE t2c_app WITH LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE t2c_reader WITH LOGIN PASSWORD :'reader_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;

-- the application owns the schema its migrations create tables in; nobody else may create there
ALTER SCHEMA public OWNER TO t2c_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- the reader sees every table of the application, including those of later migrations, and nothing more
GRANT USAGE ON SCHEMA public TO t2c_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO t2c_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE t2c_app IN SCHEMA public GRANT SELECT ON TABLES TO t2c_reader;
ALTER ROLE t2c_reader SET default_transaction_read_only = on;
ALTER ROLE t2c_reader SET statement_timeout = '60s';  -- a runaway panel query cannot hold the database
