package relay

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/internal/turntest"
)

// TestBoundedMapFloodKeepsOthers: a flood from one source, far over the
// map's size, neither wipes the map nor pushes out another source's entry
// within its lifetime; the flooder loses its own oldest entries.
func TestBoundedMapFloodKeepsOthers(t *testing.T) {
	m := newBoundedMap[int](100, 10, time.Minute)
	now := time.Now()
	m.put("udp|192.0.2.1:5000\x00alice", 1, now)
	for i := 0; i < 10000; i++ {
		m.put("udp|198.51.100.7:"+strconv.Itoa(1024+i%60000)+"\x00u"+strconv.Itoa(i), i, now)
	}
	if v, ok := m.take("udp|192.0.2.1:5000\x00alice", now); !ok || v != 1 {
		t.Fatalf("victim's entry = %v, %v after the flood; want 1, true", v, ok)
	}
	if n := m.len(); n != 10 {
		t.Fatalf("len = %d, want the flooder's 10", n)
	}
	if _, ok := m.get("udp|198.51.100.7:"+strconv.Itoa(1024+9999%60000)+"\x00u9999", now); !ok {
		t.Fatal("the flooder's newest entry is gone; its oldest should have gone")
	}
}

// TestBoundedMapEvictsOldestAndExpires: when full the oldest entry goes,
// never the whole map, and an entry past its lifetime is not returned.
func TestBoundedMapEvictsOldestAndExpires(t *testing.T) {
	m := newBoundedMap[int](3, 3, time.Second)
	now := time.Now()
	for i := 0; i < 4; i++ {
		m.put(fmt.Sprintf("udp|192.0.2.%d:1", i+1), i, now.Add(time.Duration(i)*time.Millisecond))
	}
	if _, ok := m.get("udp|192.0.2.1:1", now); ok {
		t.Error("oldest entry still there after a put into a full map")
	}
	for i := 1; i < 4; i++ {
		if v, ok := m.get(fmt.Sprintf("udp|192.0.2.%d:1", i+1), now); !ok || v != i {
			t.Errorf("entry %d = %v, %v", i, v, ok)
		}
	}
	if _, ok := m.take("udp|192.0.2.4:1", now.Add(2*time.Second)); ok {
		t.Error("an expired entry was returned")
	}
	// IPv6 sources count by /64.
	v6 := newBoundedMap[int](100, 2, time.Minute)
	for i := 0; i < 5; i++ {
		v6.put(fmt.Sprintf("udp|[2001:db8::%x]:1", i+1), i, now)
	}
	if n := v6.len(); n != 2 {
		t.Errorf("five addresses of one /64 hold %d entries, want 2", n)
	}
}

// TestSignedFloodDuringRotation: while a second address floods the relay
// with signed requests that pion refuses before asking for a key (so their
// copies are never taken), clients holding the old secret keep allocating:
// their copy, needed to pick the key, is never pushed out.
func TestSignedFloodDuringRotation(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Secrets = []string{"brand-new-secret-xyz123", testSecret}
	r := startRelay(t, cfg, false)
	server := r.Addrs().UDP[0]

	flood, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 not usable here: %v", err)
	}
	defer flood.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			user := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":flood" + strconv.Itoa(i)
			m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
				turntest.RequestedUDP, stun.NewUsername(user), stun.NewRealm("traverse"), stun.NewNonce("bogus"),
				stun.NewLongTermIntegrity(user, "traverse", "x"), stun.Fingerprint)
			if err != nil {
				return
			}
			_, _ = flood.WriteTo(m.Raw, server)
			if i%200 == 0 {
				time.Sleep(time.Millisecond) // stay a flood, not a socket-buffer overflow
			}
		}
	}()
	for i := 0; i < 30; i++ {
		cred := mint(t, testSecret, "alice"+strconv.Itoa(i), time.Hour)
		c := newClient(t, "udp", server, cred.Username, cred.Password)
		relayed, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocation %d with the old secret during the flood: %v", i, err)
		}
		_ = relayed.Close()
	}
	close(stop)
	wg.Wait()
	if n := r.signed.m.len(); n > signedPerSource+30 {
		t.Errorf("%d copies kept; the flooding source should hold at most %d", n, signedPerSource)
	}
}

// BenchmarkBoundedMapPutTake is the signed-request tap's cost per request
// with several secrets: one put as the request is read, one take in the
// AuthHandler, on a map already holding entries of many sources.
func BenchmarkBoundedMapPutTake(b *testing.B) {
	b.ReportAllocs()
	m := newBoundedMap[[]byte](maxSignedPending, signedPerSource, signedTTL)
	now := time.Now()
	for i := 0; i < maxSignedPending/2; i++ {
		m.put("udp|10.0."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250)+":5000\x00u", nil, now)
	}
	raw := make([]byte, 100)
	key := "udp|192.0.2.1:5000\x00alice"
	for b.Loop() {
		m.put(key, raw, now)
		if _, ok := m.take(key, now); !ok {
			b.Fatal("entry lost")
		}
	}
}
