package relay

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	"go.uber.org/goleak"

	"github.com/traverse/traverse/auth"
)

func TestMain(m *testing.M) {
	if os.Getenv(fdChildEnv) != "" {
		os.Exit(runFDLimitChild())
	}
	goleak.VerifyTestMain(m)
}

func hasIPv6Loopback() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayEcho allocates with pion's TURN client over every transport and
// address family, and relays to a UDP peer first by Send indication, then,
// once the client has bound a channel, by ChannelData.
func TestRelayEcho(t *testing.T) {
	families := []string{"ipv4"}
	if hasIPv6Loopback() {
		families = append(families, "ipv6")
	} else {
		t.Log("no IPv6 loopback on this machine: IPv6 listeners not exercised")
	}
	for _, fam := range families {
		for _, transport := range []string{"udp", "tcp", "tls"} {
			if fam == "ipv6" && transport == "udp" {
				continue // pion's client cannot use UDP over IPv6: TestIPv6UDP covers it
			}
			t.Run(fam+"/"+transport, func(t *testing.T) {
				cfg := testConfig()
				if fam == "ipv6" {
					cfg.Listen.UDP = []string{"[::1]:0"}
					cfg.Listen.TCP = []string{"[::1]:0"}
					cfg.Listen.TLS = []string{"[::1]:0"}
				}
				r := startRelay(t, cfg, true)
				peer := echoPeer(t, "udp4", "127.0.0.1:0")
				var server net.Addr
				switch transport {
				case "udp":
					server = r.Addrs().UDP[0]
				case "tcp":
					server = r.Addrs().TCP[0]
				case "tls":
					server = r.Addrs().TLS[0]
				}
				cred := mint(t, testSecret, "alice", time.Hour)
				c := newClient(t, transport, server, cred.Username, cred.Password)
				rc, err := c.Allocate()
				if err != nil {
					t.Fatalf("allocate: %v", err)
				}
				defer rc.Close()
				if got := rc.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.1" {
					t.Fatalf("relayed address %s, want the public IP 127.0.0.1", rc.LocalAddr())
				}

				roundTrip(t, rc, peer.LocalAddr(), "by send indication")
				waitFor(t, "a channel binding", 5*time.Second, func() bool {
					return r.metric(t, "traverse_relay_channels_active", "") >= 1
				})
				for i := 0; i < 5; i++ {
					roundTrip(t, rc, peer.LocalAddr(), "by channel data")
				}
				if got := r.metric(t, "traverse_relay_allocations_active", ""); got != 1 {
					t.Fatalf("allocations_active = %v, want 1", got)
				}
				// Counted just after the send, so the echo can beat the count.
				waitFor(t, "6 packets counted to the peer", 2*time.Second, func() bool {
					return r.metric(t, "traverse_relay_packets_total", dirToPeer) >= 6
				})
				waitFor(t, "the echoed bytes counted", 2*time.Second, func() bool {
					return r.metric(t, "traverse_relay_bytes_total", dirFromPeer) >= float64(len("by channel data")*5)
				})
			})
		}
	}
}

// TestTLSPortAcceptsPlainTCP checks that the TLS listener also serves plain
// TURN over TCP (turn:HOST:443?transport=tcp, as Twilio lists it).
func TestTLSPortAcceptsPlainTCP(t *testing.T) {
	r := startRelay(t, testConfig(), true)
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	cred := mint(t, testSecret, "bob", time.Hour)
	c := newClient(t, "tcp", r.Addrs().TLS[0], cred.Username, cred.Password)
	rc, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate over plain TCP on the TLS port: %v", err)
	}
	defer rc.Close()
	roundTrip(t, rc, peer.LocalAddr(), "plain on tls port")
}

func TestTLSListenersOffWithoutCertificate(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	if n := len(r.Addrs().TLS); n != 0 {
		t.Fatalf("%d TLS listeners without a certificate", n)
	}
}

// TestBoundPortFailsStartup: a taken port fails New with the address in the
// message, and nothing is left bound.
func TestBoundPortFailsStartup(t *testing.T) {
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig()
	cfg.Listen.TCP = []string{taken.Addr().String()}
	_, err = New(Options{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("New with a taken port: err = %v, want one naming %s", err, taken.Addr())
	}
}

// TestPerUserQuota: the eleventh allocation of one user gets 486.
func TestPerUserQuota(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	server := r.Addrs().UDP[0]
	for i := 0; i < 10; i++ {
		cred := mint(t, testSecret, "carol", time.Hour)
		c := newClient(t, "udp", server, cred.Username, cred.Password)
		rc, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i+1, err)
		}
		t.Cleanup(func() { _ = rc.Close() })
	}
	cred := mint(t, testSecret, "carol", time.Hour)
	c := newClient(t, "udp", server, cred.Username, cred.Password)
	if _, err := c.Allocate(); !isErrCode(err, "486") {
		t.Fatalf("eleventh allocation: err = %v, want 486", err)
	}
	if got := r.metric(t, "traverse_relay_quota_rejections_total", "per_user"); got != 1 {
		t.Fatalf("per_user quota rejections = %v, want 1", got)
	}
	// Another user is not affected.
	other := mint(t, testSecret, "dave", time.Hour)
	c2 := newClient(t, "udp", server, other.Username, other.Password)
	rc, err := c2.Allocate()
	if err != nil {
		t.Fatalf("another user's allocation: %v", err)
	}
	_ = rc.Close()
}

func TestTotalQuota(t *testing.T) {
	cfg := testConfig()
	cfg.Relay.Quota.Total = 2
	r := startRelay(t, cfg, false)
	for i, user := range []string{"u1", "u2", "u3"} {
		cred := mint(t, testSecret, user, time.Hour)
		c := newClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
		rc, err := c.Allocate()
		if i < 2 {
			if err != nil {
				t.Fatalf("allocation %d: %v", i, err)
			}
			t.Cleanup(func() { _ = rc.Close() })
			continue
		}
		if !isErrCode(err, "486") {
			t.Fatalf("third allocation with total 2: err = %v, want 486", err)
		}
	}
}

// TestBandwidthCap drops what exceeds the per-allocation cap and counts it.
func TestBandwidthCap(t *testing.T) {
	cfg := testConfig()
	cfg.Relay.Quota.Bandwidth = 2000 // bytes/s: the burst is one 1600-byte datagram
	r := startRelay(t, cfg, false)
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	cred := mint(t, testSecret, "erin", time.Hour)
	c := newClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	rc, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	roundTrip(t, rc, peer.LocalAddr(), "x")
	payload := make([]byte, 1000)
	for i := 0; i < 50; i++ {
		_, _ = rc.WriteTo(payload, peer.LocalAddr())
	}
	waitFor(t, "bandwidth drops", 3*time.Second, func() bool {
		return r.metric(t, "traverse_relay_bandwidth_dropped_packets_total", dirToPeer) > 0
	})
	sent := r.metric(t, "traverse_relay_packets_total", dirToPeer)
	if sent > 10 {
		t.Fatalf("%v datagrams passed a 2000 B/s cap in a burst of 50", sent)
	}
}

// TestConcurrentAllocations runs many clients at once (and under -race
// checks the relay's shared state).
func TestConcurrentAllocations(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cred, err := auth.Mint([]byte(testSecret), fmt.Sprintf("user%d", i), time.Hour, time.Now())
			if err != nil {
				errs <- err
				return
			}
			conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			c, err := makeClient(conn, r.Addrs().UDP[0], cred.Username, cred.Password)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			rc, err := c.Allocate()
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			if _, err := rc.WriteTo([]byte("hi"), peer.LocalAddr()); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 100)
			_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, _, err := rc.ReadFrom(buf); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStreamConnectionCap: a TCP listener holds at most maxStreamConns
// connections; extra ones are closed at accept and counted, and a freed slot
// serves the next client.
func TestStreamConnectionCap(t *testing.T) {
	defer func(n int) { maxStreamConns = n }(maxStreamConns)
	maxStreamConns = 3
	r := startRelay(t, testConfig(), false)
	var idle []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp4", r.Addrs().TCP[0].String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitFor(t, "two rejections", 3*time.Second, func() bool {
		return r.metric(t, "traverse_relay_stream_connections_rejected_total", "") == 2
	})
	for _, c := range idle {
		_ = c.Close()
	}
	cred := mint(t, testSecret, "after-flood", time.Hour)
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		conn, derr := net.Dial("tcp4", r.Addrs().TCP[0].String())
		if derr != nil {
			t.Fatal(derr)
		}
		var c *turn.Client
		if c, err = makeClient(turn.NewSTUNConn(conn), r.Addrs().TCP[0], cred.Username, cred.Password); err == nil {
			var rc net.PacketConn
			rc, err = c.Allocate()
			if err == nil {
				_ = rc.Close()
			}
			c.Close()
		}
		_ = conn.Close()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no allocation after the flood's connections closed: %v", err)
}

func TestQuotaKey(t *testing.T) {
	st := &state{userKeys: map[string][]byte{"deskphone": nil}}
	for username, want := range map[string]string{
		"1700000000:alice":                        "alice",
		"1700000000:AC0123:e2e_user:0a1b2c3d4e5f": "AC0123:e2e_user", // client-side credential: per identity
		"1700000000:AC0123:0a1b2c3d":              "AC0123:0a1b2c3d", // Tokens resource: per credential
		"1700000000:a:b:c":                        "a:b:c",
		"deskphone":                               "deskphone",
		"garbage":                                 "garbage",
	} {
		if got := quotaKey(username, st); got != want {
			t.Errorf("quotaKey(%q) = %q, want %q", username, got, want)
		}
	}
}
