package doctor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/doctor"
	"github.com/traverse/traverse/server"
)

const host = "turn.doctor.test"

// freePort finds a loopback port free for both UDP and TCP right now.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		_ = ln.Close()
		if err == nil {
			_ = pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// ephemeral reads the kernel's ephemeral port range.
func ephemeral(t *testing.T) (int, int) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip("no /proc ephemeral range on this system:", err)
	}
	f := strings.Fields(string(data))
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	return lo, hi
}

// writeCert writes a self-signed certificate for host valid from notBefore for life.
func writeCert(t *testing.T, dir string, notBefore time.Time, life time.Duration) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: notBefore, NotAfter: notBefore.Add(life), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

type setup struct {
	certAge   time.Duration // how long ago a 24-hour certificate started; zero: a fresh 90-day one
	portRange [2]int        // relay.ports; zero: clear of the ephemeral range
}

// writeConfig writes a loopback config with fixed free ports, as an
// operator's file would have, and returns its path.
func writeConfig(t *testing.T, s setup) string {
	dir := t.TempDir()
	life := 90 * 24 * time.Hour
	if s.certAge > 0 {
		life = 24 * time.Hour
	}
	certFile, keyFile := writeCert(t, dir, time.Now().Add(-s.certAge-time.Hour), life)
	if s.portRange == [2]int{} {
		lo, hi := ephemeral(t)
		if lo > 1300 {
			s.portRange = [2]int{lo - 200, lo - 1}
		} else {
			s.portRange = [2]int{hi + 1, min(hi+200, 65535)}
		}
	}
	turnPort, tlsPort := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`data_dir: %s
listen:
  udp: ["127.0.0.1:%d"]
  tcp: ["127.0.0.1:%d"]
  tls: ["127.0.0.1:%d"]
tls:
  cert: %s
  key: %s
auth:
  secrets: ["doctor-test-secret-0123456789"]
relay:
  public_ip: 127.0.0.1
  bind_ip: 127.0.0.1
  ports: {min: %d, max: %d}
  peers: {allow_loopback: true}
  quota: {total: 100}
  drain_timeout: 0s
issuer:
  enabled: false
  public_host: %s
metrics:
  listen: 127.0.0.1:%d
`, dir, turnPort, turnPort, tlsPort, certFile, keyFile, s.portRange[0], s.portRange[1], host, freePort(t))
	path := filepath.Join(dir, "traverse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serve runs traverse on the config until the test ends.
func serve(t *testing.T, path string) {
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func find(t *testing.T, r doctor.Report, name string) doctor.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, r.Checks)
	return doctor.Check{}
}

func run(t *testing.T, path string) doctor.Report {
	r := doctor.Run(context.Background(), path, doctor.Options{Timeout: 5 * time.Second})
	var sb strings.Builder
	r.WriteText(&sb)
	t.Logf("doctor:\n%s", sb.String())
	return r
}

// TestDoctorHealthy: against a running traverse every transport answers
// STUN and relays a round trip, its ports are found held by traverse, and
// nothing fails.
func TestDoctorHealthy(t *testing.T) {
	path := writeConfig(t, setup{})
	serve(t, path)
	r := run(t, path)
	if r.Failed() {
		t.Fatal("a check failed against a healthy server")
	}
	for _, kind := range []string{"udp", "tcp", "tls"} {
		if c := find(t, r, "stun "+kind); c.Status != doctor.OK || !strings.Contains(c.Detail, "seen as 127.0.0.1:") {
			t.Errorf("stun %s: %+v", kind, c)
		}
		if c := find(t, r, "turn "+kind); c.Status != doctor.OK || !strings.Contains(c.Detail, "relayed address 127.0.0.1:") {
			t.Errorf("turn %s: %+v", kind, c)
		}
	}
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, "port ") && !strings.Contains(c.Detail, "held by traverse") {
			t.Errorf("%s: %+v", c.Name, c)
		}
	}
	if c := find(t, r, "certificate"); c.Status != doctor.OK || !strings.Contains(c.Detail, "89 days") {
		t.Errorf("certificate: %+v", c)
	}
	if c := find(t, r, "certificate names"); c.Status != doctor.OK || !strings.Contains(c.Detail, host) {
		t.Errorf("certificate names: %+v", c)
	}
	if c := find(t, r, "relay port range"); c.Status != doctor.OK {
		t.Errorf("relay port range: %+v", c)
	}
	if c := find(t, r, "peers"); c.Status != doctor.Warn || !strings.Contains(c.Detail, "loopback") {
		t.Errorf("peers: %+v", c)
	}
}

// TestDoctorStopped: with traverse down the ports are free but STUN and
// TURN fail, so doctor fails.
func TestDoctorStopped(t *testing.T) {
	r := run(t, writeConfig(t, setup{}))
	if !r.Failed() {
		t.Fatal("doctor passed with no server running")
	}
	for _, kind := range []string{"udp", "tcp", "tls"} {
		if c := find(t, r, "turn "+kind); c.Status != doctor.Fail {
			t.Errorf("turn %s: %+v", kind, c)
		}
	}
	ports := 0
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, "port ") {
			ports++
			if c.Status != doctor.OK || !strings.Contains(c.Detail, "free") {
				t.Errorf("%s: %+v", c.Name, c)
			}
		}
	}
	if ports != 4 { // udp, tcp, tls, metrics
		t.Errorf("%d port checks, want 4", ports)
	}
}

// TestDoctorExpiredCertificate fails on a certificate past its end.
func TestDoctorExpiredCertificate(t *testing.T) {
	path := writeConfig(t, setup{certAge: 48 * time.Hour})
	serve(t, path)
	r := run(t, path)
	if c := find(t, r, "certificate"); c.Status != doctor.Fail || !strings.Contains(c.Detail, "expired") {
		t.Fatalf("certificate: %+v", c)
	}
	if !r.Failed() {
		t.Fatal("an expired certificate did not fail doctor")
	}
}

// TestDoctorOverlappingPortRange warns when relay.ports overlaps the
// kernel's ephemeral range.
func TestDoctorOverlappingPortRange(t *testing.T) {
	lo, hi := ephemeral(t)
	r := run(t, writeConfig(t, setup{portRange: [2]int{max(lo, 1024), hi}}))
	if c := find(t, r, "relay port range"); c.Status != doctor.Warn || !strings.Contains(c.Detail, "overlaps net.ipv4.ip_local_port_range") {
		t.Fatalf("relay port range: %+v", c)
	}
}
