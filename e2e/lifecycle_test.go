package e2e

import (
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/traverse/traverse/auth"
)

func (in *Instance) signal(sig syscall.Signal) {
	in.t.Helper()
	if err := in.cmd.Process.Signal(sig); err != nil {
		in.t.Fatal(err)
	}
}

func (in *Instance) waitLog(what string, d time.Duration) {
	in.t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(in.Logs(), what) {
		if time.Now().After(deadline) {
			in.t.Fatalf("no %q in the log after %s:\n%s", what, d, in.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSIGHUPReload: a secret added by SIGHUP verifies, the removed one stops
// verifying, the live allocation keeps relaying, an invalid file is refused.
func TestSIGHUPReload(t *testing.T) {
	in := Start(t, Options{})
	peer := FreeUDPPeer(t)
	old, _ := auth.Mint([]byte(Secret), "live", time.Hour, time.Now())
	_, rc, err := turnClient(t, "udp", in.UDP, old.Username, old.Password)
	if err != nil {
		t.Fatal(err)
	}
	echo := func(msg string) {
		t.Helper()
		if _, err := rc.WriteTo([]byte(msg), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, _, err := rc.ReadFrom(buf); err != nil || string(buf[:n]) != msg {
			t.Fatalf("live allocation: %q %v", buf[:n], err)
		}
	}
	echo("before reload") // installs the permission while its secret is valid
	cfg, _ := os.ReadFile(in.Config)
	const added = "added-on-sighup-0123456789"
	if err := os.WriteFile(in.Config, []byte(strings.Replace(string(cfg), Secret, added, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	in.signal(syscall.SIGHUP)
	in.waitLog("config reloaded", 5*time.Second)

	fresh, _ := auth.Mint([]byte(added), "fresh", time.Hour, time.Now())
	if _, _, err := turnClient(t, "udp", in.UDP, fresh.Username, fresh.Password); err != nil {
		t.Fatalf("secret added by SIGHUP: %v", err)
	}
	stale, _ := auth.Mint([]byte(Secret), "stale", time.Hour, time.Now())
	if _, _, err := turnClient(t, "udp", in.UDP, stale.Username, stale.Password); err == nil {
		t.Fatal("removed secret still allocates")
	}
	echo("after reload") // the allocation survives; its secret's removal revokes only new requests

	// A broken file keeps the running config.
	if err := os.WriteFile(in.Config, []byte("auth:\n  secrets: [short]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in.signal(syscall.SIGHUP)
	in.waitLog("reload failed: keeping the running config", 5*time.Second)
	if _, _, err := turnClient(t, "udp", in.UDP, fresh.Username, fresh.Password); err != nil {
		t.Fatalf("after a refused reload: %v", err)
	}
}

// TestSIGTERMDrains: with a live allocation, SIGTERM fails /readyz and
// refuses new allocations while draining; a second SIGTERM exits at once.
func TestSIGTERMDrains(t *testing.T) {
	// A long drain, so the second signal is what ends it.
	in := Start(t, Options{Drain: time.Minute})
	live, _ := auth.Mint([]byte(Secret), "live", time.Hour, time.Now())
	if _, _, err := turnClient(t, "udp", in.UDP, live.Username, live.Password); err != nil {
		t.Fatal(err)
	}
	in.signal(syscall.SIGTERM)
	// The server's own line, logged once new allocations are refused (not
	// "signal received: draining", which comes before).
	in.waitLog(`"msg":"draining"`, 5*time.Second)
	res, err := http.Get(in.Metrics + "/readyz")
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("/readyz while draining = %d, want 503", res.StatusCode)
		}
	}
	next, _ := auth.Mint([]byte(Secret), "late", time.Hour, time.Now())
	if _, _, err := turnClient(t, "udp", in.UDP, next.Username, next.Password); err == nil || !strings.Contains(err.Error(), "486") {
		t.Fatalf("allocation while draining: %v, want 486", err)
	}
	start := time.Now()
	in.signal(syscall.SIGTERM)
	select {
	case <-in.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("second SIGTERM did not exit at once")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("exit took %s after the second signal", d)
	}
}
