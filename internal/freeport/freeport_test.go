package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestTakeIsOutsideEphemeralRangeDistinctAndBindable(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	ports, err := TakeN(50)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if low-lowestPort >= 1000 && (p < lowestPort || p >= low) {
			t.Fatalf("port %d outside [%d, %d)", p, lowestPort, low)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
}

func TestBindableRejectsAPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if bindable(port) {
		t.Fatalf("port %d reported bindable while a listener holds it", port)
	}
	l.Close()
	if !bindable(port) {
		t.Fatalf("port %d reported in use after its listener closed", port)
	}
}
