// Package testnet holds small network fixtures shared by traverse's tests.
package testnet

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// PeerBuffer is the receive buffer a test peer asks for: a burst of 300
// datagrams sent back to back overflows the default (~200 KB on Linux, about
// 2 KB of it per small datagram) when the peer's goroutine is not scheduled
// at once on a busy machine.
const PeerBuffer = 4 << 20

// LargeBuffers gives c receive and send buffers of PeerBuffer bytes: with
// SO_RCVBUFFORCE as root (tests run as root in CI), else as far as
// net.core.rmem_max allows.
func LargeBuffers(c syscall.Conn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], PeerBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], PeerBuffer)
			}
		}
	})
}

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
	LargeBuffers(u)
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
