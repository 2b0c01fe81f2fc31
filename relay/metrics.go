package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/traverse/traverse/relay/peerpolicy"
)

// Auth results, used as the "result" label; pre-created so dashboards show zeros.
const (
	AuthOK            = "ok"
	AuthBadPassword   = "bad_password"
	AuthExpired       = "expired"
	AuthTooFarFuture  = "too_far_future"
	AuthMalformed     = "malformed"
	AuthUnknownUser   = "unknown_user"
	AuthOwnerMismatch = "owner_mismatch"
	AuthWrongRealm    = "wrong_realm"
	AuthRateLimited   = "rate_limited"
	AuthRevoked       = "revoked"
)

var authResults = []string{AuthOK, AuthBadPassword, AuthExpired, AuthTooFarFuture, AuthMalformed,
	AuthUnknownUser, AuthOwnerMismatch, AuthWrongRealm, AuthRateLimited, AuthRevoked}

// metrics are the relay's Prometheus series. No username is ever a label.
type metrics struct {
	allocationsActive   prometheus.Gauge
	allocationsCreated  *prometheus.CounterVec // transport
	permissionsActive   prometheus.Gauge
	channelsActive      prometheus.Gauge
	auth                *prometheus.CounterVec // result
	peerDenied          *prometheus.CounterVec // reason
	quotaRejected       *prometheus.CounterVec // kind
	bytes               *prometheus.CounterVec // direction
	packets             *prometheus.CounterVec // direction
	bandwidthDropped    *prometheus.CounterVec // direction
	expiredTornDown     prometheus.Counter
	killed              *prometheus.CounterVec // reason
	tlsHandshakeFailed  prometheus.Counter
	streamRejected      prometheus.Counter
	streamWriteTimeouts prometheus.Counter
	streamPerIPRejected prometheus.Counter
	streamPressure      prometheus.Counter
	acceptErrors        *prometheus.CounterVec // transport
	listenersStopped    prometheus.Counter
	dropped             *prometheus.CounterVec // reason

	// Hot-path children resolved once.
	bytesToPeer, bytesFromPeer     prometheus.Counter
	packetsToPeer, packetsFromPeer prometheus.Counter
	droppedToPeer, droppedFromPeer prometheus.Counter
	selfDenied                     prometheus.Counter
	createdUDP, createdTCP         prometheus.Counter
	unroutable, sendErrors         prometheus.Counter
	inboxDrops                     prometheus.Counter
	streamQueueFull                prometheus.Counter
	oversized                      prometheus.Counter
	malformed                      prometheus.Counter
	authOK                         prometheus.Counter // once per signed request that passed
}

const (
	dirToPeer   = "to_peer"
	dirFromPeer = "from_peer"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		allocationsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "traverse_relay_allocations_active", Help: "Live TURN allocations."}),
		allocationsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_allocations_created_total", Help: "TURN allocations created, by client transport."},
			[]string{"transport"}),
		permissionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "traverse_relay_permissions_active", Help: "Live TURN permissions."}),
		channelsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "traverse_relay_channels_active", Help: "Live TURN channel bindings."}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_auth_total", Help: "TURN authentication attempts, by result."},
			[]string{"result"}),
		peerDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_peer_denied_total", Help: "Permissions or datagrams refused by the peer policy, by reason."},
			[]string{"reason"}),
		quotaRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_quota_rejections_total", Help: "Allocations refused with 486, by quota."},
			[]string{"quota"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_bytes_total", Help: "Payload bytes relayed, by direction."},
			[]string{"direction"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_packets_total", Help: "Datagrams relayed, by direction."},
			[]string{"direction"}),
		bandwidthDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_bandwidth_dropped_packets_total", Help: "Datagrams dropped by the per-allocation bandwidth cap."},
			[]string{"direction"}),
		expiredTornDown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_relay_expired_allocations_closed_total", Help: "Allocations closed because their credential expired (auth.strict_expiry)."}),
		killed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_allocations_killed_total", Help: "Live allocations torn down by a kill or a revocation, by reason (kill, revoked)."},
			[]string{"reason"}),
		tlsHandshakeFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_relay_tls_handshake_failures_total", Help: "TLS handshakes that failed on TURN-over-TLS listeners."}),
		streamRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_relay_stream_connections_rejected_total", Help: "TCP/TLS connections closed at accept because the listener was full."}),
		streamWriteTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_relay_stream_write_timeouts_total", Help: "TCP/TLS clients closed because they took nothing for relay's write timeout while data waited for them."}),
		streamPerIPRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_relay_stream_pending_per_ip_rejected_total", Help: "TCP/TLS connections closed at accept because their source already held relay.limits.pending_per_ip unauthenticated ones."}),
		streamPressure: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_relay_stream_pressure_accepts_total", Help: "TCP/TLS connections accepted while their listener was over 75% full, given the short unauthenticated timeout."}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_accept_errors_total", Help: "Failed accepts on TCP/TLS listeners (out of descriptors, say), each followed by a backoff and a retry, by transport."},
			[]string{"transport"}),
		listenersStopped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "traverse_relay_listeners_stopped_total", Help: "TCP/TLS listeners that stopped accepting for good; /readyz answers 503 naming them."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traverse_relay_dropped_packets_total",
			Help: "Datagrams not relayed, by reason: no_route (no such allocation, channel or permission), send_error (the socket refused it, e.g. a full send buffer), inbox_full (the control path was behind), stream_queue_full (a TCP or TLS client was too far behind), oversized (a TCP or TLS frame longer than any the relay reads), malformed (a client's message that is not STUN)."},
			[]string{"reason"}),
	}
	for _, r := range authResults {
		m.auth.WithLabelValues(r)
	}
	for _, r := range []string{peerpolicy.DenyBuiltin, peerpolicy.DenyConfig, peerpolicy.DenySelf} {
		m.peerDenied.WithLabelValues(r)
	}
	for _, q := range []string{"per_user", "per_account", "total", "draining"} {
		m.quotaRejected.WithLabelValues(q)
	}
	for _, r := range []string{killKill, killRevoked} {
		m.killed.WithLabelValues(r)
	}
	for _, t := range []string{"udp", "tcp", "tls"} {
		m.allocationsCreated.WithLabelValues(t)
	}
	for _, t := range []string{"tcp", "tls"} {
		m.acceptErrors.WithLabelValues(t)
	}
	m.bytesToPeer, m.bytesFromPeer = m.bytes.WithLabelValues(dirToPeer), m.bytes.WithLabelValues(dirFromPeer)
	m.packetsToPeer, m.packetsFromPeer = m.packets.WithLabelValues(dirToPeer), m.packets.WithLabelValues(dirFromPeer)
	m.droppedToPeer, m.droppedFromPeer = m.bandwidthDropped.WithLabelValues(dirToPeer), m.bandwidthDropped.WithLabelValues(dirFromPeer)
	m.selfDenied = m.peerDenied.WithLabelValues(peerpolicy.DenySelf)
	m.createdUDP, m.createdTCP = m.allocationsCreated.WithLabelValues("udp"), m.allocationsCreated.WithLabelValues("tcp")
	m.authOK = m.auth.WithLabelValues(AuthOK)
	m.unroutable, m.sendErrors, m.inboxDrops = m.dropped.WithLabelValues("no_route"), m.dropped.WithLabelValues("send_error"), m.dropped.WithLabelValues("inbox_full")
	m.streamQueueFull = m.dropped.WithLabelValues("stream_queue_full")
	m.oversized = m.dropped.WithLabelValues("oversized")
	m.malformed = m.dropped.WithLabelValues("malformed")
	if reg != nil {
		reg.MustRegister(m.allocationsActive, m.allocationsCreated, m.permissionsActive, m.channelsActive,
			m.auth, m.peerDenied, m.quotaRejected, m.bytes, m.packets, m.bandwidthDropped,
			m.expiredTornDown, m.killed, m.tlsHandshakeFailed, m.streamRejected, m.streamWriteTimeouts, m.dropped,
			m.streamPerIPRejected, m.streamPressure, m.acceptErrors, m.listenersStopped)
	}
	return m
}

// created is the allocations-created counter of a client transport.
func (m *metrics) created(transport string) prometheus.Counter {
	switch transport {
	case "udp":
		return m.createdUDP
	case "tcp":
		return m.createdTCP
	}
	return m.allocationsCreated.WithLabelValues(transport)
}
