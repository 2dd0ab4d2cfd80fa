package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// ConnectProxy is an HTTP proxy on 127.0.0.1 that only tunnels (CONNECT), to a fixed route table:
// it lets tests reach a local server under a public-looking name on port 443 (what AWS rules
// demand of an issuer URL: no port) without DNS, while exercising the proxy path clients take
// through HTTPS_PROXY.
type ConnectProxy struct {
	// URL is http://[USER:PASSWORD@]127.0.0.1:PORT, ready for HTTPS_PROXY or http.ProxyURL.
	URL *url.URL

	routes   map[string]string
	wantAuth string
	ln       net.Listener
	wg       sync.WaitGroup

	mu    sync.Mutex
	asked []string
}

// StartConnectProxy tunnels CONNECT HOST:PORT to routes["HOST:PORT"] (a local address); other
// targets get 502. With user set, requests without those Basic credentials get 407. Close stops it.
func StartConnectProxy(routes map[string]string, user, password string) (*ConnectProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting CONNECT proxy: %w", err)
	}
	p := &ConnectProxy{routes: routes, ln: ln, URL: &url.URL{Scheme: "http", Host: ln.Addr().String()}}
	if user != "" {
		p.URL.User = url.UserPassword(user, password)
		r := &http.Request{Header: http.Header{}}
		r.SetBasicAuth(user, password)
		p.wantAuth = r.Header.Get("Authorization")
	}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.handle(c) })
		}
	})
	return p, nil
}

// Asked returns "METHOD HOST:PORT" of every request received so far.
func (p *ConnectProxy) Asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.asked...)
}

// Close stops listening and waits for open tunnels to end.
func (p *ConnectProxy) Close() error {
	err := p.ln.Close()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (p *ConnectProxy) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.asked = append(p.asked, req.Method+" "+req.Host)
	p.mu.Unlock()
	reply := func(status string) {
		_, _ = io.WriteString(c, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\n\r\n")
	}
	switch {
	case req.Method != http.MethodConnect:
		reply("405 Method Not Allowed")
		return
	case p.wantAuth != "" && req.Header.Get("Proxy-Authorization") != p.wantAuth:
		reply("407 Proxy Authentication Required")
		return
	}
	backend, ok := p.routes[req.Host]
	if !ok {
		reply("502 Bad Gateway")
		return
	}
	up, err := net.DialTimeout("tcp", backend, 5*time.Second)
	if err != nil {
		reply("502 Bad Gateway")
		return
	}
	defer up.Close()
	reply("200 Connection established")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, br)
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite() // the client is done sending: tell the server
		}
	}()
	_, _ = io.Copy(c, up)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	<-done
}
