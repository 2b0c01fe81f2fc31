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
// messages in flight and sends the next as one comes back, and refills its
// window after 100 ms of silence (its messages lost). A goroutine per client
// would cost the generator a netpoller wake-up per message, taken from the
// cores the server under test shares with it; here one wake-up serves every
// socket that is ready, as in the servers. It sends until end and counts
// what comes back until stop.
func saturate(clients []*dataClient, window int, epoch, end, stop time.Time) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
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
	send := func(i int) {
		c := clients[i]
		binary.BigEndian.PutUint64(c.payload, uint64(time.Since(epoch)))
		binary.BigEndian.PutUint32(c.payload[8:], c.seq)
		c.seq++
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fds[i]), uintptr(unsafe.Pointer(&c.pkt[0])),
			uintptr(len(c.pkt)), unix.MSG_DONTWAIT, 0, 0)
		if e == 0 {
			c.sent++
		}
	}
	heard := make([]time.Time, len(clients))
	now := time.Now()
	for i := range clients {
		heard[i] = now
		for k := 0; k < window; k++ {
			send(i)
		}
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		return err
	}
	evs := make([]unix.EpollEvent, 64)
	buf := make([]byte, 2048)
	var n int
	wait := func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, fd, uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
		if e != 0 || r == 0 {
			return false
		}
		n = int(r)
		return true
	}
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
					for k := 0; k < window; k++ {
						send(i)
					}
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
				r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fds[i]), uintptr(unsafe.Pointer(&buf[0])),
					uintptr(len(buf)), unix.MSG_DONTWAIT, 0, 0)
				if e == unix.EINTR {
					continue
				}
				if e != 0 {
					break // EAGAIN: drained; or an ICMP error, consumed
				}
				p := c.f.unframe(buf[:r])
				if len(p) < 12 {
					continue
				}
				c.received.Add(1)
				heard[i] = now
				if seq := binary.BigEndian.Uint32(p[8:]); seq&c.rttSampleMask == 0 && len(c.rtts) < 200000 {
					c.rtts = append(c.rtts, int64(time.Since(epoch))-int64(binary.BigEndian.Uint64(p)))
				}
				if time.Now().Before(end) {
					send(i)
				}
			}
		}
	}
}
