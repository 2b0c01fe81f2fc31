package config

import (
	"slices"
	"testing"
)

// TestExposedListeners: only TURN listeners other hosts can reach count; TLS
// ones only when a certificate makes them bound.
func TestExposedListeners(t *testing.T) {
	c := valid()
	c.Listen = Listen{UDP: []string{"127.0.0.1:3478", "[::1]:3478"}, TCP: []string{"localhost:3478"}, TLS: []string{"0.0.0.0:5349"}}
	if got := c.ExposedListeners(); len(got) != 0 {
		t.Fatalf("loopback listeners, no certificate: %v", got)
	}
	c.TLS = TLS{Cert: "c.pem", Key: "k.pem"}
	c.Listen.UDP = append(c.Listen.UDP, "[::]:3478", ":3479", "192.0.2.1:3478")
	want := []string{"listen.udp [::]:3478", "listen.udp :3479", "listen.udp 192.0.2.1:3478", "listen.tls 0.0.0.0:5349"}
	if got := c.ExposedListeners(); !slices.Equal(got, want) {
		t.Fatalf("ExposedListeners = %v, want %v", got, want)
	}
	c.Relay.Enabled = false
	if got := c.ExposedListeners(); len(got) != 0 {
		t.Fatalf("relay off: %v", got)
	}
}
