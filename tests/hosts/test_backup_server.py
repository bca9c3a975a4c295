"""A ready backup server: the SFTP-only account and its repository folder."""

import pytest

pytestmark = pytest.mark.groups("backup_servers")


def test_backup_account_exists_without_a_shell(host, site_vars):
    user = host.user(site_vars["ems_layout_backup_user"])
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"


def test_repository_folder_is_private(host, site_vars):
    repo = host.file(site_vars["ems_layout_backup_repo_dir"])
    assert repo.is_directory
    assert repo.user == site_vars["ems_layout_backup_user"]
    assert repo.mode == 0o700


def test_account_is_restricted_to_sftp(host, site_vars):
    conf = host.check_output("sshd -T -C user=%s,host=x,addr=127.0.0.1",
                             site_vars["ems_layout_backup_user"])
    assert "forcecommand internal-sftp" in conf.lower()
