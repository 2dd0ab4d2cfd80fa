package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestWaitWindDown(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	tests := []struct {
		name    string
		cancel  bool
		wait    func() error
		wantErr string
	}{
		{name: "task error before the end", wait: func() error { return errors.New("boom") }, wantErr: "boom"},
		{name: "stops in time", cancel: true, wait: func() error { time.Sleep(20 * time.Millisecond); return nil }},
		{name: "stuck task", cancel: true, wait: func() error { <-stuck; return nil }, wantErr: "did not stop within 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tt.cancel {
				cancel()
			}
			defer cancel()
			var logs strings.Builder
			begin := time.Now()
			err := waitWindDown(ctx, slog.New(slog.NewTextHandler(&logs, nil)), io.Discard, 100*time.Millisecond, tt.wait)
			if took := time.Since(begin); took > 5*time.Second {
				t.Fatalf("took %s", took)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.wantErr == "did not stop within 100ms" && !strings.Contains(logs.String(), "wind-down bound") {
				t.Fatalf("no log: %s", logs.String())
			}
		})
	}
}
