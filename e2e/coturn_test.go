package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// coturnTool finds one of coturn's test clients; their absence is a failure
// with the fix, never a skip.
func coturnTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): run scripts/install-deps (Debian package coturn)", name, err)
	}
	return p
}

// startTurnutilsPeer runs coturn's UDP echo peer on a free loopback port.
func startTurnutilsPeer(t *testing.T) int {
	t.Helper()
	bin := coturnTool(t, "turnutils_peer")
	probe, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	_ = probe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, bin, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })

	c, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		_, _ = c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			return port
		}
	}
	t.Fatalf("turnutils_peer on 127.0.0.1:%d did not echo within 10s", port)
	return 0
}

// uclientReport is turnutils_uclient's closing report.
type uclientReport struct {
	sent, received, lost int
}

var (
	uclientTotals = regexp.MustCompile(`(?m)start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	uclientLost   = regexp.MustCompile(`Total lost packets (\d+) \(`)
)

func parseUclient(out string) (uclientReport, error) {
	var r uclientReport
	totals := uclientTotals.FindAllStringSubmatch(out, -1)
	lost := uclientLost.FindStringSubmatch(out)
	if totals == nil || lost == nil {
		return r, fmt.Errorf("no final report")
	}
	last := totals[len(totals)-1]
	r.sent, _ = strconv.Atoi(last[1])
	r.received, _ = strconv.Atoi(last[2])
	r.lost, _ = strconv.Atoi(lost[1])
	return r, nil
}

// TestCoturnUclient relays coturn's own TURN client through traverse serve
// with TURN REST credentials, over UDP and TCP, to coturn's echo peer on
// loopback: 2 clients × 200 messages of 100 bytes, 10 ms apart (200 msg/s
// each way), which loopback carries without loss, so any lost message fails.
func TestCoturnUclient(t *testing.T) {
	uclient := coturnTool(t, "turnutils_uclient")
	in := Start(t, Options{})
	peerPort := startTurnutilsPeer(t)

	var cred struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	out := in.CLI("credentials", "--ttl", "1h", "--user", "uclient")
	if err := json.Unmarshal(out, &cred); err != nil || cred.Username == "" || cred.Password == "" {
		t.Fatalf("traverse credentials printed %q: %v", out, err)
	}

	const clients, messages = 2, 200
	cases := []struct {
		name   string
		server string
		auth   []string
		flags  []string
	}{
		{"udp", in.UDP, []string{"-u", cred.Username, "-w", cred.Password}, nil},
		{"tcp", in.TCP, []string{"-u", cred.Username, "-w", cred.Password}, []string{"-t"}},
		// uclient's own TURN REST mode: it mints the username and password
		// from the shared secret itself.
		{"udp-rest-secret", in.UDP, []string{"-u", "uclient", "-W", Secret}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host, port, err := net.SplitHostPort(tc.server)
			if err != nil {
				t.Fatalf("listener %q: %v", tc.server, err)
			}
			args := append([]string{}, tc.flags...)
			args = append(args, tc.auth...)
			args = append(args,
				"-p", port, "-e", "127.0.0.1", "-r", strconv.Itoa(peerPort),
				"-m", strconv.Itoa(clients), "-n", strconv.Itoa(messages), "-l", "100", "-z", "10",
				"-c", // no RTCP allocation
				"-X", // IPv4 relay address
				host)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, uclient, args...)
			outb, err := cmd.CombinedOutput()
			output := string(outb)
			if ctx.Err() != nil {
				t.Fatalf("turnutils_uclient did not finish in 90s:\n%s", lastLines(output, 30))
			}
			if err != nil {
				t.Fatalf("turnutils_uclient %s: %v\n%s", strings.Join(args, " "), err, lastLines(output, 30))
			}
			r, err := parseUclient(output)
			if err != nil {
				t.Fatalf("turnutils_uclient: %v:\n%s", err, lastLines(output, 30))
			}
			t.Logf("uclient over %s: sent %d, received %d, lost %d", tc.name, r.sent, r.received, r.lost)
			if want := clients * messages; r.sent != want || r.received != want || r.lost != 0 {
				t.Fatalf("sent %d, received %d, lost %d; want %d each way and none lost:\n%s",
					r.sent, r.received, r.lost, want, lastLines(output, 30))
			}
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
