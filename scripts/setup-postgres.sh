#!/usr/bin/env bash
# Prepares the local PostgreSQL for tollgate's tests (idempotent):
# - roles that log in with a password over TCP, one per authentication method tollgate answers
#   upstream (SCRAM-SHA-256, MD5, cleartext), with pg_hba.conf lines that demand them;
# - the `test` database.
# The rest of the machine's pg_hba.conf (trust on loopback) is left as it is.
set -euo pipefail

PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt)
hba=$("${PSQL[@]}" -c 'show hba_file')
marker='# tollgate test roles'
if ! grep -qF "$marker" "$hba"; then
  tmp=$(mktemp)
  {
    echo "$marker"
    echo "host all tollgate_scram 127.0.0.1/32 scram-sha-256"
    echo "host all tollgate_md5 127.0.0.1/32 md5"
    echo "host all tollgate_password 127.0.0.1/32 password"
    cat "$hba"
  } > "$tmp"
  cat "$tmp" > "$hba"
  rm -f "$tmp"
  "${PSQL[@]}" -c 'select pg_reload_conf()' >/dev/null
fi

"${PSQL[@]}" -d postgres <<'SQL'
select 'create database test' where not exists (select from pg_database where datname = 'test') \gexec
set password_encryption = 'scram-sha-256';
do $$ begin
  if not exists (select from pg_roles where rolname = 'tollgate_scram') then
    create role tollgate_scram login password 'scram-upstream-pw';
  end if;
  if not exists (select from pg_roles where rolname = 'tollgate_password') then
    create role tollgate_password login password 'cleartext-upstream-pw';
  end if;
end $$;
set password_encryption = 'md5';
do $$ begin
  if not exists (select from pg_roles where rolname = 'tollgate_md5') then
    create role tollgate_md5 login password 'md5-upstream-pw';
  end if;
end $$;
SQL
echo "PostgreSQL ready for tollgate tests"
