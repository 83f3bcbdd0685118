# syntax=docker/dockerfile:1
# JobPath API container image: built in the official Rust image, run as a non-root user in
# a slim Debian with nothing but the binary.
#
#   docker build -t jobpath-api .        or        docker compose up --build   (compose.yaml)
#
# The build stage runs scripts/build-release.sh, the same script CI runs, and the binary path
# below is where that script puts it; server/tests/cli/container.rs checks that these stay in
# step. Both stages are Debian 12 (bookworm), so the binary finds the glibc it was linked to.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release.sh

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 jobpath \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin jobpath
COPY --from=build /src/target/release/jobpath-server /usr/local/bin/jobpath-server
USER 10001:10001
# Production by default: the server refuses to start without a real JWT_SECRET_KEY and
# PASSWORD_PEPPER, and a DATABASE_URL. The metrics listener binds every interface of the container, since a published
# port reaches it on the container's own address, not its loopback; who reaches it from
# outside is the port publishing's business (compose.yaml publishes it on the host's loopback).
ENV APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100 \
    LOG_FORMAT=json
EXPOSE 8000 9100
# The binary checks itself (GET /health/ready on HOST:PORT): no curl in the image.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["jobpath-server", "healthcheck"]
ENTRYPOINT ["jobpath-server"]
CMD ["serve"]
