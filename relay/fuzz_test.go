package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/internal/turntest"
	"github.com/traverse/traverse/relay/internal/frames"
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

// FuzzStreamFrames: whatever bytes a TCP client sends, in whatever
// pieces, the stream reader never panics, never hangs, and hands pion only
// whole frames by pion's own rules (it stops at the first byte that is
// neither STUN nor ChannelData, as pion does).
func FuzzStreamFrames(f *testing.F) {
	f.Add([]byte{0x00, 0x03, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 3)
	f.Add([]byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}, 1)
	f.Add([]byte{0x40, 0x01, 0xff, 0xff, 1}, 7)
	cfg := testConfig()
	cfg.Listen.TCP, cfg.Listen.TLS = nil, nil
	r := startRelay(&testing.T{}, cfg, false)
	f.Cleanup(func() { _ = r.Close() })
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		client, server := net.Pipe()
		go func() {
			for p := data; len(p) > 0; {
				n := min(chunk, len(p))
				if _, err := client.Write(p[:n]); err != nil {
					break
				}
				p = p[n:]
			}
			_ = client.Close()
		}()
		c := &streamConn{Conn: server, s: r.Server, rbuf: make([]byte, streamReadBuffer), accepted: time.Now(),
			authWait: time.Minute, unpend: func() {}}
		buf := make([]byte, 1600)
		for {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			if size, _, ferr := frames.StreamSize(buf[:n]); ferr != nil || size != n {
				t.Fatalf("handed pion %d bytes, a frame of %d (%v)", n, size, ferr)
			}
		}
		_ = server.Close()
	})
}

// FuzzControl hands the control plane arbitrary messages from one client,
// seeded with signed requests it accepts (a nonce it made, the right key),
// so that mutations reach past authentication: it must never panic, and
// every answer must be a STUN message.
func FuzzControl(f *testing.F) {
	r, err := New(Options{Config: testConfig()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = r.Close() })
	cred := mint(&testing.T{}, testSecret, "fuzz", time.Hour)
	nonce := stun.NewNonce(r.nonces.make(time.Now()))
	peer := netip.MustParseAddrPort("127.0.0.1:5000")
	signed := func(method stun.Method, setters ...stun.Setter) []byte {
		all := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, setters...)
		all = append(all, stun.NewUsername(cred.Username), stun.NewRealm("traverse"), nonce,
			stun.NewLongTermIntegrity(cred.Username, "traverse", cred.Password), stun.Fingerprint)
		m, err := stun.Build(all...)
		if err != nil {
			f.Fatal(err)
		}
		return m.Raw
	}
	f.Add(signed(stun.MethodAllocate, turntest.RequestedUDP))
	f.Add(signed(stun.MethodAllocate, turntest.RequestedUDP, stun.RawAttribute{Type: stun.AttrEvenPort, Value: []byte{0x80}}))
	f.Add(signed(stun.MethodCreatePermission, turntest.PeerAddress(peer)))
	f.Add(signed(stun.MethodChannelBind, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{0x40, 0, 0, 0}}, turntest.PeerAddress(peer)))
	f.Add(signed(stun.MethodRefresh, turntest.Lifetime(time.Minute)))
	f.Add(signed(stun.MethodRefresh, turntest.Lifetime(0)))
	f.Add(signed(stun.MethodBinding))
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	local := r.Addrs().UDP[0]
	f.Fuzz(func(t *testing.T, b []byte) {
		var answers replies
		r.control(append([]byte(nil), b...), src, local, &answers, nil)
		for _, a := range answers {
			if err := (&stun.Message{Raw: a}).Decode(); err != nil {
				t.Fatalf("answer %x is not STUN: %v", a, err)
			}
		}
	})
}

// replies collects the control plane's answers.
type replies [][]byte

func (r *replies) reply(b []byte, _ net.Addr) { *r = append(*r, append([]byte(nil), b...)) }
