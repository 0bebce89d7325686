# syntax=docker/dockerfile:1
#
# product-api container image.
#
# NOT EXERCISED BY CI: the build machine of this repository has no Docker engine, so this file is
# written against the code and checked by reading only (see docs/deploy.md, "Containers").
#
#   docker build -t product-api .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=… -e REDIS_URL=… -e CURSOR_SECRET=… product-api
#
# `serve` (the default command) applies pending migrations itself before it serves.

# --- build -------------------------------------------------------------------------------------
# The toolchain the repository is built and tested with (rustc 1.95; Cargo.toml's rust-version is
# the minimum).
FROM rust:1.95-bookworm AS builder
# cmake: aws-lc-sys (rustls' crypto, through reqwest) may want it; gcc and make are in the image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace (the root crate and loadtest/, which the workspace lists): Cargo.lock pins
# every dependency (--locked refuses to change it). docs/openapi.json and migrations/ are compiled
# into the binary.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin product-api \
    && cp target/release/product-api /usr/local/bin/product-api

# --- run ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the token endpoint and the catalogue over TLS; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin product-api
COPY --from=builder /usr/local/bin/product-api /usr/local/bin/product-api
USER product-api
# Every instance listens on all interfaces behind the load balancer; logs as JSON lines.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json
EXPOSE 8000
# /ready: 200 when MySQL answers (Redis down is still ready), 503 while draining after SIGTERM.
# Liveness alone would be /health.
HEALTHCHECK --interval=5s --timeout=2s --start-period=30s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/ready" > /dev/null || exit 1
# SIGTERM: /ready turns 503 for DRAIN_DELAY_MS, then in-flight requests get SHUTDOWN_GRACE_MS.
# Give the container more than their sum to stop (docker stop -t, stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["product-api"]
CMD ["serve"]
