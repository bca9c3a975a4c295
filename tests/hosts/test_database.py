"""A healthy database host: PostgreSQL running and the EMS database answering."""

import pytest

pytestmark = pytest.mark.groups("ems_db")


def test_postgresql_is_running(host):
    assert host.service("postgresql.service").is_enabled
    assert host.run("pg_lsclusters -h").stdout.split()[3] == "online"


def test_postgresql_listens_on_the_site_address(host, site_vars):
    port = site_vars["ems_layout_db_port"]
    assert host.socket(f"tcp://{site_vars['ansible_host']}:{port}").is_listening


def test_ems_database_answers_with_its_schema(host, site_vars):
    db = site_vars["ems_layout_db_name"]
    out = host.check_output(
        "runuser -u postgres -- psql -X -At -d %s -c 'SELECT count(*) FROM schema_migrations'", db)
    assert int(out) > 0, "no migration recorded: the schema is missing"
