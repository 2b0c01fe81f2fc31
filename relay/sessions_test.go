package relay

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAllocationTraffic: over each client transport, Allocations reports an
// allocation with its ID, account, transport and permissions, and its
// traffic counts every payload byte each way; OnAllocationEnded hands over
// the final counts.
func TestAllocationTraffic(t *testing.T) {
	const acct = "AC0123456789abcdef0123456789abcdef"
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			cfg := testConfig()
			var mu sync.Mutex
			var ended []Allocation
			s, err := New(Options{Config: cfg, TLS: selfSignedTLS(t), OnAllocationEnded: func(a Allocation) {
				mu.Lock()
				ended = append(ended, a)
				mu.Unlock()
			}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			server := map[string]net.Addr{"udp": s.Addrs().UDP[0], "tcp": s.Addrs().TCP[0], "tls": s.Addrs().TLS[0]}[transport]
			peer := echoPeer(t, "udp4", "127.0.0.1:0")
			cred := mint(t, testSecret, acct+":abcd", time.Hour)
			c := newClient(t, transport, server, cred.Username, cred.Password)
			rc, err := c.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			msg := strings.Repeat("x", 321)
			for i := 0; i < 7; i++ {
				roundTrip(t, rc, peer.LocalAddr(), msg)
			}
			var a Allocation
			waitFor(t, "the echoes counted", 2*time.Second, func() bool {
				list := s.Allocations()
				if len(list) != 1 {
					return false
				}
				a = list[0]
				return a.Traffic.PacketsReceived == 7
			})
			want := Traffic{BytesSent: 7 * 321, BytesReceived: 7 * 321, PacketsSent: 7, PacketsReceived: 7}
			if a.Traffic != want || a.Account != acct || a.Transport != transport || a.Username != cred.Username ||
				!strings.HasPrefix(a.ID, "RA") || len(a.ID) != 34 || a.Permissions != 1 || a.Expires.IsZero() {
				t.Fatalf("allocation = %+v, want traffic %+v of account %s over %s", a, want, acct, transport)
			}
			_ = rc.Close()
			waitFor(t, "the end reported", 5*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(ended) == 1
			})
			if ended[0].ID != a.ID || ended[0].Traffic != want {
				t.Fatalf("ended = %+v, want %s with %+v", ended[0], a.ID, want)
			}
		})
	}
}

// TestKillAndRevoke: Kill tears one allocation down; SetRevoked tears down
// what it names (user, account, key tag) and refuses new allocations with it,
// while others go on.
func TestKillAndRevoke(t *testing.T) {
	const acct = "AC0123456789abcdef0123456789abcdef"
	r := startRelay(t, testConfig(), false)
	server := r.Addrs().UDP[0]
	alloc := func(user string) (net.PacketConn, string) {
		t.Helper()
		cred := mint(t, testSecret, user, time.Hour)
		c := newClient(t, "udp", server, cred.Username, cred.Password)
		rc, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocate as %s: %v", user, err)
		}
		t.Cleanup(func() { _ = rc.Close() })
		// No permission is made here: pion v4.1.4 starts a permission's
		// timer on its read loop and stops it, when the relay socket
		// closes, on the allocation's own goroutine, with nothing ordering
		// the two; the race detector reports that on every kill of an
		// allocation with a permission. Killing live calls with traffic is
		// proven end to end (e2e/usage_test.go, e2e/console_test.go).
		return rc, cred.Username
	}
	idOf := func(username string) string {
		for _, a := range r.Allocations() {
			if a.Username == username {
				return a.ID
			}
		}
		return ""
	}
	live := func(username string) bool { return idOf(username) != "" }

	_, u1 := alloc("bob")
	if !r.Kill(idOf(u1)) || r.Kill("RAnope") {
		t.Fatal("Kill of a live allocation false, or of an unknown one true")
	}
	waitFor(t, "killed allocation deleted", 5*time.Second, func() bool { return !live(u1) })

	tag := "1a2b3c4d"
	_, byUser := alloc("carol")
	_, byAcct := alloc(acct + ":0011")
	_, byKey := alloc("AC00000000000000000000000000000009:alice:" + tag + "ffff")
	_, other := alloc("AC00000000000000000000000000000009:alice:0000ffff")
	n := r.SetRevoked(&Revoked{
		Users:    map[string]bool{byUser: true},
		Accounts: map[string]bool{acct: true},
		Keys:     map[string]bool{"AC00000000000000000000000000000009:" + tag: true},
	})
	if n != 3 {
		t.Fatalf("SetRevoked tore down %d, want 3", n)
	}
	waitFor(t, "revoked allocations deleted", 5*time.Second, func() bool { return !live(byUser) && !live(byAcct) && !live(byKey) })
	if !live(other) {
		t.Fatal("an allocation the revocation does not name was torn down")
	}
	cred := mint(t, testSecret, acct+":fresh", time.Hour)
	c := newClient(t, "udp", server, cred.Username, cred.Password)
	if _, err := c.Allocate(); err == nil {
		t.Fatal("a revoked account allocated")
	}
	if got := r.metric(t, "traverse_relay_auth_total", AuthRevoked); got < 1 {
		t.Fatalf("auth_total{revoked} = %v", got)
	}
	if got := r.metric(t, "traverse_relay_allocations_killed_total", killRevoked); got != 3 {
		t.Fatalf("killed_total{revoked} = %v, want 3", got)
	}
}
