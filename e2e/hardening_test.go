package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// devConfig is a --dev config on loopback and free ports, with no secret and
// no certificate: --dev makes both in data_dir, as on a first trial.
func devConfig(t *testing.T) (cfgPath, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	cfgPath = filepath.Join(dir, "traverse.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
listen:
  udp: ["127.0.0.1:0"]
  tcp: ["127.0.0.1:0"]
  tls: ["127.0.0.1:0"]
relay:
  public_ip: 127.0.0.1
  bind_ip: 127.0.0.1
issuer:
  listen: 127.0.0.1:0
metrics:
  listen: 127.0.0.1:0
log:
  format: json
`, dataDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, dataDir
}

// runDev runs `traverse serve --dev` until the test ends; start wires the
// command's output before starting it.
func runDev(t *testing.T, cfgPath string, start func(*exec.Cmd) error) {
	t.Helper()
	cmd := exec.Command(binary, "serve", "--dev", "-c", cfgPath)
	cmd.Env = append(cmd.Environ(), "TRAVERSE_CONFIG=", "TRAVERSE_AUTH_SECRETS=")
	if err := start(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("traverse did not stop within 15s of SIGTERM")
		}
	})
}

// waitFor waits until out contains what.
func waitForOutput(t *testing.T, out *syncBuffer, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), what); {
		if time.Now().After(deadline) {
			t.Fatalf("no %q after 20s:\n%s", what, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// curlLine is the first-start message's curl line, split into its words.
type curlLine struct {
	raw                   string
	caFile, user, pass, u string
}

var curlRE = regexp.MustCompile(`curl --cacert (\S+) -X POST -u (AC[0-9a-f]{32}):([0-9a-f]{32}) (https://\S+)`)

func findCurl(t *testing.T, msg string) curlLine {
	t.Helper()
	m := curlRE.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("no curl line with --cacert in:\n%s", msg)
	}
	return curlLine{raw: m[0], caFile: m[1], user: m[2], pass: m[3], u: m[4]}
}

// runCurlLine runs the printed line's URL as printed: an HTTPS POST that
// trusts only the --cacert file, with the line's account and token, and then
// the line itself with the real curl when it is installed. It returns the
// token the POST got.
func runCurlLine(t *testing.T, c curlLine, dataDir string) Token {
	t.Helper()
	abs, _ := filepath.Abs(filepath.Join(dataDir, "dev-cert.pem"))
	if c.caFile != abs {
		t.Fatalf("--cacert %s, want %s", c.caFile, abs)
	}
	pem, err := os.ReadFile(c.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", c.caFile)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, c.u, nil)
	req.SetBasicAuth(c.user, c.pass)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("the printed URL with the --cacert file: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	var tok Token
	if res.StatusCode != http.StatusCreated || json.Unmarshal(body, &tok) != nil || tok.Username == "" || len(tok.ICEServers) == 0 {
		t.Fatalf("the printed URL: %d %s", res.StatusCode, body)
	}

	if _, err := exec.LookPath("curl"); err != nil {
		t.Logf("curl not installed: checked the printed URL with Go's client only")
		return tok
	}
	out, err := exec.Command("sh", "-c", c.raw+" -sS -o /dev/null -w '%{http_code}'").CombinedOutput()
	if err != nil || string(out) != "201" {
		t.Fatalf("the printed curl line: %v: %s", err, out)
	}
	return tok
}

// TestFirstStartNotATerminal: with stdout not a terminal (the journal,
// docker logs), the primary account's token goes to a 0600 file in data_dir,
// never to stdout or stderr, which get only the file's path and how to
// delete it; the file's curl line works as written.
func TestFirstStartNotATerminal(t *testing.T) {
	cfgPath, dataDir := devConfig(t)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	runDev(t, cfgPath, func(cmd *exec.Cmd) error {
		cmd.Stdout, cmd.Stderr = stdout, stderr
		return cmd.Start()
	})
	path, _ := filepath.Abs(filepath.Join(dataDir, "primary-account.txt"))
	waitForOutput(t, stdout, "rm "+path+"\n")
	waitForOutput(t, stderr, `"msg":"traverse started"`)

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	msg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := findCurl(t, string(msg))
	if !strings.Contains(string(msg), "Auth token:  "+c.pass) {
		t.Fatalf("%s lacks the auth token:\n%s", path, msg)
	}
	for name, out := range map[string]string{"stdout": stdout.String(), "stderr": stderr.String()} {
		if strings.Contains(out, c.pass) || strings.Contains(out, "Auth token") {
			t.Errorf("the auth token is in %s:\n%s", name, out)
		}
	}
	if !strings.Contains(stderr.String(), "dev: loopback peers allowed") {
		t.Errorf("every listener is on loopback, yet loopback peers are not allowed:\n%s", stderr.String())
	}
	runCurlLine(t, c, dataDir)
}

// TestFirstStartTerminal: on a terminal (a pseudo-terminal here) serve
// prints the SID and token as before and writes no file; the curl line works
// as printed.
func TestFirstStartTerminal(t *testing.T) {
	cfgPath, dataDir := devConfig(t)
	out := &syncBuffer{}
	runDev(t, cfgPath, func(cmd *exec.Cmd) error {
		tty, err := pty.Start(cmd) // stdin, stdout and stderr on the terminal
		if err != nil {
			return err
		}
		go func() { _, _ = io.Copy(out, tty); _ = tty.Close() }() // ends with EIO when the process exits
		return nil
	})
	waitForOutput(t, out, "Tokens.json")
	msg := strings.ReplaceAll(out.String(), "\r\n", "\n") // the terminal's line discipline
	c := findCurl(t, msg)
	if !strings.Contains(msg, "Account SID: "+c.user+"\n") || !strings.Contains(msg, "Auth token:  "+c.pass+"\n") {
		t.Fatalf("terminal output lacks the SID and token:\n%s", msg)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "primary-account.txt")); !os.IsNotExist(err) {
		t.Fatalf("primary-account.txt written on a terminal: %v", err)
	}
	runCurlLine(t, c, dataDir)
}

// TestSIGHUPReloadsCORSOrigins: an origin added to issuer.cors_origins
// passes the CORS preflight after SIGHUP, and the removed one no longer does,
// without a restart.
func TestSIGHUPReloadsCORSOrigins(t *testing.T) {
	const oldOrigin, newOrigin = "https://old.example.test", "https://new.example.test"
	in := Start(t, Options{CORSOrigins: []string{oldOrigin}})
	preflight := func(origin string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodOptions, in.Issuer+"/v1/ice-servers", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		res, err := HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		return res.StatusCode, res.Header.Get("Access-Control-Allow-Origin")
	}
	if code, allow := preflight(oldOrigin); code != http.StatusNoContent || allow != oldOrigin {
		t.Fatalf("configured origin: %d %q", code, allow)
	}
	if code, _ := preflight(newOrigin); code != http.StatusForbidden {
		t.Fatalf("unlisted origin: %d", code)
	}
	cfg, _ := os.ReadFile(in.Config)
	if err := os.WriteFile(in.Config, []byte(strings.Replace(string(cfg), "cors_origins: ["+oldOrigin+"]", "cors_origins: ["+newOrigin+"]", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	in.signal(syscall.SIGHUP)
	in.waitLog("config reloaded", 5*time.Second)
	if strings.Contains(in.Logs(), "issuer.cors_origins") {
		t.Fatalf("reload says issuer.cors_origins needs a restart:\n%s", in.Logs())
	}
	if code, allow := preflight(newOrigin); code != http.StatusNoContent || allow != newOrigin {
		t.Fatalf("origin added by SIGHUP: %d %q", code, allow)
	}
	if code, allow := preflight(oldOrigin); code != http.StatusForbidden || allow != "" {
		t.Fatalf("origin removed by SIGHUP: %d %q", code, allow)
	}
}
