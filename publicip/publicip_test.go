package publicip_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/publicip"
	"github.com/traverse/traverse/server"
)

func baseConfig(t *testing.T) config.Config {
	c := config.Default()
	c.DataDir = t.TempDir()
	c.Listen = config.Listen{UDP: []string{"127.0.0.1:0"}}
	c.Auth.Secrets = []string{"publicip-test-secret-0123"}
	c.Relay.BindIP = "127.0.0.1"
	c.Relay.DrainTimeout = 0
	c.Issuer.Enabled = false
	c.Metrics.Listen = ""
	return c
}

// stunTraverse starts a second traverse whose UDP listener answers STUN
// Binding requests, and returns its address.
func stunTraverse(t *testing.T) string {
	c := baseConfig(t)
	c.Relay.PublicIP = "127.0.0.1"
	s, err := server.New(context.Background(), server.Options{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s.Relay().Addrs().UDP[0].String()
}

// silent is a UDP socket that reads and never answers.
func silent(t *testing.T) string {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc.LocalAddr().String()
}

// liar answers every Binding request with a fixed mapped address, as a STUN
// server behind another NAT would.
func liar(t *testing.T, ip string) string {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			res := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: net.ParseIP(ip), Port: 40000}, stun.Fingerprint)
			_, _ = pc.WriteTo(res.Raw, from)
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
	return pc.LocalAddr().String()
}

func TestDetectAgreeingServers(t *testing.T) {
	tr, quiet := stunTraverse(t), silent(t)
	ip, answers, err := publicip.Detect(context.Background(), "127.0.0.1", []string{tr, quiet}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ip != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("ip = %s", ip)
	}
	if answers[1].Err == nil || got(publicip.Answered(answers)) != tr {
		t.Fatalf("answers = %+v", answers)
	}
}

func got(s []string) string { return strings.Join(s, ",") }

func TestDetectRefusals(t *testing.T) {
	tr, quiet, other := stunTraverse(t), silent(t), liar(t, "203.0.113.7")
	_, _, err := publicip.Detect(context.Background(), "127.0.0.1", []string{tr, other}, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "disagree") || !strings.Contains(err.Error(), tr+" says 127.0.0.1") ||
		!strings.Contains(err.Error(), other+" says 203.0.113.7") {
		t.Fatalf("disagreeing servers: %v", err)
	}
	_, _, err = publicip.Detect(context.Background(), "127.0.0.1", []string{quiet, "nonexistent.invalid:3478"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "no STUN server answered") || !strings.Contains(err.Error(), quiet) ||
		!strings.Contains(err.Error(), "nonexistent.invalid:3478") {
		t.Fatalf("no answer: %v", err)
	}
}

// TestServerPublicIPAuto: traverse starts advertising the address the STUN
// servers agree on and logs its source; it refuses to start, naming them,
// when they disagree.
func TestServerPublicIPAuto(t *testing.T) {
	tr, quiet, other := stunTraverse(t), silent(t), liar(t, "203.0.113.7")

	c := baseConfig(t)
	c.Relay.PublicIP = config.PublicIPAuto
	c.Relay.PublicIPSTUN = []string{tr, quiet}
	core, logs := observer.New(zap.InfoLevel)
	s, err := server.New(context.Background(), server.Options{Config: c, Log: zap.New(core), STUNTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if ip := s.Relay().PublicIP().String(); ip != "127.0.0.1" {
		t.Fatalf("advertised %s", ip)
	}
	lines := logs.FilterMessage("public ip detected").All()
	if len(lines) != 1 || lines[0].ContextMap()["source"] != "stun "+tr {
		t.Fatalf("log lines: %+v", lines)
	}
	// SIGHUP asks again: the same answer changes nothing, a new one needs a restart.
	if restart, err := s.Reload(c); err != nil || len(restart) != 0 {
		t.Fatalf("reload with the same answer: %v %v", restart, err)
	}
	moved := c
	moved.Relay.PublicIPSTUN = []string{other}
	if restart, err := s.Reload(moved); err != nil || got(restart) != "relay.public_ip" {
		t.Fatalf("reload after the address moved: %v %v", restart, err)
	}

	c2 := baseConfig(t)
	c2.Relay.PublicIP = config.PublicIPAuto
	c2.Relay.PublicIPSTUN = []string{tr, other}
	if _, err := server.New(context.Background(), server.Options{Config: c2, STUNTimeout: 2 * time.Second}); err == nil ||
		!strings.Contains(err.Error(), "relay.public_ip: auto") || !strings.Contains(err.Error(), other) {
		t.Fatalf("disagreeing servers: err = %v", err)
	}
	c2.Relay.PublicIPSTUN = []string{quiet}
	if _, err := server.New(context.Background(), server.Options{Config: c2, STUNTimeout: time.Second}); err == nil ||
		!strings.Contains(err.Error(), quiet) {
		t.Fatalf("silent server: err = %v", err)
	}
}
