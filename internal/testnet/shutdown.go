package testnet

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
)

// BreakListener makes the kernel fail the process's TCP listener on addr for
// good: it finds the listening socket among the process's descriptors and
// shuts it down, so the accept waiting on it returns EINVAL, as it would if
// the socket were torn away under a running server.
func BreakListener(tb testing.TB, addr net.Addr) {
	tb.Helper()
	want, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		tb.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatalf("list descriptors: %v", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || v != 1 {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		var got netip.AddrPort
		switch a := sa.(type) {
		case *syscall.SockaddrInet4:
			got = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		case *syscall.SockaddrInet6:
			got = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
		}
		if got == want {
			if err := syscall.Shutdown(fd, syscall.SHUT_RDWR); err != nil {
				tb.Fatalf("shutdown listener %s: %v", addr, err)
			}
			return
		}
	}
	tb.Fatalf("no listening socket on %s in this process", addr)
}
