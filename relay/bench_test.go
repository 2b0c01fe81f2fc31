package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/internal/testnet"
)

// The helpers in helpers_test.go take *testing.T; a benchmark builds the
// same pieces from testConfig, New and rawClient directly.

// benchRelay starts a relay with one UDP socket (so one reader serves the
// benchmark's single client deterministically) and a UDP echo peer that does
// not allocate, and returns the relay's UDP address and the peer's.
func benchRelay(b *testing.B) (server *net.UDPAddr, peer netip.AddrPort) {
	b.Helper()
	cfg := testConfig()
	cfg.Listen.TCP, cfg.Listen.TLS = nil, nil
	cfg.Relay.UDPSockets = 1
	if err := cfg.Validate(); err != nil {
		b.Fatalf("config: %v", err)
	}
	s, err := New(Options{Config: cfg, Log: zap.NewNop(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatalf("relay.New: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })

	pc := testnet.EchoPeer(b, "udp4", "127.0.0.1:0")
	return s.Addrs().UDP[0].(*net.UDPAddr), pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// BenchmarkRelayRoundTrip sends one ChannelData message through a real relay
// on loopback to an echo peer and waits for it to come back: one op is one
// round trip, two relayed packets. The client is a bare UDP socket with
// reused buffers (it allocates nothing per op), so allocs/op are the
// relay's (and pion/turn's) for two packets; zero is the aim.
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(map[int]string{100: "100B", 1000: "1000B"}[size], func(b *testing.B) {
			server, peer := benchRelay(b)
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			cred, err := auth.Mint([]byte(testSecret), "bench", time.Hour, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			rc := &rawClient{Conn: conn, Server: server, Username: cred.Username, Password: cred.Password, Realm: "traverse"}
			if _, err := rc.Allocate(); err != nil {
				b.Fatalf("allocate: %v", err)
			}
			const channel = 0x4000
			if err := rc.BindChannel(channel, peer); err != nil {
				b.Fatalf("channel bind: %v", err)
			}

			to := server.AddrPort()
			pkt := make([]byte, 4+size)
			binary.BigEndian.PutUint16(pkt[0:], channel)
			binary.BigEndian.PutUint16(pkt[2:], uint16(size))
			buf := make([]byte, 2048)
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				binary.BigEndian.PutUint32(pkt[4:], uint32(i))
				if _, err := conn.WriteToUDPAddrPort(pkt, to); err != nil {
					b.Fatal(err)
				}
				for {
					n, _, err := conn.ReadFromUDPAddrPort(buf)
					if err != nil {
						b.Fatalf("read echo %d: %v", i, err)
					}
					// Skip a late echo of an earlier message; there is none
					// on loopback, but a stray would desynchronise us.
					if n == len(pkt) && binary.BigEndian.Uint16(buf) == channel && binary.BigEndian.Uint32(buf[4:]) == uint32(i) {
						break
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/roundtrip")
		})
	}
}
