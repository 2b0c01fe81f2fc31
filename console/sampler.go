package console

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The series the charts draw, read from the same registry as /metrics.
const (
	metricAllocations = "traverse_relay_allocations_active"
	metricCreated     = "traverse_relay_allocations_created_total"
	metricBytes       = "traverse_relay_bytes_total"          // direction
	metricRelayAuth   = "traverse_relay_auth_total"           // result
	metricIssuerAuth  = "traverse_issuer_auth_failures_total" // reason
	metricPeerDenied  = "traverse_relay_peer_denied_total"    // reason
)

// point is one sample: gauges and counters as read (counters cumulative).
type point struct {
	t           time.Time
	allocations float64
	created     float64
	toPeer      float64 // bytes
	fromPeer    float64
	authRefused map[string]float64 // "turn bad_password", "api wrong_secret", ...
	peerDenied  map[string]float64 // reason
}

// sampler reads the registry every interval into a ring holding window.
type sampler struct {
	g     prometheus.Gatherer
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	ring []point
	head int // next slot to write
	n    int
}

func newSampler(g prometheus.Gatherer, every, window time.Duration, now func() time.Time) *sampler {
	size := int(window/every) + 1
	return &sampler{g: g, every: every, now: now, ring: make([]point, size)}
}

func (s *sampler) run(ctx context.Context) {
	if s.g == nil {
		return
	}
	s.sample()
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample()
		}
	}
}

// sample gathers once and appends a point. A gather error keeps what could
// be read (Gather returns the families it could collect).
func (s *sampler) sample() {
	fams, _ := s.g.Gather()
	p := point{t: s.now(), authRefused: map[string]float64{}, peerDenied: map[string]float64{}}
	for _, f := range fams {
		switch f.GetName() {
		case metricAllocations:
			p.allocations = sum(f, "", "")
		case metricCreated:
			p.created = sum(f, "", "")
		case metricBytes:
			p.toPeer, p.fromPeer = sum(f, "direction", "to_peer"), sum(f, "direction", "from_peer")
		case metricRelayAuth:
			for _, m := range f.GetMetric() {
				if r := label(m, "result"); r != "ok" {
					p.authRefused["turn "+r] += value(m)
				}
			}
		case metricIssuerAuth:
			for _, m := range f.GetMetric() {
				p.authRefused["api "+label(m, "reason")] += value(m)
			}
		case metricPeerDenied:
			for _, m := range f.GetMetric() {
				p.peerDenied[label(m, "reason")] += value(m)
			}
		}
	}
	s.mu.Lock()
	s.ring[s.head] = p
	s.head = (s.head + 1) % len(s.ring)
	s.n = min(s.n+1, len(s.ring))
	s.mu.Unlock()
}

// points returns the samples, oldest first.
func (s *sampler) points() []point {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]point, 0, s.n)
	start := (s.head - s.n + len(s.ring)) % len(s.ring)
	for i := range s.n {
		out = append(out, s.ring[(start+i)%len(s.ring)])
	}
	return out
}

// sum adds the values of f's series, those whose label name is value when
// name is set.
func sum(f *dto.MetricFamily, name, want string) float64 {
	var total float64
	for _, m := range f.GetMetric() {
		if name == "" || label(m, name) == want {
			total += value(m)
		}
	}
	return total
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// chartData is the JSON the charts draw: x in Unix seconds, then one array
// per series, null where a rate has no previous sample.
type chartData struct {
	Interval    float64               `json:"interval"`
	T           []int64               `json:"t"`
	Allocations []float64             `json:"allocations"`
	ToPeerBits  []*float64            `json:"to_peer_bps"`
	FromPeer    []*float64            `json:"from_peer_bps"`
	Created     []*float64            `json:"allocations_per_s"`
	AuthRefused map[string][]*float64 `json:"auth_refusals_per_s"`
	PeerDenied  map[string][]*float64 `json:"peer_denials_per_s"`
}

// chart turns the samples into rates. A counter that went down (a restart
// of the counter) gives 0 for that step, not a negative rate.
func chart(pts []point, every time.Duration) chartData {
	d := chartData{
		Interval: every.Seconds(), T: make([]int64, len(pts)), Allocations: make([]float64, len(pts)),
		ToPeerBits: make([]*float64, len(pts)), FromPeer: make([]*float64, len(pts)), Created: make([]*float64, len(pts)),
		AuthRefused: map[string][]*float64{}, PeerDenied: map[string][]*float64{},
	}
	for _, p := range pts {
		for k := range p.authRefused {
			if d.AuthRefused[k] == nil {
				d.AuthRefused[k] = make([]*float64, len(pts))
			}
		}
		for k := range p.peerDenied {
			if d.PeerDenied[k] == nil {
				d.PeerDenied[k] = make([]*float64, len(pts))
			}
		}
	}
	for i, p := range pts {
		d.T[i] = p.t.Unix()
		d.Allocations[i] = p.allocations
		if i == 0 {
			continue
		}
		prev := pts[i-1]
		dt := p.t.Sub(prev.t).Seconds()
		if dt <= 0 {
			continue
		}
		rate := func(now, before float64) *float64 {
			r := max(now-before, 0) / dt
			return &r
		}
		d.ToPeerBits[i] = rate(8*p.toPeer, 8*prev.toPeer)
		d.FromPeer[i] = rate(8*p.fromPeer, 8*prev.fromPeer)
		d.Created[i] = rate(p.created, prev.created)
		for k, s := range d.AuthRefused {
			s[i] = rate(p.authRefused[k], prev.authRefused[k])
		}
		for k, s := range d.PeerDenied {
			s[i] = rate(p.peerDenied[k], prev.peerDenied[k])
		}
	}
	return d
}
