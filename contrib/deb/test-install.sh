#!/usr/bin/env bash
# Installs the package for real (root, dpkg -i), checks what it promises, purges it, and
# checks that only the documented data is left. Run by .ci/run after the tests:
#
#   bash contrib/deb/test-install.sh target/debian/cfn-metrics_*.deb
set -euo pipefail
deb=$1
fail() { echo "test-install: FAILED: $*" >&2; exit 1; }
step() { echo "test-install: $*"; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
dpkg -s cfn-metrics >/dev/null 2>&1 && dpkg --purge cfn-metrics >/dev/null

step "lintian: no errors"
if lintian --tag-display-limit 0 "$deb" 2>/dev/null | grep '^E:'; then fail "lintian errors"; fi

step "dpkg -i"
dpkg -i "$deb" >/dev/null
getent passwd cfn-metrics | grep -q ':/usr/sbin/nologin$' || fail "no cfn-metrics system user without a login shell"
getent group cfn-metrics >/dev/null || fail "no cfn-metrics group"
[ "$(stat -c '%a %U %G' /run/cfn-metrics)" = "3770 cfn-metrics cfn-metrics" ] || fail "/run/cfn-metrics is $(stat -c '%a %U %G' /run/cfn-metrics)"
[ "$(stat -c '%U' /var/lib/cfn-metrics/archive)" = cfn-metrics ] || fail "archive directory"
for unit in cfn-analyze.timer cfn-archive.timer cfn-rotate.timer; do
    [ -L "/etc/systemd/system/timers.target.wants/$unit" ] || fail "$unit is not enabled"
done
[ -L /etc/systemd/system/multi-user.target.wants/cfn-serve.service ] || fail "cfn-serve is not enabled"
if [ -d /var/lib/prometheus/node-exporter ]; then
    [ "$(readlink /var/lib/prometheus/node-exporter/cfn.prom)" = /var/lib/cfn-metrics/textfile/cfn.prom ] ||
        fail "no textfile link for node_exporter"
fi

step "man pages and completions"
man -w cfn-agg | grep -q '/usr/share/man/man1/cfn-agg.1.gz' || fail "man -w cfn-agg"
man -w cfn-analyze >/dev/null || fail "man -w cfn-analyze"
for f in /usr/share/bash-completion/completions/cfn-agg /usr/share/zsh/vendor-completions/_cfn-agg \
    /usr/share/fish/vendor_completions.d/cfn-agg.fish; do
    [ -s "$f" ] || fail "missing $f"
done

step "systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
    out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no /lib/systemd/system/cfn-*.service /lib/systemd/system/cfn-*.timer 2>&1 | grep 'cfn-' || true)
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
fi

step "an agent of another user in the group emits; cfn-analyze runs as its unit would"
gid=$(getent group cfn-metrics | cut -d: -f3)
setpriv --reuid=4242 --regid=4242 --groups="$gid" -- env CFN_METRICS_DIR=/run/cfn-metrics \
    cfn-emit agent-7 memory_usage_mb 512 mb
setpriv --reuid=4243 --regid=4243 --groups="$gid" -- env CFN_METRICS_DIR=/run/cfn-metrics \
    cfn-emit agent-7 memory_usage_mb 640 mb
/usr/lib/cfn-metrics/check-default /etc/default/cfn-metrics
set +e
# shellcheck disable=SC2046
setpriv --reuid=cfn-metrics --regid=cfn-metrics --init-groups -- \
    env -i PATH=/usr/bin:/bin HOME=/var/lib/cfn-metrics $(grep -E '^[A-Z_]+=' /etc/default/cfn-metrics) cfn-analyze
status=$?
set -e
[ "$status" = 0 ] || [ "$status" = 1 ] || fail "cfn-analyze exited $status"
grep -q '^cfn_memory_usage_bytes_count 2$' /var/lib/cfn-metrics/textfile/cfn.prom ||
    fail "the textfile lacks both agents' records: $(cat /var/lib/cfn-metrics/textfile/cfn.prom)"

step "cfn-top --once, as a member of the group, shows both agents' records"
top=$(setpriv --reuid=4242 --regid=4242 --groups="$gid" -- env CFN_METRICS_DIR=/run/cfn-metrics \
    cfn-top --once --window 1h --width 100)
echo "$top" | grep -Eq '^memory_usage_mb +2 ' || fail "cfn-top --once: $top"
man -w cfn-top >/dev/null || fail "man -w cfn-top"
if command -v promtool >/dev/null; then
    promtool check metrics </var/lib/cfn-metrics/textfile/cfn.prom || fail "promtool check metrics"
fi
# The archiver, as its unit runs it, keeps a day file: data that purge leaves.
setpriv --reuid=cfn-metrics --regid=cfn-metrics --init-groups -- \
    env -i PATH=/usr/bin:/bin HOME=/var/lib/cfn-metrics $(grep -E '^[A-Z_]+=' /etc/default/cfn-metrics) cfn-archive sync >/dev/null

step "a bad /etc/default line stops the units, naming the line"
cp /etc/default/cfn-metrics /tmp/cfn-metrics.default.saved
echo 'CFN_SHARD=16' >>/etc/default/cfn-metrics
if msg=$(/usr/lib/cfn-metrics/check-default /etc/default/cfn-metrics 2>&1); then fail "a bad line passed"; fi
echo "$msg" | grep -q "/etc/default/cfn-metrics:[0-9]*: unknown setting CFN_SHARD" || fail "$msg"
cp /tmp/cfn-metrics.default.saved /etc/default/cfn-metrics

step "remove and purge"
files=$(dpkg -L cfn-metrics | sort)
dpkg --purge cfn-metrics >/dev/null
for f in $files; do
    case $f in /. | /etc | /etc/* | /usr | /usr/* | /lib | /lib/*) ;; *) continue ;; esac
    [ -d "$f" ] && continue
    if [ -f "$f" ] || [ -L "$f" ]; then fail "$f is left after purge"; fi
done
[ ! -e /etc/default/cfn-metrics ] || fail "/etc/default/cfn-metrics left"
[ ! -e /run/cfn-metrics ] || fail "/run/cfn-metrics left"
[ ! -L /etc/systemd/system/timers.target.wants/cfn-analyze.timer ] || fail "timer links left"
[ ! -e /var/lib/prometheus/node-exporter/cfn.prom ] || fail "node_exporter link left"
left=$(cd /var/lib/cfn-metrics 2>/dev/null && find . -mindepth 1 | sort | tr '\n' ' ')
case $left in
'' | './archive '*) ;;
*) fail "undocumented files left in /var/lib/cfn-metrics: $left" ;;
esac
for l in $left; do
    case $l in ./archive | ./archive/cfn-metrics-*.jsonl | ./archive/cfn-metrics-*.jsonl.gz | ./archive/.cfn-archive-state.json | ./archive/.cfn-archive.lock) ;;
    *) fail "undocumented file left: /var/lib/cfn-metrics/$l" ;;
    esac
done
rm -rf /var/lib/cfn-metrics
step "ok: installed, ran, purged; left: the archive ($left) and the cfn-metrics user and group, as documented"
