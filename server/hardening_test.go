package server

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/traverse/traverse/issuer"
)

// serving starts s and waits until its issuer answers; it stops s at the end.
func serving(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !s.ready.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// preflight sends a browser's CORS preflight for POST /v1/ice-servers from
// origin and returns the status and the Access-Control-Allow-Origin answer.
func preflight(t *testing.T, s *Server, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodOptions, "http://"+s.IssuerAddr().String()+issuer.ICEServersPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	return res.StatusCode, res.Header.Get("Access-Control-Allow-Origin")
}

// TestReloadCORSOrigins: issuer.cors_origins changes on Reload, without a
// restart: the added origin passes the preflight, the removed one no longer.
func TestReloadCORSOrigins(t *testing.T) {
	const oldOrigin, newOrigin = "https://old.example.com", "https://app.example.com"
	cfg := loopbackConfig(t)
	cfg.Issuer.CORSOrigins = []string{oldOrigin}
	s, err := New(context.Background(), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	serving(t, s)
	if code, allow := preflight(t, s, oldOrigin); code != http.StatusNoContent || allow != oldOrigin {
		t.Fatalf("configured origin before reload: %d %q", code, allow)
	}
	if code, allow := preflight(t, s, newOrigin); code != http.StatusForbidden || allow != "" {
		t.Fatalf("unlisted origin before reload: %d %q", code, allow)
	}

	next := cfg
	next.Issuer.CORSOrigins = []string{newOrigin + "/"}
	restart, err := s.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) != 0 {
		t.Fatalf("restart needed = %v, want none", restart)
	}
	if code, allow := preflight(t, s, newOrigin); code != http.StatusNoContent || allow != newOrigin {
		t.Fatalf("origin added by reload: %d %q", code, allow)
	}
	if code, allow := preflight(t, s, oldOrigin); code != http.StatusForbidden || allow != "" {
		t.Fatalf("origin removed by reload: %d %q", code, allow)
	}
}

// TestWarnLoopbackPeers: an explicit relay.peers.allow_loopback with a TURN
// listener other hosts can reach is warned about, naming the listener; with
// every listener on loopback it is not.
func TestWarnLoopbackPeers(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := loopbackConfig(t)
	cfg.Relay.Peers.AllowLoopback = true
	s, err := New(context.Background(), Options{Config: cfg, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	s.logStarted()
	// (Other warnings, such as the descriptor limit's, are not this test's.)
	loopbackWarnings := func() []observer.LoggedEntry {
		return logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("loopback").All()
	}
	if w := loopbackWarnings(); len(w) != 0 {
		t.Fatalf("%d warnings with every listener on loopback: %v", len(w), w)
	}

	// The check reads the config, not the sockets: no need to bind 0.0.0.0.
	exposed := cfg
	exposed.Listen.UDP = []string{"127.0.0.1:0", "0.0.0.0:3478"}
	s.warnLoopbackPeers(exposed)
	warns := loopbackWarnings()
	if len(warns) != 1 {
		t.Fatalf("warnings = %v, want one", warns)
	}
	got, _ := warns[0].ContextMap()["listeners"].([]any)
	if !slices.Equal(got, []any{"listen.udp 0.0.0.0:3478"}) || warns[0].Message != "relay.peers.allow_loopback is on while a listener is not on loopback: "+
		"clients from other hosts may relay into this host's loopback services" {
		t.Fatalf("warning %q %v", warns[0].Message, warns[0].ContextMap())
	}
	exposed.Relay.Peers.AllowLoopback = false
	s.warnLoopbackPeers(exposed)
	if w := loopbackWarnings(); len(w) != 1 {
		t.Fatalf("warned with loopback peers denied: %v", w)
	}
}
