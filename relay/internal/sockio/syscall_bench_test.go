package sockio

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSyscallEntry beside BenchmarkLoopbackDatagram: what entering the
// kernel costs, next to what one audio-sized datagram costs to send and read
// back on loopback (two system calls and the network stack). The first is
// the most per system call that batching them across sockets (io_uring, one
// socket for every relay port) could save; docs/design.md, Performance VIII.
func BenchmarkSyscallEntry(b *testing.B) {
	for b.Loop() {
		unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
	}
}

func BenchmarkLoopbackDatagram(b *testing.B) {
	src, dst := openLoopback(b, 0), openLoopback(b, 0)
	to := MakeSockaddr(dst.LocalAddr().AddrPort(), false)
	batch := NewMmsgBatch(0, 1)
	p := make([]byte, 160)
	for b.Loop() {
		if err := src.SendTo(p, &to); err != nil {
			b.Fatal(err)
		}
		// Loopback queues the datagram within the send: it is there to read.
		if !batch.Recv(dst, 0) || batch.Len() != 1 {
			b.Fatal("the datagram sent was not there to read")
		}
	}
}
