"""The lab: local sites of real hosts (systemd-nspawn containers) for testing emsops."""
