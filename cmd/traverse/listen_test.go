package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/traverse/traverse/config"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestIPv6Decision(t *testing.T) {
	cases := []struct {
		name  string
		addrs []netip.Addr
		on    bool
		why   string
	}{
		{"global", addrs("127.0.0.1", "::1", "fe80::1", "2a01:4f8::1"), true, "global IPv6 address 2a01:4f8::1"},
		{"none", addrs("127.0.0.1", "192.0.2.10"), false, "no IPv6 address"},
		{"nothing at all", nil, false, "no IPv6 address"},
		{"local only", addrs("::1", "fe80::1", "fd00::5"), false, "no global IPv6 address"},
		{"mapped v4 is not v6", addrs("::ffff:203.0.113.5"), false, "no IPv6 address"},
	}
	for _, tc := range cases {
		on, why := ipv6Decision(tc.addrs)
		if on != tc.on || !strings.Contains(why, tc.why) {
			t.Errorf("%s: ipv6Decision = %v %q, want %v and %q", tc.name, on, why, tc.on, tc.why)
		}
	}
}

// TestApplyIPv6Default: with a global IPv6 address the default listeners get
// "[::]" twins and the note says which; without one the note says why they
// are off. Lists the config file names, and relay addresses, are untouched.
func TestApplyIPv6Default(t *testing.T) {
	cfg := config.Default()
	cfg.TLS = config.TLS{Cert: "c.pem", Key: "k.pem"}
	note := applyIPv6Default(&cfg, namedListeners{}, addrs("192.0.2.10", "2a01:4f8::1"))
	if want := []string{"0.0.0.0:3478", "[::]:3478"}; !slices.Equal(cfg.Listen.UDP, want) || !slices.Equal(cfg.Listen.TCP, want) {
		t.Fatalf("udp %v tcp %v, want %v", cfg.Listen.UDP, cfg.Listen.TCP, want)
	}
	if want := []string{"0.0.0.0:443", "0.0.0.0:5349", "[::]:443", "[::]:5349"}; !slices.Equal(cfg.Listen.TLS, want) {
		t.Fatalf("tls %v, want %v", cfg.Listen.TLS, want)
	}
	if want := "ipv6 listeners on: the host has the global IPv6 address 2a01:4f8::1: listen.udp [::]:3478, listen.tcp [::]:3478, " +
		"listen.tls [::]:443, listen.tls [::]:5349 (relay addresses stay IPv4)"; note != want {
		t.Fatalf("note %q\nwant %q", note, want)
	}
	if cfg.Relay.BindIP != "0.0.0.0" {
		t.Fatalf("relay.bind_ip changed to %s", cfg.Relay.BindIP)
	}
	if err := withSecret(cfg).Validate(); err != nil {
		t.Fatal(err)
	}

	// A list the file names stays as written.
	cfg = config.Default()
	cfg.Listen.UDP = []string{"0.0.0.0:3478"}
	applyIPv6Default(&cfg, namedListeners{UDP: true}, addrs("2a01:4f8::1"))
	if !slices.Equal(cfg.Listen.UDP, []string{"0.0.0.0:3478"}) || len(cfg.Listen.TCP) != 2 {
		t.Fatalf("named udp %v, default tcp %v", cfg.Listen.UDP, cfg.Listen.TCP)
	}

	// No global IPv6: nothing added, and the note says why.
	cfg = config.Default()
	note = applyIPv6Default(&cfg, namedListeners{}, addrs("192.0.2.10", "fe80::1"))
	if len(cfg.Listen.UDP) != 1 || len(cfg.Listen.TLS) != 2 {
		t.Fatalf("listeners changed without IPv6: %+v", cfg.Listen)
	}
	if want := "ipv6 listeners off: the host has no global IPv6 address (only loopback, link-local or unique-local ones); " +
		"name [::] addresses in listen.udp, listen.tcp and listen.tls to listen on IPv6 anyway"; note != want {
		t.Fatalf("note %q\nwant %q", note, want)
	}

	// Without a certificate TLS listeners are not bound, so not reported.
	cfg = config.Default()
	note = applyIPv6Default(&cfg, namedListeners{}, addrs("2a01:4f8::1"))
	if strings.Contains(note, "listen.tls") || !strings.Contains(note, "listen.udp [::]:3478, listen.tcp [::]:3478 (") {
		t.Fatalf("note without a certificate: %q", note)
	}

	// Nothing to decide: every list named (the TLS one needless without a
	// certificate), or no relay.
	cfg = config.Default()
	if note := applyIPv6Default(&cfg, namedListeners{UDP: true, TCP: true}, nil); note != "" {
		t.Fatalf("every bound list named: note %q", note)
	}
	cfg.Relay.Enabled = false
	if note := applyIPv6Default(&cfg, namedListeners{}, nil); note != "" {
		t.Fatalf("relay off: note %q", note)
	}
}

func withSecret(c config.Config) config.Config {
	c.Auth.Secrets = []string{"0123456789abcdef0123"}
	return c
}

func TestReadNamedListeners(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "t.yaml")
	if err := os.WriteFile(p, []byte("listen:\n  udp: [\"0.0.0.0:3478\"]\n  tls: []\nrealm: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := readNamedListeners(p)
	if err != nil || n != (namedListeners{UDP: true, TLS: true}) {
		t.Fatalf("readNamedListeners = %+v, %v", n, err)
	}
	if n, err := readNamedListeners(""); err != nil || n != (namedListeners{}) {
		t.Fatalf("no file: %+v, %v", n, err)
	}
}

func devConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	return cfg
}

// TestDevListensOnLoopback: --dev moves the default listeners to 127.0.0.1
// and ::1 and only then opens loopback peers.
func TestDevListensOnLoopback(t *testing.T) {
	cfg := devConfig(t)
	var out bytes.Buffer
	if err := applyDev(&cfg, namedListeners{}, true, &out); err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:3478", "[::1]:3478"}
	if !slices.Equal(cfg.Listen.UDP, want) || !slices.Equal(cfg.Listen.TCP, want) {
		t.Fatalf("udp %v tcp %v, want %v", cfg.Listen.UDP, cfg.Listen.TCP, want)
	}
	for _, a := range cfg.Listen.TLS {
		if !strings.HasPrefix(a, "127.0.0.1:") && !strings.HasPrefix(a, "[::1]:") {
			t.Fatalf("tls listener %s is not on loopback", a)
		}
	}
	if len(cfg.ExposedListeners()) != 0 || !cfg.Relay.Peers.AllowLoopback {
		t.Fatalf("exposed %v, allow_loopback %v", cfg.ExposedListeners(), cfg.Relay.Peers.AllowLoopback)
	}
	if cfg.Issuer.PublicHost != "127.0.0.1" {
		t.Fatalf("issuer.public_host %q: the URIs would name an address no listener answers", cfg.Issuer.PublicHost)
	}
	if !strings.Contains(out.String(), "dev: listen.udp on loopback only: 127.0.0.1:3478 [::1]:3478") ||
		!strings.Contains(out.String(), "dev: loopback peers allowed") {
		t.Fatalf("dev output:\n%s", out.String())
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	// Without ::1 (IPv6 off in a container) only 127.0.0.1.
	cfg = devConfig(t)
	if err := applyDev(&cfg, namedListeners{}, false, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Listen.UDP, []string{"127.0.0.1:3478"}) {
		t.Fatalf("udp without ::1: %v", cfg.Listen.UDP)
	}
}

// TestDevKeepsNamedListeners: listeners the config file names are used as
// written; when one is not on loopback, loopback peers stay denied unless
// the file allows them explicitly.
func TestDevKeepsNamedListeners(t *testing.T) {
	cfg := devConfig(t)
	cfg.Listen.UDP = []string{"0.0.0.0:3478"}
	cfg.Listen.TLS = []string{"127.0.0.1:0"} // port 0 is not privileged
	var out bytes.Buffer
	if err := applyDev(&cfg, namedListeners{UDP: true, TLS: true}, true, &out); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Listen.UDP, []string{"0.0.0.0:3478"}) || !slices.Equal(cfg.Listen.TLS, []string{"127.0.0.1:0"}) {
		t.Fatalf("named listeners changed: udp %v tls %v", cfg.Listen.UDP, cfg.Listen.TLS)
	}
	if !slices.Equal(cfg.Listen.TCP, []string{"127.0.0.1:3478", "[::1]:3478"}) {
		t.Fatalf("default tcp not on loopback: %v", cfg.Listen.TCP)
	}
	if cfg.Relay.Peers.AllowLoopback {
		t.Fatal("loopback peers opened while listen.udp 0.0.0.0:3478 is reachable from other hosts")
	}
	if cfg.Issuer.PublicHost != "" {
		t.Fatalf("issuer.public_host set to %q with a listener beyond loopback", cfg.Issuer.PublicHost)
	}
	if !strings.Contains(out.String(), "dev: loopback peers stay denied: listen.udp 0.0.0.0:3478 is not on loopback") {
		t.Fatalf("dev output:\n%s", out.String())
	}

	// The file says so explicitly: kept (the server warns at start-up).
	cfg = devConfig(t)
	cfg.Listen.UDP = []string{"0.0.0.0:3478"}
	cfg.Relay.Peers.AllowLoopback = true
	if err := applyDev(&cfg, namedListeners{UDP: true}, true, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !cfg.Relay.Peers.AllowLoopback {
		t.Fatal("explicit relay.peers.allow_loopback dropped")
	}
}

// TestWritePrivate: the token file is 0600 even when an older, wider file
// stood at its path, and holds exactly what was written.
func TestWritePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), PrimaryAccountFile)
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePrivate(path, []byte("secret\n")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode().Perm(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != "secret\n" {
		t.Fatalf("content %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".primary-account-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
