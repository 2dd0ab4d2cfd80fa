package main

import (
	"strings"
	"testing"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

func TestServeRefusesBadListenerLimits(t *testing.T) {
	base := []string{"serve", "--issuer-url", "https://oidc.example.com", "--key-file", "/nonexistent/sa.pub"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"negative connection cap", []string{"--max-connections", "-1"}, "--max-connections -1: want at least 0"},
		{"no internal connections", []string{"--internal-max-connections", "0"}, "--internal-max-connections 0: want at least 1"},
		{"no header timeout", []string{"--read-header-timeout", "0s"}, "--read-header-timeout 0s"},
		{"no write timeout", []string{"--write-timeout", "0s"}, "--write-timeout 0s"},
		{"no idle timeout", []string{"--idle-timeout", "0s", "--idle-timeout-under-pressure", "0s"}, "--idle-timeout 0s"},
		{"pressure timeout above the idle timeout", []string{"--idle-timeout", "10s", "--idle-timeout-under-pressure", "1m"}, "want at most --idle-timeout 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, "", append(base, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestFitOpenFileLimit: the public cap is lowered so that, with the other listeners' caps and the
// process's other files, it fits the open-file limit: running out of descriptors would stop every
// listener, probes included, while the cap only sheds idle connections.
func TestFitOpenFileLimit(t *testing.T) {
	admin := server.DefaultListenerConfig().MaxConnections
	for _, tc := range []struct {
		name      string
		soft      uint64
		public    int
		want      int
		wantLower bool
	}{
		{"plenty", 1 << 20, 512, 512, false},
		{"exactly enough", uint64(512 + 64 + admin + otherFDs), 512, 512, false},
		{"one short", uint64(511 + 64 + admin + otherFDs), 512, 511, true},
		{"container default 1024", 1024, 512, 512, false},
		{"512, as in the flood test", 512, 512, 512 - 64 - admin - otherFDs, true},
		{"far too low: a floor", 256, 512, minFittedConns, true},
		{"beyond int32", 1 << 40, 1 << 20, 1 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, lower := fitOpenFileLimit(tc.soft, tc.public, 64)
			if got != tc.want || lower != tc.wantLower {
				t.Errorf("fitOpenFileLimit(%d, %d, 64) = %d, %v; want %d, %v", tc.soft, tc.public, got, lower, tc.want, tc.wantLower)
			}
		})
	}
}
