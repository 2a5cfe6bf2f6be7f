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

step "a hostile member of the group: locks, FIFOs, forged lines, escapes, extreme values"
hostile() { setpriv --reuid=4244 --regid=4244 --groups="$gid" -- env CFN_METRICS_DIR=/run/cfn-metrics "$@"; }
# The alerts log is the service's: a member can neither lock it nor put anything in its place.
if hostile flock -n /var/lib/cfn-metrics/cfn-alerts.jsonl true 2>/dev/null; then fail "a member could lock the alerts log"; fi
if hostile touch /var/lib/cfn-metrics/cfn-alerts.jsonl.planted 2>/dev/null; then fail "a member could write in the state directory"; fi
# Where the log used to be: a FIFO, and a forged "resolved" line beside it.
hostile mkfifo /run/cfn-metrics/cfn-alerts.jsonl
echo '{"timestamp":"2030-01-01T00:00:00.000Z","alert":"coordination_time_exceeded","state":"resolved","severity":"critical","message":"forged","metadata":{"metric":"coordination.time","stat":"max"}}' |
    hostile tee /run/cfn-metrics/cfn-alerts-forged.jsonl >/dev/null
# An agent id that would write the operator's clipboard and clear the screen; extreme values.
hostile cfn-emit --agent "$(printf 'x\033]52;c;cHduZWQ=\007\033[2J')" coordination.time 15000
hostile cfn-emit --agent agent-9 --unit gb heap 1e308
hostile cfn-emit --agent agent-9 huge 1.7976931348623157e308
# A second member cannot delete or replace the first one's shard (sticky directory).
theirs=/run/cfn-metrics/cfn-metrics-7.jsonl # agent-7's, made by uid 4242 above
[ "$(stat -c %u "$theirs")" = 4242 ] || fail "$theirs is not uid 4242's"
if hostile rm -f "$theirs" 2>/dev/null && [ ! -e "$theirs" ]; then fail "a member deleted another's shard"; fi

step "the alert still reaches its receiver; the dashboard is drawn"
receiver=$(mktemp -d)
python3 - "$receiver" <<'PY' &
import http.server, os, sys
out = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(os.path.join(out, "got.jsonl"), "ab") as f:
            f.write(body + b"\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(os.path.join(out, "port"), "w").write(str(s.server_address[1]))
s.serve_forever()
PY
receiver_pid=$!
for _ in $(seq 100); do [ -s "$receiver/port" ] && break; sleep 0.1; done
set +e
# shellcheck disable=SC2046
analyze_err=$(setpriv --reuid=cfn-metrics --regid=cfn-metrics --init-groups -- \
    env -i PATH=/usr/bin:/bin HOME=/var/lib/cfn-metrics $(grep -E '^[A-Z_]+=' /etc/default/cfn-metrics) \
    CFN_WEBHOOK_URL="http://127.0.0.1:$(cat "$receiver/port")/hook" cfn-analyze 2>&1 >/dev/null)
status=$?
set -e
kill "$receiver_pid" 2>/dev/null || true
[ "$status" = 1 ] || fail "cfn-analyze exited $status (1: firing): $analyze_err"
grep -q '"alert":"coordination_time_exceeded","state":"firing"' "$receiver/got.jsonl" ||
    fail "the receiver got no firing alert: $(cat "$receiver/got.jsonl" 2>/dev/null)"
case $analyze_err in *$'\033'*) fail "an escape reached the operator's terminal: $analyze_err" ;; esac
grep -q '"state": *"firing"' /var/lib/cfn-metrics/alert-state.json || fail "the alert state was not saved"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# shellcheck disable=SC2046
setpriv --reuid=cfn-metrics --regid=cfn-metrics --init-groups -- \
    env -i PATH=/usr/bin:/bin HOME=/var/lib/cfn-metrics $(grep -E '^[A-Z_]+=' /etc/default/cfn-metrics) \
    cfn-serve --listen "127.0.0.1:$port" --alert-state /var/lib/cfn-metrics/alert-state.json \
    --snapshot-dir /var/lib/cfn-metrics/serve 2>/dev/null &
serve_pid=$!
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break; sleep 0.1; done
if command -v chromium >/dev/null; then
    profile=$(mktemp -d)
    dom=$(timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$profile" \
        --virtual-time-budget=10000 --dump-dom "http://127.0.0.1:$port/?scale=log" 2>/dev/null)
    rm -rf "$profile"
    echo "$dom" | grep -q 'data-ready="1"' || fail "the dashboard was not drawn: $(echo "$dom" | head -c 2000)"
    echo "$dom" | grep -q 'Invalid array length' && fail "the dashboard broke on an extreme value"
    echo "$dom" | grep -q 'coordination_time_exceeded' || fail "the dashboard does not show the firing alert"
elif [ "${CFN_REQUIRE_PEERS:-}" = 1 ]; then
    fail "chromium not found (CFN_REQUIRE_PEERS=1)"
else
    echo "test-install: SKIPPED the dashboard check: chromium not found"
fi
# A clean stop writes the index's snapshot, the service's alone, where the unit keeps it.
kill -TERM "$serve_pid" 2>/dev/null || true
serve_status=0
wait "$serve_pid" 2>/dev/null || serve_status=$?
[ "$serve_status" = 0 ] || fail "cfn-serve did not stop cleanly on SIGTERM (exit $serve_status)"
snap=$(find /var/lib/cfn-metrics/serve -name 'cfn-serve-*.snap' -user cfn-metrics -perm 600 2>/dev/null)
[ -n "$snap" ] || fail "no snapshot of the index in /var/lib/cfn-metrics/serve: $(ls -la /var/lib/cfn-metrics/serve 2>&1)"
[ "$(stat -c '%a' /var/lib/cfn-metrics/serve)" = 700 ] || fail "the snapshot directory is not 0700"

step "nothing else changed: no setuid or setgid file, the service's files are the service's"
planted=$(find /run/cfn-metrics /var/lib/cfn-metrics -type f -perm /6000 2>/dev/null)
[ -z "$planted" ] || fail "setuid or setgid files: $planted"
stray=$(find /var/lib/cfn-metrics -mindepth 1 ! -user cfn-metrics 2>/dev/null)
[ -z "$stray" ] || fail "files in the state directory not the service's: $stray"
rm -rf "$receiver"

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
