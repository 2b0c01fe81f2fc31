package e2e

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// servedSerial handshakes with the TLS listener and returns the serial of
// the certificate it serves.
func servedSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestCertificateFilesReloadWithoutSIGHUP: certbot-style replacement of the
// certificate files is served from the next handshake, with no signal; a
// broken file keeps the served certificate and logs one error, and a TLS
// connection made before keeps working.
func TestCertificateFilesReloadWithoutSIGHUP(t *testing.T) {
	in := Start(t, Options{TLS: true})
	first := servedSerial(t, in.TLS)
	live, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", in.TLS, TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	WriteCert(t, in.Dir) // a new certificate on the same paths
	deadline := time.Now().Add(30 * time.Second)
	second := first
	for second == first {
		if time.Now().After(deadline) {
			t.Fatal("the new certificate files were never served")
		}
		time.Sleep(100 * time.Millisecond)
		second = servedSerial(t, in.TLS)
	}

	if err := os.WriteFile(filepath.Join(in.Dir, "cert.pem"), []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const msg = "certificate files changed but cannot be loaded"
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(in.Logs(), msg) {
		if time.Now().After(deadline) {
			t.Fatal("the broken file was never reported")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(6 * time.Second) // another poll sees the same broken file
	if n := strings.Count(in.Logs(), msg); n != 1 {
		t.Fatalf("%d error lines for one broken file, want 1", n)
	}
	if s := servedSerial(t, in.TLS); s != second {
		t.Fatalf("serving %s after a broken file, want %s", s, second)
	}
	// The connection made before both swaps still talks TLS to traverse.
	_ = live.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := live.Write([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	if n, err := live.Read(buf); err != nil || n < 20 || buf[0] != 0x01 || buf[1] != 0x01 {
		t.Fatalf("Binding over the old connection: %d bytes, %v", n, err)
	}
}
