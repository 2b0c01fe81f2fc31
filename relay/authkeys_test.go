package relay

import (
	"net"
	"strings"
	"testing"

	"github.com/pion/turn/v4"
)

// allocKey is a cheaper spelling of src.Network() + "|" + src.String() +
// "|" + local.String(); every address form we can be handed must give the
// same key as that.
func TestAllocKeyMatchesAddrString(t *testing.T) {
	addrs := []net.Addr{
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478},
		&net.UDPAddr{IP: net.IP{192, 0, 2, 1}, Port: 1},
		&net.UDPAddr{IP: net.ParseIP("::ffff:198.51.100.7"), Port: 65535},
		&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5000},
		&net.UDPAddr{IP: net.ParseIP("fe80::1"), Port: 5000, Zone: "eth0"},
		&net.UDPAddr{IP: net.ParseIP("::"), Port: 0},
		&net.UDPAddr{Port: 9},
		&net.UDPAddr{IP: net.IP{1, 2, 3}, Port: 9}, // malformed
		&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 443},
		&net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 5349},
		&net.IPAddr{IP: net.IPv4(10, 0, 0, 2)},
	}
	for i, a := range addrs {
		local := addrs[(i+3)%len(addrs)]
		if got, want := allocKey(a, local), a.Network()+"|"+a.String()+"|"+local.String(); got != want {
			t.Errorf("allocKey(%#v, %#v) = %q, want %q", a, local, got, want)
		}
	}
	var nilUDP *net.UDPAddr
	if allocKey(nil, nilUDP) != "|" || allocKey(nilUDP, nil) != "|" {
		t.Error("nil addresses must give empty parts")
	}
}

func TestLongTermKeyMatchesPion(t *testing.T) {
	for _, c := range [][3]string{
		{"1700000000:alice", "traverse", "c2VjcmV0"},
		{"", "", ""},
		{strings.Repeat("u", 512), "realm", strings.Repeat("p", 300)}, // longer than the stack buffer
	} {
		if got, want := longTermKey(c[0], c[1], c[2]), turn.GenerateAuthKey(c[0], c[1], c[2]); string(got) != string(want) {
			t.Errorf("longTermKey(%q…) = %x, want %x", c[0][:min(len(c[0]), 16)], got, want)
		}
	}
}
