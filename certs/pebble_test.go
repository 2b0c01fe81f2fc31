package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// startDNS answers every A question with 127.0.0.1 over TCP (as pebble's
// VA asks), so any test domain resolves to the loopback listener.
func startDNS(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
					A: net.IPv4(127, 0, 0, 1)})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// reserveAddr picks a free loopback port for pebble's directory, so the
// traverse under test can be configured before pebble runs (or while it is
// down). The port is free again when this returns.
func reserveAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// selfSigned makes a certificate for 127.0.0.1 and name, valid from
// notBefore for life.
func selfSigned(t *testing.T, name string, notBefore time.Time, life time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: notBefore, NotAfter: notBefore.Add(life),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// pebbleHTTPS makes the certificate of pebble's own HTTPS directory and
// writes its PEM for tls.acme.ca_roots.
func pebbleHTTPS(t *testing.T) (tls.Certificate, string) {
	certPEM, keyPEM := selfSigned(t, "pebble.test", time.Now().Add(-time.Hour), 2*time.Hour)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "pebble-https-root.pem")
	if err := os.WriteFile(file, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return cert, file
}

// startPebble serves pebble's directory on addr with cert, validating
// TLS-ALPN-01 on tlsPort. validity is the certificate lifetime in seconds
// (0: pebble's 90 days). It returns the roots issued certificates chain to.
func startPebble(t *testing.T, addr string, cert tls.Certificate, tlsPort int, validity uint64) *x509.CertPool {
	roots, _ := startPebbleCounting(t, addr, cert, tlsPort, validity)
	return roots
}

// startPebbleCounting is startPebble that also returns how many
// certificates pebble has issued so far.
func startPebbleCounting(t *testing.T, addr string, cert tls.Certificate, tlsPort int, validity uint64) (*x509.CertPool, func() int64) {
	return startPebbleFull(t, addr, cert, tlsPort, 0, validity)
}

// startPebbleWithHTTP is startPebble validating HTTP-01 on httpPort too.
func startPebbleWithHTTP(t *testing.T, addr string, cert tls.Certificate, tlsPort, httpPort int) *x509.CertPool {
	roots, _ := startPebbleFull(t, addr, cert, tlsPort, httpPort, 0)
	return roots
}

func startPebbleFull(t *testing.T, addr string, cert tls.Certificate, tlsPort, httpPort int, validity uint64) (*x509.CertPool, func() int64) {
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	w := newTestWriter(t)
	logger := log.New(w, "pebble ", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {ValidityPeriod: validity}})
	vauth := va.New(logger, httpPort, tlsPort, false, startDNS(t), store)
	front := wfe.New(logger, store, vauth, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port was free a moment ago; wait out a TIME_WAIT or a racer
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("pebble listen %s: %v", addr, err)
	}
	srv := &http.Server{Handler: front.Handler(), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ErrorLog: logger}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	roots := x509.NewCertPool()
	roots.AddCert(authority.GetRootCert(0).Cert)
	return roots, w.issued.Load
}

// testWriter logs pebble's lines to the test until it ends (pebble's
// goroutines may outlive it), and counts the certificates it issued.
type testWriter struct {
	t      *testing.T
	done   atomic.Bool
	issued atomic.Int64
}

func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return w
}

func (w *testWriter) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("Issued certificate serial")) {
		w.issued.Add(1)
	}
	if !w.done.Load() {
		w.t.Logf("%s", b)
	}
	return len(b), nil
}
