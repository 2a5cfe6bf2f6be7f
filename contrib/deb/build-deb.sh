#!/usr/bin/env bash
# Builds target/debian/cfn-metrics_<version>-1_<arch>.deb from this checkout with
# dpkg-deb alone (no cargo-deb to compile): the release binaries of contrib/build-release.sh
# (static), cfn-analyze, gzipped man pages, bash/zsh/fish completions,
# the systemd units and timers, sysusers.d and tmpfiles.d entries, /etc/default/cfn-metrics
# and /etc/profile.d/cfn-metrics.sh (conffiles), copyright, changelog and README.Debian.
#
#   bash contrib/deb/build-deb.sh            # builds the binaries first
#   CFN_DEB_NO_BUILD=1 bash contrib/deb/build-deb.sh   # uses target/dist as it is
set -euo pipefail
cd "$(dirname "$0")/../.."
here=contrib/deb
[ "${CFN_DEB_NO_BUILD:-0}" = 1 ] || bash contrib/build-release.sh >&2

# Whoever builds the package maintains it for their fleet (dch's variables).
maintainer="${DEBFULLNAME:-cfn-metrics packagers} <${DEBEMAIL:-packagers@cfn-metrics.dev}>"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1
arch=$(dpkg --print-architecture)
tools=(cfn-emit cfn-cat cfn-agg cfn-alert cfn-promtext cfn-archive cfn-push cfn-serve cfn-top)
root=target/debian/root
out=target/debian/cfn-metrics_${version}_${arch}.deb
rm -rf "$root"
mkdir -p "$root/DEBIAN"

inst() { # MODE SRC DEST
    install -D -m "$1" "$2" "$root/$3"
}
for t in "${tools[@]}"; do inst 0755 "target/dist/$t" "usr/bin/$t"; done
# Release binaries carry no debug info; strip what symbols are left (lintian asks for it).
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root"/usr/bin/cfn-*
inst 0755 contrib/cfn-analyze usr/bin/cfn-analyze
inst 0644 contrib/emit_metric.sh usr/share/cfn-metrics/emit_metric.sh
inst 0644 "$here/cfn-analyze.1" usr/share/man/man1/cfn-analyze.1
gzip -9n "$root/usr/share/man/man1/cfn-analyze.1"
inst 0755 "$here/check-default" usr/lib/cfn-metrics/check-default
for m in man/*.1; do
    inst 0644 "$m" "usr/share/man/man1/$(basename "$m")"
    gzip -9n "$root/usr/share/man/man1/$(basename "$m")"
done
for f in completions/*.bash; do inst 0644 "$f" "usr/share/bash-completion/completions/$(basename "$f" .bash)"; done
for f in completions/_*; do inst 0644 "$f" "usr/share/zsh/vendor-completions/$(basename "$f")"; done
for f in completions/*.fish; do inst 0644 "$f" "usr/share/fish/vendor_completions.d/$(basename "$f")"; done
for f in contrib/systemd/*.service contrib/systemd/*.timer; do
    inst 0644 "$f" "lib/systemd/system/$(basename "$f")"
done
inst 0644 "$here/sysusers.conf" usr/lib/sysusers.d/cfn-metrics.conf
inst 0644 "$here/tmpfiles.conf" usr/lib/tmpfiles.d/cfn-metrics.conf
inst 0644 "$here/cfn-metrics.default" etc/default/cfn-metrics
inst 0644 "$here/profile.sh" etc/profile.d/cfn-metrics.sh
inst 0644 "$here/copyright" usr/share/doc/cfn-metrics/copyright
inst 0644 "$here/README.Debian" usr/share/doc/cfn-metrics/README.Debian
sed "s/MAINTAINER/$maintainer/" "$here/changelog" >"$root.changelog"
inst 0644 "$root.changelog" usr/share/doc/cfn-metrics/changelog.Debian
rm -f "$root.changelog"
gzip -9n "$root/usr/share/doc/cfn-metrics/changelog.Debian"
for s in postinst prerm postrm; do inst 0755 "$here/$s" "DEBIAN/$s"; done
printf '/etc/default/cfn-metrics\n/etc/profile.d/cfn-metrics.sh\n' >"$root/DEBIAN/conffiles"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: cfn-metrics
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: libc6, adduser, init-system-helpers (>= 1.54~)
Suggests: prometheus-node-exporter, prometheus-alertmanager
Section: admin
Priority: optional
Description: metrics from fleets of agents: emit, aggregate, alert, archive
 Small Unix tools over JSONL shards on tmpfs: cfn-emit appends a record at
 the cost of /bin/true; cfn-cat and cfn-agg read and aggregate them (count,
 avg, min, max, p50, p95, p99); cfn-alert notifies (Slack, PagerDuty,
 webhooks, Alertmanager); cfn-archive keeps day files with rotation,
 retention and S3 cold storage, exactly once; cfn-serve (a web dashboard)
 and cfn-top (a live terminal view) show them; cfn-promtext and cfn-push
 export to Prometheus, Datadog, New Relic and OpenTelemetry.
 .
 This package runs the analysis, archive and rotation timers and the
 dashboard as the system user cfn-metrics; agents of any user in the group
 cfn-metrics write to the group-shared hot directory /run/cfn-metrics.
CONTROL
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control" "$root/DEBIAN/conffiles"
mkdir -p "$(dirname "$out")"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >&2
echo "$out"
