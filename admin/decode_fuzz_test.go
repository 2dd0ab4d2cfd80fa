package admin

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecodeStrict feeds the admin API's body decoder (reached by any caller with a token) with
// arbitrary bytes. Whatever it accepts must be exactly one JSON object (or nothing) whose fields
// are all StageRequest's, each named once, exactly as spelt; and it must never panic.
func FuzzDecodeStrict(f *testing.F) {
	for _, seed := range []string{
		``, ` `, `{}`, `{"algorithm":"ES256"}`, `{"algorithm":"ES256"}{"algorithm":"HS256"}`,
		`{"algorithm":"RS256","algorithm":"HS256"}`, `{"ALGORITHM":"RS256"}`, `{"algorithm":"RS256"} x`,
		`[{"algorithm":"RS256"}]`, `{"other":1}`, `{"algorithm":null}`, "{\"algorithm\":\"\\u0045S256\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req StageRequest
		if err := decodeStrict(body, &req); err != nil {
			return
		}
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 {
			if req != (StageRequest{}) {
				t.Fatalf("an empty body decoded to %+v", req)
			}
			return
		}
		if !json.Valid(trimmed) || trimmed[0] != '{' {
			t.Fatalf("accepted %q: not one JSON object", body)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &fields); err != nil {
			t.Fatalf("accepted %q, which is not an object: %v", body, err)
		}
		for name := range fields {
			if name != "algorithm" {
				t.Fatalf("accepted %q with field %q", body, name)
			}
		}
		if strings.Count(string(trimmed), `"algorithm"`) > 1 && !strings.Contains(string(trimmed), `\"algorithm\"`) {
			// A second "algorithm" can only be inside a string value, which is escaped.
			t.Fatalf("accepted %q, which names algorithm twice", body)
		}
	})
}
