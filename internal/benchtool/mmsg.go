package main

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr of recvmmsg(2)/sendmmsg(2) on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// msgBatch is a reusable set of message headers, one buffer and one address
// slot each, for moving many datagrams in one system call: the load
// generator and the echo peer share the cores with the server under test, so
// every system call they save is CPU the servers get.
type msgBatch struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	names [][unix.SizeofSockaddrInet6]byte
	oob   [][]byte // control messages (receive timestamps), when asked for
}

func newMsgBatch(n, size int) *msgBatch {
	b := &msgBatch{
		hdrs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		bufs:  make([][]byte, n),
		names: make([][unix.SizeofSockaddrInet6]byte, n),
	}
	for i := range b.hdrs {
		b.bufs[i] = make([]byte, size)
		b.iovs[i].Base = &b.bufs[i][0]
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.Iovlen = 1
	}
	return b
}

// recv reads up to len(b.hdrs) datagrams without blocking, keeping each
// sender's address; datagram i is b.bufs[i][:b.hdrs[i].n].
func (b *msgBatch) recv(fd int) (int, unix.Errno) {
	for i := range b.hdrs {
		b.iovs[i].SetLen(len(b.bufs[i]))
		b.hdrs[i].hdr.Name = &b.names[i][0]
		b.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		if b.oob != nil {
			b.hdrs[i].hdr.Control = &b.oob[i][0]
			b.hdrs[i].hdr.SetControllen(len(b.oob[i]))
		}
	}
	return mmsgCall(unix.SYS_RECVMMSG, fd, b.hdrs)
}

// stampReceives asks the kernel to stamp each datagram fd receives
// (SO_TIMESTAMPNS), read back with a withRxTimes batch's rxTime.
func stampReceives(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return os.NewSyscallError("setsockopt SO_TIMESTAMPNS", err)
	}
	return nil
}

// withRxTimes gives each slot room for the kernel's receive timestamp, for
// sockets with SO_TIMESTAMPNS on.
func (b *msgBatch) withRxTimes() *msgBatch {
	b.oob = make([][]byte, len(b.hdrs))
	for i := range b.oob {
		b.oob[i] = make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	}
	return b
}

// rxTime is when the kernel received datagram i (CLOCK_REALTIME, ns), or 0
// when its socket does not stamp.
func (b *msgBatch) rxTime(i int) int64 {
	h := &b.hdrs[i].hdr
	if b.oob == nil || h.Controllen < unix.SizeofCmsghdr {
		return 0
	}
	c := (*unix.Cmsghdr)(unsafe.Pointer(&b.oob[i][0]))
	if c.Level != unix.SOL_SOCKET || c.Type != unix.SCM_TIMESTAMPNS {
		return 0
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&b.oob[i][unix.CmsgLen(0)]))
	return ts.Nano()
}

// echo sends datagrams [0, n) back to the addresses recv read them from.
func (b *msgBatch) echo(fd int, n int) {
	for i := range n {
		b.iovs[i].SetLen(int(b.hdrs[i].n))
		b.hdrs[i].hdr.Control = nil // not the receive stamps
		b.hdrs[i].hdr.Controllen = 0
	}
	b.sendAll(fd, n)
}

// sendConnected sends the first n buffers, each size bytes, on a connected
// socket, and says how many the kernel took.
func (b *msgBatch) sendConnected(fd int, n, size int) int {
	for i := range n {
		b.iovs[i].SetLen(size)
		b.hdrs[i].hdr.Name = nil
		b.hdrs[i].hdr.Namelen = 0
	}
	return b.sendAll(fd, n)
}

// sendAll sends datagrams [0, n) and returns how many the kernel took; one
// it refuses (a full buffer, an ICMP error) is dropped, as UDP may.
func (b *msgBatch) sendAll(fd int, n int) int {
	ok := 0
	for sent := 0; sent < n; {
		k, e := mmsgCall(unix.SYS_SENDMMSG, fd, b.hdrs[sent:n])
		switch {
		case e == unix.EINTR:
		case e != 0:
			sent++
		default:
			sent += k
			ok += k
		}
	}
	return ok
}

func mmsgCall(trap uintptr, fd int, hdrs []mmsghdr) (int, unix.Errno) {
	if len(hdrs) == 0 {
		return 0, 0
	}
	r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	return int(r), e
}

// epollWaiter is a non-blocking epoll_wait into evs, for the epoll set's
// RawConn.Read: it reports ready sockets (their count in *n) or lets the
// netpoller park the goroutine until the set is readable. A raw system
// call, so a busy loop does not enter the runtime's syscall state.
func epollWaiter(evs []unix.EpollEvent, n *int) func(fd uintptr) bool {
	return func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, fd, uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
		if e != 0 || r == 0 {
			return false
		}
		*n = int(r)
		return true
	}
}
