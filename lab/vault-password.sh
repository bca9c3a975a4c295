#!/bin/sh
# Vault password for the lab inventory, read by ansible through ansible.cfg.
# `emsops lab up` generates it (mode 0600). Without a lab it prints a value that opens no vault,
# so other inventories (which bring their own --vault-id) keep working.
f="${EMSOPS_LAB_DIR:-/var/lib/emsops/lab}/vault-password"
if [ -r "$f" ]; then cat "$f"; else echo "no-lab-vault-password"; fi
