#!/bin/sh
# build-image.sh: build the coordinator image from a prebuilt static binary,
# offline (no registry, no base image): a FROM scratch image holding the
# coordinator, a static busybox (entrypoint shell and health check) and
# the entrypoint. Usage:
#   deploy/build-image.sh [--binary PATH] [--busybox PATH] [--tag TAG]
# Defaults: target/dist/autogit-coordinator-$(uname -m) (from
# `cargo xtask dist`), /bin/busybox (Debian: busybox-static),
# autogit/coordinator:latest.
set -eu

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
BINARY=$SCRIPT_DIR/../target/dist/autogit-coordinator-$(uname -m)
BUSYBOX=/bin/busybox
TAG=autogit/coordinator:latest

die() {
    printf 'build-image.sh: error: %s\n' "$*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
    --binary | --busybox | --tag)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --binary) BINARY=$2 ;;
        --busybox) BUSYBOX=$2 ;;
        --tag) TAG=$2 ;;
        esac
        shift 2
        ;;
    -h | --help)
        sed -n '2,9p' "$0"
        exit 0
        ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

[ -f "$BINARY" ] || die "no coordinator binary at $BINARY (run \`cargo xtask dist\` first, or pass --binary)"
[ -f "$BUSYBOX" ] || die "no busybox at $BUSYBOX (Debian: apt-get install busybox-static)"
command -v docker >/dev/null 2>&1 || die "docker is not installed"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT INT TERM
root=$ctx/rootfs
mkdir -p "$root/bin" "$root/usr/local/bin" "$root/tmp" "$ctx/varlib/autogit"
chmod 1777 "$root/tmp"
cp "$BINARY" "$root/usr/local/bin/autogit-coordinator"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
cp "$SCRIPT_DIR/coordinator-entrypoint.sh" "$root/usr/local/bin/autogit-entrypoint"
chmod 0755 "$root/usr/local/bin/autogit-coordinator" "$root/bin/busybox" "$root/usr/local/bin/autogit-entrypoint"

docker build --network none -q -f "$SCRIPT_DIR/Dockerfile.coordinator-prebuilt" -t "$TAG" "$ctx" >/dev/null
# The image has no libc: a dynamic binary or busybox would fail right here.
docker run --rm --network none --entrypoint /usr/local/bin/autogit-coordinator "$TAG" --version >/dev/null ||
    die "the coordinator does not run in the image: is $BINARY static?"
docker run --rm --network none --entrypoint /bin/sh "$TAG" -c 'command -v wget' >/dev/null 2>&1 ||
    die "busybox does not run in the image: is $BUSYBOX static?"
echo "$TAG"
