package issuer

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the issuer's Prometheus metrics.
type metrics struct {
	tokensIssued     prometheus.Counter
	iceServersIssued *prometheus.CounterVec
	authFailures     *prometheus.CounterVec
	requests         *prometheus.CounterVec
	mintRateLimited  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_issuer_tokens_issued_total",
			Help: "Network Traversal Service tokens (TURN credentials) issued.",
		}),
		iceServersIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_issuer_ice_servers_issued_total",
			Help: "TURN credentials issued by POST /v1/ice-servers, by the kind of token presented: access, capability.",
		}, []string{"token"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_issuer_auth_failures_total",
			Help: "Failed authentications by reason: missing, unknown_sid, wrong_secret, suspended, rate_limited, token_malformed, token_expired, token_not_yet_valid, token_too_long.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_issuer_requests_total",
			Help: "HTTP requests to the issuer by route and status code.",
		}, []string{"route", "code"}),
		mintRateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_issuer_mint_rate_limited_total",
			Help: "Credentials refused (429, code 20429) because their account was over issuer.tokens_per_second and its burst.",
		}),
	}
	// Pre-create the label values so dashboards show zeros.
	for _, r := range append(authReasons, tokenReasons...) {
		m.authFailures.WithLabelValues(r)
	}
	for _, k := range []string{TokenKindAccess, TokenKindCapability} {
		m.iceServersIssued.WithLabelValues(k)
	}
	for _, c := range []prometheus.Collector{m.tokensIssued, m.iceServersIssued, m.authFailures, m.requests, m.mintRateLimited} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// routeCounters are one route's children of traverse_issuer_requests_total,
// looked up once per status code rather than by label values per request.
type routeCounters struct {
	vec    *prometheus.CounterVec
	route  string
	byCode [600]atomic.Pointer[prometheus.Counter]
}

func (m *metrics) routeRequests(route string) *routeCounters {
	return &routeCounters{vec: m.requests, route: route}
}

// inc counts one request answered with code.
func (c *routeCounters) inc(code int) {
	if code < 0 || code >= len(c.byCode) {
		c.vec.WithLabelValues(c.route, strconv.Itoa(code)).Inc()
		return
	}
	p := c.byCode[code].Load()
	if p == nil {
		ctr := c.vec.WithLabelValues(c.route, strconv.Itoa(code))
		p = &ctr
		c.byCode[code].Store(p)
	}
	(*p).Inc()
}
