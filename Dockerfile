# syntax=docker/dockerfile:1
# Multi-stage: a static binary (no cgo: SQLite is modernc.org/sqlite) on a
# distroless base, running as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/traverse ./cmd/traverse

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/traverse /usr/local/bin/traverse
# The data directory holds the SQLite store and its key file: mount a volume.
WORKDIR /var/lib/traverse
USER nonroot:nonroot
# STUN/TURN over UDP and TCP; TURN over TLS (and plain TCP) on 443 and 5349;
# the relay port range; the issuer API and metrics (bound to loopback by
# default: set issuer.listen / metrics.listen to 0.0.0.0:… to publish them).
# As non-root, 443 needs `--sysctl net.ipv4.ip_unprivileged_port_start=0`
# (or publish 5349 only, or map -p 443:5349/tcp).
EXPOSE 3478/udp 3478/tcp 443/tcp 5349/tcp 49152-65535/udp 8080/tcp 9641/tcp
ENV TRAVERSE_CONFIG=/etc/traverse/traverse.yaml
ENTRYPOINT ["/usr/local/bin/traverse"]
CMD ["serve"]
