package e2e

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/traverse/traverse/internal/testnet"
)

// turnClient allocates through a TURN URI's transport ("udp", "tcp" or
// "tls") with pion's client, on IPv4 or IPv6.
func turnClient(t *testing.T, transport, server, username, password string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	ap, err := netip.ParseAddrPort(server)
	if err != nil {
		t.Fatalf("server %q: %v", server, err)
	}
	// pion's client resolves the server as udp4 even when it only writes to
	// a stream, which ignores the address: give it an IPv4 one then.
	addr := server
	var conn net.PacketConn
	switch transport {
	case "udp":
		nw := "udp4"
		if ap.Addr().Is6() {
			nw = "udp6"
		}
		pc, err := net.ListenPacket(nw, "")
		if err != nil {
			t.Fatal(err)
		}
		testnet.LargeBuffers(pc.(*net.UDPConn))
		conn = pc
	case "tcp":
		c, err := net.DialTimeout("tcp", server, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	case "tls":
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", server, TLSConfig())
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	if transport != "udp" && ap.Addr().Is6() {
		addr = "127.0.0.1:9"
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: username, Password: password, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	rc, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { _ = rc.Close() })
	}
	return c, rc, err
}

// TestTokenAllocatesOnRelay: a credential from the Tokens resource over real
// HTTPS allocates on the same process's relay, over every URI it lists, and
// relays a datagram; a tampered one is refused.
func TestTokenAllocatesOnRelay(t *testing.T) {
	in := Start(t, Options{TLS: true})
	peer := FreeUDPPeer(t)
	tok := in.CreateToken(600)
	if !strings.Contains(tok.Username, ":"+in.AccountSid+":") {
		t.Fatalf("username %q does not name the account", tok.Username)
	}
	tried := 0
	for _, s := range tok.ICEServers {
		if s.Username == "" {
			continue // the stun: entry
		}
		transport, server := parseTURNURI(t, s.URLs)
		tried++
		t.Run(s.URLs, func(t *testing.T) {
			_, rc, err := turnClient(t, transport, server, s.Username, s.Credential)
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			if _, err := rc.WriteTo([]byte("via token"), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			_ = rc.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, _, err := rc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "via token" {
				t.Fatalf("echo: %q %v", buf[:n], err)
			}
		})
	}
	if tried != 4 {
		t.Fatalf("%d TURN URIs in ice_servers, want 4 (udp, tcp, tcp on the TLS port, turns)", tried)
	}
	// A tampered credential is refused and counted.
	before := in.Metric(`traverse_relay_auth_total{result="bad_password"}`)
	if _, _, err := turnClient(t, "udp", in.UDP, tok.Username, "x"+tok.Password[1:]); err == nil {
		t.Fatal("tampered password allocated")
	}
	if after := in.Metric(`traverse_relay_auth_total{result="bad_password"}`); after <= before {
		t.Fatalf("bad_password count %v -> %v", before, after)
	}
	// At debug level, after good and bad credentials: no secret in the log.
	logs := in.Logs()
	for name, secret := range map[string]string{"TURN secret": Secret, "TURN password": tok.Password,
		"tampered password": "x" + tok.Password[1:], "auth token": in.AuthToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains the %s", name)
		}
	}
}

// TestExpiredTokenRefused: a credential past its Ttl no longer allocates.
func TestExpiredTokenRefused(t *testing.T) {
	in := Start(t, Options{Extra: "auth:\n  secrets: [" + Secret + "]\n  clock_skew: 1s\n"})
	tok := in.CreateToken(1)
	time.Sleep(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, err := turnClient(t, "udp", in.UDP, tok.Username, tok.Password)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired credential still allocates")
		}
		time.Sleep(500 * time.Millisecond) // within auth.clock_skew it is still good
	}
	if got := in.Metric(`traverse_relay_auth_total{result="expired"}`); got < 1 {
		t.Fatalf("expired count = %v", got)
	}
}

func parseTURNURI(t *testing.T, uri string) (transport, hostport string) {
	t.Helper()
	scheme, rest, _ := strings.Cut(uri, ":")
	hostport, query, _ := strings.Cut(rest, "?")
	transport = "udp"
	if strings.Contains(query, "transport=tcp") {
		transport = "tcp"
	}
	if scheme == "turns" {
		transport = "tls"
	}
	return transport, hostport
}
