package relay

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/internal/turntest"
)

// FuzzDatagrams feeds arbitrary and mutated STUN/ChannelData to a running
// relay over UDP and TCP; after each input the relay must still answer a
// Binding request.
func FuzzDatagrams(f *testing.F) {
	cfg := testConfig()
	cfg.Listen.TLS = nil
	r, err := New(Options{Config: cfg})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = r.Close() })

	allocate, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		turntest.RequestedUDP, stun.NewUsername("1:x"), stun.NewRealm("traverse"), stun.NewNonce("n"),
		stun.NewShortTermIntegrity("p"), stun.Fingerprint)
	binding, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	f.Add(allocate.Raw)
	f.Add(binding.Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})             // ChannelData on an unbound channel
	f.Add([]byte{0x00, 0x01, 0xff, 0xff, 0x21, 0x12, 0xa4, 0x42}) // STUN header claiming 65535 bytes
	f.Add([]byte{})
	f.Add(make([]byte, 1600))

	udp, err := net.DialUDP("udp4", nil, r.Addrs().UDP[0].(*net.UDPAddr))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = udp.Close() })

	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = udp.Write(data)
		if tc, err := net.DialTimeout("tcp4", r.Addrs().TCP[0].String(), time.Second); err == nil {
			_, _ = tc.Write(data)
			_ = tc.Close()
		}
		stillServes(t, udp)
	})
}

// stillServes checks both paths: the data path answers a Binding request,
// and pion answers an unauthenticated Allocate with 401.
func stillServes(t *testing.T, c *net.UDPConn) {
	t.Helper()
	binding, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	allocate, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		turntest.RequestedUDP, stun.Fingerprint)
	for _, want := range []struct {
		req  *stun.Message
		resp stun.MessageType
	}{{binding, stun.BindingSuccess}, {allocate, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse)}} {
		if !answers(t, c, want.req, want.resp) {
			t.Fatalf("relay stopped answering %v", want.req.Type)
		}
	}
}

func answers(t *testing.T, c *net.UDPConn, req *stun.Message, want stun.MessageType) bool {
	buf := make([]byte, 1600)
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := c.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for {
			_ = c.SetReadDeadline(deadline)
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() == nil && res.TransactionID == req.TransactionID && res.Type == want {
				return true
			}
		}
	}
	return false
}

// FuzzStreamTap: the TCP framing tap never panics and never hands on a frame
// longer than it claimed.
func FuzzStreamTap(f *testing.F) {
	f.Add([]byte{0x00, 0x03, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}, 3)
	f.Add([]byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		tap := streamTap{onFrame: func(b []byte) {
			if len(b) < 20 || len(b) > 1600 {
				t.Fatalf("frame of %d bytes", len(b))
			}
		}}
		for len(data) > 0 {
			n := min(chunk, len(data))
			tap.feed(data[:n])
			data = data[n:]
		}
	})
}
