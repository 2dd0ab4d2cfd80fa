//go:build tools

// Package tools pins staticcheck's module for hack/build-test-binaries.sh staticcheck.
package tools

import _ "honnef.co/go/tools/cmd/staticcheck"
