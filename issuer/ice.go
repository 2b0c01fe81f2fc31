package issuer

import (
	"net"
	"strconv"
	"strings"
)

// ICEServer is one entry of ice_servers in Twilio's shape: url and urls carry
// the same single URI (twilio-go declares urls a string); username and
// credential appear on TURN entries only.
type ICEServer struct {
	URL        string `json:"url"`
	URLs       string `json:"urls"`
	Username   string `json:"username,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// ICEServers turns credential-less URIs into ice_servers entries, giving
// username and credential to every turn: and turns: URI. It is the one place
// an ICE list is built; every endpoint that returns one calls it.
func ICEServers(uris []string, username, credential string) []ICEServer {
	out := make([]ICEServer, 0, len(uris))
	for _, u := range uris {
		e := ICEServer{URL: u, URLs: u}
		if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
			e.Username, e.Credential = username, credential
		}
		out = append(out, e)
	}
	return out
}

// DefaultURIs lists the ICE server URIs of a traverse node at host, in
// Twilio's order: STUN, TURN over UDP, TURN over TCP, TURN over TCP on the TLS
// port (which also accepts plain TURN), then TURNS on the TLS port. A port of
// 0 means that listener is absent; without UDP there is no STUN entry (a
// stun: URI means UDP). IPv6 hosts are bracketed.
func DefaultURIs(host string, udpPort, tcpPort, tlsPort int) []string {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	hp := func(port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	var out []string
	if udpPort > 0 {
		out = append(out, "stun:"+hp(udpPort), "turn:"+hp(udpPort)+"?transport=udp")
	}
	if tcpPort > 0 {
		out = append(out, "turn:"+hp(tcpPort)+"?transport=tcp")
	}
	if tlsPort > 0 {
		if tlsPort != tcpPort {
			out = append(out, "turn:"+hp(tlsPort)+"?transport=tcp")
		}
		out = append(out, "turns:"+hp(tlsPort)+"?transport=tcp")
	}
	return out
}
