#!/bin/sh
# Primary and archive are separate databases with separate users: the archive's credentials are
# not the website's, so a leak of the site's DB password does not expose archived data.
#
# The passwords reach the server as psql variables read from the environment (\getenv) and
# quoted by psql (:'name'), never pasted into the SQL text: a quote, backslash or semicolon in a
# password stays part of the password, and the passwords never appear on a command line.
# No `set -u`: the image sources a non-executable init script into its own shell.
set -e
: "${PRIMARY_DB_PASSWORD:?set PRIMARY_DB_PASSWORD}"
: "${ARCHIVE_DB_PASSWORD:?set ARCHIVE_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
  --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" <<'SQL'
\getenv primary_pw PRIMARY_DB_PASSWORD
\getenv archive_pw ARCHIVE_DB_PASSWORD
CREATE ROLE lifecycle_primary LOGIN PASSWORD :'primary_pw';
CREATE ROLE lifecycle_archive LOGIN PASSWORD :'archive_pw';
CREATE DATABASE primary_db OWNER lifecycle_primary;
CREATE DATABASE archive_db OWNER lifecycle_archive;
REVOKE ALL ON DATABASE archive_db FROM PUBLIC;
REVOKE ALL ON DATABASE primary_db FROM PUBLIC;
SQL
