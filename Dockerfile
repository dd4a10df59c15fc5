# Multi-stage build of the vigil binary. (No Docker engine runs in this project's CI; the
# compose file is validated there, the image is built by deployments.)
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin vigil

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/vigil --create-home vigil
COPY --from=build /src/target/release/vigil /usr/local/bin/vigil
USER vigil
VOLUME ["/var/lib/vigil"]
EXPOSE 1883 8080
ENTRYPOINT ["/usr/local/bin/vigil"]
CMD ["serve", "--data-dir", "/var/lib/vigil", "--http-listen", "0.0.0.0:8080"]
