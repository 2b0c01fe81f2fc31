package sockio

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSockaddrRoundTrip: what MakeSockaddr encodes, decodeSockaddr reads
// back; an IPv6 address cannot be encoded for an IPv4 socket.
func TestSockaddrRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		ap string
		v6 bool
	}{
		{"192.0.2.7:40000", false},
		{"192.0.2.7:40000", true}, // as a mapped address on an IPv6 socket
		{"[2001:db8::1]:3478", true},
	} {
		ap := netip.MustParseAddrPort(tc.ap)
		sa := MakeSockaddr(ap, tc.v6)
		if !sa.Valid() {
			t.Fatalf("%s (v6 %v): not encoded", ap, tc.v6)
		}
		got, ok := decodeSockaddr(sa.b[:])
		if !ok || got != ap {
			t.Errorf("%s (v6 %v): decoded %s, %v", ap, tc.v6, got, ok)
		}
	}
	if sa := MakeSockaddr(netip.MustParseAddrPort("[2001:db8::1]:3478"), false); sa.Valid() {
		t.Error("an IPv6 address was encoded for an IPv4 socket")
	}
}

// recvWithin reads one batch from u, retrying until the deadline: the
// sockets are non-blocking and loopback delivery is not instant on a busy
// machine.
func recvWithin(t *testing.T, b *MmsgBatch, u *UDPSocket, want int) {
	t.Helper()
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	for got < want && time.Now().Before(deadline) {
		if b.Recv(u, got) {
			got += b.Len()
			continue
		}
		time.Sleep(time.Millisecond)
	}
	if got != want {
		t.Fatalf("received %d datagrams, want %d", got, want)
	}
}

// TestSendQueueAndBatch: messages queued for two sockets, interleaved, leave
// grouped by socket with one sendmmsg each and arrive in order, each with
// its source; a batch keeps its headroom in front of every datagram.
func TestSendQueueAndBatch(t *testing.T) {
	a, b, dst := openLoopback(t, 0), openLoopback(t, 0), openLoopback(t, 0)
	if dst.V6() || dst.LocalAddr().Port == 0 {
		t.Fatalf("local address %v, v6 %v", dst.LocalAddr(), dst.V6())
	}
	to := MakeSockaddr(dst.LocalAddr().AddrPort(), false)
	q := NewSendQueue(BatchSize)
	msgs := []string{"a1", "b1", "a2", "b2", "a3"}
	for _, m := range msgs {
		via := a
		if m[0] == 'b' {
			via = b
		}
		q.Add([]byte(m), via, &to)
	}
	q.Group()
	if failed := q.Flush(); failed != 0 || q.Len() != 0 {
		t.Fatalf("flush: %d failed, %d left", failed, q.Len())
	}
	const headroom = 8
	batch := NewMmsgBatch(headroom, BatchSize)
	recvWithin(t, batch, dst, len(msgs))
	var fromA, fromB []string
	for i := 0; i < len(msgs); i++ {
		buf, n, src, ok := batch.Datagram(i)
		if !ok || len(buf) != headroom+ReadBuffer {
			t.Fatalf("slot %d: ok %v, buffer %d bytes", i, ok, len(buf))
		}
		p := string(buf[headroom : headroom+n])
		switch int(src.Port()) {
		case a.LocalAddr().Port:
			fromA = append(fromA, p)
		case b.LocalAddr().Port:
			fromB = append(fromB, p)
		default:
			t.Fatalf("datagram %q from %s", p, src)
		}
	}
	if got := fromA; len(got) != 3 || got[0] != "a1" || got[1] != "a2" || got[2] != "a3" {
		t.Errorf("from a: %q", got)
	}
	if got := fromB; len(got) != 2 || got[0] != "b1" || got[1] != "b2" {
		t.Errorf("from b: %q", got)
	}
}

// TestSegmentedSends: runs of messages to one destination leave as
// segmented sends (UDP GSO) and arrive as the datagrams they were, in order
// and whole: runs of one size, a shorter one ending a run, a longer one
// starting the next, more than a send's 64 segments, messages too large to
// join, two destinations interleaved; and the same with GSO off, as after a
// kernel refused it.
func TestSegmentedSends(t *testing.T) {
	open := func() *UDPSocket { return openLoopback(t, 4<<20) }
	var sizes []int
	for i := 0; i < 70; i++ {
		sizes = append(sizes, 100)
	}
	sizes = append(sizes, 60, 100, 100, 1200, 1200, 40, 1500, 1500, 100)
	for _, gso := range []bool{true, false} {
		via, d1, d2 := open(), open(), open()
		via.noGSO.Store(!gso)
		to1 := MakeSockaddr(d1.LocalAddr().AddrPort(), false)
		to2 := MakeSockaddr(d2.LocalAddr().AddrPort(), false)
		q := NewSendQueue(len(sizes) + 8)
		var want1, want2 []string
		for i, n := range sizes {
			msg := make([]byte, n)
			for j := range msg {
				msg[j] = byte(i)
			}
			to, want := &to1, &want1
			if i%9 == 8 { // every ninth to the other destination
				to, want = &to2, &want2
			}
			q.Add(msg, via, to)
			*want = append(*want, string(msg))
		}
		if failed := q.Flush(); failed != 0 {
			t.Fatalf("gso %v: %d refused", gso, failed)
		}
		if gso && via.noGSO.Load() {
			t.Fatal("the kernel refused UDP GSO on loopback: every send went one datagram at a time")
		}
		for _, c := range []struct {
			dst  *UDPSocket
			want []string
		}{{d1, want1}, {d2, want2}} {
			var got []string
			batch := NewMmsgBatch(0, BatchSize)
			deadline := time.Now().Add(2 * time.Second)
			for len(got) < len(c.want) && time.Now().Before(deadline) {
				if !batch.Recv(c.dst, 0) {
					time.Sleep(time.Millisecond)
					continue
				}
				for i := 0; i < batch.Len(); i++ {
					buf, n, _, _ := batch.Datagram(i)
					got = append(got, string(buf[:n]))
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("gso %v: %d datagrams, want %d", gso, len(got), len(c.want))
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("gso %v: datagram %d is %d bytes of %x..., want %d bytes", gso, i, len(got[i]), got[i][:min(4, len(got[i]))], len(c.want[i]))
				}
			}
		}
	}
}

// TestClosedSocket: after Close every call fails cleanly instead of using a
// descriptor number another socket may have by then.
func TestClosedSocket(t *testing.T) {
	u, err := Open("udp4", net.IPv4(127, 0, 0, 1), 0, false, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	to := MakeSockaddr(u.LocalAddr().AddrPort(), false)
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if err := u.SendTo([]byte("x"), &to); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SendTo: %v", err)
	}
	if err := u.Control(func(int) error { return nil }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Control: %v", err)
	}
	if NewMmsgBatch(0, 1).Recv(u, 0) {
		t.Error("Recv on a closed socket")
	}
	if failed := u.sendmmsg(make([]unix.Mmsghdr, 2)); failed != 2 {
		t.Errorf("sendmmsg on a closed socket: %d failed, want 2", failed)
	}
}

// TestSegmentedSendsAllocateNothing: the zero-allocation guard of the GSO
// path. A video frame's burst (8 datagrams of 1,100 bytes to one client)
// grouped, sent as one segmented send and read back allocates nothing, and
// the kernel took it as a segmented send (GSO is still on for the socket).
func TestSegmentedSendsAllocateNothing(t *testing.T) {
	via, dst := openLoopback(t, 0), openLoopback(t, 1<<20)
	to := MakeSockaddr(dst.LocalAddr().AddrPort(), false)

	const burst, size = 8, 1100
	frame := make([][]byte, burst)
	for i := range frame {
		frame[i] = make([]byte, size)
		frame[i][0] = byte(i)
	}
	q := NewSendQueue(BatchSize)
	in := NewMmsgBatch(0, BatchSize)
	roundTrip := func() {
		for _, p := range frame {
			q.Add(p, via, &to)
		}
		q.Group()
		if failed := q.Flush(); failed != 0 {
			t.Fatalf("%d datagrams refused", failed)
		}
		got := 0
		for deadline := time.Now().Add(2 * time.Second); got < burst; {
			if !in.Recv(dst, 0) {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d datagrams arrived", got, burst)
				}
				continue
			}
			for i := 0; i < in.Len(); i++ {
				if buf, n, _, _ := in.Datagram(i); n != size || buf[0] != byte(got) {
					t.Fatalf("datagram %d: %d bytes starting %d", got, n, buf[0])
				}
				got++
			}
		}
	}
	for range 20 {
		roundTrip()
	}
	if allocs := testing.AllocsPerRun(200, roundTrip); allocs > 0 {
		t.Errorf("%.2f allocations per segmented burst, want 0", allocs)
	}
	if via.noGSO.Load() {
		t.Fatal("the kernel refused UDP GSO on loopback: the segmented path was not the one measured")
	}
}

// openLoopback opens a UDP socket on 127.0.0.1 with a receive buffer of
// rcvbuf bytes (0: the kernel's default), closed when the test ends.
func openLoopback(t testing.TB, rcvbuf int) *UDPSocket {
	t.Helper()
	u, err := Open("udp4", net.IPv4(127, 0, 0, 1), 0, false, rcvbuf, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })
	return u
}
