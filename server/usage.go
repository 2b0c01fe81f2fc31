package server

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/fleet"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/relay"
	"github.com/traverse/traverse/store"
	"github.com/traverse/traverse/usage"
)

// usagePart meters the relay into the store and applies the store's
// revocations to it. It runs when the process has both a relay and a store
// (the issuer's, or store.dsn on a relay-only node).
type usagePart struct {
	meter     *usage.Meter
	ownStore  store.Store // opened here when the issuer is off
	stopWatch context.CancelFunc
	watchDone chan struct{}
}

// newUsagePart makes the Meter; startUsage runs it once the relay exists,
// since the relay's hooks call the Meter.
func newUsagePart(ctx context.Context, s *Server, cfg config.Config) (*usagePart, error) {
	var st store.Store
	p := &usagePart{}
	if s.issuer != nil {
		st = s.issuer.store
	} else if cfg.Store.DSN != "" {
		var err error
		if p.ownStore, err = store.OpenConfigured(ctx, cfg.DataDir, cfg.Store.DSN, cfg.Store.EncryptionKey); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		st = p.ownStore
	} else {
		return nil, nil
	}
	p.meter = usage.New(usage.Options{
		Store:          st,
		Node:           usageNode(cfg),
		Region:         cfg.Usage.Region,
		DefaultAccount: cfg.Usage.DefaultAccount,
		FlushInterval:  cfg.Usage.FlushInterval,
		MaxBuffered:    cfg.Usage.MaxBufferedRows,
		Log:            s.log.Named("usage"),
		Registerer:     s.reg,
		Now:            s.now,
	})
	return p, nil
}

// usageNode is usage.node, else the node's fleet ID (kept in data_dir, so
// a restarted node replaces its own published list), else
// "<host name>-<pid>".
func usageNode(cfg config.Config) string {
	if cfg.Usage.Node != "" {
		return cfg.Usage.Node
	}
	if id, err := fleet.LoadOrCreateID(cfg.DataDir); err == nil {
		return id
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "traverse"
	}
	return h + "-" + strconv.Itoa(os.Getpid())
}

// start samples r and watches the revocations for it.
func (p *usagePart) start(s *Server, r *relay.Server, cfg config.Config) {
	p.meter.SetRelay(r)
	p.meter.Start()
	ctx, cancel := context.WithCancel(context.Background())
	p.stopWatch, p.watchDone = cancel, make(chan struct{})
	st := p.store(s)
	go func() {
		defer close(p.watchDone)
		usage.Watch(ctx, st, r, cfg.Usage.RevocationPoll, s.now, s.log.Named("usage"))
	}()
}

func (p *usagePart) store(s *Server) store.Store {
	if p.ownStore != nil {
		return p.ownStore
	}
	return s.issuer.store
}

// beforeRelayClose stops the revocation watch and takes the traffic of the
// allocations still live.
func (p *usagePart) beforeRelayClose() {
	if p.stopWatch != nil {
		p.stopWatch()
		<-p.watchDone
	}
	p.meter.Sample()
}

// close flushes everything (after the relay is closed, before the store is).
func (p *usagePart) close(ctx context.Context) error {
	err := p.meter.Close(ctx)
	if p.ownStore != nil {
		_ = p.ownStore.Close()
	}
	return err
}

// issuerUsageOptions are the issuer's Usage Records and sessions settings.
func issuerUsageOptions(cfg config.Config) issuer.UsageOptions {
	return issuer.UsageOptions{
		PricePerMegabyte: cfg.Usage.PricePerMegabyte,
		PriceUnit:        cfg.Usage.PriceUnit,
		LiveWithin:       issuer.LiveWithin(cfg.Usage.FlushInterval),
	}
}
