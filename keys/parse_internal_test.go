package keys

import (
	"errors"
	"testing"
)

func TestWithholdQuotes(t *testing.T) {
	data := []byte("prefix 0123456789abcdefXYZ suffix")
	for _, tc := range []struct {
		msg      string
		withheld bool
	}{
		{"short", false},
		{"an ordinary message about nothing in particular", false},
		{"quotes:0123456789abcdef:stops", false}, // 16 bytes shared: allowed
		{"quotes:0123456789abcdefX", true},       // 17 bytes shared
	} {
		err := errors.New(tc.msg)
		if got := withholdQuotes(err, data); (got != err) != tc.withheld {
			t.Errorf("withholdQuotes(%q) = %q; want withheld=%v", tc.msg, got, tc.withheld)
		}
	}
}

func TestLabel(t *testing.T) {
	for in, want := range map[string]string{
		"OPENSSH PRIVATE KEY":           "OPENSSH PRIVATE KEY",
		"PUBLIC KEY":                    "PUBLIC KEY",
		"X509 CRL":                      "unsupported type",
		"MY SECRET PASSWORD IS HUNTER2": "unsupported type",
		"":                              "unsupported type",
	} {
		if got := label(in); got != want {
			t.Errorf("label(%q) = %q, want %q", in, got, want)
		}
	}
}
