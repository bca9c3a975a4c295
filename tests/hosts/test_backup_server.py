"""A ready backup server: one chrooted SFTP-only account and repository per backed-up host, key
files the accounts cannot change, and the protected generations out of every chroot."""

import pytest

pytestmark = pytest.mark.groups("backup_servers")


def accounts(site_vars) -> list[str]:
    return sorted(site_vars["ems_layout_backup_accounts"].values())


def test_every_backed_up_host_has_an_account_without_a_shell(host, site_vars):
    assert accounts(site_vars)
    for account in accounts(site_vars):
        user = host.user(account)
        assert user.exists, account
        assert user.shell == "/usr/sbin/nologin"


def test_each_chroot_is_roots_and_its_repository_the_accounts_alone(host, site_vars):
    for account in accounts(site_vars):
        chroot = host.file(f"{site_vars['ems_layout_backup_chroot_dir']}/{account}")
        assert (chroot.is_directory, chroot.user, chroot.mode) == (True, "root", 0o755)
        repo = host.file(f"{chroot.path}{site_vars['ems_layout_backup_repo_dir']}")
        assert (repo.is_directory, repo.user, repo.mode) == (True, account, 0o700)


def test_key_files_are_roots_one_per_account(host, site_vars):
    for account in accounts(site_vars):
        keys = host.file(f"{site_vars['ems_layout_backup_keys_dir']}/{account}")
        assert (keys.is_file, keys.user, keys.mode) == (True, "root", 0o644)


def test_generations_are_out_of_every_chroot_and_root_only(host, site_vars):
    generations = host.file(site_vars["ems_layout_backup_generations_dir"])
    assert (generations.is_directory, generations.user, generations.mode) == (True, "root", 0o700)
    assert not generations.path.startswith(site_vars["ems_layout_backup_chroot_dir"] + "/")


def test_generations_timer_is_active(host, site_vars):
    timer = host.service(f"{site_vars['ems_layout_backup_generations_unit']}.timer")
    assert timer.is_enabled and timer.is_running


@pytest.mark.parametrize("setting", ["forcecommand internal-sftp", "allowtcpforwarding no",
                                     "allowagentforwarding no", "x11forwarding no",
                                     "permittty no", "passwordauthentication no"])
def test_accounts_are_restricted_to_sftp(host, site_vars, setting):
    for account in accounts(site_vars):
        conf = host.check_output("sshd -T -C user=%s,host=x,addr=127.0.0.1", account).lower()
        assert setting in conf.splitlines(), account


def test_accounts_are_chrooted_with_keys_they_cannot_write(host, site_vars):
    for account in accounts(site_vars):
        conf = host.check_output("sshd -T -C user=%s,host=x,addr=127.0.0.1", account).splitlines()
        assert f"chrootdirectory {site_vars['ems_layout_backup_chroot_dir']}/%u" in conf
        assert f"authorizedkeysfile {site_vars['ems_layout_backup_keys_dir']}/%u" in conf
