package certs_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/traverse/traverse/certs"
	"github.com/traverse/traverse/config"
)

func writePair(t *testing.T, certFile, keyFile string, certPEM, keyPEM []byte) {
	t.Helper()
	// As certbot does: new files renamed over the old ones.
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, keyPEM}, {certFile, certPEM}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

func servedName(t *testing.T, m *certs.Manager) string {
	t.Helper()
	c, err := m.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.Subject.CommonName
}

// TestFilesReloadWithoutSignal: changed certificate files are picked up by
// polling; a bad new pair keeps the running certificate and logs one error,
// however many polls see it.
func TestFilesReloadWithoutSignal(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	c1, k1 := selfSigned(t, "first.example", time.Now().Add(-time.Hour), time.Hour*2)
	writePair(t, certFile, keyFile, c1, k1)

	core, logs := observer.New(zap.InfoLevel)
	m, err := certs.New(certs.Options{TLS: config.TLS{Cert: certFile, Key: keyFile}, Log: zap.New(core), PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m.Start("")
	defer m.Close()
	if n := servedName(t, m); n != "first.example" {
		t.Fatalf("served %q", n)
	}

	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for servedName(t, m) != want {
			if time.Now().After(deadline) {
				t.Fatalf("still serving %q, want %q", servedName(t, m), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	c2, k2 := selfSigned(t, "second.example", time.Now().Add(-time.Hour), time.Hour*2)
	writePair(t, certFile, keyFile, c2, k2)
	waitFor("second.example")

	// A certificate with the wrong key: kept out, logged once.
	c3, _ := selfSigned(t, "third.example", time.Now().Add(-time.Hour), time.Hour*2)
	writePair(t, certFile, keyFile, c3, k2)
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterLevelExact(zap.ErrorLevel).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("bad certificate files never reported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // ten more polls see the same bad pair
	if n := logs.FilterLevelExact(zap.ErrorLevel).Len(); n != 1 {
		t.Fatalf("%d error lines for one bad pair, want 1", n)
	}
	if n := servedName(t, m); n != "second.example" {
		t.Fatalf("bad files replaced the certificate: serving %q", n)
	}

	c4, k4 := selfSigned(t, "fourth.example", time.Now().Add(-time.Hour), time.Hour*2)
	writePair(t, certFile, keyFile, c4, k4)
	waitFor("fourth.example")

	// SIGHUP's path reports a bad pair as an error and keeps serving.
	if err := m.Reload(config.TLS{Cert: certFile, Key: filepath.Join(dir, "missing.pem")}); err == nil {
		t.Fatal("reload with a missing key succeeded")
	}
	if n := servedName(t, m); n != "fourth.example" {
		t.Fatalf("after a failed reload serving %q", n)
	}
}
