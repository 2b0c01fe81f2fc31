package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/certs"
	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/testlog"
	"github.com/traverse/traverse/internal/testnet"
	"github.com/traverse/traverse/server"
)

const (
	domain = "turn.traverse.test"
	secret = "certs-test-secret-0123456789"
)

// running is a traverse started in-process with tls.acme.
type running struct {
	srv     *server.Server
	metrics string
}

func startTraverse(t *testing.T, directory, rootsFile string) *running {
	return startNode(t, directory, rootsFile, "")
}

// startNode starts traverse with its ACME storage in storage ("" for
// data_dir/acme).
func startNode(t *testing.T, directory, rootsFile, storage string) *running {
	return startNodeWith(t, directory, rootsFile, func(c *config.Config) { c.TLS.ACME.Storage = storage })
}

// startNodeWith starts traverse with tls.acme on the directory, after mod
// adjusts its config.
func startNodeWith(t *testing.T, directory, rootsFile string, mod func(*config.Config)) *running {
	t.Helper()
	c := config.Default()
	c.DataDir = t.TempDir()
	c.Listen = config.Listen{UDP: []string{"127.0.0.1:0"}, TCP: []string{"127.0.0.1:0"}, TLS: []string{"127.0.0.1:0"}}
	c.Auth.Secrets = []string{secret}
	c.Relay.PublicIP, c.Relay.BindIP = "127.0.0.1", "127.0.0.1"
	c.Relay.Peers.AllowLoopback = true
	c.Relay.DrainTimeout = 0
	c.Issuer.Enabled = false
	c.Metrics.Listen = "127.0.0.1:0"
	c.TLS.ACME = config.ACME{Domains: []string{domain}, CA: directory, CARoots: rootsFile, Email: "ops@traverse.test"}
	mod(&c)
	srv, err := server.New(context.Background(), server.Options{Config: c, Log: testlog.New(t),
		CertTimings: certs.Options{RetryInterval: 500 * time.Millisecond, RenewCheckInterval: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("traverse did not stop")
		}
	})
	return &running{srv: srv, metrics: "http://" + srv.MetricsAddr().String()}
}

func (r *running) tlsAddr() string { return r.srv.Relay().Addrs().TLS[0].String() }

func (r *running) tlsPort(t *testing.T) int {
	_, p, _ := net.SplitHostPort(r.tlsAddr())
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (r *running) readyz(t *testing.T) (int, string) {
	t.Helper()
	res, err := http.Get(r.metrics + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// metric reads one unlabelled series from /metrics.
func (r *running) metric(t *testing.T, name string) float64 {
	t.Helper()
	res, err := http.Get(r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// waitReady polls /readyz until 200; ACME issuance takes a few seconds.
func (r *running) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, body := r.readyz(t)
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dialTLS connects to the TURN TLS listener verifying the issued chain
// against pebble's root for the domain.
func dialTLS(t *testing.T, addr string, roots *x509.CertPool, protos []string) (*tls.Conn, error) {
	t.Helper()
	return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: domain, RootCAs: roots, NextProtos: protos, MinVersion: tls.VersionTLS12})
}

// allocate runs pion's TURN client over conn and allocates.
func allocate(t *testing.T, conn net.PacketConn, addr string) (*turn.Client, net.PacketConn) {
	t.Helper()
	cred, err := auth.NewSecrets([]string{secret}).Mint("acme-test", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: cred.Username, Password: cred.Password, RTO: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	rc, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	return c, rc
}

// roundTrip sends through the allocation to an echo peer and reads it back.
func roundTrip(t *testing.T, rc net.PacketConn, peer net.Addr, msg string) {
	t.Helper()
	buf := make([]byte, 1500)
	for i := 0; i < 10; i++ { // UDP to the peer may be lost; retry a few times
		if _, err := rc.WriteTo([]byte(msg), peer); err != nil {
			t.Fatal(err)
		}
		_ = rc.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := rc.ReadFrom(buf)
		if err == nil && string(buf[:n]) == msg {
			return
		}
	}
	t.Fatalf("no echo of %q through the relay", msg)
}

func serial(c *tls.Conn) string { return c.ConnectionState().PeerCertificates[0].SerialNumber.String() }

// TestACMEIssueRenewKeepAllocation: traverse obtains its certificate from
// pebble at start-up, pebble validating TLS-ALPN-01 against the TURN TLS
// listener itself; clients offering stun.turn and no ALPN both get TURN;
// the short-lived certificate renews in the background, new handshakes get
// the new one and an allocation made before the swap keeps relaying.
func TestACMEIssueRenewKeepAllocation(t *testing.T) {
	dirAddr := reserveAddr(t)
	httpsCert, rootsFile := pebbleHTTPS(t)
	tr := startTraverse(t, "https://"+dirAddr+"/dir", rootsFile)
	// 45-second certificates: renewal starts with 15 s left, a margin for a loaded machine.
	roots := startPebble(t, dirAddr, httpsCert, tr.tlsPort(t), 45)
	tr.waitReady(t)

	peer := testnet.EchoPeer(t, "udp4", "127.0.0.1:0")
	first, err := dialTLS(t, tr.tlsAddr(), roots, []string{certs.ProtoTURN})
	if err != nil {
		t.Fatalf("handshake with the issued certificate: %v", err)
	}
	if p := first.ConnectionState().NegotiatedProtocol; p != certs.ProtoTURN {
		t.Fatalf("negotiated %q, want %q", p, certs.ProtoTURN)
	}
	oldSerial := serial(first)
	_, rc := allocate(t, turn.NewSTUNConn(first), tr.tlsAddr())
	roundTrip(t, rc, peer.LocalAddr(), "before renewal")

	noALPN, err := dialTLS(t, tr.tlsAddr(), roots, nil)
	if err != nil {
		t.Fatalf("client without ALPN: %v", err)
	}
	if p := noALPN.ConnectionState().NegotiatedProtocol; p != "" {
		t.Fatalf("client without ALPN negotiated %q", p)
	}
	_, rc2 := allocate(t, turn.NewSTUNConn(noALPN), tr.tlsAddr())
	roundTrip(t, rc2, peer.LocalAddr(), "no alpn")

	// Renewal: wait until a new handshake sees another certificate.
	deadline := time.Now().Add(90 * time.Second)
	var newSerial string
	for newSerial == "" || newSerial == oldSerial {
		if time.Now().After(deadline) {
			t.Fatal("certificate never renewed")
		}
		time.Sleep(500 * time.Millisecond)
		c, err := dialTLS(t, tr.tlsAddr(), roots, []string{certs.ProtoTURN})
		if err != nil {
			t.Fatalf("handshake during renewal: %v", err)
		}
		newSerial = serial(c)
		_ = c.Close()
	}
	// The allocation made over the old certificate's connection still relays.
	if serial(first) != oldSerial {
		t.Fatal("live connection changed certificate")
	}
	roundTrip(t, rc, peer.LocalAddr(), "after renewal")
	if code, body := tr.readyz(t); code != http.StatusOK {
		t.Fatalf("readyz after renewal: %d %s", code, body)
	}
	if m := tr.metric(t, "traverse_tls_certificate_expiry_timestamp_seconds"); m < float64(time.Now().Unix()) {
		t.Fatalf("certificate expiry metric %v is in the past after renewal", m)
	}
}

// TestACMEDownAtStartup: with the CA unreachable the relay serves UDP and
// TCP, /readyz says the certificate is missing, and TLS comes up once the CA
// is back and the certificate is obtained.
func TestACMEDownAtStartup(t *testing.T) {
	dirAddr := reserveAddr(t) // nothing listens there yet
	httpsCert, rootsFile := pebbleHTTPS(t)
	tr := startTraverse(t, "https://"+dirAddr+"/dir", rootsFile)

	peer := testnet.EchoPeer(t, "udp4", "127.0.0.1:0")
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, rc := allocate(t, udp, tr.srv.Relay().Addrs().UDP[0].String())
	roundTrip(t, rc, peer.LocalAddr(), "udp while the CA is down")
	tcp, err := net.DialTimeout("tcp", tr.srv.Relay().Addrs().TCP[0].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, rcTCP := allocate(t, turn.NewSTUNConn(tcp), tr.srv.Relay().Addrs().TCP[0].String())
	roundTrip(t, rcTCP, peer.LocalAddr(), "tcp while the CA is down")

	if m := tr.metric(t, "traverse_tls_certificate_expiry_timestamp_seconds"); m != 0 {
		t.Fatalf("certificate expiry metric %v without a certificate", m)
	}
	code, body := tr.readyz(t)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no certificate yet for "+domain) {
		t.Fatalf("readyz while the CA is down: %d %q", code, body)
	}
	if c, err := dialTLS(t, tr.tlsAddr(), x509.NewCertPool(), nil); err == nil {
		_ = c.Close()
		t.Fatal("TLS handshake succeeded without a certificate")
	}

	roots := startPebble(t, dirAddr, httpsCert, tr.tlsPort(t), 0)
	tr.waitReady(t)
	c, err := dialTLS(t, tr.tlsAddr(), roots, []string{certs.ProtoTURN})
	if err != nil {
		t.Fatalf("TLS once the certificate is obtained: %v", err)
	}
	_, rcTLS := allocate(t, turn.NewSTUNConn(c), tr.tlsAddr())
	roundTrip(t, rcTLS, peer.LocalAddr(), "tls after the CA came back")
	if bytes.Contains([]byte(body), []byte(secret)) {
		t.Fatal("readyz leaks the secret")
	}
}

// TestACMESharedStorageOrdersOnce: two nodes started together on one
// storage directory order the certificate once, under certmagic's lock;
// the CA validates against the first node's listener whichever node
// ordered (the challenge is shared through the storage), and both serve
// the same certificate.
func TestACMESharedStorageOrdersOnce(t *testing.T) {
	dirAddr := reserveAddr(t)
	httpsCert, rootsFile := pebbleHTTPS(t)
	storage := t.TempDir()
	a := startNode(t, "https://"+dirAddr+"/dir", rootsFile, storage)
	b := startNode(t, "https://"+dirAddr+"/dir", rootsFile, storage)
	roots, issued := startPebbleCounting(t, dirAddr, httpsCert, a.tlsPort(t), 0)
	a.waitReady(t)
	b.waitReady(t)
	if n := issued(); n != 1 {
		t.Fatalf("pebble issued %d certificates for two nodes sharing storage, want 1", n)
	}
	var serials []string
	for _, n := range []*running{a, b} {
		c, err := dialTLS(t, n.tlsAddr(), roots, []string{certs.ProtoTURN})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, serial(c))
		_ = c.Close()
	}
	if serials[0] != serials[1] {
		t.Fatalf("nodes serve %v, want one certificate", serials)
	}
}

// TestACMEHTTP01WhenConfigured: with tls.acme.http_port set, traverse
// answers HTTP-01 on that port. The CA is pointed at a closed TLS port so
// that TLS-ALPN-01 cannot succeed and HTTP-01 must.
func TestACMEHTTP01WhenConfigured(t *testing.T) {
	dirAddr := reserveAddr(t)
	httpsCert, rootsFile := pebbleHTTPS(t)
	httpPort, err := strconv.Atoi(strings.Split(reserveAddr(t), ":")[1])
	if err != nil {
		t.Fatal(err)
	}
	closedTLS, _ := strconv.Atoi(strings.Split(reserveAddr(t), ":")[1])
	tr := startNodeWith(t, "https://"+dirAddr+"/dir", rootsFile, func(c *config.Config) { c.TLS.ACME.HTTPPort = httpPort })
	startPebbleWithHTTP(t, dirAddr, httpsCert, closedTLS, httpPort)
	tr.waitReady(t)
}
