"""A ready backup server: the SFTP-only account and its repository folder."""

import pytest
from hostcheck import setting

pytestmark = pytest.mark.groups("backup_servers")


def test_backup_account_exists_without_a_shell(host, hostvars):
    user = host.user(setting(hostvars, "ems_backup_server_user"))
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"


def test_repository_folder_is_private(host, hostvars):
    repo = host.file(setting(hostvars, "ems_backup_server_repo_dir"))
    assert repo.is_directory
    assert repo.user == setting(hostvars, "ems_backup_server_user")
    assert repo.mode == 0o700


def test_account_is_restricted_to_sftp(host, hostvars):
    conf = host.check_output("sshd -T -C user=%s,host=x,addr=127.0.0.1",
                             setting(hostvars, "ems_backup_server_user"))
    assert "forcecommand internal-sftp" in conf.lower()
