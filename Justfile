# cfn-metrics tasks. `just` is optional: each recipe is a plain command you can run yourself.

default:
    @just --list

# Build every tool in release mode, once, into target/dist (static; the demo, the package and
# the chaos soak share this build).
build:
    bash contrib/build-release.sh

# The Debian package: target/debian/cfn-metrics_<version>_<arch>.deb.
deb:
    bash contrib/deb/build-deb.sh

# Run the whole test suite, then list the tests that skipped (the README's test command).
test *args:
    cargo run -p xtask -- test {{args}}

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Render man/ and completions/ from the clap definitions.
gen:
    cargo run -q -p xtask -- gen

# Fail when man/ or completions/ are out of date.
gen-check:
    cargo run -q -p xtask -- gen --check

# Side-by-side benchmarks (ours vs bash vs jq vs Miller); figures go in the README.
bench:
    bash bench/run.sh

# The 500-agent soak run, once per shim mode (minutes; not part of the tests).
soak:
    SOAK_SHIM_MODE=call bash bench/soak.sh
    SOAK_SHIM_MODE=stream bash bench/soak.sh

# Everything failing at once, then an audit of every record (minutes; not part of the tests).
chaos minutes="2" seed="1":
    bash contrib/build-release.sh --with-xtask
    target/dist/dev/xtask chaos --minutes {{minutes}} --seed {{seed}}

# Eight hosts in network namespaces under fire, one Prometheus, Alertmanager and bucket, then
# the audit of it all (root; minutes; not part of the tests).
fleet minutes="2" seed="1" hosts="8":
    bash contrib/build-release.sh --with-xtask
    target/dist/dev/xtask fleet --hosts {{hosts}} --minutes {{minutes}} --seed {{seed}}

# The whole pipeline on a temp dir (the README's first command).
demo:
    bash contrib/demo.sh

# Install the binaries, man pages and completions under PREFIX (default ~/.local).
install prefix="$HOME/.local":
    bash contrib/build-release.sh
    mkdir -p {{prefix}}/bin {{prefix}}/share/man/man1 {{prefix}}/share/bash-completion/completions {{prefix}}/share/zsh/site-functions {{prefix}}/share/fish/vendor_completions.d
    for b in cfn-emit cfn-cat cfn-agg cfn-alert cfn-promtext cfn-archive cfn-push cfn-serve cfn-top; do if [ -f target/dist/$b ]; then install -m 0755 target/dist/$b {{prefix}}/bin/; fi; done
    install -m 0644 man/*.1 {{prefix}}/share/man/man1/
    for f in completions/*.bash; do install -m 0644 $f {{prefix}}/share/bash-completion/completions/$(basename $f .bash); done
    install -m 0644 completions/_* {{prefix}}/share/zsh/site-functions/
    install -m 0644 completions/*.fish {{prefix}}/share/fish/vendor_completions.d/
    install -m 0644 contrib/emit_metric.sh {{prefix}}/share/cfn-metrics-emit_metric.sh
