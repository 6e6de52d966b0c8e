# Build stage: the pinned toolchain, a release build of the sluice binary from the lock file.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml rustfmt.toml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sluice

# Runtime stage: the binary, the example configurations and an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config /etc/sluice
# Mount your configuration as /etc/sluice/sluice.toml (the examples beside it show every key).
USER 10001
# 6432: PostgreSQL clients; 9187: the admin endpoint (/health, /metrics, status page).
EXPOSE 6432 9187
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:9187/health"]
# SIGTERM drains: open transactions finish within lifecycle.shutdown_timeout, then exit 0
# (give `docker stop -t` more than that).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.toml"]
