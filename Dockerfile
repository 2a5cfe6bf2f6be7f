# syntax=docker/dockerfile:1
# Multi-stage build of the cfn-metrics tools. The runtime image holds only the binaries,
# cfn-analyze, the shell shim and the timer loop; shards go to a tmpfs, the archive to a volume.
FROM rust:1.91-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
RUN cargo build --release --locked --workspace --bins \
 && strip target/release/cfn-emit target/release/cfn-cat target/release/cfn-agg target/release/cfn-alert \
          target/release/cfn-promtext target/release/cfn-archive target/release/cfn-push target/release/cfn-serve

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/cfn-metrics cfn-metrics \
 && install -d -o cfn-metrics -g cfn-metrics /var/lib/cfn-metrics/archive /var/lib/cfn-metrics/textfile
COPY --from=build /src/target/release/cfn-emit /src/target/release/cfn-cat /src/target/release/cfn-agg \
     /src/target/release/cfn-alert /src/target/release/cfn-promtext /src/target/release/cfn-archive \
     /src/target/release/cfn-push /src/target/release/cfn-serve /usr/local/bin/
COPY contrib/cfn-analyze contrib/docker/cfn-timers /usr/local/bin/
COPY contrib/emit_metric.sh /usr/local/share/cfn-metrics/emit_metric.sh
ENV CFN_METRICS_DIR=/dev/shm \
    CFN_ARCHIVE_DIR=/var/lib/cfn-metrics/archive \
    CFN_STATE_DIR=/var/lib/cfn-metrics \
    CFN_TEXTFILE=/var/lib/cfn-metrics/textfile/cfn.prom \
    CFN_SHARDS=16
USER cfn-metrics
EXPOSE 3001
# Default: the timers (analysis every 30 s, archive every 5 min, rotation daily). Run
# `cfn-serve --listen 0.0.0.0:3001` in another container of the same pod for the dashboard.
CMD ["cfn-timers"]
