package relay

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/turn/v4"
)

// TestPendingPerIPKeepsOthersIn: one address holding idle connections gets
// only relay.limits.pending_per_ip of them, even on a small listener it could
// otherwise fill, and another address still allocates over TCP.
func TestPendingPerIPKeepsOthersIn(t *testing.T) {
	old := maxStreamConns
	maxStreamConns = 64
	defer func() { maxStreamConns = old }()
	cfg := testConfig()
	cfg.Relay.Limits.PendingPerIP = 20
	r := startRelay(t, cfg, false)
	server := r.Addrs().TCP[0]

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	for i := 0; i < 100; i++ {
		c, err := d.Dial("tcp", server.String())
		if err != nil {
			t.Fatalf("dial %d from 127.0.0.2: %v", i, err)
		}
		defer c.Close()
	}
	waitFor(t, "80 connections refused", 10*time.Second, func() bool {
		return r.metric(t, "traverse_relay_stream_pending_per_ip_rejected_total", "") >= 80
	})
	if n := r.pending.count(netip.MustParseAddr("127.0.0.2")); n != 20 {
		t.Errorf("127.0.0.2 holds %d pending connections, want 20", n)
	}
	cred := mint(t, testSecret, "victim", time.Hour)
	c := newClient(t, "tcp", server, cred.Username, cred.Password)
	relayed, err := c.Allocate()
	if err != nil {
		t.Fatalf("another address could not allocate: %v", err)
	}
	_ = relayed.Close()
}

// TestManyAllocatedClientsBehindOneIP: 500 TCP clients of one address (an
// office behind one NAT), opened 100 at a time, all allocate and keep
// working: connections that allocated no longer count as pending.
func TestManyAllocatedClientsBehindOneIP(t *testing.T) {
	cfg := testConfig()
	cfg.Relay.Quota.PerUser = 0
	r := startRelay(t, cfg, false)
	server := r.Addrs().TCP[0]
	if cfg.Relay.Limits.PendingPerIP != 256 {
		t.Fatalf("default pending_per_ip = %d, want 256", cfg.Relay.Limits.PendingPerIP)
	}
	const total, batch = 500, 100
	var clients []*rawClient
	for b := 0; b < total/batch; b++ {
		var conns []net.Conn
		for i := 0; i < batch; i++ {
			c, err := net.DialTimeout("tcp", server.String(), 5*time.Second)
			if err != nil {
				t.Fatalf("dial %d: %v", b*batch+i, err)
			}
			t.Cleanup(func() { _ = c.Close() })
			conns = append(conns, c)
		}
		for i, c := range conns {
			cred := mint(t, testSecret, "office"+strconv.Itoa(b*batch+i), time.Hour)
			rc := &rawClient{Conn: turn.NewSTUNConn(c), Server: server, Username: cred.Username, Password: cred.Password, Realm: "traverse"}
			if _, err := rc.Allocate(); err != nil {
				t.Fatalf("client %d: allocate: %v", b*batch+i, err)
			}
			clients = append(clients, rc)
		}
	}
	waitFor(t, "no pending connection left", 10*time.Second, func() bool { return r.pending.count(netip.MustParseAddr("127.0.0.1")) == 0 })
	for i, rc := range clients {
		if err := rc.Refresh(10 * time.Minute); err != nil {
			t.Fatalf("client %d: refresh: %v", i, err)
		}
	}
	if got := r.metric(t, "traverse_relay_stream_pending_per_ip_rejected_total", ""); got != 0 {
		t.Errorf("%v connections refused for the pending cap", got)
	}
}

// TestPressureShortensUnauthenticatedTimeout: a connection accepted while
// its listener is over 75% full is closed after pressureTimeout without an
// allocation, well before the usual 30 s.
func TestPressureShortensUnauthenticatedTimeout(t *testing.T) {
	old := maxStreamConns
	maxStreamConns = 8
	defer func() { maxStreamConns = old }()
	r := startRelay(t, testConfig(), false)
	server := r.Addrs().TCP[0].String()
	var conns []net.Conn
	for i := 0; i < 7; i++ {
		c, err := net.DialTimeout("tcp", server, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	waitFor(t, "a pressured accept", 10*time.Second, func() bool {
		return r.metric(t, "traverse_relay_stream_pressure_accepts_total", "") >= 1
	})
	last := conns[len(conns)-1]
	_ = last.SetReadDeadline(time.Now().Add(unauthenticatedTimeout - 5*time.Second))
	_, err := last.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection accepted under pressure was still open after 25 s")
	}
	if err == nil {
		t.Fatal("read data from an idle relay connection")
	}
}
