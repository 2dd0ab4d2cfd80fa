# syntax=docker/dockerfile:1
# Static binary on distroless/static, non-root, no shell.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
# -tags grpcnotrace: see GO_TAGS in the Makefile.
RUN CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
      -ldflags "-s -w -X github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version.version=${VERSION} -X github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version.commit=${COMMIT}" \
      -o /out/kube-oidc-issuer ./cmd/kube-oidc-issuer

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kube-oidc-issuer /kube-oidc-issuer
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/kube-oidc-issuer"]
CMD ["serve"]
