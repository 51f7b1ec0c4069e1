# syntax=docker/dockerfile:1
# extractor-runtime: build with the official Rust image, run on distroless (glibc, CA
# certificates, non-root). Time zones come from the tz database bundled into the binary (jiff).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY runtime ./runtime
COPY extractors ./extractors
RUN cargo build --release --locked -p extractors --bin extractor-runtime \
    && cp target/release/extractor-runtime /extractor-runtime

FROM ${RUNTIME_IMAGE}
COPY --from=build /extractor-runtime /usr/local/bin/extractor-runtime
USER 65532:65532
# /metrics, /healthz, /readyz when metrics.server.port is 9000.
EXPOSE 9000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["extractor-runtime", "healthcheck", "--url", "http://127.0.0.1:9000/healthz"]
ENTRYPOINT ["extractor-runtime"]
CMD ["run", "-c", "/config/config.yaml"]
