# Build stage: the pinned toolchain, a release build of the sluice binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml rustfmt.toml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sluice

# Runtime stage: just the binary and an unprivileged user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config /etc/sluice
USER 10001
EXPOSE 6432
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.toml"]
