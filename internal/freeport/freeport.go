// Package freeport hands out loopback TCP ports for test processes that must be told their port
// before they start (the issuer's URL, kube-apiserver's --service-account-issuer and etcd's URLs all
// embed it).
//
// Asking the kernel for port 0 and closing the listener is not enough: that port comes from the
// ephemeral range, and any outgoing connection made before the child binds (the issuer's own client
// to kube-apiserver, a test's HTTP client) may take it as its local port. CI saw exactly that as
// "bind: address already in use". Ports handed out here lie below the ephemeral range, where the
// kernel never assigns local ports on its own, and are never handed out twice by one process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// lowestPort keeps clear of well-known and commonly configured service ports.
const lowestPort = 15000

// reserved is process-wide on purpose: the resource it guards, the host's port table, is too, and
// tests running in parallel in one binary must not be handed the same port before either binds it.
var reserved = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// Take returns a loopback TCP port that is free now, lies outside the kernel's ephemeral range, and
// has not been returned before by this process.
func Take() (int, error) {
	high := ephemeralLow() - 1
	if high-lowestPort < 1000 {
		return kernelPort()
	}
	reserved.Lock()
	defer reserved.Unlock()
	for range 200 {
		p := lowestPort + rand.IntN(high-lowestPort+1)
		if reserved.ports[p] || !bindable(p) {
			continue
		}
		reserved.ports[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("finding a free port in %d-%d: 200 candidates were in use", lowestPort, high)
}

// TakeN returns n distinct ports as Take does.
func TakeN(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		p, err := Take()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func bindable(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's default when unreadable).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 32768
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil {
		return 32768
	}
	return low
}

// kernelPort is the fallback where the ephemeral range leaves no room below it.
func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
