package relay

import (
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/internal/testnet"
)

// TestStoppedListenerIsNamed: a TCP listener whose accept fails for good
// (the kernel's EINVAL on a socket shut down under it) is named by
// StoppedListeners and counted, while the others keep serving.
func TestStoppedListenerIsNamed(t *testing.T) {
	r := startRelay(t, testConfig(), true)
	if got := r.StoppedListeners(); len(got) != 0 {
		t.Fatalf("stopped listeners at start: %v", got)
	}
	tcp := r.Addrs().TCP[0]
	testnet.BreakListener(t, tcp)
	deadline := time.Now().Add(10 * time.Second)
	for len(r.StoppedListeners()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the broken listener was never reported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := r.StoppedListeners()
	if len(got) != 1 || !strings.HasPrefix(got[0], "tcp "+tcp.String()+": ") {
		t.Fatalf("StoppedListeners = %q, want one naming tcp %s", got, tcp)
	}
	if n := r.metric(t, "traverse_relay_listeners_stopped_total", ""); n != 1 {
		t.Errorf("listeners_stopped_total = %v, want 1", n)
	}
	// TLS still answers.
	cred := mint(t, testSecret, "alice", time.Hour)
	c := newClient(t, "tls", r.Addrs().TLS[0], cred.Username, cred.Password)
	relayed, err := c.Allocate()
	if err != nil {
		t.Fatalf("tls allocate after the tcp listener stopped: %v", err)
	}
	_ = relayed.Close()
}

// TestClosedListenerIsNotStopped: closing the relay is not a listener
// failure.
func TestClosedListenerIsNotStopped(t *testing.T) {
	r := startRelay(t, testConfig(), true)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := r.StoppedListeners(); len(got) != 0 {
		t.Fatalf("StoppedListeners after Close = %q, want none", got)
	}
}
