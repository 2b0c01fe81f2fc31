package relay

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/traverse/traverse/config"
)

// TestPasswordGuessingRateLimited: after a burst of 500 wrong passwords for
// a static user from one address, the right password from that address is
// refused too (counted rate_limited), while from another address it works
// at once: there is no per-username lockout a guesser could use.
func TestPasswordGuessingRateLimited(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Users = []config.User{{Name: "softphone", Password: "static-password-1"}}
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	s, err := New(Options{Config: cfg, Log: zap.New(core), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	r := &testRelay{Server: s, reg: reg}
	server := r.Addrs().UDP[0]

	guesser := newRawClient(t, "udp", server, "softphone", "")
	refused := 0
	for i := 0; i < 500; i++ {
		guesser.Password = "guess-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if _, err := guesser.Allocate(); errCode(err) == 401 {
			refused++
		} else {
			t.Fatalf("guess %d: err = %v, want 401", i, err)
		}
	}
	if got := r.metric(t, "traverse_relay_auth_total", AuthRateLimited); got < 400 {
		t.Errorf("auth_total{rate_limited} = %v after 500 guesses, want most of them", got)
	}
	badPw := r.metric(t, "traverse_relay_auth_total", AuthBadPassword)
	if badPw > 100 {
		t.Errorf("auth_total{bad_password} = %v: the password was checked for %v of 500 guesses", badPw, badPw)
	}

	// One warning for the source, naming it, never the username or a password.
	warned := logs.FilterMessageSnippet("rate-limited").All()
	if len(warned) != 1 || warned[0].ContextMap()["source"] != "127.0.0.1" {
		t.Errorf("warnings: %v, want one naming source 127.0.0.1", warned)
	}
	for _, e := range logs.All() {
		if strings.Contains(fmt.Sprint(e.ContextMap()), "guess-") || strings.Contains(fmt.Sprint(e.ContextMap()), "softphone") {
			t.Errorf("a log line carries the username or a guess: %v", e)
		}
	}

	// The right password from the same address (another port): refused.
	same := newRawClient(t, "udp", server, "softphone", "static-password-1")
	if _, err := same.Allocate(); errCode(err) != 401 {
		t.Fatalf("right password from the guessing address: err = %v, want 401", err)
	}
	if got := r.metric(t, "traverse_relay_auth_total", AuthBadPassword); got != badPw {
		t.Errorf("the password from the limited address was checked (bad_password %v -> %v)", badPw, got)
	}

	// From another address: allocates at once.
	pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("127.0.0.2: %v", err)
	}
	other := &rawClient{Conn: pc, Server: server, Username: "softphone", Password: "static-password-1", Realm: "traverse"}
	defer pc.Close()
	if _, err := other.Allocate(); err != nil {
		t.Fatalf("right password from another address: %v", err)
	}
}
