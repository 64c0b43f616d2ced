#!/usr/bin/env bash
# One database per service, each with two roles: <db>_owner owns the schema and runs the
# migrations; <db>_app is what the service connects as. The audit service's role gets only what
# its migration grants to cef_audit_writer (no UPDATE or DELETE on the log). Run by the postgres
# image once, on an empty data directory, with the passwords the keys-init one-shot wrote.
set -Eeuo pipefail

secrets_dir="${CEF_DB_SECRETS_DIR:-/run/cef-db}"
# Only for tests on a shared server: keeps their databases and roles apart from real ones.
suffix="${CEF_DB_NAME_SUFFIX:-}"

read_password() {
  local file="$secrets_dir/$1.password"
  if [[ ! -s "$file" ]]; then
    echo "cef init.sh: $file is missing or empty: run the keys-init one-shot first" >&2
    return 1
  fi
  tr -d '\r\n' < "$file"
}

run_psql() {
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" "$@"
}

create_service_database() {
  local base="$1" app_kind="$2"
  local db="${base}${suffix}" owner="${base}_owner${suffix}" app="${base}_app${suffix}"
  local owner_pw app_pw
  owner_pw="$(read_password "${base}_owner")"
  app_pw="$(read_password "${base}_app")"

  run_psql --dbname postgres \
    -v db="$db" -v owner="$owner" -v app="$app" -v owner_pw="$owner_pw" -v app_pw="$app_pw" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'owner', :'owner_pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app', :'app_pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8'' TEMPLATE template0', :'db', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
-- Nobody else connects: each service reaches only its own database.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app";
SQL

  run_psql --dbname "$db" -v owner="$owner" -v app="$app" <<'SQL'
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";
SQL

  if [[ "$app_kind" == "read-write" ]]; then
    # Tables the owner's migrations create later are usable by the service, and nothing more:
    # no DDL, no TRUNCATE, no ownership.
    run_psql --dbname "$db" -v owner="$owner" -v app="$app" <<'SQL'
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"app";
SQL
  else
    # Append-only: the audit migration grants cef_audit_writer SELECT and INSERT on the log
    # (and the head row it moves forward); the service's login role is a member and no more.
    run_psql --dbname "$db" -v app="$app" <<'SQL'
SELECT 'CREATE ROLE cef_audit_writer NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cef_audit_writer') \gexec
GRANT cef_audit_writer TO :"app";
SQL
  fi
  echo "cef init.sh: database $db (owner $owner, service role $app, $app_kind)"
}

create_service_database cef_tokeniser read-write
create_service_database cef_api read-write
create_service_database cef_audit append-only
create_service_database cef_web read-write
