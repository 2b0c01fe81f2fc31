package relay

import (
	"net"
	"testing"
	"time"
)

// TestRelayPortsReused: a range of three ports serves allocation after
// allocation as each is released, and skips a port another process holds.
func TestRelayPortsReused(t *testing.T) {
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	held := busy.LocalAddr().(*net.UDPAddr).Port
	cfg := testConfig()
	cfg.Relay.Ports.Min, cfg.Relay.Ports.Max = held-1, held+1
	r := startRelay(t, cfg, false)
	cred := mint(t, testSecret, "pat", time.Hour)
	for i := 0; i < 6; i++ {
		c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
		relayed, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if int(relayed.Port()) == held {
			t.Fatalf("allocation %d got the port another socket holds", i)
		}
		if err := c.Refresh(0); err != nil {
			t.Fatal(err)
		}
	}
}
