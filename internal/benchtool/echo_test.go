package main

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestEchoPeer sends bursts from two sockets, larger than one recvmmsg
// batch, and checks every datagram comes back whole to the socket that sent
// it: the batched echo peer must answer each sender, not the last one.
func TestEchoPeer(t *testing.T) {
	l, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = l.SetReadBuffer(1 << 20)
	done := make(chan error, 1)
	go func() { done <- echoOn(l) }()

	const burst = 100
	var clients [2]*net.UDPConn
	for i := range clients {
		c, err := net.DialUDP("udp4", nil, l.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadBuffer(1 << 20)
		clients[i] = c
	}
	for k := range burst {
		for i, c := range clients {
			if _, err := c.Write(fmt.Appendf(nil, "client %d message %d", i, k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	buf := make([]byte, 2048)
	for i, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		seen := map[string]bool{}
		for len(seen) < burst {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("client %d: %d of %d echoes back: %v", i, len(seen), burst, err)
			}
			if !bytes.HasPrefix(buf[:n], fmt.Appendf(nil, "client %d ", i)) {
				t.Fatalf("client %d got another client's echo: %q", i, buf[:n])
			}
			seen[string(buf[:n])] = true
		}
	}
	_ = l.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("echo peer did not stop when its socket closed")
	}
}
