package relay

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
)

// TestAuthTable allocates with each kind of credential over UDP and TCP.
func TestAuthTable(t *testing.T) {
	const newSecret = "new-secret-abcdefghijkl"
	const removed = "removed-secret-0123456789"
	cfg := testConfig()
	cfg.Auth.Secrets = []string{newSecret, testSecret} // rotated: new mints, old still verifies
	cfg.Auth.Users = []config.User{{Name: "softphone", Password: "static-password-1"}}
	now := time.Now()
	mintAt := func(secret, user string, ttl time.Duration) (string, string) {
		c, err := auth.Mint([]byte(secret), user, ttl, now)
		if err != nil {
			t.Fatal(err)
		}
		return c.Username, c.Password
	}
	tooFar := strconv.FormatInt(now.Add(48*time.Hour).Unix(), 10) + ":alice"
	expired := strconv.FormatInt(now.Add(-time.Minute).Unix(), 10) + ":alice"

	type tc struct {
		name, user, pass string
		ok               bool
		reason           string
	}
	good, goodPass := mintAt(newSecret, "alice", time.Hour)
	old, oldPass := mintAt(testSecret, "alice", time.Hour)
	gone, gonePass := mintAt(removed, "alice", time.Hour)
	cases := []tc{
		{"current secret", good, goodPass, true, AuthOK},
		{"previous secret still verifies", old, oldPass, true, AuthOK},
		{"removed secret", gone, gonePass, false, AuthBadPassword},
		{"wrong password", good, "bm90IHRoZSBwYXNzd29yZA==", false, AuthBadPassword},
		{"expired", expired, auth.Password([]byte(newSecret), expired), false, AuthExpired},
		{"expiry too far ahead", tooFar, auth.Password([]byte(newSecret), tooFar), false, AuthTooFarFuture},
		{"malformed username", "alice", auth.Password([]byte(newSecret), "alice"), false, AuthMalformed},
		{"malformed expiry", "12ab:alice", auth.Password([]byte(newSecret), "12ab:alice"), false, AuthMalformed},
		{"static user", "softphone", "static-password-1", true, AuthOK},
		{"static user, wrong password", "softphone", "guess-guess", false, AuthBadPassword},
	}
	for _, transport := range []string{"udp", "tcp"} {
		r := startRelay(t, cfg, false)
		server := r.Addrs().UDP[0]
		if transport == "tcp" {
			server = r.Addrs().TCP[0]
		}
		for _, c := range cases {
			t.Run(transport+"/"+c.name, func(t *testing.T) {
				before := r.metric(t, "traverse_relay_auth_total", c.reason)
				rc := newRawClient(t, transport, server, c.user, c.pass)
				_, err := rc.Allocate()
				if c.ok && err != nil {
					t.Fatalf("allocate: %v", err)
				}
				if !c.ok && errCode(err) != 401 {
					t.Fatalf("allocate: err = %v, want a 401 error response", err)
				}
				if after := r.metric(t, "traverse_relay_auth_total", c.reason); after <= before {
					t.Fatalf("auth_total{result=%s} did not grow (%v -> %v)", c.reason, before, after)
				}
			})
		}
	}
}

// TestRotatedSecretsWithPionClient proves key selection with a client
// written by others, over UDP and over the TCP stream tap.
func TestRotatedSecretsWithPionClient(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Secrets = []string{"brand-new-secret-xyz123", testSecret}
	r := startRelay(t, cfg, false)
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	for _, transport := range []string{"udp", "tcp"} {
		server := r.Addrs().UDP[0]
		if transport == "tcp" {
			server = r.Addrs().TCP[0]
		}
		for _, secret := range cfg.Auth.Secrets {
			cred := mint(t, secret, "rot", time.Hour)
			c := newClient(t, transport, server, cred.Username, cred.Password)
			rc, err := c.Allocate()
			if err != nil {
				t.Fatalf("%s, secret %q: allocate: %v", transport, secret[:6], err)
			}
			roundTrip(t, rc, peer.LocalAddr(), "rotated")
			_ = rc.Close()
		}
	}
}

// TestExpiryGrace: by default an allocation outlives its credential and keeps
// refreshing; a new allocation with the expired credential is refused.
func TestExpiryGrace(t *testing.T) {
	clk := newClock()
	r := startRelayClock(t, testConfig(), clk)
	cred, _ := auth.Mint([]byte(testSecret), "frank", time.Hour, clk.Now())
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if err := c.Refresh(10 * time.Minute); err != nil {
		t.Fatalf("refresh after expiry: %v (want the allocation to keep refreshing)", err)
	}
	if err := c.Permit(loopbackPeer); err != nil {
		t.Fatalf("create permission after expiry: %v", err)
	}
	// The same expired credential cannot open a new allocation.
	c2 := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	if _, err := c2.Allocate(); err == nil {
		t.Fatal("a new allocation with an expired credential succeeded")
	}
	if err := c.Refresh(0); err != nil {
		t.Fatalf("delete: %v", err)
	}
	waitFor(t, "allocation deleted", 3*time.Second, func() bool { return r.AllocationCount() == 0 })
}

// TestStrictExpiry: with auth.strict_expiry the allocation is closed at
// expiry and refreshes are refused.
func TestStrictExpiry(t *testing.T) {
	clk := newClock()
	cfg := testConfig()
	cfg.Auth.StrictExpiry = true
	r := startRelayClock(t, cfg, clk)
	cred, _ := auth.Mint([]byte(testSecret), "gina", time.Hour, clk.Now())
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	if r.AllocationCount() != 1 {
		t.Fatal("no allocation")
	}
	clk.Advance(2 * time.Hour)
	if err := c.Refresh(10 * time.Minute); err == nil {
		t.Fatal("refresh after expiry succeeded under strict_expiry")
	}
	waitFor(t, "the expired allocation to be closed", 5*time.Second, func() bool { return r.AllocationCount() == 0 })
	waitFor(t, "expired_allocations_closed = 1", 2*time.Second, func() bool {
		return r.metric(t, "traverse_relay_expired_allocations_closed_total", "") == 1
	})
}

// TestOwnerBinding: a request on an existing allocation with another valid
// username is refused.
func TestOwnerBinding(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	alice := mint(t, testSecret, "alice", time.Hour)
	mallory := mint(t, testSecret, "mallory", time.Hour)
	c := newRawClient(t, "udp", r.Addrs().UDP[0], alice.Username, alice.Password)
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	c.Username, c.Password = mallory.Username, mallory.Password
	if err := c.Refresh(10 * time.Minute); errCode(err) != 441 {
		t.Fatalf("refresh under another username: %v, want 441 Wrong Credentials", err)
	}
	// A new Allocate from the same 5-tuple under another username is an
	// allocation mismatch: the client should move to another port.
	if _, err := c.Allocate(); errCode(err) != 437 {
		t.Fatalf("allocate on a taken 5-tuple: %v, want 437 Allocation Mismatch", err)
	}
	if got := r.metric(t, "traverse_relay_auth_total", AuthOwnerMismatch); got != 2 {
		t.Fatalf("owner_mismatch = %v, want 2", got)
	}
	c.Username, c.Password = alice.Username, alice.Password
	if err := c.Refresh(10 * time.Minute); err != nil {
		t.Fatalf("owner's refresh: %v", err)
	}
}

// TestIPv6UDP allocates over a UDP listener on ::1 (pion's client resolves
// IPv4 only, so the raw client does it) and relays to an IPv4 peer.
func TestIPv6UDP(t *testing.T) {
	if !hasIPv6Loopback() {
		t.Skip("no IPv6 loopback on this machine")
	}
	cfg := testConfig()
	cfg.Listen.UDP = []string{"[::1]:0"}
	r := startRelay(t, cfg, false)
	cred := mint(t, testSecret, "v6", time.Hour)
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	relayed, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate over [::1]: %v", err)
	}
	if relayed.Addr() != loopbackPeer.Addr() {
		t.Fatalf("relayed %s", relayed)
	}
	if err := c.Permit(loopbackPeer); err != nil {
		t.Fatal(err)
	}
	// The data path relays for a client on an IPv6 listener: ChannelData to
	// an IPv4 peer and back, sent to the client as sockaddr_in6.
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := c.BindChannel(0x4002, peerAP); err != nil {
		t.Fatal(err)
	}
	msg := []byte{0x40, 0x02, 0, 3, 'v', '6', '!', 0}
	buf := make([]byte, 1600)
	for attempt := 0; ; attempt++ {
		if _, err := c.Conn.WriteTo(msg, r.Addrs().UDP[0]); err != nil {
			t.Fatal(err)
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := c.Conn.ReadFrom(buf)
		if err == nil && n >= 7 && string(buf[:4]) == string(msg[:4]) && string(buf[4:7]) == "v6!" {
			break
		}
		if attempt == 2 {
			t.Fatalf("no ChannelData echo over [::1]: %x %v", buf[:n], err)
		}
	}
}

// TestReload: a secret added by reload verifies, a removed one stops
// verifying, and a live allocation survives.
func TestReload(t *testing.T) {
	cfg := testConfig()
	r := startRelay(t, cfg, false)
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	live := mint(t, testSecret, "live", time.Hour)
	lc := newClient(t, "udp", r.Addrs().UDP[0], live.Username, live.Password)
	rc, err := lc.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	roundTrip(t, rc, peer.LocalAddr(), "before reload")

	const added = "added-by-reload-secret-1"
	next := cfg
	next.Auth.Secrets = []string{added}
	next.Realm = "changed"
	restart, err := r.Reload(cfg, next)
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) != 1 || restart[0] != "realm" {
		t.Fatalf("restart needed = %v, want [realm]", restart)
	}
	roundTrip(t, rc, peer.LocalAddr(), "after reload")

	fresh := mint(t, added, "fresh", time.Hour)
	if _, err := newRawClient(t, "udp", r.Addrs().UDP[0], fresh.Username, fresh.Password).Allocate(); err != nil {
		t.Fatalf("credential from the added secret: %v", err)
	}
	stale := mint(t, testSecret, "stale", time.Hour)
	if _, err := newRawClient(t, "udp", r.Addrs().UDP[0], stale.Username, stale.Password).Allocate(); err == nil {
		t.Fatal("credential from the removed secret still allocates")
	}
}
