package main

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestMediaGeneratorTiming drives the echo peer with the call mix's flows
// from a few raw clients and checks that the timing wheel sent what each
// flow's period and burst call for over the run (whole frames, none
// skipped when the generator runs late) and that every datagram came back
// and was counted.
func TestMediaGeneratorTiming(t *testing.T) {
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = l.SetReadBuffer(4 << 20)
	go func() { _ = echoOn(l) }()
	defer l.Close()

	const n = 10
	clients := make([]*dataClient, n)
	for i := range clients {
		c, err := dialUDP(l.LocalAddr().(*net.UDPAddr).AddrPort())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = &dataClient{conn: c, f: rawFramer{}}
	}
	flows := callMixFlows(n)
	// The CPU is read from a process: this one stands in for a server.
	self := &proc{name: "self", cmd: &exec.Cmd{Process: &os.Process{Pid: os.Getpid()}}}
	const dur = 600 * time.Millisecond
	r, err := runMedia(target{name: "echo", kind: "raw", server: self}, clients, flows, dur)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		var want, slack int64
		for _, f := range flows[i] {
			frames := int64(dur / f.period)
			want += frames * int64(f.burst)
			slack += int64(f.burst) // a frame more or less, by phase
		}
		if c.sent < want-slack || c.sent > want+slack {
			t.Errorf("client %d sent %d datagrams in %s, want %d ± %d", i, c.sent, dur, want, slack)
		}
	}
	if r.Sent == 0 || r.Received != r.Sent {
		t.Errorf("sent %d, %d echoes counted; want all back", r.Sent, r.Received)
	}
	if r.P99Micros <= 0 || r.SeenP99Micros <= 0 {
		t.Errorf("no round trips measured: %+v", r)
	}
	// The kernel's stamps, less the echo's hold, leave out the wake-ups of
	// the generator's receive loop and of the echo peer: never longer than
	// the round trip the loop saw.
	if r.P50Micros <= 0 || r.P50Micros > r.SeenP50Micros {
		t.Errorf("round trip from kernel stamps p50 %.0f µs, as seen %.0f µs: want 0 < stamped ≤ seen", r.P50Micros, r.SeenP50Micros)
	}
}
