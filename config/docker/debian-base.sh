#!/bin/sh
# The Debian root filesystems the images start from where no image registry is reachable, built with debootstrap
# from THIS machine's own apt sources (apt-get indextargets: whatever mirror the site uses; none is hard-coded).
#
#   debian-base.sh OUT_DIR  ->  OUT_DIR/supnet-base.tar           python3 + venv, CA certificates, time zones
#                               OUT_DIR/supnet-base-postgres.tar  the same plus PostgreSQL 15 (no cluster yet)
#
# `make base-image` runs it and imports both with `docker import`. Needs root (debootstrap, chroot).
# SUITE (default bookworm: Python 3.11, the wheelhouse's Python) and MIRROR override the defaults.
set -eu

out=${1:?usage: debian-base.sh OUT_DIR}
suite=${SUITE:-bookworm}
packages=python3,python3-venv,ca-certificates,tzdata

# Every "deb" source of this machine for the suite and its -updates/-security suites, as apt itself reads them.
sources=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' \
    | awk -v s="$suite" '$2 == s || index($2, s "-") == 1 { print "deb " $1 " " $2 " " $3 }' | sort -u)
mirror=${MIRROR:-$(printf '%s\n' "$sources" | awk -v s="$suite" '$3 == s { print $2; exit }')}
if [ -z "$mirror" ]; then
    echo "debian-base.sh: no apt source of this machine serves '$suite' (apt-get indextargets); set MIRROR=URL" >&2
    exit 2
fi

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/supnet-rootfs.XXXXXX")
root=$work/root
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
step() { echo "debian-base.sh: $(date +%T) $*" >&2; }

step "debootstrap $suite from $mirror (this machine's apt sources)"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# The images keep this machine's sources (its -updates and -security too) and get their updates now.
printf '%s\n' "$sources" >"$root/etc/apt/sources.list"
mount -t proc proc "$root/proc"
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
step "updates from $(printf '%s\n' "$sources" | awk '{ print $3 }' | paste -sd ' ')"
in_root apt-get -qq update
in_root apt-get -qq -y upgrade >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; exit 1; }

# Images for services, not shells: no package lists, caches, docs or man pages; no host-specific files.
pack() {
    step "packing $1"
    in_root apt-get -qq clean
    tar --numeric-owner -C "$root" -cf "$1.partial.$$" \
        --exclude='./proc/*' --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*' \
        --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' --exclude='./usr/share/locale/*' \
        --exclude='./var/log/*' --exclude='./tmp/*' --exclude='./etc/hostname' .
    mv "$1.partial.$$" "$1"  # whole or not at all, also when two builds share OUT_DIR
}
pack "$out/supnet-base.tar"

# PostgreSQL on top. The image's entrypoint creates the cluster in its volume, so the package must not; and no
# private key may ship in an image: the package's self-signed "snakeoil" certificate goes (TLS is off in compose).
step "postgresql-15"
mkdir -p "$root/etc/postgresql-common/createcluster.d"
echo "create_main_cluster = false" >"$root/etc/postgresql-common/createcluster.d/supnet.conf"
in_root apt-get -qq -y install --no-install-recommends postgresql-15 >"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; exit 1; }
rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
pack "$out/supnet-base-postgres.tar"
step "done: $out/supnet-base.tar $out/supnet-base-postgres.tar"
