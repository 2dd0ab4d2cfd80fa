package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadinessCheck is one condition /readyz reports. Check must be cheap and safe for concurrent
// use: probes call it every few seconds. Its detail is shown as checks.<Name> in the /readyz body.
type ReadinessCheck struct {
	Name  string
	Check func() (ready bool, detail any)
}

// InternalHandler serves the operational endpoints, meant for a listener kept off the public
// network:
//
//   - /healthz: 200 "ok" while the process can serve HTTP at all (liveness).
//   - /readyz: 200 when documents are published and every check is ready, else 503; the JSON body
//     has the details either way. A failing key source does not make it 503 by itself: the last
//     good keys are still served, and the "keys" check decides (normally: ready once every source
//     delivered keys). Its detail shows the failing source's healthy=false and lastError.
//   - /metrics: gatherer in the Prometheus exposition formats (omitted when gatherer is nil).
//
// Check names must be non-empty and unique; anything else is a programming error and panics.
func (s *Server) InternalHandler(gatherer prometheus.Gatherer, checks ...ReadinessCheck) http.Handler {
	seen := make(map[string]bool, len(checks))
	for _, c := range checks {
		if c.Name == "" || c.Check == nil || seen[c.Name] {
			panic(fmt.Sprintf("server: readiness check %q: needs a unique non-empty name and a Check function", c.Name))
		}
		seen[c.Name] = true
	}
	r := chi.NewRouter()
	healthz := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte("ok"))
		}
	}
	r.Get("/healthz", healthz)
	r.Head("/healthz", healthz)
	readyz := func(w http.ResponseWriter, r *http.Request) { s.readyz(w, r, checks) }
	r.Get("/readyz", readyz)
	r.Head("/readyz", readyz)
	if gatherer != nil {
		r.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
			ErrorLog: promErrorLog{s.logger},
			// One broken collector must not hide every other metric.
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	return r
}

type readyzBody struct {
	Ready     bool             `json:"ready"`
	Documents *readyzDocuments `json:"documents"`
	Checks    map[string]any   `json:"checks"`
}

type readyzDocuments struct {
	Generation uint64   `json:"generation"`
	Keys       int      `json:"keys"`
	KIDs       []string `json:"kids"`
	Rendered   string   `json:"rendered"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, checks []ReadinessCheck) {
	body := readyzBody{Checks: make(map[string]any, len(checks))}
	body.Ready = true
	switch d := s.Current(); {
	case s.main == nil:
		// Fleet mode: no issuer of its own; the fleet's readiness check decides.
	case d != nil:
		body.Documents = &readyzDocuments{
			Generation: d.Generation,
			Keys:       d.Keys.Len(),
			KIDs:       d.Keys.KeyIDs(),
			Rendered:   d.Rendered.UTC().Format(time.RFC3339),
		}
	default:
		body.Ready = false
	}
	for _, c := range checks {
		ready, detail := c.Check()
		body.Checks[c.Name] = detail
		body.Ready = body.Ready && ready
	}
	code := http.StatusOK
	if !body.Ready {
		code = http.StatusServiceUnavailable
	}
	out, err := json.Marshal(body)
	if err != nil {
		// A detail that cannot be encoded is a bug; the status code must still tell the truth.
		s.logger.Error("encoding readiness details", "error", err)
		out, _ = json.Marshal(map[string]any{"ready": body.Ready, "error": "encoding readiness details: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(append(out, '\n'))
	}
}

// promErrorLog routes promhttp's gathering errors to the structured log.
type promErrorLog struct{ logger *slog.Logger }

func (l promErrorLog) Println(v ...any) {
	l.logger.Error("serving metrics: " + fmt.Sprint(v...))
}
