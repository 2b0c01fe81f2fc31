// Package server wires a validated configuration into a running traverse:
// the relay, the issuer with its store, and the metrics listener, with
// reload (SIGHUP) and drain (SIGTERM). cmd/traverse and the end-to-end tests
// both start traverse through it.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/certs"
	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/fleet"
	"github.com/traverse/traverse/internal/procscale"
	"github.com/traverse/traverse/publicip"
	"github.com/traverse/traverse/relay"
)

// Options are what New needs beyond the config.
type Options struct {
	Config config.Config
	Log    *zap.Logger
	// Level, when set, follows log.level on reload.
	Level *zap.AtomicLevel
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CertTimings, when set, overrides the certificate poll, ACME retry and
	// renewal-check intervals (tests); its other fields are ignored.
	CertTimings certs.Options
	// STUNTimeout bounds relay.public_ip: auto detection; 0 means 5s.
	STUNTimeout time.Duration
}

// Server is a running traverse process.
type Server struct {
	log   *zap.Logger
	level *zap.AtomicLevel
	reg   *prometheus.Registry
	now   func() time.Time

	mu  sync.Mutex // guards cfg across reloads, and uris
	cfg config.Config
	// uris memoizes ICEURIs (the issuer asks on every token) until a reload.
	uris []string

	certs *certs.Manager
	// ipSource names the STUN servers that gave relay.public_ip: auto.
	ipSource    atomic.Pointer[string]
	stunTimeout time.Duration
	secrets     atomic.Pointer[auth.Secrets]
	relay       *relay.Server
	issuer      *issuerPart
	fleet       *fleetPart // nil when this process neither issues nor joins a fleet
	fps         atomic.Pointer[[]string]
	usage       *usagePart // nil without a store or relay

	metricsLn  net.Listener
	metricsSrv *http.Server
	ready      atomic.Bool
	serveErr   chan error
	closeOnce  sync.Once
}

// New binds every listener and opens the store; a port already taken or a
// bad certificate fails here, before anything serves.
func New(ctx context.Context, opts Options) (_ *Server, err error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		log:      opts.Log,
		level:    opts.Level,
		reg:      prometheus.NewRegistry(),
		now:      opts.Now,
		cfg:      cfg,
		serveErr: make(chan error, 4),

		stunTimeout: opts.STUNTimeout,
	}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.secrets.Store(auth.NewSecrets(cfg.Auth.Secrets))
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()

	if cfg.TLS.Enabled() {
		co := opts.CertTimings
		co.TLS, co.DataDir, co.Log = cfg.TLS, cfg.DataDir, s.log.Named("certs")
		if s.certs, err = certs.New(co); err != nil {
			return nil, err
		}
		s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "traverse_tls_certificate_expiry_timestamp_seconds",
			Help: "End of the served TLS certificate's validity (Unix time); 0 while there is none.",
		}, func() float64 {
			if t := s.certs.NotAfter(); !t.IsZero() {
				return float64(t.Unix())
			}
			return 0
		}))
	}
	if cfg.Relay.Enabled && cfg.Relay.PublicIP == config.PublicIPAuto {
		if cfg.Relay.PublicIP, err = s.detectPublicIP(ctx, cfg.Relay); err != nil {
			return nil, err
		}
		s.cfg = cfg // the running config holds the address, so a reload sees a change
	}

	var admin []netip.AddrPort
	if cfg.Metrics.Listen != "" {
		if s.metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return nil, fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
		admin = append(admin, s.metricsLn.Addr().(*net.TCPAddr).AddrPort())
	}
	if cfg.Issuer.Enabled {
		if s.issuer, err = newIssuerPart(ctx, s, cfg); err != nil {
			return nil, err
		}
		admin = append(admin, s.issuer.ln.Addr().(*net.TCPAddr).AddrPort())
	}
	if cfg.Relay.Enabled {
		if s.usage, err = newUsagePart(ctx, s, cfg); err != nil {
			return nil, err
		}
		ro := relay.Options{
			Config:     cfg,
			Log:        s.log.Named("relay"),
			Registerer: s.reg,
			AdminAddrs: admin,
			Now:        s.now,
		}
		if s.certs != nil {
			ro.TLS = tlsConfig(s.certs)
		}
		if s.usage != nil {
			ro.OnAllocationCreated, ro.OnAllocationEnded = s.usage.meter.Created, s.usage.meter.Ended
		}
		if s.relay, err = relay.New(ro); err != nil {
			return nil, err
		}
		if s.usage != nil {
			s.usage.start(s, s.relay, cfg)
		}
	}
	if s.certs != nil {
		// After the relay has bound its TLS listeners: ACME answers
		// TLS-ALPN-01 on one of them.
		alpn := ""
		if s.relay != nil {
			alpn = alpnAddr(s.relay.Addrs().TLS)
		}
		s.certs.Start(alpn)
	}
	if err := s.startRegistry(ctx, cfg); err != nil {
		return nil, err
	}
	if s.fleet != nil && s.fleet.view != nil {
		// The first read, so the first token already sees the fleet.
		if err := s.fleet.view.Refresh(ctx); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
	}
	return s, nil
}

// Serve runs until ctx is done or a listener fails, then shuts down: it
// fails /readyz, drains allocations for relay.drain_timeout and closes.
func (s *Server) Serve(ctx context.Context) error {
	if s.metricsLn != nil {
		s.metricsSrv = &http.Server{Handler: s.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { s.serveErr <- serveHTTP(s.metricsSrv, s.metricsLn, nil) }()
	}
	if s.issuer != nil {
		go func() { s.serveErr <- s.issuer.serve() }()
	}
	if s.fleet != nil {
		s.fleet.run()
	}
	if s.relay != nil && s.cfg.Relay.AdaptiveProcs {
		if procscale.Pinned() {
			s.log.Info("relay.adaptive_procs left off: the GOMAXPROCS environment variable is set")
		} else {
			pctx, stop := context.WithCancel(ctx)
			defer stop()
			go procscale.Run(pctx, procscale.Options{Registerer: s.reg})
		}
	}
	s.ready.Store(true)
	s.logStarted()

	var err error
	select {
	case <-ctx.Done():
	case err = <-s.serveErr:
		s.log.Error("listener failed", zap.Error(err))
	}
	s.Shutdown(context.Background())
	return err
}

func serveHTTP(srv *http.Server, ln net.Listener, certs *certs.Manager) error {
	var err error
	if certs != nil {
		srv.TLSConfig = tlsConfig(certs)
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops taking new allocations, waits up to relay.drain_timeout
// (or until ctx is done) for the live ones, then closes everything.
func (s *Server) Shutdown(ctx context.Context) {
	s.ready.Store(false)
	// Refuse first: marking the node draining in a fleet's store may take
	// seconds, and an allocation granted meanwhile would hold up the drain.
	if s.relay != nil {
		s.relay.StopAllocating()
	}
	if s.fleet != nil {
		s.fleet.drain(s.log)
	}
	s.mu.Lock()
	drain := s.cfg.Relay.DrainTimeout
	s.mu.Unlock()
	if s.relay != nil && drain > 0 {
		if n := s.relay.AllocationCount(); n > 0 {
			s.log.Info("draining", zap.Int("allocations", n), zap.Duration("timeout", drain))
		}
		dctx, cancel := context.WithTimeout(ctx, drain)
		s.relay.Drain(dctx)
		cancel()
	}
	s.closeAll()
}

func (s *Server) closeAll() {
	s.closeOnce.Do(func() {
		// A fresh context: the caller's may already be cancelled.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Usage first: sample the live allocations, close the relay, flush
		// to the store before the issuer closes it.
		if s.usage != nil {
			s.usage.beforeRelayClose()
			if s.relay != nil {
				_ = s.relay.Close()
			}
			if err := s.usage.close(ctx); err != nil {
				s.log.Error("usage not flushed at shutdown", zap.Error(err))
			}
		}
		if s.fleet != nil {
			s.fleet.close()
		}
		if s.issuer != nil {
			s.issuer.close(ctx)
		}
		if s.metricsSrv != nil {
			_ = s.metricsSrv.Shutdown(ctx)
		} else if s.metricsLn != nil {
			_ = s.metricsLn.Close()
		}
		if s.relay != nil {
			_ = s.relay.Close()
		}
		if s.certs != nil {
			s.certs.Close()
		}
		s.log.Info("stopped")
	})
}

// Reload applies cfg's reloadable settings — secrets, static users,
// certificates, peer policy, quotas, issuer.cors_origins, log level — and keeps the running config
// when cfg is invalid. It logs and returns the changed settings that need a
// restart.
func (s *Server) Reload(cfg config.Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cfg
	if cfg.TLS.Enabled() && s.certs != nil {
		if err := s.certs.Reload(cfg.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.Relay.PublicIP == config.PublicIPAuto {
		ip, err := s.detectPublicIP(context.Background(), cfg.Relay)
		if err != nil {
			return nil, err
		}
		cfg.Relay.PublicIP = ip
	}
	var restart []string
	if s.relay != nil {
		r, err := s.relay.Reload(old, cfg)
		if err != nil {
			return nil, err
		}
		restart = r
	} else {
		restart = relay.RestartNeeded(old, cfg)
	}
	restart = append(restart, issuerRestartNeeded(old, cfg)...)
	s.secrets.Store(auth.NewSecrets(cfg.Auth.Secrets))
	if s.issuer != nil {
		s.issuer.svc.SetCORSOrigins(cfg.Issuer.CORSOrigins)
	}
	if s.fleet != nil {
		s.setFingerprints(fleet.Fingerprints(s.fleet.storeKey, cfg.Auth.Secrets))
	}
	if s.level != nil {
		if lvl, err := zap.ParseAtomicLevel(cfg.Log.Level); err == nil {
			s.level.SetLevel(lvl.Level())
		}
	}
	s.cfg = cfg
	s.uris = nil
	s.log.Info("config reloaded", zap.Strings("restart_needed", restart))
	if !old.Relay.Peers.AllowLoopback {
		s.warnLoopbackPeers(cfg)
	}
	return restart, nil
}

// Relay is the running relay, or nil when relay.enabled is false.
func (s *Server) Relay() *relay.Server { return s.relay }

// MetricsAddr is the bound metrics address, or nil.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// Registry is the process's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

func (s *Server) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if why := s.notReady(); len(why) > 0 {
			http.Error(w, "not ready: "+strings.Join(why, "; "), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// notReady names each thing that keeps a part of the server from serving,
// for /readyz: a listener that stopped, a certificate ACME has not obtained
// yet (UDP and TCP serve meanwhile), a draining node, a secret missing from
// this node's ring.
func (s *Server) notReady() []string {
	var why []string
	if s.relay != nil {
		if stopped := s.relay.StoppedListeners(); len(stopped) > 0 {
			why = append(why, "listener stopped: "+strings.Join(stopped, "; "))
		}
	}
	if s.certs != nil {
		if m := s.certs.Missing(); m != "" {
			why = append(why, m)
		}
	}
	return append(why, s.fleetNotReady()...)
}

// logStarted writes the one start-up line with every listener, the
// advertised relay address and the port range.
func (s *Server) logStarted() {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	fields := []zap.Field{}
	if s.relay != nil {
		a := s.relay.Addrs()
		fields = append(fields,
			zap.Stringers("udp", a.UDP), zap.Stringers("tcp", a.TCP), zap.Stringers("tls", a.TLS),
			zap.Stringer("relay_ip", s.relay.PublicIP()),
			zap.String("relay_ip_source", s.publicIPSource(cfg.Relay)),
			zap.String("relay_ports", strconv.Itoa(cfg.Relay.Ports.Min)+"-"+strconv.Itoa(cfg.Relay.Ports.Max)))
	}
	if s.issuer != nil {
		fields = append(fields, zap.Stringer("issuer", s.issuer.ln.Addr()))
	}
	if s.metricsLn != nil {
		fields = append(fields, zap.Stringer("metrics", s.metricsLn.Addr()))
	}
	s.log.Info("traverse started", fields...)
	if s.relay != nil && s.certs == nil && len(cfg.Listen.TLS) > 0 {
		s.log.Info("tls listeners off: set tls.cert and tls.key (or tls.acme) to serve turns: on " + fmt.Sprint(cfg.Listen.TLS))
	}
	s.warnLoopbackPeers(cfg)
	if s.relay != nil && cfg.Relay.PublicIP == "" && cfg.Relay.BindIP == "0.0.0.0" {
		s.log.Info("relay.public_ip not set: advertising " + s.relay.PublicIP().String() + "; set it when behind NAT")
	}
}

// warnLoopbackPeers warns when relay.peers.allow_loopback is on while other
// hosts can reach a TURN listener: any of their clients holding a credential
// could then relay into this host's loopback services. Only an explicit
// relay.peers.allow_loopback gets here (--dev turns it on only when every
// listener is on loopback).
func (s *Server) warnLoopbackPeers(cfg config.Config) {
	if s.relay == nil || !cfg.Relay.Peers.AllowLoopback {
		return
	}
	if exposed := cfg.ExposedListeners(); len(exposed) > 0 {
		s.log.Warn("relay.peers.allow_loopback is on while a listener is not on loopback: "+
			"clients from other hosts may relay into this host's loopback services",
			zap.Strings("listeners", exposed))
	}
}

// ICEURIs are this node's own STUN/TURN URIs: issuer.ice_servers when set,
// else derived from issuer.public_host (default: the relay's advertised IP)
// and the first listener of each kind. Credentials list them when an
// override is set or the fleet offers no node (see relayURIs).
// The result is shared: callers must not modify it.
func (s *Server) ICEURIs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uris == nil {
		s.uris = s.iceURIs(s.cfg)
	}
	return s.uris
}

func (s *Server) iceURIs(cfg config.Config) []string {
	if len(cfg.Issuer.ICEServers) > 0 {
		return cfg.Issuer.ICEServers
	}
	host := cfg.Issuer.PublicHost
	if host == "" && cfg.TLS.ACME.Enabled() {
		host = cfg.TLS.ACME.Domains[0] // the name on the certificate
	}
	if host == "" && s.relay != nil {
		host = s.relay.PublicIP().String()
	}
	if host == "" {
		host = cfg.Relay.PublicIP
	}
	udp, tcp, tlsPort := firstPort(cfg.Listen.UDP), firstPort(cfg.Listen.TCP), 0
	if cfg.TLS.Enabled() {
		tlsPort = preferredTLSPort(cfg.Listen.TLS)
	}
	if s.relay != nil { // bound ports, which differ from config when it asks for :0
		a := s.relay.Addrs()
		udp, tcp, tlsPort = boundPort(a.UDP), boundPort(a.TCP), preferredTLSPort(addrStrings(a.TLS))
	}
	return iceURIs(host, udp, tcp, tlsPort)
}

func firstPort(addrs []string) int {
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil {
			n, _ := strconv.Atoi(p)
			return n
		}
	}
	return 0
}

// preferredTLSPort is 443 when listened on (what firewalls open), else the first.
func preferredTLSPort(addrs []string) int {
	for _, a := range addrs {
		if _, p, err := net.SplitHostPort(a); err == nil && p == "443" {
			return 443
		}
	}
	return firstPort(addrs)
}

// alpnAddr is the TLS listener that answers TLS-ALPN-01: the one on 443
// (where a CA connects) when bound, else the first.
func alpnAddr(addrs []net.Addr) string {
	p := preferredTLSPort(addrStrings(addrs))
	for _, a := range addrs {
		if boundPort([]net.Addr{a}) == p {
			return a.String()
		}
	}
	return ""
}

func boundPort(addrs []net.Addr) int {
	if len(addrs) == 0 {
		return 0
	}
	return firstPort([]string{addrs[0].String()})
}

func addrStrings(addrs []net.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// ConfigURIs are the ICE URIs for cfg without a running server (for the
// credentials command): configured ports, and the advertised relay address.
func ConfigURIs(cfg config.Config) []string {
	if len(cfg.Issuer.ICEServers) > 0 {
		return cfg.Issuer.ICEServers
	}
	host := cfg.Issuer.PublicHost
	if host == "" && cfg.TLS.ACME.Enabled() {
		host = cfg.TLS.ACME.Domains[0]
	}
	if host == "" && cfg.Relay.PublicIP == config.PublicIPAuto {
		// What the running server advertises; else the host's own address.
		ip, _, err := publicip.Detect(context.Background(), cfg.Relay.BindIP, cfg.Relay.PublicIPSTUN, 0)
		cfg.Relay.PublicIP = ""
		if err == nil {
			host = ip.String()
		}
	}
	if host == "" {
		if ip, err := relay.PublicIP(cfg.Relay); err == nil {
			host = ip.String()
		}
	}
	tlsPort := 0
	if cfg.TLS.Enabled() {
		tlsPort = preferredTLSPort(cfg.Listen.TLS)
	}
	return iceURIs(host, firstPort(cfg.Listen.UDP), firstPort(cfg.Listen.TCP), tlsPort)
}
