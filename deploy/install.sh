#!/bin/sh
# install.sh: install (or remove) the AutoGit agent on this host.
#
# Run it from the directory that holds it together with autogit-agent.service
# and agent.toml: deploy/ of a checkout, or target/dist/ after
# `cargo xtask dist` (which also holds the binaries). See --help.
set -eu

BIN=/usr/local/bin/autogit-agent
CONFIG_DIR=/etc/autogit
CONFIG=$CONFIG_DIR/agent.toml
STATE_DIR=/var/lib/autogit-agent
UNIT_NAME=autogit-agent.service
UNIT=/etc/systemd/system/$UNIT_NAME
SERVICE_USER=autogit
DOCKER_GROUP=docker

usage() {
    cat <<'EOF'
Usage: install.sh [OPTIONS]

Installs autogit-agent for this host's architecture (x86_64, aarch64 or
riscv64, from `uname -m`), a system user "autogit" in the docker group,
/etc/autogit/agent.toml and the hardened systemd unit autogit-agent.service.
With --coordinator and --token it also enrolls the host and starts the agent.

Options:
  --binary PATH        the agent binary to install
  --dist DIR           take DIR/autogit-agent-ARCH (default: this script's
                       directory, then ../target/dist beside it)
  --arch ARCH          install for ARCH instead of `uname -m`
  --coordinator H:P    coordinator gRPC address to enroll with
  --token TOKEN        join token (or set AUTOGIT_JOIN_TOKEN, or --token-file)
  --token-file FILE    read the join token from FILE
  --no-start           do not start the service after installing
  --uninstall          remove the binary, unit and unmodified config; keep
                       the host's identity in /var/lib/autogit-agent
  --purge              with --uninstall: also remove the state, the config
                       and the autogit user
  --root DIR           install into DIR instead of / (for tests and image
                       builds): files only; no systemctl, no useradd (the
                       user is written to DIR/etc/passwd and DIR/etc/group)
  -h, --help           this help
EOF
}

say() { printf 'install.sh: %s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

# Maps `uname -m` spellings to the names of our binaries.
normalize_arch() {
    case $1 in
    x86_64 | amd64) echo x86_64 ;;
    aarch64 | arm64) echo aarch64 ;;
    riscv64) echo riscv64 ;;
    *) return 1 ;;
    esac
}

# Prints the architecture an ELF file is built for (e_machine), or nothing.
elf_arch() {
    magic=$(od -An -tx1 -N4 "$1" | tr -d ' \n')
    [ "$magic" = 7f454c46 ] || return 0
    machine=$(od -An -tu1 -j18 -N2 "$1" | tr -s ' ' | sed 's/^ //; s/ $//')
    case $machine in
    "62 0") echo x86_64 ;;
    "183 0") echo aarch64 ;;
    "243 0") echo riscv64 ;;
    *) echo "unknown (e_machine $machine)" ;;
    esac
}

ROOT=
BINARY=
DIST=
ARCH=
COORDINATOR=
TOKEN=${AUTOGIT_JOIN_TOKEN:-}
MODE=install
PURGE=no
START=yes

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case $1 in
    --binary) need_value "$1" $# && BINARY=$2 && shift 2 ;;
    --dist) need_value "$1" $# && DIST=$2 && shift 2 ;;
    --arch) need_value "$1" $# && ARCH=$2 && shift 2 ;;
    --coordinator) need_value "$1" $# && COORDINATOR=$2 && shift 2 ;;
    --token) need_value "$1" $# && TOKEN=$2 && shift 2 ;;
    --token-file)
        need_value "$1" $#
        [ -r "$2" ] || die "cannot read token file $2"
        TOKEN=$(tr -d ' \r\n' <"$2")
        shift 2
        ;;
    --root) need_value "$1" $# && ROOT=$2 && shift 2 ;;
    --no-start) START=no && shift ;;
    --uninstall) MODE=uninstall && shift ;;
    --purge) PURGE=yes && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT" || die "cannot create $ROOT"
    R=$(cd "$ROOT" && pwd)
    [ "$R" != / ] || R=
else
    R=
fi
if [ "$PURGE" = yes ] && [ "$MODE" != uninstall ]; then
    die "--purge goes with --uninstall"
fi
if [ -z "$R" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or use --root DIR to install into a directory)"
fi
HAVE_SYSTEMCTL=no
if [ -z "$R" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    HAVE_SYSTEMCTL=yes
fi

# --- the service user ------------------------------------------------------

# Under --root: write the user and groups into DIR/etc/{passwd,group}.
emulate_user() {
    mkdir -p "$R/etc"
    touch "$R/etc/passwd" "$R/etc/group"
    if ! grep -q "^$SERVICE_USER:" "$R/etc/group"; then
        echo "$SERVICE_USER:x:998:" >>"$R/etc/group"
    fi
    if ! grep -q "^$SERVICE_USER:" "$R/etc/passwd"; then
        echo "$SERVICE_USER:x:998:998:AutoGit agent:$STATE_DIR:/usr/sbin/nologin" >>"$R/etc/passwd"
    fi
    if ! grep -q "^$DOCKER_GROUP:" "$R/etc/group"; then
        echo "$DOCKER_GROUP:x:999:" >>"$R/etc/group"
    fi
    awk -F: -v OFS=: -v g="$DOCKER_GROUP" -v u="$SERVICE_USER" '
        $1 == g {
            n = split($4, m, ",")
            found = 0
            for (i = 1; i <= n; i++) if (m[i] == u) found = 1
            if (!found) $4 = ($4 == "" ? u : $4 "," u)
        }
        { print }' "$R/etc/group" >"$R/etc/group.new"
    mv "$R/etc/group.new" "$R/etc/group"
}

ensure_user() {
    if [ -n "$R" ]; then
        emulate_user
        return
    fi
    command -v useradd >/dev/null 2>&1 || die "useradd not found (package passwd / shadow-utils)"
    if ! getent group "$DOCKER_GROUP" >/dev/null; then
        say "warning: no $DOCKER_GROUP group: is Docker installed? Creating the group."
        groupadd --system "$DOCKER_GROUP"
    fi
    if getent passwd "$SERVICE_USER" >/dev/null; then
        usermod -a -G "$DOCKER_GROUP" "$SERVICE_USER"
    else
        useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "AutoGit agent" \
            --groups "$DOCKER_GROUP" "$SERVICE_USER"
        say "created system user $SERVICE_USER (groups: $DOCKER_GROUP)"
    fi
}

remove_user() {
    if [ -n "$R" ]; then
        if [ -f "$R/etc/passwd" ]; then
            awk -F: -v u="$SERVICE_USER" '$1 != u' "$R/etc/passwd" >"$R/etc/passwd.new"
            mv "$R/etc/passwd.new" "$R/etc/passwd"
        fi
        if [ -f "$R/etc/group" ]; then
            awk -F: -v OFS=: -v u="$SERVICE_USER" '
                $1 == u { next }
                {
                    n = split($4, m, ",")
                    out = ""
                    for (i = 1; i <= n; i++) if (m[i] != u) out = (out == "" ? m[i] : out "," m[i])
                    $4 = out
                    print
                }' "$R/etc/group" >"$R/etc/group.new"
            mv "$R/etc/group.new" "$R/etc/group"
        fi
    elif getent passwd "$SERVICE_USER" >/dev/null; then
        userdel "$SERVICE_USER"
        say "removed user $SERVICE_USER"
    fi
}

# --- install ---------------------------------------------------------------

find_binary() {
    if [ -n "$BINARY" ]; then
        echo "$BINARY"
        return
    fi
    if [ -n "$DIST" ]; then
        echo "$DIST/autogit-agent-$ARCH"
        return
    fi
    for d in "$SCRIPT_DIR" "$SCRIPT_DIR/../target/dist"; do
        if [ -f "$d/autogit-agent-$ARCH" ]; then
            echo "$d/autogit-agent-$ARCH"
            return
        fi
    done
    echo "$SCRIPT_DIR/autogit-agent-$ARCH"
}

# Installs file $1 as $2 with mode $3, replacing $2 atomically (a running
# agent keeps its old inode).
put() {
    tmp="$2.new.$$"
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
}

enroll() {
    if [ -n "$R" ]; then
        AUTOGIT_JOIN_TOKEN=$TOKEN "$R$BIN" --config "$R$CONFIG" join \
            --coordinator "$COORDINATOR" --state-dir "$R$STATE_DIR"
    else
        chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
        AUTOGIT_JOIN_TOKEN=$TOKEN runuser -u "$SERVICE_USER" -- "$BIN" --config "$CONFIG" join \
            --coordinator "$COORDINATOR" --state-dir "$STATE_DIR"
    fi
}

do_install() {
    if [ -n "$ARCH" ]; then
        ARCH=$(normalize_arch "$ARCH") || die "unsupported --arch (use x86_64, aarch64 or riscv64)"
    else
        machine=$(uname -m)
        ARCH=$(normalize_arch "$machine") ||
            die "unsupported architecture $machine (AutoGit ships x86_64, aarch64 and riscv64)"
    fi
    if [ -n "$COORDINATOR" ] && [ -z "$TOKEN" ]; then
        die "--coordinator needs a join token (--token, --token-file or AUTOGIT_JOIN_TOKEN)"
    fi
    if [ -z "$COORDINATOR" ] && [ -n "$TOKEN" ]; then
        die "a join token needs --coordinator HOST:PORT"
    fi
    src=$(find_binary)
    [ -f "$src" ] || die "no agent binary for $ARCH at $src (build it with \`cargo xtask dist\`, or pass --binary PATH)"
    got=$(elf_arch "$src")
    [ -n "$got" ] || die "$src is not an ELF executable"
    [ "$got" = "$ARCH" ] || die "$src is built for $got, but this host is $ARCH"
    for f in "$UNIT_NAME" agent.toml; do
        [ -f "$SCRIPT_DIR/$f" ] || die "$SCRIPT_DIR/$f is missing: run install.sh from deploy/ or target/dist/"
    done

    ensure_user
    mkdir -p "$R/usr/local/bin" "$R$CONFIG_DIR" "$R/etc/systemd/system" "$R$STATE_DIR"
    chmod 0755 "$R$CONFIG_DIR"
    chmod 0700 "$R$STATE_DIR"
    put "$src" "$R$BIN" 0755
    say "installed $src as $R$BIN"
    if [ -e "$R$CONFIG" ]; then
        say "kept the existing $R$CONFIG"
    else
        put "$SCRIPT_DIR/agent.toml" "$R$CONFIG" 0640
        [ -n "$R" ] || chgrp "$SERVICE_USER" "$CONFIG"
        say "wrote $R$CONFIG"
    fi
    put "$SCRIPT_DIR/$UNIT_NAME" "$R$UNIT" 0644
    say "installed $R$UNIT"
    [ -n "$R" ] || chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"

    if [ "$HAVE_SYSTEMCTL" = yes ]; then
        systemctl daemon-reload
        systemctl enable "$UNIT_NAME" >/dev/null
    elif [ -z "$R" ]; then
        say "warning: systemd is not running; start the agent yourself: $BIN run"
    fi
    if [ -n "$COORDINATOR" ]; then
        enroll || die "enrollment failed (the agent is installed; run install.sh again with a new token)"
    fi
    if [ ! -f "$R$STATE_DIR/agent.json" ]; then
        say "not enrolled yet: run install.sh again with --coordinator HOST:PORT --token TOKEN"
    elif [ "$HAVE_SYSTEMCTL" = yes ] && [ "$START" = yes ]; then
        systemctl restart "$UNIT_NAME"
        say "started $UNIT_NAME (journalctl -u $UNIT_NAME to follow it)"
    fi
}

# --- uninstall -------------------------------------------------------------

do_uninstall() {
    if [ "$HAVE_SYSTEMCTL" = yes ]; then
        systemctl disable --now "$UNIT_NAME" >/dev/null 2>&1 || true
    fi
    rm -f "$R$UNIT" "$R$BIN"
    [ "$HAVE_SYSTEMCTL" = no ] || systemctl daemon-reload
    if [ -f "$R$CONFIG" ]; then
        if [ "$PURGE" = yes ] || cmp -s "$R$CONFIG" "$SCRIPT_DIR/agent.toml"; then
            rm -f "$R$CONFIG"
        else
            say "kept $R$CONFIG: it was changed (--purge removes it)"
        fi
    fi
    rmdir "$R$CONFIG_DIR" 2>/dev/null || true
    if [ "$PURGE" = yes ]; then
        rm -rf "$R$STATE_DIR"
        remove_user
        say "purged $R$STATE_DIR and the $SERVICE_USER user"
    elif [ -d "$R$STATE_DIR" ]; then
        say "kept $R$STATE_DIR (this host's enrollment; --purge removes it)"
    fi
    say "uninstalled"
}

case $MODE in
install) do_install ;;
uninstall) do_uninstall ;;
esac
