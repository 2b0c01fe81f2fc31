// Package testnet holds small network fixtures shared by traverse's tests.
package testnet

import (
	"net"
	"testing"
)

// EchoPeer is a UDP peer on addr (e.g. "127.0.0.1:0") that sends back every
// datagram it receives, closed when the test ends. It allocates nothing per
// datagram: the relay's zero-allocation guard counts every allocation in
// the process.
func EchoPeer(tb testing.TB, network, addr string) *net.UDPConn {
	tb.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	u := pc.(*net.UDPConn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2000)
		for {
			n, from, err := u.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = u.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	tb.Cleanup(func() { _ = u.Close(); <-done })
	return u
}
