// Package sockio is the relay's raw UDP socket layer: sockets kept outside
// Go's netpoller, read with recvmmsg into batches and written with sendto and
// sendmmsg, every call a raw non-blocking system call. It knows nothing of
// STUN, TURN or allocations: it must import nothing of traverse's, and
// nothing above it (the relay's data path) may be imported here.
package sockio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDPSocket is a UDP socket kept outside Go's netpoller. The relay's data
// path waits on it with its own epoll set and does every read and
// write with a raw, non-blocking system call: a socket that were also in the
// netpoller would wake the runtime on every datagram for nothing, and Go's
// blocking I/O path enters the runtime's syscall state per packet, which
// wakes its monitor thread (sysmon) from its idle sleep.
type UDPSocket struct {
	// mu is held shared around every system call on fd and whole by close,
	// so a descriptor number is never reused under a call in flight.
	mu    sync.RWMutex
	fd    int
	v6    bool
	local *net.UDPAddr
	// noGSO is set once the kernel refused a segmented send on this
	// socket (no UDP_SEGMENT, or a device that cannot take it): from then
	// on it sends one datagram per message.
	noGSO atomic.Bool
}

// Open binds a non-blocking UDP socket. network is "udp4" or "udp6" (an
// IPv6 socket takes IPv6 only, as Go's net package does). Every call is a
// raw system call: none of them blocks, and Go's own path marks the thread
// as in a system call, which on a busy host lets the runtime's monitor hand
// its P to another thread whenever the kernel is slow to return (an
// allocation makes three or four of these).
func Open(network string, ip net.IP, port int, reusePort bool, rcvbuf, sndbuf int) (*UDPSocket, error) {
	v6 := network == "udp6"
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	fail := func(op string, err error) (*UDPSocket, error) {
		rawClose(fd)
		return nil, os.NewSyscallError(op, err)
	}
	if v6 {
		if err := rawSetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	if reusePort {
		if err := rawSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	// Buffer sizes are requests; the kernel caps them, which is fine.
	if rcvbuf > 0 {
		_ = rawSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if sndbuf > 0 {
		_ = rawSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	var bindTo netip.Addr
	switch {
	case ip == nil || ip.IsUnspecified():
		bindTo = netip.IPv4Unspecified()
		if v6 {
			bindTo = netip.IPv6Unspecified()
		}
	case v6:
		bindTo = netip.AddrFrom16([16]byte(ip.To16()))
	default:
		ip4 := ip.To4()
		if ip4 == nil {
			return fail("bind", fmt.Errorf("%s is not an IPv4 address", ip))
		}
		bindTo = netip.AddrFrom4([4]byte(ip4))
	}
	sa := MakeSockaddr(netip.AddrPortFrom(bindTo, uint16(port)), v6)
	if _, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa.b[0])), uintptr(sa.n)); e != 0 {
		return fail("bind", e)
	}
	u := &UDPSocket{fd: fd, v6: v6}
	if port != 0 {
		// The address is the one asked for; a relay socket saves a call.
		ip16 := net.IPv6zero
		if !v6 {
			ip16 = net.IPv4zero.To16()
		}
		if ip != nil {
			ip16 = ip.To16()
		}
		u.local = &net.UDPAddr{IP: ip16, Port: port}
		return u, nil
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		u.local = &net.UDPAddr{IP: net.IP(b.Addr[:]).To16(), Port: b.Port}
	case *unix.SockaddrInet6:
		u.local = &net.UDPAddr{IP: net.IP(b.Addr[:]), Port: b.Port}
	}
	return u, nil
}

// V6 reports an IPv6 socket (whose destinations MakeSockaddr encodes as
// sockaddr_in6).
func (u *UDPSocket) V6() bool { return u.v6 }

// LocalAddr is the address the socket is bound to.
func (u *UDPSocket) LocalAddr() *net.UDPAddr { return u.local }

// Control calls f with the descriptor while no Close can run, as
// syscall.RawConn's Control does; it fails with net.ErrClosed after Close.
func (u *UDPSocket) Control(f func(fd int) error) error {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.fd < 0 {
		return net.ErrClosed
	}
	return f(u.fd)
}

func rawSetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&v)), 4, 0)
	if e != 0 {
		return e
	}
	return nil
}

// rawClose closes a UDP descriptor; that never blocks.
func rawClose(fd int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

// Close closes the descriptor once no call is using it; further calls fail
// with net.ErrClosed.
func (u *UDPSocket) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.fd < 0 {
		return net.ErrClosed
	}
	err := rawClose(u.fd)
	u.fd = -1
	return err
}

// SendTo sends p to the encoded address. A full send buffer (EAGAIN) drops
// the datagram and says so; UDP promises no more.
func (u *UDPSocket) SendTo(p []byte, to *Sockaddr) error {
	if to.n == 0 {
		return errBadFamily
	}
	var bp unsafe.Pointer
	if len(p) > 0 {
		bp = unsafe.Pointer(&p[0])
	}
	u.mu.RLock()
	fd := u.fd
	if fd < 0 {
		u.mu.RUnlock()
		return net.ErrClosed
	}
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(bp), uintptr(len(p)), unix.MSG_DONTWAIT,
			uintptr(unsafe.Pointer(&to.b[0])), uintptr(to.n))
		if e == unix.EINTR {
			continue
		}
		u.mu.RUnlock()
		if e != 0 {
			return os.NewSyscallError("sendto", e)
		}
		return nil
	}
}

var errBadFamily = errors.New("relay: address family does not match the socket")

// Sockaddr is a destination encoded once for sendto: a sockaddr_in for an
// IPv4 socket, a sockaddr_in6 for an IPv6 one (IPv4 as mapped addresses). n
// is 0 when the address cannot be reached from that kind of socket.
type Sockaddr struct {
	b [unix.SizeofSockaddrInet6]byte
	n uint32
}

// Valid reports whether the address could be encoded for the socket's
// family: an IPv6 destination cannot be reached from an IPv4 socket.
func (sa *Sockaddr) Valid() bool { return sa.n != 0 }

// MakeSockaddr encodes ap for a socket of the given family (v6: an IPv6
// socket); the result's length is 0 when such a socket cannot reach ap.
func MakeSockaddr(ap netip.AddrPort, v6 bool) Sockaddr {
	var sa Sockaddr
	a := ap.Addr()
	if !v6 {
		a = a.Unmap()
		if !a.Is4() {
			return sa
		}
		binary.NativeEndian.PutUint16(sa.b[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(sa.b[2:4], ap.Port())
		a4 := a.As4()
		copy(sa.b[4:8], a4[:])
		sa.n = unix.SizeofSockaddrInet4
		return sa
	}
	binary.NativeEndian.PutUint16(sa.b[0:2], unix.AF_INET6)
	binary.BigEndian.PutUint16(sa.b[2:4], ap.Port())
	a16 := a.As16()
	copy(sa.b[8:24], a16[:])
	sa.n = unix.SizeofSockaddrInet6
	return sa
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

// UDPAddr builds a *net.UDPAddr with a 16-byte IP: pion calls IP.To16 on
// every packet's address, which allocates for the 4-byte form.
func UDPAddr(ap netip.AddrPort) *net.UDPAddr {
	a16 := ap.Addr().As16()
	return &net.UDPAddr{IP: net.IP(a16[:]), Port: int(ap.Port())}
}

// MmsgBatch receives datagrams with recvmmsg into its slots. Each buffer
// keeps headroom bytes in front of the datagram, so the data path can put a
// ChannelData or Data indication header before a peer's payload without
// copying it.
type MmsgBatch struct {
	hdrs     []unix.Mmsghdr
	iovs     []unix.Iovec
	names    [][unix.SizeofSockaddrInet6]byte
	bufs     [][]byte
	headroom int
	n        int // datagrams in the last recv, from slot first
	first    int
}

// BatchSize is how many datagrams one recvmmsg may return. Under load one
// wake-up then serves many packets; at low rates it returns one, as a plain
// read would.
const BatchSize = 32

// ReadBuffer is larger than pion's 1600-byte MTU so that an oversized
// datagram still reaches pion whole enough for it to see and drop it.
const ReadBuffer = 2048

// NewMmsgBatch makes a batch of slots buffers, each with headroom bytes
// in front of ReadBuffer bytes for the datagram.
func NewMmsgBatch(headroom, slots int) *MmsgBatch {
	b := &MmsgBatch{
		hdrs:     make([]unix.Mmsghdr, slots),
		iovs:     make([]unix.Iovec, slots),
		names:    make([][unix.SizeofSockaddrInet6]byte, slots),
		bufs:     make([][]byte, slots),
		headroom: headroom,
	}
	for i := range b.hdrs {
		b.bufs[i] = make([]byte, headroom+ReadBuffer)
		b.iovs[i].Base = &b.bufs[i][headroom]
		b.iovs[i].SetLen(ReadBuffer)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		b.hdrs[i].Hdr.Name = &b.names[i][0]
	}
	return b
}

// Recv reads up to BatchSize datagrams from u into slots from on; it
// returns false when there was nothing to read or the socket is closed.
func (b *MmsgBatch) Recv(u *UDPSocket, from int) bool {
	b.first, b.n = from, 0
	count := min(BatchSize, len(b.hdrs)-from)
	if count <= 0 {
		return false
	}
	for i := from; i < from+count; i++ {
		b.hdrs[i].Hdr.Namelen = uint32(len(b.names[i]))
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.fd < 0 {
		return false
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(u.fd), uintptr(unsafe.Pointer(&b.hdrs[from])),
			uintptr(count), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			// EAGAIN: another reader was first. Anything else (an ICMP
			// error queued on the socket) is consumed by the failed call.
			return false
		}
		b.n = int(n)
		return b.n > 0
	}
}

// Datagram returns the datagram in slot i, with the headroom in front of
// it available to the caller, and its source.
func (b *MmsgBatch) Datagram(i int) (buf []byte, n int, src netip.AddrPort, ok bool) {
	src, ok = decodeSockaddr(b.names[i][:])
	return b.bufs[i], int(b.hdrs[i].Len), src, ok
}

// First is the slot of the first datagram of the last Recv.
func (b *MmsgBatch) First() int { return b.first }

// Len is how many datagrams the last Recv read.
func (b *MmsgBatch) Len() int { return b.n }

// Swap exchanges the buffers of slots i and j.
func (b *MmsgBatch) Swap(i, j int) {
	if i == j {
		return
	}
	b.bufs[i], b.bufs[j] = b.bufs[j], b.bufs[i]
	b.iovs[i].Base, b.iovs[j].Base = b.iovs[j].Base, b.iovs[i].Base
}

// SendQueue holds framed messages until one sendmmsg per socket sends them.
//
// Messages to the same destination in a row, of one size (the last may be
// shorter), go to the kernel as one segmented send (UDP GSO, UDP_SEGMENT,
// Linux 4.18): one pass down the socket, IP and device layers for all of
// them, split into datagrams at the device, or on a loopback receiver's
// way in. At saturation a flush holds a dozen messages, nine in ten of them
// to the same place as the one before (a burst of one sender's echoes, a
// video frame's packets), and that pass was most of the relay's CPU. Where
// the kernel refuses it the socket falls back to one datagram per message.
type SendQueue struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	to   []Sockaddr
	via  []*UDPSocket
	n    int
	// out holds the sends Flush makes of hdrs: one per run of messages
	// GSO can join (its iovecs are the run's, which Group keeps adjacent),
	// each with its own control message naming the segment size.
	out  []unix.Mmsghdr
	ctrl [][gsoCmsgSpace]byte
	runs []int // messages in each of out's sends
}

// The UDP_SEGMENT control message: a cmsghdr and a uint16 segment size,
// padded to the cmsg alignment.
const (
	gsoCmsgSpace = unix.SizeofCmsghdr + 8
	// gsoMaxSegments is the kernel's UDP_MAX_SEGMENTS (64 before Linux
	// 6.x raised it).
	gsoMaxSegments = 64
	// gsoMaxBytes keeps a segmented send under the 64 KB a UDP datagram
	// may hold before it is split.
	gsoMaxBytes = 60000
	// gsoMaxSize is the largest segment joined: the kernel refuses a
	// segment larger than the path MTU allows (1,500-byte Ethernet, IPv6
	// headers), and a refusal here must mean no GSO at all.
	gsoMaxSize = 1400
)

// NewSendQueue makes a queue of up to size messages.
func NewSendQueue(size int) *SendQueue {
	q := &SendQueue{hdrs: make([]unix.Mmsghdr, size), iovs: make([]unix.Iovec, size),
		to: make([]Sockaddr, size), via: make([]*UDPSocket, size),
		out: make([]unix.Mmsghdr, size), ctrl: make([][gsoCmsgSpace]byte, size), runs: make([]int, size)}
	for i := range q.hdrs {
		q.hdrs[i].Hdr.Iov = &q.iovs[i]
		q.hdrs[i].Hdr.SetIovlen(1)
		q.hdrs[i].Hdr.Name = &q.to[i].b[0]
		h := (*unix.Cmsghdr)(unsafe.Pointer(&q.ctrl[i][0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
	}
	return q
}

// Add queues msg, whose buffer must stay untouched until flush.
func (q *SendQueue) Add(msg []byte, via *UDPSocket, to *Sockaddr) {
	i := q.n
	q.iovs[i].Base = &msg[0]
	q.iovs[i].SetLen(len(msg))
	q.to[i] = *to
	q.hdrs[i].Hdr.Namelen = to.n
	q.via[i] = via
	q.n++
}

// Len is how many messages are queued.
func (q *SendQueue) Len() int { return q.n }

// Group reorders the queue so that messages for the same socket are
// adjacent, keeping their order: flush then needs one sendmmsg per socket.
func (q *SendQueue) Group() {
	var iovs [BatchSize]unix.Iovec
	var to [BatchSize]Sockaddr
	var via [BatchSize]*UDPSocket
	var taken [BatchSize]bool
	if q.n > BatchSize {
		return
	}
	k := 0
	for i := 0; i < q.n; i++ {
		if taken[i] {
			continue
		}
		for j := i; j < q.n; j++ {
			if !taken[j] && q.via[j] == q.via[i] {
				taken[j] = true
				iovs[k], to[k], via[k] = q.iovs[j], q.to[j], q.via[j]
				k++
			}
		}
	}
	copy(q.iovs, iovs[:q.n])
	copy(q.to, to[:q.n])
	copy(q.via, via[:q.n])
	for i := 0; i < q.n; i++ {
		q.hdrs[i].Hdr.Namelen = q.to[i].n
	}
}

// Flush sends everything queued, one sendmmsg per run of messages on the
// same socket, and returns how many the kernel refused.
func (q *SendQueue) Flush() (failed int) {
	for i := 0; i < q.n; {
		j := i + 1
		for j < q.n && q.via[j] == q.via[i] {
			j++
		}
		if q.via[i].noGSO.Load() {
			failed += q.via[i].sendmmsg(q.hdrs[i:j])
		} else {
			failed += q.sendSegmented(i, j)
		}
		i = j
	}
	clear(q.via[:q.n])
	q.n = 0
	return failed
}

// sendSegmented sends messages [i, j), all on one socket, joining each run
// to one destination into one segmented send.
func (q *SendQueue) sendSegmented(i, j int) (failed int) {
	u := q.via[i]
	n := 0
	for k := i; k < j; {
		size := q.iovs[k].Len
		end, bytes := k+1, size
		for size > 0 && size <= gsoMaxSize && end < j && end-k < gsoMaxSegments && q.to[end] == q.to[k] &&
			bytes+q.iovs[end].Len <= gsoMaxBytes {
			l := q.iovs[end].Len
			if l > size {
				break
			}
			bytes += l
			end++
			if l < size { // a shorter one ends the run
				break
			}
		}
		q.out[n] = q.hdrs[k]
		q.out[n].Hdr.SetIovlen(end - k)
		q.out[n].Hdr.Control, q.out[n].Hdr.Controllen = nil, 0
		if end-k > 1 {
			binary.NativeEndian.PutUint16(q.ctrl[n][unix.SizeofCmsghdr:], uint16(size))
			q.out[n].Hdr.Control = &q.ctrl[n][0]
			q.out[n].Hdr.SetControllen(unix.CmsgSpace(2))
		}
		q.runs[n] = end - k
		n++
		k = end
	}
	sent, refused, noGSO := u.sendmmsgGSO(q.out[:n], q.runs[:n])
	if noGSO { // the kernel cannot segment here: one datagram each, from then on
		u.noGSO.Store(true)
		first := i
		for r := 0; r < sent; r++ {
			first += q.runs[r]
		}
		refused += u.sendmmsg(q.hdrs[first:j])
	}
	return refused
}

// sendmmsgGSO sends hdrs, whose sends hold runs[i] messages each; refused
// counts the messages of the sends the kernel refused. It stops with noGSO
// when the kernel refuses segmenting (EIO: a device without checksum
// offload; EINVAL: a kernel without UDP_SEGMENT), sent being the sends
// before that one.
func (u *UDPSocket) sendmmsgGSO(hdrs []unix.Mmsghdr, runs []int) (sent, refused int, noGSO bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.fd < 0 {
		for _, r := range runs {
			refused += r
		}
		return 0, refused, false
	}
	for sent < len(hdrs) {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(u.fd), uintptr(unsafe.Pointer(&hdrs[sent])),
			uintptr(len(hdrs)-sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
		case (e == unix.EIO || e == unix.EINVAL) && runs[sent] > 1:
			return sent, refused, true
		case e != 0:
			// The first send failed (a full buffer, an unreachable
			// address): drop its messages and go on with the rest.
			refused += runs[sent]
			sent++
		default:
			sent += int(n)
		}
	}
	return sent, refused, false
}

// sendmmsg sends hdrs, skipping a message the kernel refuses; it returns
// how many were refused.
func (u *UDPSocket) sendmmsg(hdrs []unix.Mmsghdr) (failed int) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.fd < 0 {
		return len(hdrs)
	}
	for len(hdrs) > 0 {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(u.fd), uintptr(unsafe.Pointer(&hdrs[0])),
			uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
		case e != 0:
			// The first message failed (a full buffer, an unreachable
			// address): drop it and go on with the rest.
			failed++
			hdrs = hdrs[1:]
		default:
			hdrs = hdrs[n:]
		}
	}
	return failed
}
