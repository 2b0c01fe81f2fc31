package server

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/testlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's connection opener outlives Close by design in some drivers.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

func loopbackConfig(t *testing.T) config.Config {
	c := config.Default()
	c.DataDir = t.TempDir()
	c.Listen.UDP = []string{"127.0.0.1:0"}
	c.Listen.TCP = []string{"127.0.0.1:0"}
	c.Listen.TLS = nil
	c.Auth.Secrets = []string{"server-test-secret-0123"}
	c.Relay.PublicIP = "127.0.0.1"
	c.Relay.BindIP = "127.0.0.1"
	c.Relay.DrainTimeout = 200 * time.Millisecond
	c.Issuer.Listen = "127.0.0.1:0"
	c.Metrics.Listen = "127.0.0.1:0"
	return c
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestServeLifecycle starts everything on loopback, checks health, readiness
// and metrics, reloads, and shuts down without leaking goroutines.
func TestServeLifecycle(t *testing.T) {
	cfg := loopbackConfig(t)
	s, err := New(context.Background(), Options{Config: cfg, Log: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	base := "http://" + s.MetricsAddr().String()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := get(t, base+"/readyz"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	_, metrics := get(t, base+"/metrics")
	for _, m := range []string{"traverse_relay_allocations_active", `traverse_relay_auth_total{result="expired"} 0`, "traverse_issuer_tokens_issued_total", "go_goroutines"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// An invalid config is refused and the running one kept.
	bad := cfg
	bad.Auth.Secrets = []string{"short"}
	if _, err := s.Reload(bad); err == nil {
		t.Fatal("invalid config reloaded")
	}
	if s.secrets.Load().Len() != 1 {
		t.Fatal("running secrets changed by a refused reload")
	}
	next := cfg
	next.Auth.Secrets = []string{"rotated-secret-01234567", "server-test-secret-0123"}
	next.Relay.Ports.Min = 50000
	next.Log.Level = "debug"
	restart, err := s.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) != 1 || restart[0] != "relay.ports" {
		t.Fatalf("restart needed = %v, want [relay.ports]", restart)
	}
	if s.secrets.Load().Len() != 2 {
		t.Fatal("secrets not reloaded")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// TestTakenPortFailsStartup names the address in the error.
func TestTakenPortFailsStartup(t *testing.T) {
	cfg := loopbackConfig(t)
	first, err := New(context.Background(), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Shutdown(context.Background())
	cfg2 := loopbackConfig(t)
	cfg2.Metrics.Listen = first.MetricsAddr().String()
	_, err = New(context.Background(), Options{Config: cfg2})
	if err == nil || !strings.Contains(err.Error(), first.MetricsAddr().String()) {
		t.Fatalf("err = %v, want it to name %s", err, first.MetricsAddr())
	}
}

func TestICEURIsFromBoundListeners(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.Issuer.PublicHost = "turn.example.com"
	s, err := New(context.Background(), Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	uris := s.ICEURIs()
	udp := s.Relay().Addrs().UDP[0].(interface{ String() string }).String()
	_, port, _ := strings.Cut(udp, ":")
	if len(uris) != 3 || uris[0] != "stun:turn.example.com:"+port || !strings.HasPrefix(uris[1], "turn:turn.example.com:"+port+"?transport=udp") {
		t.Fatalf("uris = %v", uris)
	}
}

// TestReloadSwapsCertificate: new PEM files at the configured paths are
// served to the next TLS handshake after Reload, on the TURN-over-TLS port.
func TestReloadSwapsCertificate(t *testing.T) {
	cfg := loopbackConfig(t)
	dir := t.TempDir()
	certA, keyA, err := DevCertificate(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	certB, keyB, err := DevCertificate(filepath.Join(dir, "b"))
	if err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live")
	if err := os.MkdirAll(live, 0o700); err != nil {
		t.Fatal(err)
	}
	install := func(cert, key string) {
		for src, dst := range map[string]string{cert: "cert.pem", key: "key.pem"} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(live, dst), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(certA, keyA)
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(live, "cert.pem"), filepath.Join(live, "key.pem")
	cfg.Listen.TLS = []string{"127.0.0.1:0"}
	s, err := New(context.Background(), Options{Config: cfg, Log: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	serial := func() string {
		c, err := tls.Dial("tcp", s.Relay().Addrs().TLS[0].String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // comparing served certificates
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	install(certB, keyB)
	if _, err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before {
		t.Fatalf("still serving certificate %s after reload", before)
	}
}
