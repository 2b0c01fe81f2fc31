// Package testnet holds small network fixtures shared by traverse's tests.
package testnet

import (
	"net"
	"testing"
)

// EchoPeer is a UDP peer on addr (e.g. "127.0.0.1:0") that sends back every
// datagram it receives, closed when the test ends.
func EchoPeer(tb testing.TB, network, addr string) net.PacketConn {
	tb.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	tb.Cleanup(func() { _ = pc.Close() })
	return pc
}
