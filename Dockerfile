# Multi-stage build of the vigil binary. (No Docker engine runs in this project's CI; the
# compose file is validated there, the image is built by deployments.)
# The dashboard's front-end libraries come from npm (the committed lockfile); build.rs embeds them.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY dashboards/web/package.json dashboards/web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
COPY --from=web /web/node_modules dashboards/web/node_modules
RUN cargo build --release --locked --bin vigil

FROM debian:bookworm-slim
# ca-certificates: the system CAs, for InfluxDB (or a broker without mqtt.ca_file) over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Vigil runs as an unprivileged user with a fixed uid/gid. 1883 is the uid/gid of the
# `mosquitto` user in the eclipse-mosquitto image: the password and ACL files that
# `vigil broker mosquitto-config` writes (mode 0600) into the volume both containers share
# (/etc/mosquitto/vigil) are then readable by Mosquitto, with the ownership it expects.
RUN groupadd --system --gid 1883 vigil \
    && useradd --system --uid 1883 --gid 1883 --home-dir /var/lib/vigil --create-home vigil \
    && install -d -o vigil -g vigil -m 0750 /etc/mosquitto/vigil \
    && install -d -m 0755 /etc/vigil
COPY --from=build /src/target/release/vigil /usr/local/bin/vigil
USER vigil
VOLUME ["/var/lib/vigil"]
EXPOSE 1883 8080 40000-40099/udp
ENTRYPOINT ["/usr/local/bin/vigil"]
CMD ["serve", "--data-dir", "/var/lib/vigil", "--http-listen", "0.0.0.0:8080"]
