#!/bin/sh
# Primary and archive are separate databases with separate users: the archive's credentials are
# not the website's, so a leak of the site's DB password does not expose archived data.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE USER lifecycle_primary PASSWORD '${PRIMARY_DB_PASSWORD}';
CREATE USER lifecycle_archive PASSWORD '${ARCHIVE_DB_PASSWORD}';
CREATE DATABASE primary_db OWNER lifecycle_primary;
CREATE DATABASE archive_db OWNER lifecycle_archive;
REVOKE ALL ON DATABASE archive_db FROM PUBLIC;
REVOKE ALL ON DATABASE primary_db FROM PUBLIC;
SQL
