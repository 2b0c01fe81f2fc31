package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/testlog"
	"github.com/traverse/traverse/internal/testnet"
)

// TestReadyzNamesStoppedListener: when a TURN TCP listener stops accepting
// for good, /readyz turns 503 and names it, while /healthz stays 200.
func TestReadyzNamesStoppedListener(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.Issuer.Enabled = false
	s := serveForTest(t, cfg)

	base := "http://" + s.MetricsAddr().String()
	waitReadyz := func(want int) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := get(t, base+"/readyz")
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz = %d %q, want %d", code, body, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReadyz(200)
	tcp := s.Relay().Addrs().TCP[0]
	testnet.BreakListener(t, tcp)
	body := waitReadyz(503)
	if !strings.Contains(body, "tcp "+tcp.String()) {
		t.Fatalf("/readyz body %q does not name tcp %s", body, tcp)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d, want 200", code)
	}
}

// serveForTest starts traverse on cfg and stops it when the test ends.
func serveForTest(t *testing.T, cfg config.Config) *Server {
	t.Helper()
	s, err := New(context.Background(), Options{Config: cfg, Log: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}
