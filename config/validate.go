package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MinSecretLen is the shortest TURN REST secret accepted.
const MinSecretLen = 16

// Problems is every problem Validate found, each prefixed with its dotted path.
type Problems []string

func (p Problems) Error() string {
	return "invalid config:\n  " + strings.Join(p, "\n  ")
}

// Validate checks cfg without touching the network or the file system and
// returns every problem at once as Problems, or nil.
func (c Config) Validate() error {
	var p Problems
	add := func(path, format string, args ...any) {
		p = append(p, path+": "+fmt.Sprintf(format, args...))
	}

	if c.Realm == "" {
		add("realm", "must not be empty")
	}
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	if !c.Relay.Enabled && !c.Issuer.Enabled {
		add("relay.enabled", "relay and issuer are both disabled: nothing to run")
	}

	for i, a := range c.Listen.UDP {
		checkHostPort(add, fmt.Sprintf("listen.udp[%d]", i), a)
	}
	for i, a := range c.Listen.TCP {
		checkHostPort(add, fmt.Sprintf("listen.tcp[%d]", i), a)
	}
	for i, a := range c.Listen.TLS {
		checkHostPort(add, fmt.Sprintf("listen.tls[%d]", i), a)
	}
	if c.Relay.Enabled && len(c.Listen.UDP)+len(c.Listen.TCP)+len(c.Listen.TLS) == 0 {
		add("listen", "the relay is enabled but has no listener")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		add("tls", "cert and key must be set together")
	}
	c.TLS.ACME.validate(add, c.TLS.Cert != "" || c.TLS.Key != "", len(c.Listen.TLS) > 0)

	// Auth.
	if len(c.Auth.Secrets) == 0 && len(c.Auth.Users) == 0 {
		add("auth.secrets", "at least one secret (or a static user) is required")
	}
	if c.Issuer.Enabled && len(c.Auth.Secrets) == 0 && len(c.Auth.Users) > 0 {
		add("auth.secrets", "the issuer mints TURN REST credentials and needs a secret")
	}
	for i, s := range c.Auth.Secrets {
		if len(s) < MinSecretLen {
			add(fmt.Sprintf("auth.secrets[%d]", i), "must be at least %d characters (got %d)", MinSecretLen, len(s))
		}
	}
	if c.Auth.MaxTTL <= 0 {
		add("auth.max_ttl", "must be > 0 (got %s)", c.Auth.MaxTTL)
	}
	if c.Auth.ClockSkew < 0 {
		add("auth.clock_skew", "must be >= 0 (got %s)", c.Auth.ClockSkew)
	}
	seen := map[string]bool{}
	for i, u := range c.Auth.Users {
		path := fmt.Sprintf("auth.users[%d]", i)
		switch {
		case u.Name == "":
			add(path+".name", "must not be empty")
		case strings.ContainsAny(u.Name, ": \t"):
			add(path+".name", "must not contain ':' or spaces (got %q)", u.Name)
		case seen[u.Name]:
			add(path+".name", "duplicate user %q", u.Name)
		}
		seen[u.Name] = true
		if len(u.Password) < 8 {
			add(path+".password", "must be at least 8 characters")
		}
	}

	// Relay.
	if c.Relay.PublicIP == PublicIPAuto {
		if len(c.Relay.PublicIPSTUN) == 0 {
			add("relay.public_ip_stun", "public_ip is auto: list at least one STUN server")
		}
	} else if c.Relay.PublicIP != "" {
		if ip, err := netip.ParseAddr(c.Relay.PublicIP); err != nil || !ip.Is4() {
			add("relay.public_ip", "must be an IPv4 address (got %q)", c.Relay.PublicIP)
		}
	}
	if ip, err := netip.ParseAddr(c.Relay.BindIP); err != nil || !ip.Is4() {
		add("relay.bind_ip", "must be an IPv4 address (got %q); relays are IPv4", c.Relay.BindIP)
	}
	pr := c.Relay.Ports
	if pr.Min < 1024 || pr.Min > 65535 {
		add("relay.ports.min", "must be in 1024..65535 (got %d)", pr.Min)
	}
	if pr.Max < 1024 || pr.Max > 65535 {
		add("relay.ports.max", "must be in 1024..65535 (got %d)", pr.Max)
	}
	if pr.Min > pr.Max {
		add("relay.ports", "min %d is above max %d", pr.Min, pr.Max)
	}
	for i, a := range c.Relay.PublicIPSTUN {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" || port == "0" {
			add(fmt.Sprintf("relay.public_ip_stun[%d]", i), "must be host:port (got %q)", a)
		}
	}
	for i, s := range c.Relay.Peers.Allow {
		if _, err := ParsePrefix(s); err != nil {
			add(fmt.Sprintf("relay.peers.allow[%d]", i), "%v", err)
		}
	}
	for i, s := range c.Relay.Peers.Deny {
		if _, err := ParsePrefix(s); err != nil {
			add(fmt.Sprintf("relay.peers.deny[%d]", i), "%v", err)
		}
	}
	if c.Relay.Quota.PerUser < 0 {
		add("relay.quota.per_user", "must be >= 0 (got %d)", c.Relay.Quota.PerUser)
	}
	if c.Relay.Quota.PerAccount < 0 {
		add("relay.quota.per_account", "must be >= 0 (got %d)", c.Relay.Quota.PerAccount)
	}
	if c.Relay.Limits.PendingPerIP < 0 {
		add("relay.limits.pending_per_ip", "must be >= 0 (got %d)", c.Relay.Limits.PendingPerIP)
	}
	if c.Issuer.TokensPerSecond < 0 {
		add("issuer.tokens_per_second", "must be >= 0 (got %g)", c.Issuer.TokensPerSecond)
	}
	if c.Issuer.TokensPerSecond > 0 && c.Issuer.TokensBurst < 1 {
		add("issuer.tokens_burst", "must be >= 1 when issuer.tokens_per_second is set (got %d)", c.Issuer.TokensBurst)
	}
	if c.Relay.Quota.Total < 0 {
		add("relay.quota.total", "must be >= 0 (got %d)", c.Relay.Quota.Total)
	}
	if b := c.Relay.Quota.Bandwidth; b < 0 || (b > 0 && b < 1500) {
		add("relay.quota.bandwidth", "must be 0 (no cap) or at least 1500 bytes/s (got %d)", b)
	}
	if c.Relay.DrainTimeout < 0 {
		add("relay.drain_timeout", "must be >= 0 (got %s)", c.Relay.DrainTimeout)
	}
	if c.Relay.UDPSockets < 0 || c.Relay.UDPSockets > 256 {
		add("relay.udp_sockets", "must be in 0..256 (got %d)", c.Relay.UDPSockets)
	}

	// Issuer.
	if c.Issuer.Enabled {
		checkHostPort(add, "issuer.listen", c.Issuer.Listen)
	}
	if h := c.Issuer.PublicHost; h != "" && (strings.Contains(h, "/") || strings.Contains(h, " ")) {
		add("issuer.public_host", "must be a bare host name or IP, not a URL (got %q)", h)
	}
	for i, u := range c.Issuer.ICEServers {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			add(fmt.Sprintf("issuer.ice_servers[%d]", i), "must start with stun:, turn: or turns: (got %q)", u)
		}
	}
	for i, o := range c.Issuer.CORSOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			add(fmt.Sprintf("issuer.cors_origins[%d]", i), "must be an origin such as https://app.example.com (got %q)", o)
		}
	}

	// Console.
	if c.Console.Enabled && (c.Console.SessionTTL < time.Minute || c.Console.SessionTTL > 12*time.Hour) {
		add("console.session_ttl", "must be from 1m to 12h (got %s)", c.Console.SessionTTL)
	}
	if n := c.Issuer.RelaysPerToken; n < 1 || n > 16 {
		add("issuer.relays_per_token", "must be in 1..16 (got %d)", n)
	}
	for _, cidr := range sortedKeys(c.Issuer.RegionByCIDR) {
		if _, err := ParsePrefix(cidr); err != nil {
			add("issuer.region_by_cidr."+cidr, "%v", err)
		} else if c.Issuer.RegionByCIDR[cidr] == "" {
			add("issuer.region_by_cidr."+cidr, "region must not be empty")
		}
	}
	for i, s := range c.Issuer.TrustedProxies {
		if _, err := ParsePrefix(s); err != nil {
			add(fmt.Sprintf("issuer.trusted_proxies[%d]", i), "%v", err)
		}
	}

	if g := c.Issuer.OutageGrace; g < 0 || g > 24*time.Hour {
		add("issuer.outage_grace", "must be in 0..24h (got %s)", g)
	}

	// Node.
	if h := c.Node.PublicHost; h != "" && strings.ContainsAny(h, "/ ") {
		add("node.public_host", "must be a bare host name or IP, not a URL (got %q)", h)
	}
	if w := c.Node.Weight; w < 1 || w > 1000 {
		add("node.weight", "must be in 1..1000 (got %d)", w)
	}
	if hb := c.Node.Heartbeat; hb < 100*time.Millisecond || hb > 10*time.Minute {
		add("node.heartbeat", "must be in 100ms..10m (got %s)", hb)
	}

	// Store.
	if d := c.Store.DSN; d != "" && !strings.HasPrefix(d, "sqlite:") &&
		!strings.HasPrefix(d, "postgres://") && !strings.HasPrefix(d, "postgresql://") {
		add("store.dsn", "must start with sqlite: or postgres:// (got %q)", redactDSN(d))
	}
	if k := c.Store.EncryptionKey; k != "" {
		if b, err := hex.DecodeString(k); err != nil || len(b) != 32 {
			add("store.encryption_key", "must be 64 hex characters (32 bytes)")
		}
	}

	// Logging and metrics.
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error (got %q)", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "must be json or console (got %q)", c.Log.Format)
	}
	if c.Metrics.Listen != "" {
		checkHostPort(add, "metrics.listen", c.Metrics.Listen)
	}

	validateUsage(c.Usage, add)

	if len(p) == 0 {
		return nil
	}
	return p
}

func (a ACME) validate(add func(path, format string, args ...any), files, tlsListeners bool) {
	if !a.Enabled() {
		return
	}
	if files {
		add("tls.acme", "set either tls.cert/tls.key or tls.acme.domains, not both")
	}
	if !tlsListeners {
		add("tls.acme", "TLS-ALPN-01 is answered on the TURN TLS listener: listen.tls must not be empty")
	}
	for i, d := range a.Domains {
		if d == "" || strings.ContainsAny(d, "/: ") || net.ParseIP(d) != nil {
			add(fmt.Sprintf("tls.acme.domains[%d]", i), "must be a DNS name (got %q)", d)
		}
	}
	if u, err := url.Parse(a.CA); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add("tls.acme.ca", "must be an ACME directory URL (got %q)", a.CA)
	}
	if a.Email != "" && !strings.Contains(a.Email, "@") {
		add("tls.acme.email", "must be an email address (got %q)", a.Email)
	}
	if a.HTTPPort < 0 || a.HTTPPort > 65535 {
		add("tls.acme.http_port", "must be 0 (off) or a port (got %d)", a.HTTPPort)
	}
}

// validateUsage checks the usage keys.
func validateUsage(u Usage, add func(path, format string, args ...any)) {
	if u.FlushInterval < 100*time.Millisecond {
		add("usage.flush_interval", "must be at least 100ms (got %s)", u.FlushInterval)
	}
	if u.RevocationPoll < 100*time.Millisecond {
		add("usage.revocation_poll", "must be at least 100ms (got %s)", u.RevocationPoll)
	}
	if u.MaxBufferedRows < 1 {
		add("usage.max_buffered_rows", "must be at least 1 (got %d)", u.MaxBufferedRows)
	}
	if a := u.DefaultAccount; a != "" && !isSid(a, "AC") {
		add("usage.default_account", "must be an AccountSid, AC and 32 hex digits (got %q)", a)
	}
	for _, r := range u.Region {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			add("usage.region", "must be lowercase letters, digits and dashes (got %q)", u.Region)
			break
		}
	}
	if f, err := strconv.ParseFloat(u.PricePerMegabyte, 64); err != nil || f < 0 || strings.ContainsAny(u.PricePerMegabyte, "eE") {
		add("usage.price_per_megabyte", "must be a decimal number >= 0 such as 0.0004 (got %q)", u.PricePerMegabyte)
	}
	if len(u.PriceUnit) != 3 {
		add("usage.price_unit", "must be a 3-letter currency code (got %q)", u.PriceUnit)
	}
}

// isSid reports whether s is prefix followed by 32 lowercase hex digits.
func isSid(s, prefix string) bool {
	if len(s) != 34 || !strings.HasPrefix(s, prefix) {
		return false
	}
	_, err := hex.DecodeString(s[2:])
	return err == nil && strings.ToLower(s[2:]) == s[2:]
}

func checkHostPort(add func(path, format string, args ...any), path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		add(path, "must be host:port (got %q)", addr)
		return
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			add(path, "host must be an IP address (got %q)", host)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		add(path, "port must be 0..65535 (got %q)", port)
	}
}

// ParsePrefix parses a CIDR or a single IP (as a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not a CIDR: %q", s)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an IP or CIDR: %q", s)
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// redactDSN hides a password in a DSN before it is shown.
func redactDSN(d string) string {
	if at := strings.LastIndex(d, "@"); at > 0 {
		if scheme := strings.Index(d, "://"); scheme >= 0 && scheme < at {
			return d[:scheme+3] + "…@" + d[at+1:]
		}
	}
	return d
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
