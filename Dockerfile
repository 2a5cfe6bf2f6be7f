# syntax=docker/dockerfile:1
# Multi-stage build of the cfn-metrics tools. The runtime image holds only the binaries,
# cfn-analyze, the shell shim and the timer loop; shards go to a tmpfs, the archive to a volume.
FROM rust:1.91-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
COPY contrib/build-release.sh contrib/build-release.sh
RUN bash contrib/build-release.sh --locked && strip target/dist/cfn-*

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/cfn-metrics cfn-metrics \
 && install -d -o cfn-metrics -g cfn-metrics /var/lib/cfn-metrics/archive /var/lib/cfn-metrics/textfile
COPY --from=build /src/target/dist/cfn-emit /src/target/dist/cfn-cat /src/target/dist/cfn-agg \
     /src/target/dist/cfn-alert /src/target/dist/cfn-promtext /src/target/dist/cfn-archive \
     /src/target/dist/cfn-push /src/target/dist/cfn-serve /usr/local/bin/
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
