#!/usr/bin/env bash
# Builds the release binaries into target/dist/.
#
# The tools that never resolve a host name are linked statically (glibc's crt-static): for a
# per-call `cfn-emit` the dynamic loader was most of the start-up cost (1.64x /bin/true
# dynamic, 1.18x static, measured by `just bench`). cfn-alert, cfn-push and cfn-serve stay
# dynamic: glibc's resolver loads NSS modules at run time, which a static binary can only do
# with the very glibc it was linked against.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
# cfn-cat (s3:// inputs) and cfn-archive (--upload) reach S3 by name, so they are dynamic too.
static=(cfn-emit cfn-agg cfn-promtext cfn-top)
dynamic=(cfn-alert cfn-push cfn-serve cfn-cat cfn-archive)
pkgs() { for b in "$@"; do printf -- '-p\n%s\n' "$b"; done; }
mkdir -p target/dist
if [[ $triple == *-linux-gnu ]]; then
    # An explicit --target keeps the flag off build scripts and proc macros (which cannot be
    # static); the binaries land in target/$triple/release.
    mapfile -t args < <(pkgs "${static[@]}")
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --target "$triple" "${args[@]}" "$@"
    for b in "${static[@]}"; do cp "target/$triple/release/$b" target/dist/; done
else
    dynamic+=("${static[@]}")
fi
mapfile -t args < <(pkgs "${dynamic[@]}")
cargo build --release "${args[@]}" "$@"
for b in "${dynamic[@]}"; do cp "target/release/$b" target/dist/; done
echo "build-release: binaries in target/dist/ ($(ls target/dist | tr '\n' ' '))"
