//go:build tools

// Package tools records the MinIO main package so that go mod tidy keeps its dependencies.
package tools

import _ "github.com/minio/minio"
