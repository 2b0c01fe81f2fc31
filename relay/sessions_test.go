package relay

import (
	"testing"
	"time"
)

// TestAllocationsListAndClose: the live table lists a pion client's
// allocation over each transport with its username and relayed address, and
// CloseAllocation ends one so that the client's refresh fails.
func TestAllocationsListAndClose(t *testing.T) {
	r := startRelay(t, testConfig(), false)
	credUDP := mint(t, testSecret, "erin", time.Hour)
	udp := newClient(t, "udp", r.Addrs().UDP[0], credUDP.Username, credUDP.Password)
	credTCP := mint(t, testSecret, "frank", time.Hour)
	tcp := newClient(t, "tcp", r.Addrs().TCP[0], credTCP.Username, credTCP.Password)
	rcUDP, err := udp.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcUDP.Close() })
	rcTCP, err := tcp.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcTCP.Close() })

	list := r.Allocations()
	if len(list) != 2 {
		t.Fatalf("Allocations() = %+v, want 2", list)
	}
	byRelayed := map[string]Allocation{}
	for _, a := range list {
		byRelayed[a.Relayed.String()] = a
		if a.Created.IsZero() || a.Expires.IsZero() || a.Client == "" {
			t.Errorf("incomplete allocation %+v", a)
		}
	}
	a, ok := byRelayed[rcTCP.LocalAddr().String()]
	if !ok || a.Transport != "tcp" || a.Username != credTCP.Username || a.ID != rcTCP.LocalAddr().String() {
		t.Fatalf("TCP allocation %s not listed right: %+v", rcTCP.LocalAddr(), list)
	}
	if used, total := r.PortsInUse(); used != 2 || total != 65535-49152+1 {
		t.Errorf("PortsInUse = %d of %d, want 2 of the default range", used, total)
	}

	if r.CloseAllocation("127.0.0.1:1") || r.CloseAllocation("not an address") {
		t.Error("CloseAllocation of an unknown id reported true")
	}
	if !r.CloseAllocation(a.ID) {
		t.Fatalf("CloseAllocation(%s) = false", a.ID)
	}
	waitFor(t, "the closed allocation to leave the table", 5*time.Second, func() bool {
		return len(r.Allocations()) == 1 && r.AllocationCount() == 1
	})
}
