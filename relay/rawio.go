package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSocket does a UDP socket's per-packet I/O with raw, non-blocking system
// calls through its RawConn. Go's net package enters the runtime's syscall
// state for every read and write; at a steady media rate that wakes the
// runtime's monitor thread (sysmon) out of its idle sleep and back into
// 20 µs polling for nearly every packet, which costs more CPU than relaying
// the packet. A non-blocking call cannot block, so it needs no syscall
// state; waiting for data still parks the goroutine in the netpoller.
type rawSocket struct {
	rc syscall.RawConn
	v6 bool

	// Reader state: one reader per socket (pion runs one read loop each).
	rbuf    []byte
	rn      int
	rname   [unix.SizeofSockaddrInet6]byte
	rerr    syscall.Errno
	readFn  func(fd uintptr) bool
	lastSrc *net.UDPAddr // reused while the source stays the same

	writers sync.Pool // *rawWrite: writers may be concurrent
}

type rawWrite struct {
	s    *rawSocket
	p    []byte
	name [unix.SizeofSockaddrInet6]byte
	nlen uintptr
	n    int
	err  syscall.Errno
	fn   func(fd uintptr) bool
}

func newRawSocket(c *net.UDPConn) (*rawSocket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &rawSocket{rc: rc, v6: c.LocalAddr().(*net.UDPAddr).IP.To4() == nil}
	s.readFn = s.recvfrom
	s.writers.New = func() any {
		w := &rawWrite{s: s}
		w.fn = w.sendto
		return w
	}
	return s, nil
}

// readFrom reads one datagram into p.
func (s *rawSocket) readFrom(p []byte) (int, net.Addr, error) {
	s.rbuf = p
	err := s.rc.Read(s.readFn)
	s.rbuf = nil
	if err != nil {
		return 0, nil, err
	}
	if s.rerr != 0 {
		return 0, nil, os.NewSyscallError("recvfrom", s.rerr)
	}
	ap, ok := decodeSockaddr(s.rname[:])
	if !ok {
		return 0, nil, errBadSockaddr
	}
	if s.lastSrc == nil || s.lastSrc.Port != int(ap.Port()) || !equalIP(s.lastSrc.IP, ap.Addr()) {
		s.lastSrc = udpAddr(ap)
	}
	return s.rn, s.lastSrc, nil
}

func (s *rawSocket) recvfrom(fd uintptr) bool {
	var bp unsafe.Pointer
	if len(s.rbuf) > 0 {
		bp = unsafe.Pointer(&s.rbuf[0])
	}
	nlen := uint32(len(s.rname))
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(bp), uintptr(len(s.rbuf)), unix.MSG_DONTWAIT,
		uintptr(unsafe.Pointer(&s.rname[0])), uintptr(unsafe.Pointer(&nlen)))
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	s.rn, s.rerr = int(r), e
	return true
}

// writeTo sends p to addr.
func (s *rawSocket) writeTo(p []byte, addr *net.UDPAddr) (int, error) {
	w := s.writers.Get().(*rawWrite)
	w.nlen = encodeSockaddr(&w.name, addr, s.v6)
	if w.nlen == 0 {
		s.writers.Put(w)
		return 0, &net.AddrError{Err: "address family does not match the socket", Addr: addr.String()}
	}
	w.p = p
	err := s.rc.Write(w.fn)
	n, errno := w.n, w.err
	w.p = nil
	s.writers.Put(w)
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, os.NewSyscallError("sendto", errno)
	}
	return n, nil
}

func (w *rawWrite) sendto(fd uintptr) bool {
	var bp unsafe.Pointer
	if len(w.p) > 0 {
		bp = unsafe.Pointer(&w.p[0])
	}
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(bp), uintptr(len(w.p)), unix.MSG_DONTWAIT,
		uintptr(unsafe.Pointer(&w.name[0])), w.nlen)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	w.n, w.err = int(r), e
	return true
}

var errBadSockaddr = errors.New("relay: unexpected socket address family")

// encodeSockaddr writes addr as a sockaddr_in (IPv4 socket) or sockaddr_in6
// (IPv6 socket, IPv4 peers as mapped addresses) and returns its length, or 0
// when the address cannot be reached from this socket.
func encodeSockaddr(b *[unix.SizeofSockaddrInet6]byte, addr *net.UDPAddr, v6 bool) uintptr {
	*b = [unix.SizeofSockaddrInet6]byte{}
	if !v6 {
		ip4 := addr.IP.To4()
		if ip4 == nil {
			return 0
		}
		binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:4], uint16(addr.Port))
		copy(b[4:8], ip4)
		return unix.SizeofSockaddrInet4
	}
	ip16 := addr.IP.To16()
	if ip16 == nil {
		return 0
	}
	binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:4], uint16(addr.Port))
	copy(b[8:24], ip16)
	return unix.SizeofSockaddrInet6
}

func decodeSockaddr(b []byte) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16(b[2:4])
	switch binary.NativeEndian.Uint16(b[0:2]) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// udpAddr builds a *net.UDPAddr with a 16-byte IP: pion calls IP.To16 on
// every packet's address, which allocates for the 4-byte form.
func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	a16 := ap.Addr().As16()
	return &net.UDPAddr{IP: net.IP(a16[:]), Port: int(ap.Port())}
}

func equalIP(ip net.IP, a netip.Addr) bool {
	return len(ip) == 16 && [16]byte(ip) == a.As16()
}

// mmsgReader reads a listener socket in recvmmsg batches with raw,
// non-blocking calls (see rawSocket), handing datagrams out one by one.
type mmsgReader struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names [][unix.SizeofSockaddrInet6]byte
	bufs  [][]byte
	n     int
	next  int
	rerr  syscall.Errno
	fn    func(fd uintptr) bool
	// Recent sources, so a client's address is not allocated per packet.
	addrs map[netip.AddrPort]*net.UDPAddr
}

// batchSize is how many datagrams one recvmmsg may return on a listener
// socket. Under load one wake-up then serves many packets; at low rates it
// returns one, as a plain read would.
const batchSize = 32

// readBuffer is larger than pion's 1600-byte MTU so that an oversized
// datagram still reaches pion whole enough for it to see and drop it.
const readBuffer = 2048

// maxCachedAddrs bounds mmsgReader's address cache; it is cleared when full.
const maxCachedAddrs = 4096

func newMmsgReader(c *net.UDPConn) (*mmsgReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &mmsgReader{
		rc:    rc,
		hdrs:  make([]unix.Mmsghdr, batchSize),
		iovs:  make([]unix.Iovec, batchSize),
		names: make([][unix.SizeofSockaddrInet6]byte, batchSize),
		bufs:  make([][]byte, batchSize),
		addrs: map[netip.AddrPort]*net.UDPAddr{},
	}
	for i := range r.hdrs {
		r.bufs[i] = make([]byte, readBuffer)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(readBuffer)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = &r.names[i][0]
	}
	r.fn = r.recvmmsg
	return r, nil
}

func (r *mmsgReader) recvmmsg(fd uintptr) bool {
	for i := range r.hdrs {
		r.hdrs[i].Hdr.Namelen = uint32(len(r.names[i]))
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	r.n, r.next, r.rerr = int(n), 0, e
	return true
}

// ReadFrom returns the next datagram of the batch, reading a new batch when
// the last is used up.
func (r *mmsgReader) ReadFrom(p []byte) (int, net.Addr, error) {
	for r.next >= r.n {
		if err := r.rc.Read(r.fn); err != nil {
			return 0, nil, err
		}
		if r.rerr != 0 {
			r.n = 0
			return 0, nil, os.NewSyscallError("recvmmsg", r.rerr)
		}
	}
	i := r.next
	r.next++
	ap, ok := decodeSockaddr(r.names[i][:])
	if !ok {
		return 0, nil, errBadSockaddr
	}
	addr, ok := r.addrs[ap]
	if !ok {
		if len(r.addrs) >= maxCachedAddrs {
			clear(r.addrs)
		}
		addr = udpAddr(ap)
		r.addrs[ap] = addr
	}
	return copy(p, r.bufs[i][:r.hdrs[i].Len]), addr, nil
}
