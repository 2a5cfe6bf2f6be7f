#!/usr/bin/env bash
# Builds every binary of the workspace in release mode, once: the nine tools into target/dist/
# (what `just install` and the Debian package take), and into target/dist/dev/ what is never
# installed: cfn-archive-faults (cfn-archive with its fault injection armed) and, with
# --with-xtask, xtask (the chaos soak's harness). The demo, the package and the chaos soak all
# use this one build.
#
# Linked statically (glibc's crt-static): for a per-call `cfn-emit` the dynamic loader was most
# of the start-up cost (1.64x /bin/true dynamic, 1.00-1.18x static, measured by `just bench`).
# The tools that reach a server by name resolve it statically too: glibc (2.34 and later) has
# the `files` and `dns` sources of nsswitch.conf built in, so a static binary resolves
# through /etc/hosts and /etc/resolv.conf without loading a module (strace shows no dlopen);
# a source that is a module (`resolve`, `mdns`, ...) is loaded from the system's glibc and
# works when that is the glibc it was built with (the package is built per Debian release),
# and is skipped for the next source otherwise.
#
# A build where nothing changed takes a second or two; a fresh one a few minutes, with
# cargo's progress on the terminal and a line every 10 s while one crate holds it.
#
#   bash contrib/build-release.sh [--with-xtask] [CARGO BUILD ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(--workspace --exclude xtask)
if [ "${1:-}" = --with-xtask ]; then
    packages=(--workspace)
    shift
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
target=()
out=target/release
if [[ $triple == *-linux-gnu ]]; then
    # An explicit --target keeps the flag off build scripts and proc macros (which cannot be
    # static); the binaries land in target/$triple/release.
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
    target=(--target "$triple")
    out=target/$triple/release
fi

# A crate compiled with one codegen unit and LTO can hold the build for a minute without a
# word from cargo: say how long it has been, and what cargo said last.
log=$(mktemp)
trap 'rm -f "$log"; [ -z "${ticker:-}" ] || kill "$ticker" 2>/dev/null || true' EXIT
(
    start=$SECONDS
    # sleep's output goes nowhere: killed mid-sleep, the ticker must not leave a process
    # holding the caller's pipe open.
    while sleep 10 </dev/null >/dev/null 2>&1; do
        last=$(tr '\r' '\n' <"$log" | grep -E '^ *(Compiling|Building|Finished)' | tail -1 | sed 's/^ *//' || true)
        echo "build-release: $((SECONDS - start)) s, still building${last:+ (cargo last said: ${last:0:70})}" >&2
    done
) &
ticker=$!
# Through tee cargo's stderr is a pipe: keep its progress bar and colours on a terminal.
if [ -t 2 ]; then
    export CARGO_TERM_PROGRESS_WHEN=always CARGO_TERM_PROGRESS_WIDTH="${COLUMNS:-100}" CARGO_TERM_COLOR=always
fi
echo "build-release: cargo build --release ${target[*]} ${packages[*]} --bins $*" >&2
cargo build --release "${target[@]}" "${packages[@]}" --bins "$@" 2> >(tee "$log" >&2)
kill "$ticker" 2>/dev/null || true
wait "$ticker" 2>/dev/null || true
ticker=

mkdir -p target/dist/dev
# Replaced, not overwritten: a copy may be running (the chaos soak's own xtask).
for b in "$out"/cfn-* "$out"/xtask; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    case ${b##*/} in
        cfn-archive-faults | xtask) cp --remove-destination "$b" target/dist/dev/ ;;
        *) cp --remove-destination "$b" target/dist/ ;;
    esac
done
echo "build-release: tools in target/dist/ ($(cd target/dist && ls -p | grep -v / | tr '\n' ' ')), dev/ ($(ls target/dist/dev | tr '\n' ' '))" >&2
