package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// saturate runs the closed loop of a saturated data run from one goroutine
// and one epoll set over every client's socket: each client keeps `window`
// messages in flight and sends as many as come back, and refills its window
// after 100 ms of silence (its messages lost). A goroutine per client would
// cost the generator a netpoller wake-up per message, taken from the cores
// the server under test shares with it; here one wake-up serves every socket
// that is ready, as in the servers, and a client's datagrams move with one
// recvmmsg and one sendmmsg. It sends until end and counts what comes back
// until stop.
func saturate(clients []*dataClient, window int, epoch, end, stop time.Time) error {
	epfd, ep, err := pollableEpoll()
	if err != nil {
		return err
	}
	defer ep.Close()
	fds := make([]int, len(clients))
	for i, c := range clients {
		rc, err := c.conn.SyscallConn()
		if err != nil {
			return err
		}
		if err := rc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
			return err
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fds[i], &ev); err != nil {
			return os.NewSyscallError("epoll_ctl", err)
		}
	}
	// Every send goes out in one sendmmsg per client: the template packet
	// copied into a batch buffer, stamped with the time and a sequence number.
	sb := newMsgBatch(2*window, 2048)
	payloadAt := make([]int, len(clients))
	for i, c := range clients {
		payloadAt[i] = int(uintptr(unsafe.Pointer(&c.payload[0])) - uintptr(unsafe.Pointer(&c.pkt[0])))
	}
	send := func(i, k int) {
		c := clients[i]
		ts := uint64(time.Since(epoch))
		for j := range k {
			b := sb.bufs[j]
			copy(b, c.pkt)
			binary.BigEndian.PutUint64(b[payloadAt[i]:], ts)
			binary.BigEndian.PutUint32(b[payloadAt[i]+8:], c.seq)
			c.seq++
		}
		c.sent += int64(sb.sendConnected(fds[i], k, len(c.pkt)))
	}
	rb := newMsgBatch(2*window, 2048)
	heard := make([]time.Time, len(clients))
	now := time.Now()
	for i := range clients {
		heard[i] = now
		send(i, window)
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		return err
	}
	evs := make([]unix.EpollEvent, 64)
	var n int
	wait := epollWaiter(evs, &n)
	lastCheck := now
	for {
		now = time.Now()
		if !now.Before(stop) {
			return nil
		}
		if now.Before(end) && now.Sub(lastCheck) >= 10*time.Millisecond {
			lastCheck = now
			for i := range clients {
				if now.Sub(heard[i]) >= 100*time.Millisecond {
					heard[i] = now
					send(i, window)
				}
			}
		}
		_ = ep.SetReadDeadline(now.Add(10 * time.Millisecond))
		n = 0
		if err := rc.Read(wait); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("saturation loop: %w", err)
		}
		for _, ev := range evs[:n] {
			i := int(ev.Fd)
			c := clients[i]
			for {
				r, e := rb.recv(fds[i])
				if e == unix.EINTR {
					continue
				}
				if e != 0 {
					break // EAGAIN: drained; or an ICMP error, consumed
				}
				back := 0
				for j := range r {
					p := c.f.unframe(rb.bufs[j][:rb.hdrs[j].n])
					if len(p) < 12 {
						continue
					}
					back++
					if seq := binary.BigEndian.Uint32(p[8:]); seq&c.rttSampleMask == 0 && len(c.rtts) < 200000 {
						c.rtts = append(c.rtts, int64(time.Since(epoch))-int64(binary.BigEndian.Uint64(p)))
					}
				}
				if back > 0 {
					c.received.Add(int64(back))
					heard[i] = now
					if time.Now().Before(end) {
						send(i, back)
					}
				}
				if r < len(rb.hdrs) {
					break // fewer than asked for: the socket is drained
				}
			}
		}
	}
}

// pollableEpoll makes an epoll set that Go's netpoller can wait on (as an
// *os.File), so a load loop parks until one of its sockets is ready.
func pollableEpoll() (int, *os.File, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return -1, nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return -1, nil, os.NewSyscallError("fcntl", err)
	}
	return epfd, os.NewFile(uintptr(epfd), "epoll"), nil
}
