package e2e

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// TestREADMERunCommand runs the README's quick start — `traverse serve --dev`
// in an empty directory, on the default ports — and checks that the relay
// answers STUN on 3478, the account banner is printed once and the console's
// URL follows it.
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
			if strings.Contains(sc.Text(), "curl -X POST") {
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
	select {
	case b := <-banner:
		if !strings.Contains(b, "Account SID: AC") || !strings.Contains(b, "Auth token:") {
			t.Fatalf("first-start banner:\n%s", b)
		}
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
