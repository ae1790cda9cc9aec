#!/bin/sh
# First start of docker-compose's db service (docker-entrypoint-initdb.d): the roles of roles.sql, their
# passwords from the environment (.env).
set -eu
: "${T2C_APP_PASSWORD:?set T2C_APP_PASSWORD in .env}"
: "${T2C_READER_PASSWORD:?set T2C_READER_PASSWORD in .env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="$T2C_APP_PASSWORD" -v reader_password="$T2C_READER_PASSWORD" \
    -f /t2c/roles.sql
