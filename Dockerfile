# syntax=docker/dockerfile:1
# Static binary on distroless/static, non-root, no shell.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
# The Makefile's build target is the one source of the build flags (tags, ldflags, trimpath).
RUN make build BIN=/out/kube-oidc-issuer VERSION="${VERSION}" COMMIT="${COMMIT}"

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kube-oidc-issuer /kube-oidc-issuer
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/kube-oidc-issuer"]
CMD ["serve"]
