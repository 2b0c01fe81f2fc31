package e2e

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// TestREADMERunCommand runs the README's quick start — `traverse serve --dev`
// in an empty directory, on the default ports — and checks that the relay
// answers STUN on 3478, listens on loopback only, and that the primary
// account goes to data_dir/primary-account.txt (stdout is a pipe here, not a
// terminal) with a curl line that works as written, and that the console's
// URL is printed.
func TestREADMERunCommand(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binary, "serve", "--dev")
	cmd.Dir = dir
	cmd.Env = append(cmd.Environ(), "TRAVERSE_CONFIG=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	banner := make(chan string, 1)
	consoleLine := make(chan string, 1)
	go func() {
		defer close(exited)
		var out strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "rm ") {
				banner <- out.String()
			}
			if strings.Contains(sc.Text(), "operator console at") {
				consoleLine <- sc.Text()
			}
		}
		_ = cmd.Wait()
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	}()
	dataDir := filepath.Join(dir, "traverse-data")
	select {
	case b := <-banner:
		file := filepath.Join(dataDir, "primary-account.txt")
		if !strings.Contains(b, file) || strings.Contains(b, "Auth token") {
			t.Fatalf("first-start banner:\n%s", b)
		}
		msg, err := os.ReadFile(file)
		if err != nil || !strings.Contains(string(msg), "Account SID: AC") || !strings.Contains(string(msg), "Auth token:") {
			t.Fatalf("%s: %v\n%s", file, err, msg)
		}
		// The token's TURN URI names where --dev listens, and allocates there.
		tok := runCurlLine(t, findCurl(t, string(msg)), dataDir)
		var uri string
		for _, s := range tok.ICEServers {
			if strings.HasPrefix(s.URLs, "turn:") && strings.HasSuffix(s.URLs, "?transport=udp") {
				uri = s.URLs
			}
		}
		server := strings.TrimSuffix(strings.TrimPrefix(uri, "turn:"), "?transport=udp")
		if server != "127.0.0.1:3478" {
			t.Fatalf("turn URI %q, want turn:127.0.0.1:3478?transport=udp (in %+v)", uri, tok.ICEServers)
		}
		c, rc, err := turnClient(t, "udp", server, tok.Username, tok.Password)
		if err != nil {
			t.Fatalf("allocate on %s with the token's credential: %v", uri, err)
		}
		// Released now, so SIGTERM need not wait relay.drain_timeout for it.
		_ = rc.Close()
		c.Close()
	case <-exited:
		t.Fatalf("traverse serve --dev exited:\n%s", logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("no first-start banner in 20s:\n%s", logs.String())
	}
	// --dev prints where the operator console is.
	select {
	case l := <-consoleLine:
		if !strings.Contains(l, "https://127.0.0.1:8080/console/") {
			t.Errorf("console line %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Error("serve --dev printed no console URL")
	}
	// The relay answers a STUN Binding request on the default port.
	c, err := net.Dial("udp4", "127.0.0.1:3478")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	buf := make([]byte, 1500)
	for attempt := 0; ; attempt++ {
		_, _ = c.Write(req.Raw)
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			res := &stun.Message{Raw: buf[:n]}
			if res.Decode() == nil && res.Type == stun.BindingSuccess {
				break
			}
		}
		if attempt == 10 {
			t.Fatalf("no Binding success from 127.0.0.1:3478: %v", err)
		}
	}
	// The relay answers as soon as it is bound; the start-up line follows.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "traverse started"); {
		if time.Now().After(deadline) {
			t.Fatalf("no start-up line:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// --dev listens on loopback only, so loopback peers are safe to open.
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "traverse started") && (strings.Contains(line, "0.0.0.0") || strings.Contains(line, "[::]")) {
			t.Fatalf("--dev listens beyond loopback: %s", line)
		}
	}
	if !strings.Contains(logs.String(), "dev: loopback peers allowed") {
		t.Fatalf("--dev did not open loopback peers:\n%s", logs.String())
	}
}

// TestValidateExampleConfig runs `traverse validate` on the shipped example
// and on a broken file, as an operator would.
func TestValidateExampleConfig(t *testing.T) {
	out, err := exec.Command(binary, "validate", "-c", "../traverse.example.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config ok") {
		t.Fatalf("validate example: %v\n%s", err, out)
	}
	bad := t.TempDir() + "/bad.yaml"
	if err := os.WriteFile(bad, []byte("auth:\n  secrets: [short]\nrelay:\n  ports: {min: 70000, max: 10}\n  peers:\n    deny: [10.0.0.0/99]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "validate", "-c", bad)
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("validate bad config: exit %v, want 2\n%s", err, out)
	}
	for _, path := range []string{"auth.secrets[0]", "relay.ports.min", "relay.ports", "relay.peers.deny[0]"} {
		if !strings.Contains(string(out), path+":") {
			t.Errorf("validate output lacks %s:\n%s", path, out)
		}
	}
}
