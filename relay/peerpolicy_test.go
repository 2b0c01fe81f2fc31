package relay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/traverse/traverse/relay/peerpolicy"
)

// TestDeniedPeerOverTURN: a permission to a denied address is refused on the
// wire and counted.
func TestDeniedPeerOverTURN(t *testing.T) {
	cfg := testConfig()
	cfg.Relay.Peers.AllowLoopback = false
	r := startRelay(t, cfg, false)
	cred := mint(t, testSecret, "eve", 3600e9)
	c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	if _, err := c.Allocate(); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"127.0.0.1", "169.254.169.254", "10.0.0.1"} {
		if err := c.Permit(netip.AddrPortFrom(netip.MustParseAddr(ip), 9)); err == nil {
			t.Errorf("permission to %s granted", ip)
		}
	}
	if got := r.metric(t, "traverse_relay_peer_denied_total", peerpolicy.DenyBuiltin); got != 3 {
		t.Fatalf("peer_denied{builtin} = %v, want 3", got)
	}
}

// TestReloadedDenyAppliesToLivePermissions: a range denied by reload stops
// traffic on permissions installed before it, at once.
func TestReloadedDenyAppliesToLivePermissions(t *testing.T) {
	cfg := testConfig()
	r := startRelay(t, cfg, false)
	peer := echoPeer(t, "udp4", "127.0.0.1:0")
	cred := mint(t, testSecret, "live", 3600e9)
	c := newClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
	rc, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	roundTrip(t, rc, peer.LocalAddr(), "before")

	next := cfg
	next.Relay.Peers.Deny = []string{"127.0.0.0/8"}
	if _, err := r.Reload(cfg, next); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.WriteTo([]byte("after"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = rc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _, err := rc.ReadFrom(buf); err == nil {
		t.Fatalf("relayed %q to a peer denied by reload", buf[:n])
	}
	if got := r.metric(t, "traverse_relay_peer_denied_total", peerpolicy.DenyConfig); got < 1 {
		t.Fatalf("peer_denied{config} = %v", got)
	}
}
