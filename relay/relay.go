// Package relay runs traverse's STUN/TURN relay: the listeners (UDP, TCP,
// TLS), the data path that relays media (datapath.go, streamin.go,
// streamout.go), and the control plane that answers TURN's requests and
// keeps the allocations (control.go), with authentication (TURN REST and
// static users, expiry grace, owner binding), the peer policy, quotas and
// metrics. STUN messages are parsed and built with pion/stun; pion/turn
// gives the long-term keys of static users, and its client is what the tests
// drive, but its server is not used (control.go says why).
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
	// Registerer receives the relay's metrics; nil registers none.
	Registerer prometheus.Registerer
	// AdminAddrs are the process's other sockets (issuer, metrics), which
	// peers may never target.
	AdminAddrs []netip.AddrPort
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnAllocationCreated and OnAllocationEnded, when set, hear of every
	// allocation made and ended; Ended carries its final traffic. They are
	// called on the relay's goroutines and must not block.
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
	nonces      *nonceSigner
	guesses     *keyrate.Limiter[netip.Addr] // failed authentications per source
	guessWarn   *keyrate.Limiter[netip.Addr] // one warning a minute per source
	allocs      *allocTable
	revoked     atomic.Pointer[Revoked]
	onCreated   func(Allocation)
	onEnded     func(Allocation)

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

	addrs    Addrs
	closers  []func() error
	stop     chan struct{}
	wg       sync.WaitGroup // expiryLoop
	controls sync.WaitGroup // the UDP listeners' control loops
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
		nonces:    newNonceSigner(),
		guesses:   keyrate.New[netip.Addr](guessRate, guessBurst, guessTableSize),
		guessWarn: keyrate.New[netip.Addr](rate.Every(guessWarnEvery), 1, guessTableSize),
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
	var udpListeners []*udpListener
	var streams []net.Listener // TCP, then TLS
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
			udpListeners = append(udpListeners, ul)
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
		streams = append(streams, l)
	}
	if opts.TLS != nil {
		for _, a := range cfg.Listen.TLS {
			l, err := listenTCP(a)
			if err != nil {
				return nil, err
			}
			s.closers = append(s.closers, l.Close)
			s.addrs.TLS = append(s.addrs.TLS, l.Addr())
			streams = append(streams, l)
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

	s.checkFDLimit(fdNeed(cfg, len(streams), s.maxStreamConns))

	// Serve only now: the state is set.
	for _, ul := range udpListeners {
		s.controls.Add(1)
		go func() {
			defer s.controls.Done()
			ul.serve()
		}()
	}
	tlsStart := len(streams) - len(s.addrs.TLS)
	for i, l := range streams {
		var tc *tls.Config
		if i >= tlsStart {
			tc = turnTLSConfig(opts.TLS)
		}
		sl := newStreamListener(s, l, tc)
		s.closers = append(s.closers, sl.Close)
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
func (s *Server) AllocationCount() int { return s.allocs.len() }

// StopAllocating refuses new allocations from now on (they get 486); live
// ones keep relaying.
func (s *Server) StopAllocating() { s.draining.Store(true) }

// Drain stops taking new allocations and waits until the live ones end or
// ctx is done.
func (s *Server) Drain(ctx context.Context) {
	s.StopAllocating()
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

// Close closes every listener and ends every allocation (OnAllocationEnded
// hears of each).
func (s *Server) Close() error {
	s.closed.Do(func() {
		close(s.stop)
		s.wg.Wait()
		var errs []error
		s.endStreams(2 * time.Second)
		for _, c := range s.closers {
			if err := c(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		s.controls.Wait()
		for _, key := range s.allocs.find(func(*liveAllocation) bool { return true }) {
			s.endAllocation(key, nil)
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// nextShard spreads relay sockets over the shards.
func (s *Server) nextShard() *shard {
	return s.shards[int(s.shardNext.Add(1))%len(s.shards)]
}

// expiryLoop ends, once a second, the allocations, permissions and channels
// whose lifetime ran out, and under auth.strict_expiry the allocations whose
// credential expired.
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
		s.sweepLifetimes(time.Now(), monoNow())
		if !s.state.Load().strictExpiry {
			continue
		}
		now := s.now()
		for _, key := range s.allocs.find(func(a *liveAllocation) bool {
			return !a.expires.IsZero() && !now.Before(a.expires)
		}) {
			if s.endAllocation(key, nil) {
				s.metrics.expiredTornDown.Inc()
			}
		}
	}
}

// sweepLifetimes ends what TURN's lifetimes say has ended by now (wall
// clock, for allocations) and mono (monoNow, for permissions and channels).
func (s *Server) sweepLifetimes(now time.Time, mono int64) {
	ended, live := s.allocs.lifetimes(now)
	for _, key := range ended {
		s.endAllocation(key, nil)
	}
	for _, rc := range live {
		rc.expire(mono)
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
