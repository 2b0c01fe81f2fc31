package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/testlog"
	"github.com/traverse/traverse/internal/testnet"
	"github.com/traverse/traverse/internal/turntest"
)

const testSecret = "test-secret-0123456789"

// testConfig is a relay on loopback ephemeral ports with loopback peers allowed.
func testConfig() config.Config {
	c := config.Default()
	c.Listen.UDP = []string{"127.0.0.1:0"}
	c.Listen.TCP = []string{"127.0.0.1:0"}
	c.Listen.TLS = []string{"127.0.0.1:0"}
	c.Auth.Secrets = []string{testSecret}
	c.Relay.PublicIP = "127.0.0.1"
	c.Relay.BindIP = "127.0.0.1"
	c.Relay.Peers.AllowLoopback = true
	c.Relay.UDPSockets = 2
	c.Issuer.Enabled = false
	return c
}

type testRelay struct {
	*Server
	reg *prometheus.Registry
}

func startRelay(t *testing.T, cfg config.Config, withTLS bool) *testRelay {
	t.Helper()
	r, err := tryStartRelay(t, cfg, withTLS)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	return r
}

// tryStartRelay is startRelay returning New's error, for a test that picks
// its ports again when one is taken.
func tryStartRelay(t *testing.T, cfg config.Config, withTLS bool) (*testRelay, error) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	opts := Options{Config: cfg, Log: testlog.New(t), Registerer: reg}
	if withTLS {
		opts.TLS = selfSignedTLS(t)
	}
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = s.Close() })
	return &testRelay{Server: s, reg: reg}, nil
}

// metric reads a counter or gauge by name and label value ("" for none).
func (r *testRelay) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" {
				match := false
				for _, lp := range m.GetLabel() {
					if lp.GetValue() == label {
						match = true
					}
				}
				if !match {
					continue
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return 0
}

func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	c, err := newSelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newSelfSignedTLS() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, nil
}

// echoPeer is a UDP peer on loopback that sends back what it gets.
func echoPeer(t *testing.T, network, addr string) net.PacketConn {
	return testnet.EchoPeer(t, network, addr)
}

// dialClientConn returns the PacketConn a TURN client talks through for the
// transport ("udp", "tcp", "tls") to server.
func dialClientConn(t *testing.T, transport string, server net.Addr) net.PacketConn {
	t.Helper()
	switch transport {
	case "udp":
		nw := "udp4"
		if server.(*net.UDPAddr).IP.To4() == nil {
			nw = "udp6"
		}
		pc, err := net.ListenPacket(nw, "")
		if err != nil {
			t.Fatal(err)
		}
		return pc
	case "tcp":
		c, err := net.DialTimeout("tcp", server.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return turn.NewSTUNConn(c)
	case "tls":
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", server.String(),
			&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test's own self-signed certificate
		if err != nil {
			t.Fatal(err)
		}
		return turn.NewSTUNConn(c)
	}
	t.Fatalf("unknown transport %q", transport)
	return nil
}

// newClient starts a pion TURN client; Close is registered on t.
func newClient(t *testing.T, transport string, server net.Addr, username, password string) *turn.Client {
	t.Helper()
	conn := dialClientConn(t, transport, server)
	c, err := makeClient(conn, server, username, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); _ = conn.Close() })
	return c
}

// makeClient starts a pion TURN client on conn; the caller closes it.
func makeClient(conn net.PacketConn, server net.Addr, username, password string) (*turn.Client, error) {
	addr := server.String()
	if _, stream := conn.(*turn.STUNConn); stream && !isIPv4(server) {
		// pion's client resolves the server as udp4 even when it only writes
		// to a stream, which ignores the address: give it any IPv4 one.
		addr = "127.0.0.1:9"
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Conn:           conn,
		Username:       username,
		Password:       password,
		Realm:          "traverse",
		RTO:            200 * time.Millisecond,
	})
	if err != nil {
		return nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func mint(t *testing.T, secret, user string, ttl time.Duration) auth.Credential {
	t.Helper()
	c, err := auth.Mint([]byte(secret), user, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// roundTrip sends msg to peer through the relay and waits for the echo.
func roundTrip(t *testing.T, relayConn net.PacketConn, peer net.Addr, msg string) {
	t.Helper()
	if _, err := relayConn.WriteTo([]byte(msg), peer); err != nil {
		t.Fatalf("write to peer: %v", err)
	}
	buf := make([]byte, 1600)
	_ = relayConn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := relayConn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if got := string(buf[:n]); got != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
	if from.String() != peer.String() {
		t.Fatalf("echo from %s, want %s", from, peer)
	}
}

func isErrCode(err error, code string) bool {
	return err != nil && strings.Contains(err.Error(), code)
}

// rawClient is the hand-built TURN client (internal/turntest), for what
// pion's client cannot be made to do: refresh on demand, switch usernames on
// one allocation, use UDP over IPv6.
type rawClient = turntest.Client

func newRawClient(t *testing.T, transport string, server net.Addr, username, password string) *rawClient {
	t.Helper()
	conn := dialClientConn(t, transport, server)
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{Conn: conn, Server: server, Username: username, Password: password, Realm: "traverse"}
}

// newRawClientConn is a UDP raw client outside a test (benchmarks); the
// caller closes its Conn.
func newRawClientConn(server net.Addr, username, password string) *rawClient {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	return &rawClient{Conn: conn, Server: server, Username: username, Password: password, Realm: "traverse"}
}

var errCode = turntest.Code

// loopbackPeer is a peer address on 127.0.0.1 (the port does not matter for
// a permission).
var loopbackPeer = netip.MustParseAddrPort("127.0.0.1:9")

// clock is a settable clock for the relay under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func startRelayClock(t *testing.T, cfg config.Config, clk *clock) *testRelay {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(Options{Config: cfg, Log: testlog.New(t), Registerer: reg, Now: clk.Now})
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &testRelay{Server: s, reg: reg}
}

func isIPv4(a net.Addr) bool {
	ap := addrPort(a)
	return ap.Addr().Unmap().Is4()
}
