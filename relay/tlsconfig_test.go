package relay

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// openssl runs `openssl s_client` against addr with args and returns its
// output and whether the handshake completed.
func opensslClient(t *testing.T, addr string, args ...string) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl not found (%v): run scripts/install-deps (Debian package openssl)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"s_client", "-connect", addr}, args...)...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("openssl s_client %v timed out: %s", args, out)
	}
	return string(out), err == nil
}

// TestTLSRefusesCBC: TLS 1.2 with a CBC-SHA1 suite is refused; with an AEAD
// suite it is served, and stun.turn is chosen in ALPN.
func TestTLSRefusesCBC(t *testing.T) {
	r := startRelay(t, testConfig(), true)
	addr := r.Addrs().TLS[0].String()
	for _, cbc := range []string{"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"} {
		if out, ok := opensslClient(t, addr, "-tls1_2", "-cipher", cbc); ok {
			t.Errorf("TLS 1.2 with %s was served:\n%s", cbc, out)
		}
	}
	out, ok := opensslClient(t, addr, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-alpn", "stun.turn")
	if !ok || !strings.Contains(out, "ECDHE-ECDSA-AES128-GCM-SHA256") {
		t.Fatalf("TLS 1.2 with AES128-GCM refused:\n%s", out)
	}
	if !strings.Contains(out, "ALPN protocol: stun.turn") {
		t.Errorf("stun.turn not chosen in ALPN:\n%s", out)
	}
	if out, ok := opensslClient(t, addr, "-tls1_3"); !ok {
		t.Errorf("TLS 1.3 refused:\n%s", out)
	}
}
