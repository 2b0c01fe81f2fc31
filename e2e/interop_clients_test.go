package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// uclientCells drives coturn's turnutils_uclient: -t for TCP, -S for TLS,
// -s for Send/Data indications instead of channels, -y for two clients
// relaying to each other's allocation on the same server. Its runs are
// processes that mostly wait, so two run at once (more add load of their
// own to a 2-core machine).
func uclientCells(t *testing.T, in *Instance, m *matrix) {
	uclient := coturnTool(t, "turnutils_uclient")
	peerPort := startTurnutilsPeer(t)
	var wg sync.WaitGroup
	slots := make(chan struct{}, 2)
	for _, tr := range matrixTransports(in) {
		for _, peer := range []string{peerExternal, peerSameServer} {
			for _, mode := range []string{modeFirstContact, modeChannel, modePeerFirst} {
				for _, b := range bursts {
					c := cell{client: "coturn-uclient", transport: tr.name, peer: peer, mode: mode, burst: b.name}
					if mode == modePeerFirst {
						c.na = "uclient always speaks first"
						m.add(c)
						continue
					}
					host, port, _ := net.SplitHostPort(tr.addr)
					tok := in.CreateToken(3600) // its own user: runs overlap, and each user has a quota
					args := []string{"-u", tok.Username, "-w", tok.Password, "-p", port, "-l", strconv.Itoa(msgSize),
						"-n", strconv.Itoa(b.n), "-z", strconv.Itoa(int(b.gap / time.Millisecond)), "-c", "-X"}
					switch tr.dial {
					case "tcp":
						args = append(args, "-t")
					case "tls":
						args = append(args, "-t", "-S")
					}
					if mode == modeFirstContact {
						// uclient binds channels up front unless told to
						// send indications (-s).
						args = append(args, "-s")
					}
					if peer == peerExternal {
						args = append(args, "-m", "1", "-e", "127.0.0.1", "-r", strconv.Itoa(peerPort))
					} else {
						args = append(args, "-m", "2", "-y")
					}
					args = append(args, host)
					wg.Add(1)
					go func() {
						defer wg.Done()
						slots <- struct{}{}
						defer func() { <-slots }()
						ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						defer cancel()
						out, err := exec.CommandContext(ctx, uclient, args...).CombinedOutput()
						r, perr := parseUclient(string(out))
						switch {
						case ctx.Err() != nil:
							c.err = "did not finish in 60s"
						case err != nil:
							c.err = fmt.Sprintf("%v: %s", err, oneLine(lastLines(string(out), 3)))
						case perr != nil:
							c.err = fmt.Sprintf("%v: %s", perr, oneLine(lastLines(string(out), 3)))
						case r.lost != 0:
							c.err = fmt.Sprintf("uclient reports %d lost", r.lost)
						}
						c.sent, c.echoed = r.sent, r.received
						m.add(c)
					}()
				}
			}
		}
	}
	wg.Wait()
}

// webrtcCells connects pion/webrtc peers through the relay and echoes
// bursts over an unordered data channel that never retransmits, so a lost
// datagram stays lost. The same-server peer is a second relay-only peer;
// the external peer is a peer with only a host candidate on loopback. Both
// ends take turns speaking first.
func webrtcCells(t *testing.T, in *Instance, m *matrix) {
	trustTestCAForPion(t, in)
	tok := in.CreateToken(3600)
	for _, tr := range matrixTransports(in) {
		for _, peer := range []string{peerExternal, peerSameServer} {
			base := cell{client: "pion-webrtc", transport: tr.name, peer: peer}
			if tr.v6 {
				base.na = "the issuer lists the IPv4 URIs (public_host 127.0.0.1), IPv6 listeners are covered by pion-turn and uclient"
				m.add(base)
				continue
			}
			server, err := pickICEServer(tok.ICEServers, turnURI(in, tr.name))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			results, err := webrtcBursts(ctx, pionICEServers(server), peer == peerExternal)
			cancel()
			if err != nil {
				base.err = err.Error()
				m.add(base)
				continue
			}
			for _, r := range results {
				c := base
				c.mode, c.burst, c.sent, c.echoed = r.mode, r.burst, r.sent, r.echoed
				m.add(c)
			}
		}
	}
}

type burstResult struct {
	mode, burst  string
	sent, echoed int
}

// loopbackPeer is a pion peer with only a host candidate on 127.0.0.1: a
// peer that is not on the relay.
func loopbackPeer() (*webrtc.PeerConnection, error) {
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	return webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
}

// webrtcBursts connects a relay-only offerer to an answerer (relay-only, or
// host-only on loopback when external) and runs every burst from each side.
func webrtcBursts(ctx context.Context, servers []webrtc.ICEServer, external bool) ([]burstResult, error) {
	offerer, err := newRelayOnlyPeer(servers, false)
	if err != nil {
		return nil, err
	}
	defer offerer.Close()
	var answerer *webrtc.PeerConnection
	if external {
		answerer, err = loopbackPeer()
	} else {
		answerer, err = newRelayOnlyPeer(servers, false)
	}
	if err != nil {
		return nil, err
	}
	defer answerer.Close()

	f, no := false, uint16(0)
	id := uint16(7)
	pcs := []*webrtc.PeerConnection{offerer, answerer}
	var chans [2]*webrtc.DataChannel
	var counts [2]chan struct{}
	opened := make(chan struct{}, 2)
	for i, pc := range pcs {
		ch, err := pc.CreateDataChannel("burst", &webrtc.DataChannelInit{Negotiated: &[]bool{true}[0], ID: &id, Ordered: &f, MaxRetransmits: &no})
		if err != nil {
			return nil, err
		}
		chans[i], counts[i] = ch, make(chan struct{}, 1024)
		ch.OnOpen(func() { opened <- struct{}{} })
		ch.OnMessage(func(msg webrtc.DataChannelMessage) {
			switch msg.Data[0] {
			case 'p':
				_ = ch.Send(append([]byte{'e'}, msg.Data[1:]...))
			case 'e':
				counts[i] <- struct{}{}
			}
		})
	}
	if err := connectPeers(ctx, offerer, answerer); err != nil {
		return nil, err
	}
	for range 2 {
		select {
		case <-opened:
		case <-ctx.Done():
			return nil, fmt.Errorf("data channel did not open: %w", ctx.Err())
		}
	}
	payload := append([]byte{'p'}, make([]byte, msgSize-1)...)
	var out []burstResult
	for from, mode := range []string{"offerer-first", "answerer-first"} {
		for _, b := range bursts {
			for i := 0; i < b.n; i++ {
				if err := chans[from].Send(payload); err != nil {
					return out, err
				}
				if b.gap > 0 {
					time.Sleep(b.gap)
				}
			}
			got := 0
			for got < b.n {
				select {
				case <-counts[from]:
					got++
					continue
				case <-time.After(5 * time.Second):
				case <-ctx.Done():
				}
				break
			}
			out = append(out, burstResult{mode: mode, burst: b.name, sent: b.n, echoed: got})
		}
	}
	return out, nil
}

// connectPeers exchanges offer and answer (after gathering) and waits for
// both to connect.
func connectPeers(ctx context.Context, offerer, answerer *webrtc.PeerConnection) error {
	connected := make(chan struct{}, 2)
	for _, pc := range []*webrtc.PeerConnection{offerer, answerer} {
		pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
			if s == webrtc.ICEConnectionStateConnected {
				connected <- struct{}{}
			}
		})
	}
	offer, err := offerer.CreateOffer(nil)
	if err != nil {
		return err
	}
	if err := setLocalAndGather(ctx, offerer, offer); err != nil {
		return err
	}
	if err := answerer.SetRemoteDescription(*offerer.LocalDescription()); err != nil {
		return err
	}
	answer, err := answerer.CreateAnswer(nil)
	if err != nil {
		return err
	}
	if err := setLocalAndGather(ctx, answerer, answer); err != nil {
		return err
	}
	if err := offerer.SetRemoteDescription(*answerer.LocalDescription()); err != nil {
		return err
	}
	for range 2 {
		select {
		case <-connected:
		case <-ctx.Done():
			return fmt.Errorf("ICE did not connect: %w", ctx.Err())
		}
	}
	return nil
}

// chromiumCells runs the test page's call (two relay-only peer connections
// in one tab) over each transport and echoes every burst over an
// unordered, never-retransmitted data channel, from each side.
func chromiumCells(t *testing.T, in *Instance, m *matrix) {
	browser := startBrowser(t)
	page := servePage(t, tokensProxy(in, nil))
	dir := artifactDir(t)
	var pb []pageBurst
	for _, b := range bursts {
		pb = append(pb, pageBurst{Name: b.name, N: b.n, Gap: int(b.gap / time.Millisecond)})
	}
	for _, tr := range matrixTransports(in) {
		ext := cell{client: "chromium", transport: tr.name, peer: peerExternal,
			na: "both ends of the page's call are Chromium peers, whose host candidates are mDNS names (pion-webrtc covers a host peer)"}
		m.add(ext)
		base := cell{client: "chromium", transport: tr.name, peer: peerSameServer}
		if tr.v6 {
			base.na = "the issuer lists the IPv4 URIs (public_host 127.0.0.1), IPv6 listeners are covered by pion-turn and uclient"
			m.add(base)
			continue
		}
		s := runPage(t, browser, page, dir, pageCase{
			Name: "matrix-" + tr.name, ICE: pageFetch{URL: "/ice-servers?transport=" + tr.name, Init: map[string]any{"method": "POST"}},
			Expect: "connected", Seconds: 1, TimeoutMs: 20000, Bursts: pb,
		})
		if !s.OK || len(s.Bursts) == 0 {
			base.err = fmt.Sprintf("call failed: %s (ICE %v)", s.Error, s.ICEState)
			m.add(base)
			continue
		}
		for _, r := range s.Bursts {
			c := base
			c.mode, c.burst, c.sent, c.echoed = strings.Replace(r.Mode, "pc1", "offerer", 1), r.Burst, r.Sent, r.Echoed
			c.mode = strings.Replace(c.mode, "pc2", "answerer", 1)
			m.add(c)
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " | ") }
