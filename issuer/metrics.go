package issuer

import "github.com/prometheus/client_golang/prometheus"

// metrics are the issuer's Prometheus metrics.
type metrics struct {
	tokensIssued prometheus.Counter
	authFailures *prometheus.CounterVec
	requests     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_issuer_tokens_issued_total",
			Help: "Network Traversal Service tokens (TURN credentials) issued.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_issuer_auth_failures_total",
			Help: "Failed authentications by reason: missing, unknown_sid, wrong_secret, suspended, rate_limited.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_issuer_requests_total",
			Help: "HTTP requests to the issuer by route and status code.",
		}, []string{"route", "code"}),
	}
	// Pre-create the label values so dashboards show zeros.
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.tokensIssued, m.authFailures, m.requests} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
