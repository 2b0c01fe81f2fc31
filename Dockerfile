# syntax=docker/dockerfile:1
# Multi-stage: a static binary (no cgo: SQLite is modernc.org/sqlite) on a
# distroless base, running as a non-root user. Run it with --network host
# (see the README's Docker section).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same command as scripts/build.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/traverse ./cmd/traverse
# distroless has no shell to mkdir with: make the data directory here.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/traverse /usr/local/bin/traverse
# The data directory (SQLite store, its key file, ACME account and
# certificates) exists and belongs to nonroot (uid 65532), so a first start
# without a volume can write; mount a volume on it to keep the data.
COPY --from=build --chown=65532:65532 /out/data /var/lib/traverse
WORKDIR /var/lib/traverse
USER nonroot:nonroot
ENV TRAVERSE_CONFIG=/etc/traverse/traverse.yaml \
    TRAVERSE_DATA_DIR=/var/lib/traverse
VOLUME /var/lib/traverse
# STUN/TURN over UDP and TCP; TURN over TLS (and plain TCP) on 443 and 5349;
# the relay port range; the issuer API and metrics (bound to loopback by
# default: set issuer.listen / metrics.listen to 0.0.0.0:… to publish them).
# As non-root with --network host, 443 needs the host's
# `sysctl net.ipv4.ip_unprivileged_port_start=443` (or listen on 5349 only).
EXPOSE 3478/udp 3478/tcp 443/tcp 5349/tcp 49152-65535/udp 8080/tcp 9641/tcp
ENTRYPOINT ["/usr/local/bin/traverse"]
CMD ["serve"]
