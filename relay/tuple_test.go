package relay

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v4"
)

// dialFromPort dials server over TCP from 127.0.0.1:port (0: any), with
// SO_REUSEADDR so that a second connection may leave from the same port to
// another address, as the kernel allows.
func dialFromPort(t *testing.T, port int, server net.Addr) *net.TCPConn {
	t.Helper()
	d := net.Dialer{
		Timeout:   5 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			}); err != nil {
				return err
			}
			return serr
		},
	}
	c, err := d.Dial("tcp4", server.String())
	if err != nil {
		t.Fatalf("dial %s from port %d: %v", server, port, err)
	}
	return c.(*net.TCPConn)
}

// TestStreamOneClientPortTwoListeners: an allocation is its 5-tuple (RFC
// 8656 § 2), so one client port connected to two of our listeners at once
// (3478/tcp and plain TCP on the TLS port) holds two allocations. They
// were one table entry keyed by the client's ip:port: the second Allocate
// was refused 437, and either connection's end could end the other's
// allocation. Each relays both ways to its own external peer; closing one
// leaves the other relaying.
func TestStreamOneClientPortTwoListeners(t *testing.T) {
	r := startSharedPortRelay(t)
	cred := mint(t, testSecret, "two-listeners", time.Hour)

	first := dialFromPort(t, 0, r.Addrs().TCP[0])
	port := first.LocalAddr().(*net.TCPAddr).Port
	second := dialFromPort(t, port, r.Addrs().TLS[0])
	type side struct {
		name   string
		conn   *net.TCPConn
		client *turn.Client
		relay  net.PacketConn
		peer   net.PacketConn
	}
	sides := []*side{{name: "3478/tcp", conn: first}, {name: "tls port, plain tcp", conn: second}}
	for _, sd := range sides {
		server := sd.conn.RemoteAddr()
		c, err := makeClient(turn.NewSTUNConn(sd.conn), server, cred.Username, cred.Password)
		if err != nil {
			t.Fatal(err)
		}
		sd.client = c
		t.Cleanup(func() { c.Close(); _ = sd.conn.Close() })
		if sd.relay, err = c.Allocate(); err != nil {
			t.Fatalf("%s: allocate from the port the other connection uses: %v", sd.name, err)
		}
		rc := sd.relay
		t.Cleanup(func() { _ = rc.Close() })
		sd.peer = echoPeer(t, "udp4", "127.0.0.1:0")
	}
	if got := r.AllocationCount(); got != 2 {
		t.Fatalf("%d allocations, want one per connection", got)
	}
	if sides[0].relay.LocalAddr().String() == sides[1].relay.LocalAddr().String() {
		t.Fatalf("both connections were given relay address %s", sides[0].relay.LocalAddr())
	}
	for _, sd := range sides {
		if got := echoCount(t, sd.relay, sd.peer.LocalAddr(), 50, 120, 10*time.Second); got != 50 {
			t.Fatalf("%s: %d of 50 echoes came back", sd.name, got)
		}
	}

	// The first connection ends; only its allocation goes.
	_ = sides[0].relay.Close()
	sides[0].client.Close()
	_ = sides[0].conn.Close()
	waitFor(t, "the first connection's allocation to end", 5*time.Second, func() bool {
		return r.AllocationCount() == 1
	})
	if got := echoCount(t, sides[1].relay, sides[1].peer.LocalAddr(), 50, 120, 10*time.Second); got != 50 {
		t.Fatalf("after the other connection ended: %d of 50 echoes came back", got)
	}
}

// TestUDPOneClientPortTwoListeners: the same over UDP, one client socket
// talking to two UDP listeners of the relay: two allocations, two relay
// addresses, and deleting one (Refresh 0) leaves the other.
func TestUDPOneClientPortTwoListeners(t *testing.T) {
	cfg := testConfig()
	cfg.Listen.UDP = []string{"127.0.0.1:0", "127.0.0.1:0"}
	r := startRelay(t, cfg, false)
	if len(r.Addrs().UDP) != 2 {
		t.Fatalf("%d UDP listeners, want 2", len(r.Addrs().UDP))
	}
	cred := mint(t, testSecret, "two-udp-listeners", time.Hour)
	conn := dialClientConn(t, "udp", r.Addrs().UDP[0])
	t.Cleanup(func() { _ = conn.Close() })
	var clients []*rawClient
	for i, server := range r.Addrs().UDP {
		c := &rawClient{Conn: conn, Server: server, Username: cred.Username, Password: cred.Password, Realm: "traverse"}
		if _, err := c.Allocate(); err != nil {
			t.Fatalf("allocate on listener %d from the same client port: %v", i, err)
		}
		clients = append(clients, c)
	}
	if clients[0].Relayed == clients[1].Relayed {
		t.Fatalf("both listeners gave relay address %s", clients[0].Relayed)
	}
	if got := r.AllocationCount(); got != 2 {
		t.Fatalf("%d allocations, want 2", got)
	}
	if err := clients[0].Refresh(0); err != nil {
		t.Fatalf("delete the first: %v", err)
	}
	if got := r.AllocationCount(); got != 1 {
		t.Fatalf("%d allocations after deleting one, want 1", got)
	}
	if err := clients[1].Refresh(time.Minute); err != nil {
		t.Fatal(fmt.Errorf("refresh the second, which must live on: %w", err))
	}
}
