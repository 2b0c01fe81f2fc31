// Package relay runs traverse's STUN/TURN relay. It composes pion/turn v4: it
// binds the listeners, turns config into a turn.ServerConfig, and plugs its
// behaviour into pion's hooks — authentication (TURN REST and static users,
// expiry grace, owner binding), the peer policy, quotas, events for metrics
// — and into the relay sockets it hands pion, which count, cap and police
// every datagram. TURN itself is pion's.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/keyrate"
	"github.com/traverse/traverse/relay/internal/portpool"
	"github.com/traverse/traverse/relay/peerpolicy"
)

// Options are what New needs beyond the config.
type Options struct {
	Config config.Config
	// TLS serves the TLS listeners; nil leaves them off. Use GetCertificate
	// so certificates can be reloaded.
	TLS *tls.Config
	Log *zap.Logger
	// PionLog receives pion's own logs; nil discards them.
	PionLog logging.LoggerFactory
	// Registerer receives the relay's metrics; nil registers none.
	Registerer prometheus.Registerer
	// AdminAddrs are the process's other sockets (issuer, metrics), which
	// peers may never target.
	AdminAddrs []netip.AddrPort
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnAllocationCreated and OnAllocationEnded, when set, hear of every
	// allocation pion creates and deletes; Ended carries its final traffic.
	// They are called on pion's goroutines and must not block.
	OnAllocationCreated, OnAllocationEnded func(Allocation)
}

// Addrs are the bound listener addresses.
type Addrs struct {
	UDP, TCP, TLS []net.Addr
}

// state is everything SIGHUP may change, swapped atomically as a whole.
type state struct {
	gen          uint64
	secrets      *auth.Secrets
	userKeys     map[string][]byte // static user -> long-term key
	policy       auth.Policy
	strictExpiry bool
	peers        *peerpolicy.Policy
	quotaPerUser int
	quotaTotal   int
	quotaAccount int
	bandwidth    int64
	pendingPerIP int
}

// Server is a running relay.
type Server struct {
	log     *zap.Logger
	metrics *metrics
	now     func() time.Time
	realm   string
	ports   config.PortRange
	// portPool hands out the relay ports.
	portPool *portpool.Pool
	bindIP   net.IP
	// publicIP is advertised in XOR-RELAYED-ADDRESS.
	publicIP net.IP
	self     peerpolicy.SelfAddrs

	state       atomic.Pointer[state]
	multiSecret atomic.Bool
	draining    atomic.Bool
	signed      signedRequests
	refusals    refusals
	nonces      *nonces
	guesses     *keyrate.Limiter[netip.Addr] // failed authentications per source
	guessWarn   *keyrate.Limiter[netip.Addr] // one warning a minute per source
	allocs      *allocTable
	revoked     atomic.Pointer[Revoked]
	onCreated   func(Allocation)
	onEnded     func(Allocation)

	relaysMu sync.Mutex
	relays   map[netip.AddrPort]*relayConn // by advertised address

	// The UDP data path (datapath.go): its shards, the UDP listener sockets
	// by bound address, and the UDP allocations by 5-tuple.
	shards    []*shard
	shardNext atomic.Uint32
	udpGroups map[netip.AddrPort][]*udpListener
	routes    routeTable
	// The TCP and TLS clients' connections by 5-tuple, for the data path's
	// peer -> client direction (streamout.go).
	streams streamTable

	// maxStreamConns bounds each TCP/TLS listener's open connections;
	// streamQueueBytes and streamWriteTimeout each client's send queue.
	maxStreamConns     int
	streamQueueBytes   int
	streamWriteTimeout time.Duration
	// pending counts each source's connections that have not allocated.
	pending *pendingTable
	// dead names the stream listeners whose accept loop stopped.
	deadMu sync.Mutex
	dead   map[string]string

	turn     *turn.Server
	addrs    Addrs
	closers  []func() error
	stop     chan struct{}
	wg       sync.WaitGroup
	closeErr error
	closed   sync.Once
}

// New binds every listener, so that a taken port fails here with the address
// in the error, and starts serving.
func New(opts Options) (_ *Server, err error) {
	cfg := opts.Config
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		log:     opts.Log,
		metrics: newMetrics(opts.Registerer),
		now:     opts.Now,
		realm:   cfg.Realm,
		ports:   cfg.Relay.Ports,

		portPool:  portpool.New(cfg.Relay.Ports.Min, cfg.Relay.Ports.Max),
		bindIP:    net.ParseIP(cfg.Relay.BindIP),
		allocs:    newAllocTable(),
		signed:    newSignedRequests(),
		refusals:  newRefusals(),
		nonces:    newNonces(),
		guesses:   keyrate.New[netip.Addr](guessRate, guessBurst, guessTableSize),
		guessWarn: keyrate.New[netip.Addr](rate.Every(guessWarnEvery), 1, guessTableSize),
		relays:    map[netip.AddrPort]*relayConn{},
		routes:    routeTable{m: map[clientKey]*relayConn{}},

		udpGroups: map[netip.AddrPort][]*udpListener{},
		stop:      make(chan struct{}),

		maxStreamConns:     maxStreamConns,
		streamQueueBytes:   streamQueueBytes,
		streamWriteTimeout: streamWriteTimeout,
		pending:            newPendingTable(),
		dead:               map[string]string{},

		onCreated: opts.OnAllocationCreated,
		onEnded:   opts.OnAllocationEnded,
	}
	defer func() {
		if err != nil {
			for _, c := range s.closers {
				_ = c()
			}
		}
	}()

	pub, err := PublicIP(cfg.Relay)
	if err != nil {
		return nil, err
	}
	s.publicIP = pub.AsSlice()

	sockets := cfg.Relay.UDPSockets
	if sockets == 0 {
		sockets = runtime.NumCPU()
	}
	for i := 0; i < sockets; i++ {
		sh, err := newShard(s, i)
		if err != nil {
			return nil, err
		}
		s.shards = append(s.shards, sh)
		go sh.run()
		s.closers = append(s.closers, func() error { sh.stop(); return nil })
	}
	gen := addressGenerator{s}
	var pcs []turn.PacketConnConfig
	var lcs []turn.ListenerConfig
	for _, a := range cfg.Listen.UDP {
		socks, err := listenUDP(a, sockets)
		if err != nil {
			return nil, err
		}
		local := socks[0].LocalAddr()
		for i, sock := range socks {
			ul := newUDPListener(s, sock)
			s.closers = append(s.closers, ul.Close)
			if _, err := s.shards[i].add(sock, ul); err != nil {
				return nil, err
			}
			s.udpGroups[ul.localAP] = append(s.udpGroups[ul.localAP], ul)
			pcs = append(pcs, turn.PacketConnConfig{PacketConn: ul, RelayAddressGenerator: gen, PermissionHandler: s.permit})
		}
		s.addrs.UDP = append(s.addrs.UDP, local)
	}
	for _, a := range cfg.Listen.TCP {
		l, err := listenTCP(a)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, l.Close)
		s.addrs.TCP = append(s.addrs.TCP, l.Addr())
		lcs = append(lcs, turn.ListenerConfig{Listener: l, RelayAddressGenerator: gen, PermissionHandler: s.permit})
	}
	if opts.TLS != nil {
		for _, a := range cfg.Listen.TLS {
			l, err := listenTCP(a)
			if err != nil {
				return nil, err
			}
			s.closers = append(s.closers, l.Close)
			s.addrs.TLS = append(s.addrs.TLS, l.Addr())
			lcs = append(lcs, turn.ListenerConfig{Listener: l, RelayAddressGenerator: gen, PermissionHandler: s.permit})
		}
	}

	// Our own sockets, which the peer policy refuses as destinations.
	s.self = peerpolicy.SelfAddrs{Listeners: append([]netip.AddrPort(nil), opts.AdminAddrs...), HostIPs: hostIPs(pub)}
	for _, group := range [][]net.Addr{s.addrs.UDP, s.addrs.TCP, s.addrs.TLS} {
		for _, a := range group {
			s.self.Listeners = append(s.self.Listeners, addrPort(a))
		}
	}
	st, err := s.buildState(cfg, 1)
	if err != nil {
		return nil, err
	}
	s.setState(st)

	s.checkFDLimit(fdNeed(cfg, len(lcs), s.maxStreamConns))

	// Wrap the stream listeners only now: their accept loops start at once.
	tlsStart := len(lcs) - len(s.addrs.TLS)
	for i := range lcs {
		var tc *tls.Config
		if i >= tlsStart {
			tc = turnTLSConfig(opts.TLS)
		}
		sl := newStreamListener(s, lcs[i].Listener, tc)
		lcs[i].Listener = sl
		s.closers = append(s.closers, sl.Close)
	}

	pionLog := opts.PionLog
	if pionLog == nil {
		pionLog = &logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled}
	}
	s.turn, err = turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: pcs,
		ListenerConfigs:   lcs,
		LoggerFactory:     pionLog,
		Realm:             cfg.Realm,
		AuthHandler:       s.authenticate,
		QuotaHandler:      s.quota,
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnPermissionCreated: s.onPermissionCreated,
			OnPermissionDeleted: s.onPermissionDeleted,
			OnChannelCreated:    s.onChannelCreated,
			OnChannelDeleted:    s.onChannelDeleted,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("start turn server: %w", err)
	}
	s.wg.Add(1)
	go s.expiryLoop()
	return s, nil
}

// buildState turns the reloadable part of cfg into a state.
func (s *Server) buildState(cfg config.Config, gen uint64) (*state, error) {
	peers, err := peerpolicy.New(cfg.Relay.Peers, s.self)
	if err != nil {
		return nil, err
	}
	st := &state{
		gen:          gen,
		secrets:      auth.NewSecrets(cfg.Auth.Secrets),
		userKeys:     map[string][]byte{},
		policy:       auth.Policy{MaxTTL: cfg.Auth.MaxTTL, ClockSkew: cfg.Auth.ClockSkew},
		strictExpiry: cfg.Auth.StrictExpiry,
		peers:        peers,
		quotaPerUser: cfg.Relay.Quota.PerUser,
		quotaTotal:   cfg.Relay.Quota.Total,
		quotaAccount: cfg.Relay.Quota.PerAccount,
		pendingPerIP: cfg.Relay.Limits.PendingPerIP,
		bandwidth:    cfg.Relay.Quota.Bandwidth,
	}
	for _, u := range cfg.Auth.Users {
		st.userKeys[u.Name] = turn.GenerateAuthKey(u.Name, cfg.Realm, u.Password)
	}
	return st, nil
}

func (s *Server) setState(st *state) {
	s.state.Store(st)
	s.multiSecret.Store(st.secrets.Len() > 1)
}

// Reload applies the reloadable settings of cfg — secrets, static users,
// strict expiry, peer policy, quotas — without touching live allocations.
// It returns the changed settings that need a restart to take effect. On an
// error nothing changes.
func (s *Server) Reload(old, cfg config.Config) (needRestart []string, err error) {
	st, err := s.buildState(cfg, s.state.Load().gen+1)
	if err != nil {
		return nil, err
	}
	s.setState(st)
	return RestartNeeded(old, cfg), nil
}

// RestartNeeded lists the changed settings a running relay cannot apply.
func RestartNeeded(old, cfg config.Config) []string {
	var out []string
	diff := func(name string, changed bool) {
		if changed {
			out = append(out, name)
		}
	}
	diff("realm", old.Realm != cfg.Realm)
	diff("listen.udp", fmt.Sprint(old.Listen.UDP) != fmt.Sprint(cfg.Listen.UDP))
	diff("listen.tcp", fmt.Sprint(old.Listen.TCP) != fmt.Sprint(cfg.Listen.TCP))
	diff("listen.tls", fmt.Sprint(old.Listen.TLS) != fmt.Sprint(cfg.Listen.TLS))
	diff("tls.cert/key paths", old.TLS.Cert != cfg.TLS.Cert || old.TLS.Key != cfg.TLS.Key)
	diff("tls.acme", fmt.Sprint(old.TLS.ACME) != fmt.Sprint(cfg.TLS.ACME))
	diff("relay.public_ip", old.Relay.PublicIP != cfg.Relay.PublicIP)
	diff("relay.bind_ip", old.Relay.BindIP != cfg.Relay.BindIP)
	diff("relay.ports", old.Relay.Ports != cfg.Relay.Ports)
	diff("relay.udp_sockets", old.Relay.UDPSockets != cfg.Relay.UDPSockets)
	diff("relay.enabled", old.Relay.Enabled != cfg.Relay.Enabled)
	return out
}

// Addrs returns the bound listener addresses.
func (s *Server) Addrs() Addrs { return s.addrs }

// PublicIP is the advertised relay address.
func (s *Server) PublicIP() net.IP { return s.publicIP }

// AllocationCount is the number of live allocations.
func (s *Server) AllocationCount() int { return s.turn.AllocationCount() }

// Drain stops taking new allocations (they get 486) and waits until the live
// ones end or ctx is done.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for s.AllocationCount() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close closes every listener and allocation.
func (s *Server) Close() error {
	s.closed.Do(func() {
		close(s.stop)
		s.wg.Wait()
		var errs []error
		s.endStreams(2 * time.Second)
		if s.turn != nil {
			// pion closes the sockets we handed it; ours wrap them.
			_ = s.turn.Close()
		}
		for _, c := range s.closers {
			if err := c(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		// Relay sockets of allocations pion has not torn down yet.
		s.relaysMu.Lock()
		var rest []*relayConn
		for _, rc := range s.relays {
			rest = append(rest, rc)
		}
		s.relaysMu.Unlock()
		for _, rc := range rest {
			_ = rc.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// nextShard spreads relay sockets over the shards.
func (s *Server) nextShard() *shard {
	return s.shards[int(s.shardNext.Add(1))%len(s.shards)]
}

func (s *Server) onAllocationCreated(src, dst net.Addr, _, username, _ string, relayAddr net.Addr, _ int) {
	s.routeClient(src, dst, relayAddr)
	st := s.state.Load()
	a := liveAllocation{username: username, quotaKey: quotaKey(username, st), account: accountKey(username, st),
		relayAddr: addrPort(relayAddr)}
	if _, static := st.userKeys[username]; !static {
		a.expires, _, _ = auth.ParseUsername(username)
	}
	a.session = s.newSession(src, dst, relayAddr)
	s.allocs.add(srcKey(src), a)
	s.metrics.allocationsActive.Inc()
	s.metrics.created(a.session.transport).Inc()
	if s.onCreated != nil {
		s.onCreated(a.report())
	}
	if s.isRevoked(username) { // revoked between authentication and now
		s.closeRelay(a.relayAddr)
	}
}

func (s *Server) onAllocationDeleted(src, _ net.Addr, _, _, _ string) {
	if a, ok := s.allocs.remove(srcKey(src)); ok {
		s.metrics.allocationsActive.Dec()
		if s.onEnded != nil {
			s.onEnded(a.report())
		}
	}
}

// transportOf names a client's transport for the metrics: "udp", "tcp" or
// "tls". pion labels every allocation "UDP", so it is read from the
// client's address and connection instead (see clientStream).
func (s *Server) transportOf(src, dst net.Addr) string {
	if !clientStream(src) {
		return "udp"
	}
	if sc := s.streams.get(addrPort(src), addrPort(dst)); sc != nil && sc.tls {
		return "tls"
	}
	return "tcp"
}

// expiryLoop closes allocations whose credential expired, under
// auth.strict_expiry. Closing the relay socket makes pion delete the
// allocation.
func (s *Server) expiryLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if !s.state.Load().strictExpiry {
			continue
		}
		for _, ra := range s.allocs.expired(s.now()) {
			s.relaysMu.Lock()
			rc := s.relays[ra]
			s.relaysMu.Unlock()
			if rc != nil {
				_ = rc.Close()
				s.metrics.expiredTornDown.Inc()
			}
		}
	}
}

// PublicIP picks the advertised relay address: relay.public_ip, else a
// specific bind_ip, else the host's first global unicast IPv4, else loopback.
func PublicIP(r config.Relay) (netip.Addr, error) {
	if r.PublicIP != "" {
		return netip.ParseAddr(r.PublicIP)
	}
	if b, err := netip.ParseAddr(r.BindIP); err == nil && !b.IsUnspecified() {
		return b, nil
	}
	for _, ip := range hostIPs(netip.Addr{}) {
		if ip.Is4() && ip.IsGlobalUnicast() && !ip.IsLoopback() {
			return ip, nil
		}
	}
	return netip.MustParseAddr("127.0.0.1"), nil
}

// hostIPs lists this host's interface addresses plus extra.
func hostIPs(extra netip.Addr) []netip.Addr {
	var out []netip.Addr
	if extra.IsValid() {
		out = append(out, extra)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if pn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(pn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// addrPort converts a with IPv4 in its 4-byte form, as the data path sees
// addresses.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	case *net.TCPAddr:
		ap = v.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
