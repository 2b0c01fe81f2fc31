package server

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/fleet"
	"github.com/traverse/traverse/store"
)

// fleetPart is this process in the fleet: the registry row it keeps when it
// runs a relay, and the view its issuer chooses relays from. Both run on
// the issuer's store, or on one of their own for a relay-only node with
// store.dsn set.
type fleetPart struct {
	s         *Server
	store     store.Store
	ownsStore bool
	storeKey  []byte
	registry  *fleet.Registry // nil without a relay
	view      *fleet.View     // nil without an issuer

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newFleetView builds the issuer's view of the fleet on st.
func newFleetView(s *Server, cfg config.Config, st store.Store) (*fleetPart, error) {
	key, err := store.LoadOrCreateKey(cfg.DataDir, cfg.Store.EncryptionKey)
	if err != nil {
		return nil, err
	}
	f := &fleetPart{s: s, store: st, storeKey: key}
	s.setFingerprints(fleet.Fingerprints(key, cfg.Auth.Secrets))
	var regions []fleet.RegionPrefix
	for cidr, region := range cfg.Issuer.RegionByCIDR {
		p, err := config.ParsePrefix(cidr) // checked by Validate
		if err != nil {
			return nil, err
		}
		regions = append(regions, fleet.RegionPrefix{Prefix: p, Region: region})
	}
	f.view, err = fleet.NewView(fleet.ViewOptions{
		Store:        st,
		Heartbeat:    cfg.Node.Heartbeat,
		PerToken:     cfg.Issuer.RelaysPerToken,
		Regions:      fleet.NewRegions(regions),
		OwnRegion:    cfg.Node.Region,
		Fingerprints: s.fingerprints,
		Log:          s.log.Named("fleet"),
		Registerer:   s.reg,
		Now:          s.now,
	})
	return f, err
}

// startRegistry registers this node (its relay must be bound). A relay
// without an issuer joins a fleet only with store.dsn set: it opens the
// store itself.
func (s *Server) startRegistry(ctx context.Context, cfg config.Config) error {
	if s.relay == nil {
		return nil
	}
	if s.fleet == nil {
		if cfg.Store.DSN == "" {
			return nil // a lone relay on SQLite has no fleet to join
		}
		st, err := store.OpenConfigured(ctx, cfg.DataDir, cfg.Store.DSN, cfg.Store.EncryptionKey)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		key, err := store.LoadOrCreateKey(cfg.DataDir, cfg.Store.EncryptionKey)
		if err != nil {
			_ = st.Close()
			return err
		}
		s.fleet = &fleetPart{s: s, store: st, ownsStore: true, storeKey: key}
		s.setFingerprints(fleet.Fingerprints(key, cfg.Auth.Secrets))
	}
	id, err := fleet.LoadOrCreateID(cfg.DataDir)
	if err != nil {
		return err
	}
	r, err := fleet.NewRegistry(fleet.RegistryOptions{
		Store:        s.fleet.store,
		ID:           id,
		Describe:     s.describeNode,
		BytesRelayed: s.bytesRelayed,
		Heartbeat:    cfg.Node.Heartbeat,
		Log:          s.log.Named("fleet").With(zap.String("node", id)),
		Now:          s.now,
	})
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return fmt.Errorf("fleet: register node %s: %w", id, err)
	}
	s.fleet.registry = r
	return nil
}

// describeNode is what this node says about itself at each heartbeat.
func (s *Server) describeNode() store.Node {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	host := cfg.Node.PublicHost
	if host == "" {
		host = s.relay.PublicIP().String()
	}
	a := s.relay.Addrs()
	return store.Node{
		PublicHost:         host,
		URIs:               iceURIs(host, boundPort(a.UDP), boundPort(a.TCP), preferredTLSPort(addrStrings(a.TLS))),
		Region:             cfg.Node.Region,
		Weight:             cfg.Node.Weight,
		Allocations:        s.relay.AllocationCount(),
		SecretFingerprints: s.fingerprints(),
	}
}

// bytesRelayed sums traverse_relay_bytes_total (both directions).
func (s *Server) bytesRelayed() uint64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "traverse_relay_bytes_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return uint64(sum)
}

func (s *Server) setFingerprints(fps []string) { s.fps.Store(&fps) }

// fingerprints identify this process's auth.secrets (fleet.Fingerprints).
func (s *Server) fingerprints() []string {
	if p := s.fps.Load(); p != nil {
		return *p
	}
	return nil
}

// run starts the heartbeat and the view's refresh.
func (f *fleetPart) run() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	if f.registry != nil {
		f.wg.Add(1)
		go func() { defer f.wg.Done(); f.registry.Run(ctx) }()
	}
	if f.view != nil {
		f.wg.Add(1)
		go func() { defer f.wg.Done(); f.view.Run(ctx) }()
	}
}

// drain marks this node draining in the store, so no issuer hands it out.
func (f *fleetPart) drain(log *zap.Logger) {
	if f.registry == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.registry.Drain(ctx); err != nil {
		log.Error("fleet: could not mark this node draining; issuers drop it after three missed heartbeats", zap.Error(err))
		return
	}
	log.Info("fleet: node marked draining", zap.String("node", f.registry.ID()))
}

// close stops the loops and closes a store of its own.
func (f *fleetPart) close() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	if f.ownsStore {
		_ = f.store.Close()
	}
}

// relayURIs are the URIs a credential for client lists: the fixed
// issuer.ice_servers or issuer.public_host when set; else the URIs of the
// nodes the fleet view chooses; else, when no node qualifies (or the view
// is empty), this node's own, so ice_servers is never empty.
func (s *Server) relayURIs(client netip.Addr) []string {
	s.mu.Lock()
	fixed := len(s.cfg.Issuer.ICEServers) > 0 || s.cfg.Issuer.PublicHost != ""
	s.mu.Unlock()
	if fixed || s.fleet == nil || s.fleet.view == nil {
		return s.ICEURIs()
	}
	nodes := s.fleet.view.Choose(client)
	switch len(nodes) {
	case 0:
		return s.ICEURIs()
	case 1:
		return nodes[0].URIs
	}
	var out []string
	for _, n := range nodes {
		out = append(out, n.URIs...)
	}
	return out
}

// FleetNodes lists the fleet as this process last read it, with each node's
// status (serving, draining, down), region, load and last heartbeat: the
// read API for the console. Nil without an issuer.
func (s *Server) FleetNodes() []fleet.NodeInfo {
	if s.fleet == nil || s.fleet.view == nil {
		return nil
	}
	return s.fleet.view.Nodes()
}

// NodeID is this node's fleet ID, or "" when it does not register.
func (s *Server) NodeID() string {
	if s.fleet == nil || s.fleet.registry == nil {
		return ""
	}
	return s.fleet.registry.ID()
}

// fleetNotReady lists the fleet's reasons for /readyz to fail: this node drained,
// or its secret ring lacking a secret another node mints with.
func (s *Server) fleetNotReady() []string {
	if s.fleet == nil {
		return nil
	}
	var out []string
	if r := s.fleet.registry; r != nil && r.State() == store.NodeDraining {
		out = append(out, "node "+r.ID()+" is draining")
	}
	if v := s.fleet.view; v != nil {
		out = append(out, v.RingProblems()...)
	}
	return out
}
