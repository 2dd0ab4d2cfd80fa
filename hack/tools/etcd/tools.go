//go:build tools

// Package tools records the etcd main package so that go mod tidy keeps its dependencies.
package tools

import _ "go.etcd.io/etcd/server/v3"
